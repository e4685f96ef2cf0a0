//! The worker loop against the real embedded backend (SQLite + folder) in a temp dir, running
//! real `sh` agents: success with artifacts, duplicates, lease-expiry recovery, exhausted
//! attempts, the dead-letter drain, cancel, slot limits and draining on shutdown.
//!
//! Nothing here depends on tight timing: every wait polls for a condition with a generous
//! deadline.

use chrono::Utc;
use outpost_core::domain::{AgentRegistry, FailureReason, NewRun, Outcome, Run, RunId, RunStatus, TenantId, WorkerId};
use outpost_core::ports::{Backend, ClaimOutcome, QueueDepth, RunKey, TaskMessage};
use outpost_embedded::EmbeddedOptions;
use outpost_testkit::sha256_hex;
use outpost_worker::sandbox::SandboxConfig;
use outpost_worker::{Worker, WorkerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PATIENCE: Duration = Duration::from_secs(60);

struct Env {
    tmp: tempfile::TempDir,
    backend: Backend,
    agents: Arc<AgentRegistry>,
}

fn env() -> Env {
    env_with(EmbeddedOptions::default())
}

fn env_with(opts: EmbeddedOptions) -> Env {
    let tmp = tempfile::tempdir().expect("tempdir");
    let backend = outpost_embedded::open(&tmp.path().join("data"), opts).expect("embedded backend");
    Env {
        tmp,
        backend,
        agents: Arc::new(AgentRegistry::builtin(true)),
    }
}

impl Env {
    fn config(&self) -> WorkerConfig {
        WorkerConfig {
            slots: 4,
            lease: Duration::from_secs(3),
            max_attempts: 3,
            kill_grace: Duration::from_millis(500),
            work_dir: self.tmp.path().join("work"),
            receive_wait: Duration::from_millis(500),
            secrets_ttl: Duration::ZERO,
            presence_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(30),
            dead_letter_interval: Duration::from_millis(200),
            sandbox: SandboxConfig {
                extra_rw: vec![self.path("")],
                ..SandboxConfig::default()
            },
            egress_ca: None,
            egress_resolve: Vec::new(),
        }
    }

    /// A path in a folder every user may write to: agents run as other users when the tests run as
    /// root, and write the tests' markers there.
    fn path(&self, name: &str) -> PathBuf {
        let shared = self.tmp.path().join("shared");
        if !shared.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(self.tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
            std::fs::create_dir_all(&shared).expect("shared dir");
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        }
        shared.join(name)
    }

    /// Records a queued run of the `shell` agent without sending its message.
    async fn create(&self, script: &str) -> Run {
        self.backend
            .runs
            .create(NewRun {
                id: RunId::generate(),
                tenant: tenant(),
                agent: "shell".into(),
                task: script.into(),
                repo: None,
                timeout_secs: 600,
                idle_timeout_secs: None,
                created_at: Utc::now(),
            })
            .await
            .expect("create run")
    }

    async fn send(&self, run: &Run) {
        self.backend
            .queue
            .send(&TaskMessage {
                run_id: run.id.clone(),
                tenant: run.tenant.clone(),
                trace_context: None,
            })
            .await
            .expect("send");
    }

    async fn dispatch(&self, script: &str) -> Run {
        let run = self.create(script).await;
        self.send(&run).await;
        run
    }

    fn start(&self, config: WorkerConfig) -> Running {
        let worker = Worker::new(self.backend.clone(), Arc::clone(&self.agents), config);
        let id = worker.id().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(worker.run(async move {
            let _ = rx.await;
        }));
        Running {
            id,
            stop: Some(tx),
            handle,
        }
    }

    async fn get(&self, id: &RunId) -> Run {
        self.backend
            .runs
            .get_by_id(id)
            .await
            .expect("get run")
            .expect("run exists")
    }

    /// Polls until the run satisfies `cond`.
    async fn wait_run(&self, id: &RunId, what: &str, cond: impl Fn(&Run) -> bool) -> Run {
        let end = Instant::now() + PATIENCE;
        loop {
            let run = self.get(id).await;
            if cond(&run) {
                return run;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {run:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn wait_terminal(&self, id: &RunId) -> Run {
        self.wait_run(id, "a terminal state", |r| r.status.is_terminal()).await
    }

    async fn wait_depth(&self, what: &str, cond: impl Fn(&QueueDepth) -> bool) -> QueueDepth {
        let end = Instant::now() + PATIENCE;
        loop {
            let depth = self.backend.queue.depth().await.expect("depth");
            if cond(&depth) {
                return depth;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {depth:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn stored(&self, run: &Run, name: &str) -> Vec<u8> {
        let key = RunKey {
            tenant: run.tenant.clone(),
            run: run.id.clone(),
        };
        self.backend
            .artifacts
            .read_range(&key, name, 0, 1 << 30)
            .await
            .expect("read artifact")
            .unwrap_or_else(|| panic!("{name} stored"))
            .data
            .to_vec()
    }
}

struct Running {
    id: WorkerId,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), outpost_worker::WorkerError>>,
}

impl Running {
    /// Signals shutdown and waits for the worker to return.
    async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(PATIENCE, self.handle)
            .await
            .expect("worker stops in time")
            .expect("worker task")
            .expect("worker result");
    }
}

fn tenant() -> TenantId {
    "acme".parse().expect("tenant")
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

async fn wait_file(path: &Path) {
    let end = Instant::now() + PATIENCE;
    while !path.exists() {
        assert!(Instant::now() < end, "timed out waiting for {}", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_succeed_with_artifacts_in_the_store() {
    let e = env();
    let w = e.start(e.config());
    let run = e
        .dispatch("echo hello; echo report > \"$OUTPOST_ARTIFACTS_DIR/report.txt\"; echo oops >&2")
        .await;
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!((done.exit_code, done.attempts), (Some(0), 1));
    assert_eq!(done.worker_id.as_ref(), Some(&w.id));
    let names: Vec<&str> = done.artifacts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["output.log", "summary.json", "files/report.txt"]);
    for a in &done.artifacts {
        let content = e.stored(&done, &a.name).await;
        assert_eq!(a.sha256, sha256_hex(&content), "{}", a.name);
        assert_eq!(a.size, content.len() as u64, "{}", a.name);
    }
    assert_eq!(e.stored(&done, "output.log").await, b"hello\noops\n");
    assert_eq!(e.stored(&done, "files/report.txt").await, b"report\n");
    let summary: serde_json::Value =
        serde_json::from_slice(&e.stored(&done, "summary.json").await).expect("summary json");
    assert_eq!(summary["status"], "succeeded");

    // A failing agent is a failed run with its exit code.
    let bad = e.dispatch("exit 7").await;
    let bad = e.wait_terminal(&bad.id).await;
    assert_eq!(bad.status, RunStatus::Failed);
    assert_eq!(
        (bad.exit_code, bad.failure_reason),
        (Some(7), Some(FailureReason::NonZeroExit))
    );

    // Messages are acknowledged; the worker is listed while it runs and removed when it stops.
    e.wait_depth("an empty queue", |d| *d == QueueDepth::default()).await;
    let live = e
        .backend
        .workers
        .live_workers(Utc::now() - chrono::Duration::minutes(1))
        .await
        .expect("live workers");
    let me = live.iter().find(|i| i.id == w.id).expect("worker listed");
    assert_eq!(me.slots, 4);
    let id = w.id.clone();
    w.shutdown().await;
    let live = e
        .backend
        .workers
        .live_workers(Utc::now() - chrono::Duration::minutes(1))
        .await
        .expect("live workers");
    assert!(live.iter().all(|i| i.id != id), "worker removed on clean exit");
    assert!(
        std::fs::read_dir(e.tmp.path().join("work"))
            .expect("work dir")
            .next()
            .is_none(),
        "run dirs removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_never_runs_the_agent_twice() {
    let e = env();
    let counter = e.path("counter");
    let run = e.create(&format!("echo ran >> '{}'; sleep 1", counter.display())).await;
    e.send(&run).await;
    e.send(&run).await;
    let w = e.start(e.config());
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    // The duplicate comes back after the lease it saw and is dropped as already finished.
    e.wait_depth("both messages deleted", |d| *d == QueueDepth::default())
        .await;
    assert_eq!(lines(&counter), 1, "the agent ran once");
    assert_eq!(e.get(&run.id).await.attempts, 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_worker_died_is_recovered_after_its_lease() {
    let e = env();
    let counter = e.path("counter");
    let run = e.dispatch(&format!("echo ran >> '{}'", counter.display())).await;
    // A worker that claims the run and dies without heartbeats.
    let dead = WorkerId("wrk_dead".into());
    let claim = e
        .backend
        .runs
        .claim(&run.id, &dead, Duration::from_secs(1), 3)
        .await
        .expect("claim");
    assert!(matches!(claim, ClaimOutcome::Claimed(_)), "{claim:?}");
    let w = e.start(e.config());
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(done.worker_id.as_ref(), Some(&w.id));
    assert_eq!(lines(&counter), 1);
    e.wait_depth("the message deleted", |d| *d == QueueDepth::default())
        .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_attempts_fail_with_worker_lost() {
    let e = env();
    let counter = e.path("counter");
    let run = e.dispatch(&format!("echo ran >> '{}'", counter.display())).await;
    let dead = WorkerId("wrk_dead".into());
    let claim = e
        .backend
        .runs
        .claim(&run.id, &dead, Duration::from_millis(500), 1)
        .await
        .expect("claim");
    assert!(matches!(claim, ClaimOutcome::Claimed(_)), "{claim:?}");
    let w = e.start(WorkerConfig {
        max_attempts: 1,
        ..e.config()
    });
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.failure_reason, Some(FailureReason::WorkerLost));
    e.wait_depth("the message deleted", |d| *d == QueueDepth::default())
        .await;
    assert_eq!(lines(&counter), 0, "the agent never ran");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_drained_as_worker_lost() {
    let e = env_with(EmbeddedOptions {
        max_receive_count: 1,
        ..EmbeddedOptions::default()
    });
    let run = e.dispatch("echo never").await;
    // Someone received the message once and never came back.
    let got = e
        .backend
        .queue
        .receive(1, Duration::from_millis(500), Duration::ZERO)
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    let w = e.start(e.config());
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.failure_reason, Some(FailureReason::WorkerLost));
    assert_eq!(done.attempts, 0, "never claimed");
    e.wait_depth("the dead letter deleted", |d| *d == QueueDepth::default())
        .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_stops_the_running_agent() {
    let e = env();
    let started = e.path("started");
    let run = e
        .dispatch(&format!("touch '{}'; exec sleep 1000", started.display()))
        .await;
    let w = e.start(e.config());
    wait_file(&started).await;
    e.backend.runs.request_cancel(&tenant(), &run.id).await.expect("cancel");
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Cancelled);
    assert_eq!(done.failure_reason, Some(FailureReason::Cancelled));
    assert!(done.artifacts.iter().any(|a| a.name == "output.log"));
    e.wait_depth("the message deleted", |d| *d == QueueDepth::default())
        .await;
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_more_runs_in_flight_than_slots() {
    let e = env();
    let dir = e.path("running");
    std::fs::create_dir(&dir).expect("mkdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    let counts = e.path("counts");
    let script = format!(
        "umask 0; touch '{d}/'\"$OUTPOST_RUN_ID\"; ls '{d}' | wc -l >> '{c}'; sleep 0.3; rm '{d}/'\"$OUTPOST_RUN_ID\"",
        d = dir.display(),
        c = counts.display()
    );
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(e.dispatch(&script).await.id);
    }
    let w = e.start(WorkerConfig { slots: 2, ..e.config() });
    for id in &ids {
        assert_eq!(e.wait_terminal(id).await.status, RunStatus::Succeeded);
    }
    let seen: Vec<usize> = std::fs::read_to_string(&counts)
        .expect("counts")
        .split_whitespace()
        .map(|n| n.parse().expect("count"))
        .collect();
    assert_eq!(seen.len(), 8);
    assert!(seen.iter().all(|&n| (1..=2).contains(&n)), "{seen:?}");
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_in_flight_runs_finish() {
    let e = env();
    let started = e.path("started");
    let go = e.path("go");
    let run = e
        .dispatch(&format!(
            "touch '{s}'; while [ ! -e '{g}' ]; do sleep 0.05; done; echo finished",
            s = started.display(),
            g = go.display()
        ))
        .await;
    let w = e.start(e.config());
    wait_file(&started).await;
    let stop = w.shutdown();
    tokio::pin!(stop);
    // Draining: the worker waits for the run instead of returning.
    tokio::select! {
        () = &mut stop => panic!("worker returned with a run in flight"),
        () = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    std::fs::write(&go, "").expect("go");
    stop.await;
    let done = e.get(&run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(e.stored(&done, "output.log").await, b"finished\n");
    e.wait_depth("the message deleted", |d| *d == QueueDepth::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_drain_timeout_runs_are_killed_and_released_for_another_worker() {
    let e = env();
    let started = e.path("started");
    let run = e
        .dispatch(&format!(
            "if [ -e '{s}' ]; then echo second attempt; exit 0; fi; touch '{s}'; exec sleep 1000",
            s = started.display()
        ))
        .await;
    let w = e.start(WorkerConfig {
        drain_timeout: Duration::from_millis(200),
        ..e.config()
    });
    wait_file(&started).await;
    w.shutdown().await;
    // Released: still running (never finished), lease over, message visible again.
    let released = e.get(&run.id).await;
    assert_eq!(released.status, RunStatus::Running);
    assert!(
        released.lease_expires_at.is_some_and(|t| t <= Utc::now()),
        "{released:?}"
    );
    e.wait_depth("the message visible again", |d| d.visible == 1).await;

    let w2 = e.start(e.config());
    let done = e.wait_terminal(&run.id).await;
    assert_eq!(done.status, RunStatus::Succeeded);
    assert_eq!(done.attempts, 2);
    assert_eq!(e.stored(&done, "output.log").await, b"second attempt\n");
    w2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_kills_the_agent_and_abandons_the_run() {
    let e = env();
    let pid_file = e.path("pid");
    // `sleep 1021` marks the agent: its pid inside its PID namespace is not the host's.
    let run = e
        .dispatch(&format!(
            "echo $$ > '{p}.tmp'; mv '{p}.tmp' '{p}'; exec sleep 1021",
            p = pid_file.display()
        ))
        .await;
    let w = e.start(e.config());
    wait_file(&pid_file).await;
    // Someone else ends the run under the worker (as a store operator would): the worker's next
    // heartbeat finds its lease gone.
    let ended = e
        .backend
        .runs
        .finish(&run.id, &w.id, Outcome::failed(FailureReason::WorkerLost, None), vec![])
        .await
        .expect("finish from outside");
    assert_eq!(ended.status, RunStatus::Failed);
    let end = Instant::now() + PATIENCE;
    while !outpost_testkit::process::pids_with_arg("1021").is_empty() {
        assert!(Instant::now() < end, "the agent was not killed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The worker wrote nothing: the record is as the outside party left it, with no artifacts.
    let after = e.get(&run.id).await;
    assert_eq!(after.failure_reason, Some(FailureReason::WorkerLost));
    assert!(after.artifacts.is_empty());
    // The message comes back after its visibility and is dropped as already finished.
    e.wait_depth("the message deleted", |d| *d == QueueDepth::default())
        .await;
    w.shutdown().await;
}
