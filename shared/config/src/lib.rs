//! Outpost's configuration: one [`Settings`] for every binary (flags > environment > settings
//! file > defaults, validated once at start; [`settings`]), which backend a process runs on
//! ([`deployment`]), the remote executors' settings ([`remote`]), log setup and the shutdown signal ([`telemetry`]).
//!
//! The AWS backend is behind the `aws` feature, so the embedded default builds without the AWS
//! SDK.

pub mod deployment;
pub mod remote;
pub mod settings;
pub mod telemetry;

pub use settings::{Settings, SettingsArgs};
