//! Outpost's shared core: the domain (runs, agents, validation), the ports every backend
//! implements, the embedded adapters (SQLite + a local folder), configuration, and a typed REST
//! client of the API.
//!
//! Dependencies point one way: `domain` ← `ports` ← `embedded`; `api` (wire types) depends on
//! `domain`; `client` depends on `api`.

pub mod api;
pub mod client;
pub mod deployment;
pub mod domain;
pub mod embedded;
pub mod ports;
pub mod promote;
pub mod telemetry;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(feature = "contract-tests")]
pub mod contract;

pub use domain::*;
