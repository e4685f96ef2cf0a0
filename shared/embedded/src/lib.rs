//! Embedded adapters: runs, queue, API keys and workers in one SQLite file; artifacts in a
//! folder. Used by `outpost dev` and by tests; several processes (an API process and worker
//! processes) may open the same data directory at once.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=NORMAL`, so every call that returned
//! has survived a crash or `kill -9` of the process, but not necessarily a power loss.
//!
//! ```no_run
//! # fn main() -> Result<(), outpost_embedded::EmbeddedError> {
//! let backend = outpost_embedded::open(std::path::Path::new("data"), Default::default())?;
//! # let _ = backend; Ok(()) }
//! ```

pub mod folder;
pub mod secrets;
pub mod sqlite;

pub use folder::LocalArtifactStore;
pub use secrets::LocalSecretStore;
pub use sqlite::{SqliteQueue, SqliteStore};

use outpost_core::ports::Backend;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "outpost.db";
/// Name of the artifacts folder inside the data directory.
pub const ARTIFACTS_DIR: &str = "artifacts";
/// Name of the tenants' secrets folder inside the data directory.
pub const SECRETS_DIR: &str = "secrets";

/// Settings of the embedded backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// Deliveries of one message before it is dead-lettered (SQS `maxReceiveCount`). Default 5.
    pub max_receive_count: u32,
    /// Read-only SQLite connections kept open besides the one writer. Default 4.
    pub reader_connections: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            max_receive_count: 5,
            reader_connections: 4,
        }
    }
}

/// Why the embedded backend could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    OpenDatabase {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot set up the database schema: {0}")]
    Schema(#[source] rusqlite::Error),
    #[error("cannot start a database thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("the database has schema version {found}, newer than this build's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },
}

/// Opens (creating if needed) `{data_dir}/outpost.db` and `{data_dir}/artifacts/`, returning all
/// six ports.
pub fn open(data_dir: &Path, opts: EmbeddedOptions) -> Result<Backend, EmbeddedError> {
    let create_err = |path: &Path| {
        let path = path.to_owned();
        move |source| EmbeddedError::CreateDir { path, source }
    };
    std::fs::create_dir_all(data_dir).map_err(create_err(data_dir))?;
    let (store, queue) = sqlite::open_database(&data_dir.join(DATABASE_FILE), &opts)?;
    let artifacts_dir = data_dir.join(ARTIFACTS_DIR);
    let artifacts = LocalArtifactStore::new(&artifacts_dir).map_err(create_err(&artifacts_dir))?;
    let secrets_dir = data_dir.join(SECRETS_DIR);
    let secrets = LocalSecretStore::new(&secrets_dir).map_err(create_err(&secrets_dir))?;
    let store = Arc::new(store);
    tracing::debug!(data_dir = %data_dir.display(), "embedded backend open");
    Ok(Backend {
        runs: store.clone(),
        queue: Arc::new(queue),
        artifacts: Arc::new(artifacts),
        keys: store.clone(),
        workers: store,
        secrets: Arc::new(secrets),
    })
}
