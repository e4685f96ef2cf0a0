//! The worker's errors: only what stops a worker from starting. Everything that goes wrong with a
//! single run ends that run (or leaves its message for re-delivery) instead.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot create the work directory {path}: {source}")]
    WorkDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid worker configuration: {0}")]
    Config(String),
}
