//! The SQLite schema and its migration, run once when a database is opened.
//!
//! `PRAGMA user_version` records the schema version; opening a file made by a newer build fails
//! rather than guessing. Timestamps are integer milliseconds since the Unix epoch.
//!
//! Versions: 1 made the tables; 2 added `runs.idle_timeout_secs` and `runs.report` (the agent's
//! report as JSON); 3 added `runs.remote` (the run's ECS task or SSM command); 4 added
//! `workers.agents` (the worker's agent loads as JSON). A file of an older version is brought up
//! step by step, each step once, so a database made by an earlier build keeps its runs (`ADD
//! COLUMN` leaves them NULL, which reads as "no idle timeout given", "no report", "no remote
//! task" and "no agent loads").

use crate::EmbeddedError;
use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build writes.
pub const VERSION: i64 = 4;

/// Version 1: every table (the schema of the first release, kept as it was).
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id               TEXT PRIMARY KEY NOT NULL,
    tenant           TEXT NOT NULL,
    agent            TEXT NOT NULL,
    task             TEXT NOT NULL,
    repo             TEXT,              -- JSON RepoSpec
    timeout_secs     INTEGER NOT NULL,
    status           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    exit_code        INTEGER,
    failure_reason   TEXT,
    artifacts        TEXT NOT NULL,     -- JSON [Artifact]
    worker_id        TEXT,
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL
);
-- Listing: newest first per tenant, optionally by status or agent.
CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, id);
CREATE INDEX IF NOT EXISTS runs_by_tenant_status ON runs (tenant, status, id);
CREATE INDEX IF NOT EXISTS runs_by_tenant_agent ON runs (tenant, agent, id);
-- count_running without a scan.
CREATE INDEX IF NOT EXISTS runs_running ON runs (id) WHERE status = 'running';

CREATE TABLE IF NOT EXISTS queue (
    seq           INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    tenant        TEXT NOT NULL,
    trace_context TEXT,
    sent_at       INTEGER NOT NULL,
    visible_at    INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT,                 -- token of the latest delivery
    dead          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS queue_live ON queue (visible_at, seq) WHERE dead = 0;
-- Fair receives: each tenant's oldest visible messages by index seek, whatever the backlog.
CREATE INDEX IF NOT EXISTS queue_live_tenant ON queue (tenant, visible_at, seq) WHERE dead = 0;
CREATE INDEX IF NOT EXISTS queue_dead ON queue (visible_at, seq) WHERE dead = 1;

CREATE TABLE IF NOT EXISTS tenants (
    id         TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    hash           TEXT PRIMARY KEY NOT NULL,
    tenant         TEXT NOT NULL REFERENCES tenants (id),
    display_prefix TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    revoked_at     INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys (tenant);

CREATE TABLE IF NOT EXISTS workers (
    id         TEXT PRIMARY KEY NOT NULL,
    hostname   TEXT NOT NULL,
    slots      INTEGER NOT NULL,
    busy       INTEGER NOT NULL,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL
);
";

/// Version 2: columns added to `runs`: the run's idle timeout (seconds, NULL = the agent's
/// default) and the agent's report (JSON `AgentReport`, NULL when it reported nothing).
const COLUMNS_V2: [(&str, &str); 2] = [("idle_timeout_secs", "INTEGER"), ("report", "TEXT")];

/// Version 3: the run's remote task (JSON `RemoteTask`, NULL when none was started).
const COLUMNS_V3: [(&str, &str); 1] = [("remote", "TEXT")];

/// Version 4: columns added to `workers`: the worker's agent loads (JSON `[AgentLoad]`, NULL in a
/// report stored before: no loads).
const COLUMNS_V4: [(&str, &str); 1] = [("agents", "TEXT")];

/// Columns (name, declaration) one version added to one table.
type Columns = &'static [(&'static str, &'static str)];

/// The columns each version after 1 added, and to which table, oldest first.
const ADDED_COLUMNS: [(i64, &str, Columns); 3] = [
    (2, "runs", &COLUMNS_V2),
    (3, "runs", &COLUMNS_V3),
    (4, "workers", &COLUMNS_V4),
];

/// `ALTER TABLE table ADD COLUMN column decl`, unless the column is already there.
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> Result<(), rusqlite::Error> {
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
        [table, column],
        |row| row.get(0),
    )?;
    if !exists {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

/// Brings the database to [`VERSION`], in one transaction (safe when several processes open the
/// same file at once: the write lock serialises them, the version is read inside it, and every
/// step is idempotent anyway: `IF NOT EXISTS`, and columns added only when missing).
pub fn migrate(conn: &mut Connection) -> Result<(), EmbeddedError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(EmbeddedError::Schema)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(EmbeddedError::Schema)?;
    if found > VERSION {
        return Err(EmbeddedError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    if found < 1 {
        tx.execute_batch(SCHEMA_V1).map_err(EmbeddedError::Schema)?;
    }
    for (version, table, columns) in ADDED_COLUMNS {
        if found < version {
            for (column, decl) in columns {
                add_column(&tx, table, column, decl).map_err(EmbeddedError::Schema)?;
            }
        }
    }
    if found < VERSION {
        tx.pragma_update(None, "user_version", VERSION)
            .map_err(EmbeddedError::Schema)?;
    }
    tx.commit().map_err(EmbeddedError::Schema)
}
