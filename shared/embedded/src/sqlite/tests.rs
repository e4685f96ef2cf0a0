//! Tests of what is specific to the SQLite adapter: several handles (as several processes) on one
//! file, crash durability, index use, cursor decoding.

use super::queue::{any_visible_sql, visible_sql, Lane, NEXT_LIVE_TENANT_SQL, TENANT_VISIBLE_SQL};
use super::runs::{decode_cursor, list_sql};
use super::{open_database, SqliteQueue, SqliteStore};
use crate::EmbeddedOptions;
use chrono::Utc;
use outpost_core::domain::{
    AgentReport, ExecutorKind, FailureReason, NewRun, Outcome, Run, RunId, RunStatus, TenantId, Usage, WorkerId,
};
use outpost_core::ports::queue::{TaskMessage, TaskQueue};
use outpost_core::ports::runs::{ClaimOutcome, Cursor, RunStore, StoreError};
use outpost_core::ports::workers::{AgentLoad, WorkerInfo, WorkerRegistry};
use std::path::Path;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

fn open(dir: &Path) -> (SqliteStore, SqliteQueue) {
    open_database(&dir.join("outpost.db"), &EmbeddedOptions::default()).expect("open")
}

fn new_run(tenant: &str) -> NewRun {
    NewRun {
        id: RunId::generate(),
        tenant: tenant.parse::<TenantId>().expect("tenant"),
        agent: "fake".into(),
        task: "t".into(),
        repo: None,
        timeout_secs: 60,
        idle_timeout_secs: None,
        created_at: Utc::now(),
    }
}

fn message(run: &Run) -> TaskMessage {
    TaskMessage {
        run_id: run.id.clone(),
        tenant: run.tenant.clone(),
        trace_context: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (api_store, api_queue) = open(dir.path());
    let (worker_store, worker_queue) = open(dir.path());
    let run = api_store.create(new_run("acme")).await.expect("create");
    api_queue.send(&message(&run)).await.expect("send");

    assert_eq!(worker_store.get_by_id(&run.id).await.expect("get"), Some(run.clone()));
    let got = worker_queue.receive(10, MINUTE, Duration::ZERO).await.expect("receive");
    assert_eq!(got.len(), 1);
    let w = WorkerId("wrk_a".into());
    assert!(matches!(
        worker_store.claim(&run.id, &w, MINUTE, 3).await.expect("claim"),
        ClaimOutcome::Claimed(_)
    ));
    assert!(matches!(
        api_store
            .claim(&run.id, &WorkerId("wrk_b".into()), MINUTE, 3)
            .await
            .expect("claim"),
        ClaimOutcome::HeldElsewhere { .. }
    ));
    api_store.request_cancel(&run.tenant, &run.id).await.expect("cancel");
    assert!(
        worker_store
            .heartbeat(&run.id, &w, MINUTE)
            .await
            .expect("hb")
            .cancel_requested
    );
    // The message is in flight for the API's handle too.
    assert_eq!(api_queue.depth().await.expect("depth").in_flight, 1);
    api_queue
        .delete(&got[0].receipt)
        .await
        .expect("delete from the other handle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_sees_sends_from_another_handle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, sender) = open(dir.path());
    let (_, receiver) = open(dir.path());
    let run = store.create(new_run("acme")).await.expect("create");
    let start = Instant::now();
    let waiter = tokio::spawn(async move { receiver.receive(1, MINUTE, Duration::from_secs(10)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.send(&message(&run)).await.expect("send");
    let got = waiter.await.expect("join").expect("receive");
    assert_eq!(got.len(), 1);
    // Not woken by the notify (another handle): found by the periodic look.
    assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_through_two_handles_have_one_winner_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, _) = open(dir.path());
    let (b, _) = open(dir.path());
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(a.create(new_run("acme")).await.expect("create"));
    }
    let mut tasks = Vec::new();
    for run in &runs {
        for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()].into_iter().enumerate() {
            let id = run.id.clone();
            tasks.push(tokio::spawn(async move {
                let w = WorkerId(format!("wrk_{i}"));
                (id.clone(), store.claim(&id, &w, MINUTE, 3).await)
            }));
        }
    }
    let mut winners = std::collections::HashMap::new();
    for t in tasks {
        let (id, outcome) = t.await.expect("join");
        if let ClaimOutcome::Claimed(_) = outcome.expect("claim") {
            *winners.entry(id).or_insert(0) += 1;
        }
    }
    assert_eq!(winners.len(), runs.len());
    assert!(winners.values().all(|&n| n == 1), "{winners:?}");
    assert_eq!(a.count_running().await.expect("count"), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_writers_in_parallel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, queue) = open(dir.path());
    let (store2, queue2) = open(dir.path());
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let (s, q) = if i % 2 == 0 {
                (store.clone(), queue.clone())
            } else {
                (store2.clone(), queue2.clone())
            };
            tokio::spawn(async move {
                let run = s.create(new_run("acme")).await.expect("create");
                q.send(&message(&run)).await.expect("send");
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("join");
    }
    assert_eq!(queue.depth().await.expect("depth").visible, 200);
}

/// Run by [`writes_survive_an_abort_of_the_process`] in a child process: writes, then aborts
/// without any cleanup (no destructors, no checkpoint), like `kill -9`.
const CRASH_CHILD_ENV: &str = "OUTPOST_TEST_CRASH_CHILD_DIR";

#[test]
fn writes_survive_an_abort_of_the_process() {
    if let Ok(dir) = std::env::var(CRASH_CHILD_ENV) {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        // Opened outside the async block so nothing is closed before the abort.
        let (store, queue) = open(Path::new(&dir));
        rt.block_on(async {
            for _ in 0..50 {
                let run = store.create(new_run("acme")).await.expect("create");
                queue.send(&message(&run)).await.expect("send");
            }
        });
        std::process::abort();
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
        .args([
            "--exact",
            "sqlite::tests::writes_survive_an_abort_of_the_process",
            "--nocapture",
        ])
        .env(CRASH_CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("spawn child");
    assert!(!status.success(), "the child aborts");
    assert!(
        dir.path().join("outpost.db-wal").exists(),
        "the writes are in the WAL, not checkpointed"
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (store, queue) = open(dir.path());
        assert_eq!(queue.depth().await.expect("depth").visible, 50);
        let page = store
            .list(&"acme".parse().expect("tenant"), &Default::default(), 100, None)
            .await
            .expect("list");
        assert_eq!(page.items.len(), 50);
    });
}

/// The query plan of `sql`, one line per step.
async fn plan(store: &SqliteStore, sql: String) -> String {
    store
        .db
        .read(move |c| {
            let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
            for i in 1..=stmt.parameter_count() {
                stmt.raw_bind_parameter(i, rusqlite::types::Null)?;
            }
            let mut rows = stmt.raw_query();
            let mut lines = Vec::new();
            while let Some(row) = rows.next()? {
                lines.push(row.get::<_, String>(3)?);
            }
            Ok(lines.join("\n"))
        })
        .await
        .expect("plan")
}

#[tokio::test]
async fn hot_queries_use_indexes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    for status in [false, true] {
        for agent in [false, true] {
            for before in [false, true] {
                let p = plan(&store, list_sql(status, agent, before)).await;
                assert!(
                    !p.contains("SCAN runs"),
                    "list ({status}, {agent}, {before}) scans: {p}"
                );
                assert!(
                    !p.contains("TEMP B-TREE"),
                    "list ({status}, {agent}, {before}) sorts: {p}"
                );
            }
        }
    }
    for sql in [NEXT_LIVE_TENANT_SQL, TENANT_VISIBLE_SQL] {
        let p = plan(&store, sql.to_owned()).await;
        assert!(!p.contains("SCAN queue"), "fair receive scans: {p}");
        assert!(!p.contains("TEMP B-TREE"), "fair receive sorts: {p}");
        assert!(
            p.contains("queue_live_tenant"),
            "fair receive uses the tenant index: {p}"
        );
    }
    for lane in [Lane::Live, Lane::Dead] {
        for sql in [visible_sql(lane), any_visible_sql(lane)] {
            let p = plan(&store, sql.clone()).await;
            assert!(
                p.contains("USING INDEX queue_") || p.contains("USING COVERING INDEX queue_"),
                "{sql}: {p}"
            );
            assert!(!p.contains("TEMP B-TREE"), "{sql}: {p}");
        }
    }
    let p = plan(&store, "SELECT COUNT(*) FROM runs WHERE status = 'running'".into()).await;
    assert!(p.contains("runs_running"), "count_running: {p}");
}

#[test]
fn cursors_that_were_not_handed_out_are_rejected() {
    let id = RunId::generate();
    assert_eq!(decode_cursor(&Cursor(hex::encode(id.as_str()))).ok(), Some(id));
    for junk in ["", "zz", "00ff", &hex::encode("run_short"), &hex::encode([0xff, 0xfe])] {
        assert!(
            matches!(decode_cursor(&Cursor(junk.to_string())), Err(StoreError::BadCursor)),
            "{junk:?}"
        );
    }
}

#[tokio::test]
async fn spent_messages_beyond_the_first_window_do_not_block_delivery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = EmbeddedOptions {
        max_receive_count: 1,
        ..Default::default()
    };
    let (store, queue) = open_database(&dir.path().join("outpost.db"), &opts).expect("open");
    // 300 messages received once and released: all spent.
    for _ in 0..300 {
        let run = store.create(new_run("acme")).await.expect("create");
        queue.send(&message(&run)).await.expect("send");
    }
    let mut received = 0;
    while received < 300 {
        let got = queue.receive(10, MINUTE, Duration::ZERO).await.expect("receive");
        assert!(!got.is_empty());
        for d in got {
            queue
                .extend_visibility(&d.receipt, Duration::ZERO)
                .await
                .expect("release");
            received += 1;
        }
    }
    let fresh = store.create(new_run("acme")).await.expect("create");
    queue.send(&message(&fresh)).await.expect("send");
    let got = queue.receive(10, MINUTE, Duration::ZERO).await.expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message.run_id, fresh.id);
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.dead, depth.in_flight, depth.visible), (300, 1, 0));
}

#[tokio::test]
async fn finish_keeps_the_worker_and_started_at_of_the_last_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let run = store.create(new_run("acme")).await.expect("create");
    let w = WorkerId("wrk_a".into());
    let claimed = match store.claim(&run.id, &w, MINUTE, 3).await.expect("claim") {
        ClaimOutcome::Claimed(r) => r,
        other => panic!("{other:?}"),
    };
    let done = store
        .finish(&run.id, &w, Outcome::succeeded(), Vec::new())
        .await
        .expect("finish");
    assert_eq!(done.worker_id, Some(w));
    assert_eq!(done.started_at, claimed.started_at);
}

#[tokio::test]
async fn a_quiet_tenant_is_served_next_even_behind_a_long_backlog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, queue) = open(dir.path());
    let message = |tenant: &str| TaskMessage {
        run_id: RunId::generate(),
        tenant: tenant.parse::<TenantId>().expect("tenant"),
        trace_context: None,
    };
    for _ in 0..1500 {
        queue.send(&message("busy")).await.expect("send");
    }
    queue.send(&message("quiet")).await.expect("send");
    let got = queue
        .receive(2, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("receive");
    let tenants: Vec<&str> = got.iter().map(|d| d.message.tenant.as_str()).collect();
    assert_eq!(
        tenants,
        ["busy", "quiet"],
        "oldest tenant first, then the next tenant's head"
    );
    // Alone, a tenant gets its messages oldest first.
    let next = queue
        .receive(3, Duration::from_secs(60), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(next.len(), 3);
    assert!(next.iter().all(|d| d.message.tenant.as_str() == "busy"));
}

/// A database file as the previous release (schema version 1) left it, holding one finished run.
fn write_v1_database(path: &Path, run_id: &RunId) {
    let conn = rusqlite::Connection::open(path).expect("open v1");
    conn.execute_batch(super::schema::SCHEMA_V1).expect("v1 schema");
    conn.pragma_update(None, "user_version", 1).expect("version 1");
    conn.execute(
        "INSERT INTO runs (id, tenant, agent, task, repo, timeout_secs, status, attempts, created_at, started_at, \
         finished_at, exit_code, failure_reason, artifacts, worker_id, lease_expires_at, cancel_requested) \
         VALUES (?1, 'acme', 'claude', 'old task', NULL, 900, 'failed', 1, 1700000000000, 1700000001000, \
         1700000002000, 3, 'non_zero_exit', '[]', 'wrk_old', NULL, 0)",
        [run_id.as_str()],
    )
    .expect("v1 run");
    conn.execute(
        "INSERT INTO workers (id, hostname, slots, busy, started_at, last_seen) \
         VALUES ('wrk_old', 'old-host', 2, 1, 1700000000000, 1700000001000)",
        [],
    )
    .expect("v1 worker");
}

#[tokio::test]
async fn a_database_of_the_previous_schema_is_migrated_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("outpost.db");
    let old_id = RunId::generate();
    write_v1_database(&path, &old_id);

    let (store, _) = open_database(&path, &EmbeddedOptions::default()).expect("open the v1 file");
    let old = store
        .get_by_id(&old_id)
        .await
        .expect("get")
        .expect("the old run is kept");
    assert_eq!(
        (old.agent.as_str(), old.task.as_str(), old.timeout_secs),
        ("claude", "old task", 900)
    );
    assert_eq!((old.status, old.exit_code), (RunStatus::Failed, Some(3)));
    assert_eq!(old.failure_reason, Some(FailureReason::NonZeroExit));
    assert_eq!(old.idle_timeout_secs, None, "no idle timeout was given then");
    assert!(old.report.is_empty(), "no report was stored then");
    let version: i64 = store
        .db
        .read(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .await
        .expect("version");
    assert_eq!(version, super::schema::VERSION);

    // The new columns work on the migrated file.
    let w = WorkerId("wrk_new".into());
    let run = store
        .create(NewRun {
            idle_timeout_secs: Some(42),
            ..new_run("acme")
        })
        .await
        .expect("create");
    assert!(matches!(
        store.claim(&run.id, &w, MINUTE, 3).await.expect("claim"),
        ClaimOutcome::Claimed(_)
    ));
    let report = AgentReport {
        result: Some("done ✓".into()),
        usage: Some(Usage {
            cost_usd: Some(0.5),
            source: "test".into(),
            ..Usage::default()
        }),
        ..AgentReport::default()
    };
    store
        .finish(
            &run.id,
            &w,
            Outcome::succeeded().with_report(report.clone()),
            Vec::new(),
        )
        .await
        .expect("finish");

    // The old worker row reads with no agent loads; a new report keeps its loads.
    let seen = store.live_workers(chrono::DateTime::UNIX_EPOCH).await.expect("live");
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].hostname.as_str(), seen[0].agents.len()), ("old-host", 0));
    let load = AgentLoad {
        agent: "claude".into(),
        executor: ExecutorKind::Ecs,
        in_flight: 1,
        available: Some(false),
        detail: Some("task definition INACTIVE".into()),
    };
    let reported = WorkerInfo {
        agents: vec![load],
        last_seen: Utc::now(),
        ..seen[0].clone()
    };
    store.report_worker(&reported).await.expect("report");
    drop(store);

    // Opening again (as another process would) migrates nothing twice and reads both runs.
    let (again, _) = open_database(&path, &EmbeddedOptions::default()).expect("reopen");
    let read = again.get_by_id(&run.id).await.expect("get").expect("stored");
    assert_eq!((read.idle_timeout_secs, read.report), (Some(42), report));
    assert_eq!(again.get_by_id(&old_id).await.expect("get"), Some(old));
    let seen = again.live_workers(chrono::DateTime::UNIX_EPOCH).await.expect("live");
    assert_eq!(seen[0].agents, reported.agents);
}

#[tokio::test]
async fn an_unreadable_report_is_a_corrupt_row_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = open(dir.path());
    let run = store.create(new_run("acme")).await.expect("create");
    let id = run.id.clone();
    store
        .db
        .write(move |c| Ok(c.execute("UPDATE runs SET report = '{oops' WHERE id = ?1", [id.as_str()])?))
        .await
        .expect("spoil");
    let err = store.get_by_id(&run.id).await.expect_err("unreadable");
    assert!(err.to_string().contains("JSON"), "{err}");
}
