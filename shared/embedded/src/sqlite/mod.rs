//! The SQLite half of the embedded backend: [`SqliteStore`] (runs, API keys, workers) and
//! [`SqliteQueue`] (the task queue), sharing one database file and its connections.

mod db;
mod keys;
mod queue;
mod runs;
mod schema;
mod workers;

pub use db::DbError;

use super::{EmbeddedError, EmbeddedOptions};
use db::Db;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::Notify;

/// Runs, API keys and the worker registry in SQLite. Cheap to clone (shares the connections).
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<Db>,
}

/// The task queue in SQLite, with SQS semantics. Cheap to clone (shares the connections).
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    /// Fired by `send` to wake this process's long polls.
    notify: Arc<Notify>,
    max_receive_count: u32,
}

/// Opens (creating and migrating if needed) the database file at `path`: the store and the
/// queue over it.
pub fn open_database(path: &Path, opts: &EmbeddedOptions) -> Result<(SqliteStore, SqliteQueue), EmbeddedError> {
    let db = Db::open(path, opts.reader_connections)?;
    let store = SqliteStore { db: Arc::clone(&db) };
    let queue = SqliteQueue {
        db,
        notify: Arc::new(Notify::new()),
        max_receive_count: opts.max_receive_count.max(1),
    };
    Ok((store, queue))
}

#[cfg(test)]
mod tests;
