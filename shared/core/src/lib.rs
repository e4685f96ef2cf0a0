//! Outpost's core: the domain (runs, agents, validation, the claim rule, the artifact contract)
//! and the ports every backend implements, as traits only.
//!
//! This crate does no I/O and depends on no runtime, database, HTTP or cloud crate: the adapters
//! (`outpost-embedded`, `outpost-aws`) depend on it, never the other way round. Dependencies
//! inside point one way: `domain` ← `ports`.
//!
//! Features: `openapi` derives utoipa schemas for the domain values the REST API shows
//! (`outpost-api` enables it); `schemars` derives JSON Schemas of the same values for MCP.

pub mod domain;
pub mod ports;

pub use domain::*;
