//! Outpost's test kit, a dev-dependency only (never in a release binary):
//!
//! - [`contract`]: the port contract suite, one set of cases every backend passes;
//! - `aws` (feature `aws`): AWS adapters on moto server, fresh resources per case.

pub mod contract;

#[cfg(feature = "aws")]
pub mod aws;
