//! Connection machinery shared by the SQLite store and queue.
//!
//! - Writes go to one writer thread that owns the writer connection and commits them in groups:
//!   it takes every write waiting (up to [`MAX_GROUP`]), runs each inside its own savepoint of
//!   one `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller. A write
//!   that fails rolls back to its savepoint without touching the others; a failed commit fails
//!   them all. Under load this turns many small commits into a few larger ones.
//! - Reads run on a few reader connections on tokio's blocking pool, so the async runtime never
//!   waits on SQLite.
//! - A checkpointer thread copies the WAL into the database file in the background (passive
//!   checkpoints), so commits do not stall on it.
//!
//! Durability: the database is in WAL mode with `synchronous=NORMAL`. A write is answered only
//! once its transaction is in the WAL file, so it survives the process being killed (`kill -9`),
//! but not a power loss or kernel crash (the WAL is only fsynced at checkpoints).
//!
//! Several processes may open the same file: SQLite's file locks serialise writers across them,
//! and every write transaction starts with `BEGIN IMMEDIATE` so it takes the write lock up front
//! (never a deadlock-prone read-to-write upgrade). A busy writer elsewhere is waited for up to
//! about five seconds (see [`busy_wait`]).

use super::schema;
use crate::EmbeddedError;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// An error of the SQLite layer, boxed into the ports' `Backend` variants.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A stored value this build cannot read (a bad status, id or timestamp).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The transaction holding this write could not be started or committed.
    #[error("write not committed: {0}")]
    NotCommitted(String),
    /// The task or thread running the call panicked or is gone.
    #[error("database task failed: {0}")]
    Task(String),
}

/// How many statements each connection keeps prepared.
const STATEMENT_CACHE: usize = 64;
/// Most writes committed together.
const MAX_GROUP: usize = 128;
/// How often the checkpointer copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);
/// WAL pages after which a commit checkpoints by itself (most pages are already copied by the
/// checkpointer by then, so this is quick and lets the next write start the WAL afresh).
const AUTOCHECKPOINT_PAGES: i64 = 2_000;
/// WAL size past which the writer empties it with a blocking checkpoint (see [`limit_wal`]).
const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;
/// How often the writer looks at the WAL's size.
const WAL_CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Answers one write once its group's commit is known (`None`: committed).
type Completion = Box<dyn FnOnce(Option<&DbError>) + Send>;
/// One write: given the connection inside the group's transaction (or why there is none), does
/// its work and says whether it succeeded (else its savepoint is rolled back).
type WriteJob = Box<dyn FnOnce(Result<&Connection, &DbError>) -> (bool, Completion) + Send>;

/// Handles to one SQLite file.
pub struct Db {
    writes: mpsc::Sender<WriteJob>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Dropped with the `Db`, which tells the checkpointer to stop.
    _stop_checkpointer: mpsc::Sender<()>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, sets it up and migrates its schema.
    pub fn open(path: &Path, reader_connections: usize) -> Result<Arc<Self>, EmbeddedError> {
        let open_err = |source| EmbeddedError::OpenDatabase {
            path: path.to_owned(),
            source,
        };
        let mut writer = connect(path).map_err(open_err)?;
        // Only the writer switches the journal mode; it is persistent in the file.
        writer
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(open_err)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", AUTOCHECKPOINT_PAGES)
            .map_err(open_err)?;
        schema::migrate(&mut writer)?;
        let readers = (0..reader_connections.max(1))
            .map(|_| {
                let conn = connect(path)?;
                conn.pragma_update(None, "query_only", true)?;
                Ok(Mutex::new(conn))
            })
            .collect::<Result<Vec<_>, rusqlite::Error>>()
            .map_err(open_err)?;
        let checkpointer = connect(path).map_err(open_err)?;

        let mut wal_path = path.as_os_str().to_owned();
        wal_path.push("-wal");
        let wal_path = PathBuf::from(wal_path);
        let (writes, jobs) = mpsc::channel::<WriteJob>();
        std::thread::Builder::new()
            .name("outpost-sqlite-writer".into())
            .spawn(move || write_loop(writer, wal_path, jobs))
            .map_err(EmbeddedError::Thread)?;
        let (stop_checkpointer, stop) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("outpost-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, stop))
            .map_err(EmbeddedError::Thread)?;
        Ok(Arc::new(Self {
            writes,
            readers,
            next_reader: AtomicUsize::new(0),
            _stop_checkpointer: stop_checkpointer,
        }))
    }

    /// Runs `f` on the writer connection inside a write transaction (atomically: a savepoint of
    /// its group's transaction). Its changes are kept if it returns `Ok` (whatever the value
    /// inside) and rolled back otherwise; the answer comes once they are committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |conn| {
            let result = match conn {
                Ok(conn) => f(conn),
                Err(e) => Err(DbError::NotCommitted(e.to_string())),
            };
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let outcome = match (result, commit_error) {
                    (Ok(_), Some(e)) => Err(DbError::NotCommitted(e.to_string())),
                    (result, _) => result,
                };
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(outcome);
            });
            (ok, completion)
        });
        self.writes
            .send(job)
            .map_err(|_| DbError::Task("the writer thread is gone".into()))?;
        answer
            .await
            .map_err(|_| DbError::Task("the write was dropped (its closure panicked)".into()))?
    }

    /// Runs `f` on a reader connection (a consistent snapshot per statement), on the blocking pool.
    pub async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        let db = Arc::clone(self);
        run_blocking(move || f(&db.reader())).await
    }

    /// A free reader connection if there is one, else the next one in turn (waiting for it).
    fn reader(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(guard) = self.readers[(start + i) % n].try_lock() {
                return guard;
            }
        }
        lock(&self.readers[start % n])
    }
}

/// The writer thread: commits waiting writes in groups until every sender is gone.
fn write_loop(conn: Connection, wal_path: PathBuf, jobs: mpsc::Receiver<WriteJob>) {
    let mut last_wal_check = Instant::now();
    while let Ok(first) = jobs.recv() {
        if last_wal_check.elapsed() >= WAL_CHECK_INTERVAL {
            last_wal_check = Instant::now();
            limit_wal(&conn, &wal_path, WAL_LIMIT_BYTES);
        }
        let mut group = Vec::with_capacity(16);
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&conn, group);
    }
}

/// Runs `group` in one transaction, each job in its own savepoint, then answers them all.
fn commit_group(conn: &Connection, group: Vec<WriteJob>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let e = DbError::from(e);
        tracing::error!(error = %e, writes = group.len(), "cannot start a write transaction");
        for job in group {
            let (_, done) = job(Err(&e));
            done(Some(&e));
        }
        return;
    }
    let mut completions = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    let mut failure: Option<DbError> = None;
    for job in jobs.by_ref() {
        if let Err(e) = savepoint(conn, "SAVEPOINT w") {
            failure = Some(e);
            // This job was never run: answer it with the failure below.
            let e = DbError::NotCommitted("savepoint failed".into());
            let (_, done) = job(Err(&e));
            completions.push(done);
            break;
        }
        match catch_unwind(AssertUnwindSafe(|| job(Ok(conn)))) {
            Ok((true, done)) => {
                completions.push(done);
                if let Err(e) = savepoint(conn, "RELEASE w") {
                    failure = Some(e);
                    break;
                }
            }
            outcome => {
                // Failed or panicked (a panicked job's caller sees its answer dropped).
                if let Ok((_, done)) = outcome {
                    completions.push(done);
                }
                if let Err(e) = savepoint(conn, "ROLLBACK TO w").and_then(|()| savepoint(conn, "RELEASE w")) {
                    failure = Some(e);
                    break;
                }
            }
        }
    }
    if failure.is_none() {
        if let Err(e) = conn.execute_batch("COMMIT") {
            failure = Some(e.into());
        }
    }
    if let Some(e) = &failure {
        tracing::error!(error = %e, "write transaction failed; rolling back");
        if !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in jobs {
            let (_, done) = job(Err(e));
            completions.push(done);
        }
    }
    for done in completions {
        done(failure.as_ref());
    }
}

/// Truncates the WAL once it has grown past `limit` bytes ([`WAL_LIMIT_BYTES`]).
///
/// Within one process, the passive checkpoints let the writer start the WAL afresh. With
/// several processes writing and reading, some reader almost always holds a snapshot inside the
/// WAL, so it can only grow; a `TRUNCATE` checkpoint waits (briefly: readers and write
/// transactions are short) until no snapshot needs the WAL, then empties it.
fn limit_wal(conn: &Connection, wal_path: &Path, limit: u64) {
    let size = std::fs::metadata(wal_path).map(|m| m.len()).unwrap_or(0);
    if size < limit {
        return;
    }
    let started = Instant::now();
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get::<_, i64>(0)) {
        Ok(busy) => tracing::debug!(wal_bytes = size, busy, took = ?started.elapsed(), "WAL truncated"),
        Err(e) => tracing::warn!(error = %e, wal_bytes = size, "cannot truncate the WAL"),
    }
}

fn savepoint(conn: &Connection, sql: &str) -> Result<(), DbError> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// The checkpointer thread: a passive checkpoint every [`CHECKPOINT_INTERVAL`] until the `Db` is
/// dropped. Passive checkpoints never wait for writers or readers; one that finds another
/// process checkpointing just tries again next time.
fn checkpoint_loop(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_INTERVAL) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "background checkpoint skipped");
        }
    }
}

/// Locks a connection. A panic while it was held cannot leave a transaction open (the
/// transaction guard rolls back when dropped during unwinding), so a poisoned lock is usable.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run_blocking<T, F>(f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DbError::Task(e.to_string()))?
}

/// Opens one connection with this store's per-connection settings.
fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_handler(Some(busy_wait))?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Negative: KiB. 16 MiB of page cache per connection.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "mmap_size", 256i64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// SQLite's busy handler: called with the number of earlier calls for this wait, returns whether
/// to try again. Short sleeps first (another process's write transactions last well under a
/// millisecond), then 1 ms steps, giving up after about five seconds in all. SQLite's own
/// `busy_timeout` backs off to 100 ms sleeps, far too coarse for the dispatch latency target.
fn busy_wait(attempt: i32) -> bool {
    const SHORT_ATTEMPTS: i32 = 50;
    const MAX_ATTEMPTS: i32 = SHORT_ATTEMPTS + 5_000;
    if attempt >= MAX_ATTEMPTS {
        return false;
    }
    let nap = if attempt < SHORT_ATTEMPTS {
        Duration::from_micros(100)
    } else {
        Duration::from_millis(1)
    };
    std::thread::sleep(nap);
    true
}

/// Now, truncated to the millisecond (what the store keeps).
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored millisecond timestamp as a date.
pub fn ms_to_time(ms: i64) -> Result<DateTime<Utc>, DbError> {
    DateTime::<Utc>::from_timestamp_millis(ms).ok_or_else(|| DbError::Corrupt(format!("timestamp {ms} out of range")))
}

/// A duration in whole milliseconds, saturating.
pub fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_in_wal_mode_with_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), 2).expect("open");
        let (mode, version) = db
            .read(|c| {
                let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let version: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                Ok((mode, version))
            })
            .await
            .expect("read");
        assert_eq!(mode, "wal");
        assert_eq!(version, schema::VERSION);
        // Opening again (another process would) keeps the schema.
        drop(db);
        let again = Db::open(&dir.path().join("t.db"), 1).expect("reopen");
        let n: i64 = again
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))?))
            .await
            .expect("count");
        assert_eq!(n, 0);
    }

    #[tokio::test]
    async fn readers_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), 1).expect("open");
        let res = db.read(|c| Ok(c.execute("DELETE FROM runs", [])?)).await;
        assert!(res.is_err());
    }

    #[tokio::test]
    async fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), 1).expect("open");
        let res: Result<(), DbError> = db
            .write(|tx| {
                tx.execute(
                    "INSERT INTO workers (id, hostname, slots, busy, started_at, last_seen) VALUES ('w', 'h', 1, 0, 0, 0)",
                    [],
                )?;
                Err(DbError::Corrupt("boom".into()))
            })
            .await;
        assert!(res.is_err());
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))?))
            .await
            .expect("count");
        assert_eq!(n, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_write_does_not_spoil_its_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("t.db"), 1).expect("open");
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let db = Arc::clone(&db);
                tokio::spawn(async move {
                    db.write(move |c| {
                        c.execute(
                            "INSERT INTO workers (id, hostname, slots, busy, started_at, last_seen) \
                             VALUES (?1, 'h', 1, 0, 0, 0)",
                            [format!("w{i}")],
                        )?;
                        match i % 3 {
                            0 => Ok(i),
                            1 => Err(DbError::Corrupt("refused".into())),
                            _ => panic!("job {i} panics"),
                        }
                    })
                    .await
                })
            })
            .collect();
        let mut kept = 0;
        for (i, t) in tasks.into_iter().enumerate() {
            let res = t.await.expect("join");
            match i % 3 {
                0 => {
                    assert_eq!(res.expect("ok"), i);
                    kept += 1;
                }
                1 => assert!(matches!(res, Err(DbError::Corrupt(_)))),
                _ => assert!(matches!(res, Err(DbError::Task(_)))),
            }
        }
        let n: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))?))
            .await
            .expect("count");
        assert_eq!(n, kept);
        // The writer still works afterwards.
        db.write(|c| Ok(c.execute("DELETE FROM workers", [])?))
            .await
            .expect("write");
    }

    #[test]
    fn an_oversized_wal_is_truncated() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let wal = dir.path().join("t.db-wal");
        let conn = connect(&path).expect("connect");
        conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .expect("no autocheckpoint");
        conn.execute_batch("CREATE TABLE t (x BLOB)").expect("create");
        for _ in 0..20 {
            conn.execute("INSERT INTO t VALUES (zeroblob(8000))", [])
                .expect("insert");
        }
        let before = std::fs::metadata(&wal).expect("wal").len();
        assert!(before > 100_000, "{before}");
        limit_wal(&conn, &wal, u64::MAX);
        assert_eq!(
            std::fs::metadata(&wal).expect("wal").len(),
            before,
            "under the limit: untouched"
        );
        limit_wal(&conn, &wal, 100_000);
        assert_eq!(std::fs::metadata(&wal).expect("wal").len(), 0);
        let n: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 20);
    }

    #[test]
    fn busy_wait_gives_up_eventually() {
        assert!(!busy_wait(i32::MAX));
        assert!(busy_wait(0));
    }
}
