//! Outpost's test kit, a dev-dependency only (never in a release binary):
//!
//! - [`contract`]: the port contract suite, one set of cases every backend passes;
//! - `aws` (feature `aws`): AWS adapters on moto server, fresh resources per case;
//! - `lambda_gateway` (feature `lambda-gateway`): an emulator of AWS Lambda behind an API
//!   Gateway HTTP API, to run a Lambda function's real binary on loopback;
//! - helpers every crate's tests share instead of copying them: [`git`] (run git, the seed
//!   repository), [`process`] ([`KillOnDrop`]), [`tls`] (a throwaway CA made with `openssl`),
//!   [`sha256_hex`].

pub mod contract;
pub mod git;
pub mod process;
pub mod tls;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "aws")]
pub mod aws_faults;
#[cfg(feature = "aws")]
pub mod local_ecs;
#[cfg(feature = "aws")]
pub mod local_ssm;

#[cfg(feature = "lambda-gateway")]
pub mod lambda_gateway;

pub use git::{git_bytes, git_ok, seed_repo};
pub use process::KillOnDrop;

/// Locks a mutex, ignoring poisoning (the stand-ins' state stays usable: every update is one step).
#[cfg(any(feature = "aws", feature = "lambda-gateway"))]
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hex SHA-256 of `data` (lowercase), as artifact manifests carry it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
