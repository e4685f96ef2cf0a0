//! The port contract suite: one set of cases, written against the port traits only, that every
//! backend (embedded SQLite + folder, AWS DynamoDB + SQS + S3 on moto) must pass.
//!
//! Each case is declared once, in [`cases`], with `case!(name, |f| async move { ... })`; the
//! declaration itself adds it to [`CASES`] (a link-time [`linkme`] slice), so there is no list
//! of names to keep in step and no case can be declared and silently skipped.
//!
//! An adapter crate runs the suite from an integration test built without the standard harness
//! (`[[test]] name = "contract", harness = false`), with a factory that makes a fresh backend
//! (fresh tables, queue and bucket) for each case, honouring the [`ContractConfig`] it is given:
//!
//! ```text
//! async fn backend(config: outpost_testkit::contract::ContractConfig) -> outpost_testkit::contract::Fixture {
//!     let dir = tempfile::tempdir().expect("tempdir");
//!     let opts = EmbeddedOptions { max_receive_count: config.max_receive_count, ..Default::default() };
//!     let backend = outpost_embedded::open(dir.path(), opts).expect("open");
//!     outpost_testkit::contract::Fixture::with_guard(backend, dir)
//! }
//! fn main() -> std::process::ExitCode {
//!     outpost_testkit::contract::main(backend, &[])
//! }
//! ```
//!
//! [`main`] makes one test per case ([`libtest_mimic`], which takes the standard harness's
//! arguments), named as the case (`claim_from_queued`), each on its own tokio runtime: under
//! nextest every case is its own process, under `cargo test` cases run on parallel threads, and
//! they fail one by one. A backend that cannot keep a promise leaves its cases out by name with a
//! reason ([`LeftOut`]): SQS, with no strict turns across tenants, leaves out
//! `queue_tenants_take_turns`.
//!
//! Timings are whole seconds (SQS has no sub-second visibility); anything an eventually
//! consistent backend may lag on (queue depth, dead-letter moves) is polled for a few seconds.

use futures_util::future::BoxFuture;
use outpost_core::ports::Backend;
use std::any::Any;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

/// What a case asks of the backend it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContractConfig {
    /// Deliveries of a message before it is dead-lettered (SQS redrive `maxReceiveCount`).
    pub max_receive_count: u32,
}

impl Default for ContractConfig {
    fn default() -> Self {
        Self { max_receive_count: 5 }
    }
}

/// A backend made for one case, and whatever must live as long as it (a temp dir, a container).
pub struct Fixture {
    pub backend: Backend,
    _guard: Box<dyn Any + Send + Sync>,
}

impl Fixture {
    pub fn new(backend: Backend) -> Self {
        Self::with_guard(backend, ())
    }

    /// A fixture that drops `guard` only after the case is done with the backend.
    pub fn with_guard(backend: Backend, guard: impl Any + Send + Sync) -> Self {
        Self {
            backend,
            _guard: Box::new(guard),
        }
    }
}

impl From<Backend> for Fixture {
    fn from(backend: Backend) -> Self {
        Self::new(backend)
    }
}

/// Makes a fresh backend per case. Implemented for any `Fn(ContractConfig) -> impl Future` whose
/// output is a [`Fixture`] or a [`Backend`].
pub trait BackendFactory: Send + Sync + 'static {
    fn make(&self, config: ContractConfig) -> BoxFuture<'static, Fixture>;
}

impl<F, Fut, T> BackendFactory for F
where
    F: Fn(ContractConfig) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
    T: Into<Fixture>,
{
    fn make(&self, config: ContractConfig) -> BoxFuture<'static, Fixture> {
        let fut = self(config);
        Box::pin(async move { fut.await.into() })
    }
}

/// The factory as the cases take it.
pub type Factory = Arc<dyn BackendFactory>;

/// One contract case: its name and its body, as `case!` declares it in [`cases`].
pub struct Case {
    /// The case's name, which is also its test's name.
    pub name: &'static str,
    body: fn(Factory) -> BoxFuture<'static, ()>,
}

impl Case {
    /// Runs the case to its end on a fresh multi-threaded runtime, against backends from
    /// `factory`; a failed assertion panics.
    pub fn run(&self, factory: Factory) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        runtime.block_on((self.body)(factory));
    }
}

impl std::fmt::Debug for Case {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Case").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Every case, gathered at link time from the `case!` declarations themselves (a
/// [`linkme`] distributed slice), so a case cannot be declared and left out of the suite.
///
/// `unsafe_code` is allowed here and in `case!` only for the `#[link_section]` statics that
/// linkme declares (the lint counts those as unsafe); no unsafe code is written.
#[allow(unsafe_code)]
#[linkme::distributed_slice]
pub static CASES: [Case];

/// Every case, by name.
pub fn all_cases() -> Vec<&'static Case> {
    let mut all: Vec<&'static Case> = CASES.iter().collect();
    all.sort_by_key(|c| c.name);
    all
}

/// A case that a backend's run leaves out, and why (the reason is for the reader of the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeftOut {
    pub case: &'static str,
    pub why: &'static str,
}

/// One test ([`libtest_mimic::Trial`]) per case but those `left_out`, each running on its own
/// runtime against a fresh backend from `factory`. Panics if `left_out` names no case (a renamed
/// case must not come back silently, nor a stale entry linger).
pub fn trials(factory: impl BackendFactory, left_out: &[LeftOut]) -> Vec<libtest_mimic::Trial> {
    let all = all_cases();
    for out in left_out {
        assert!(
            all.iter().any(|c| c.name == out.case),
            "left out {:?}, which is not a contract case",
            out.case
        );
    }
    let factory: Factory = Arc::new(factory);
    all.into_iter()
        .filter(|c| !left_out.iter().any(|out| out.case == c.name))
        .map(|case| {
            let factory = Arc::clone(&factory);
            libtest_mimic::Trial::test(case.name, move || {
                case.run(factory);
                Ok(())
            })
        })
        .collect()
}

/// The `main` of a contract test binary (`harness = false`): runs [`trials`] with the standard
/// test harness's arguments (filters, `--exact`, `--list`, `--test-threads`), so `cargo test`
/// and nextest run and list it like any test binary, one test per case.
pub fn main(factory: impl BackendFactory, left_out: &[LeftOut]) -> ExitCode {
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, trials(factory, left_out)).exit_code()
}

/// Declares a contract case: `case!(name, |f| async move { ... });` defines `cases::name` (an
/// `async fn(Factory)`) and adds it to [`CASES`] under its name.
macro_rules! case {
    ($name:ident, $body:expr $(,)?) => {
        pub async fn $name(f: Factory) {
            $crate::contract::case_body($body)(f).await
        }

        #[allow(unsafe_code)] // linkme's `#[link_section]` static (see `CASES`).
        const _: () = {
            #[linkme::distributed_slice($crate::contract::CASES)]
            static CASE: $crate::contract::Case = $crate::contract::Case {
                name: stringify!($name),
                body: |f| Box::pin($name(f)),
            };
        };
    };
}

/// The body of a `case!`, typed (so that its `f` is known to be the [`Factory`]).
fn case_body<F, Fut>(body: F) -> F
where
    F: FnOnce(Factory) -> Fut,
    Fut: Future<Output = ()>,
{
    body
}

/// The cases, each declared once with `case!`.
pub mod cases {
    use super::{ContractConfig, Factory, Fixture};
    use chrono::{DateTime, Utc};
    use futures_util::StreamExt;
    use outpost_core::domain::report::{ERROR_RECORD_BYTES, RESULT_RECORD_BYTES, SESSION_ID_BYTES};
    use outpost_core::domain::{
        AgentReport, ApiKeyKind, Artifact, ExecutorKind, FailureReason, NewRun, Outcome, RemoteTask, RepoSpec, Run,
        RunId, RunStatus, TenantId, Usage, WorkerId,
    };
    use outpost_core::ports::artifacts::{ArtifactError, RunKey};
    use outpost_core::ports::keys::{hash_key, CreatedKey};
    use outpost_core::ports::queue::{Delivery, QueueDepth, QueueError, Receipt, TaskMessage};
    use outpost_core::ports::runs::{ClaimOutcome, Cursor, RunFilter, StoreError};
    use outpost_core::ports::secrets::{SecretError, SecretName};
    use outpost_core::ports::workers::{cap_agent_loads, AgentLoad, WorkerInfo, MAX_AGENT_LOADS};
    use outpost_core::ports::Backend;
    use secrecy::{ExposeSecret, SecretString};
    use sha2::{Digest, Sha256};
    use std::collections::HashSet;
    use std::future::Future;
    use std::time::{Duration, Instant};

    const MINUTE: Duration = Duration::from_secs(60);
    const ONE_SEC: Duration = Duration::from_secs(1);
    /// Long enough for a 1 s lease or visibility to have run out, with margin.
    const PAST_ONE_SEC: Duration = Duration::from_millis(1_500);
    /// How long to wait for anything an eventually consistent backend may lag on.
    const SETTLE: Duration = Duration::from_secs(10);

    // ---- helpers ------------------------------------------------------------------------------

    async fn fixture(f: &Factory) -> Fixture {
        f.make(ContractConfig::default()).await
    }

    fn tenant(name: &str) -> TenantId {
        name.parse().expect("tenant name")
    }

    fn worker(name: &str) -> WorkerId {
        WorkerId(format!("wrk_{name}"))
    }

    /// Now, to the millisecond (what stores keep).
    fn now_ms() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(Utc::now().timestamp_millis()).expect("now")
    }

    /// `n` run ids in strictly increasing order (distinct milliseconds).
    fn ordered_ids(n: usize) -> Vec<RunId> {
        let base = u64::try_from(Utc::now().timestamp_millis()).expect("positive time");
        (0..n as u64)
            .map(|i| {
                let ulid = ulid::Ulid::from_parts(base + i, rand::random::<u128>());
                format!("{}{ulid}", RunId::PREFIX).parse().expect("run id")
            })
            .collect()
    }

    fn new_run(tenant: &TenantId, id: RunId, agent: &str) -> NewRun {
        NewRun {
            id,
            tenant: tenant.clone(),
            agent: agent.into(),
            task: "say hello".into(),
            repo: None,
            timeout_secs: 600,
            idle_timeout_secs: None,
            created_at: Utc::now(),
        }
    }

    async fn create(b: &Backend, tenant: &TenantId) -> Run {
        create_with(b, tenant, RunId::generate(), "fake").await
    }

    async fn create_with(b: &Backend, tenant: &TenantId, id: RunId, agent: &str) -> Run {
        b.runs.create(new_run(tenant, id, agent)).await.expect("create run")
    }

    async fn claim(b: &Backend, run: &Run, w: &WorkerId, lease: Duration) -> Run {
        match b.runs.claim(&run.id, w, lease, 3).await.expect("claim") {
            ClaimOutcome::Claimed(r) => r,
            other => panic!("expected Claimed, got {other:?}"),
        }
    }

    async fn get(b: &Backend, run: &Run) -> Run {
        b.runs
            .get(&run.tenant, &run.id)
            .await
            .expect("get")
            .expect("run exists")
    }

    fn message(run: &Run) -> TaskMessage {
        TaskMessage {
            run_id: run.id.clone(),
            tenant: run.tenant.clone(),
            trace_context: None,
        }
    }

    fn artifact(name: &str, content: &[u8]) -> Artifact {
        Artifact {
            name: name.into(),
            size: content.len() as u64,
            sha256: hex::encode(Sha256::digest(content)),
            content_type: "text/plain".into(),
        }
    }

    /// Asserts `t` is within a few seconds of `expected`.
    fn assert_near(t: DateTime<Utc>, expected: DateTime<Utc>, what: &str) {
        let off = (t - expected).num_milliseconds().abs();
        assert!(off <= 3_000, "{what}: {t} is {off} ms away from {expected}");
    }

    /// Polls `probe` until it returns `Some`, for at most `limit`.
    async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let start = Instant::now();
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            assert!(start.elapsed() < limit, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn assert_depth(b: &Backend, want: QueueDepth) {
        let start = Instant::now();
        loop {
            let d = b.queue.depth().await.expect("depth");
            if d == want {
                return;
            }
            assert!(start.elapsed() < SETTLE, "queue depth is {d:?}, expected {want:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every page of a listing with `limit`, checking the page rules on the way.
    async fn list_all(b: &Backend, t: &TenantId, filter: &RunFilter, limit: u32) -> Vec<Vec<RunId>> {
        let mut pages = Vec::new();
        let mut cursor: Option<Cursor> = None;
        for _ in 0..50 {
            let page = b.runs.list(t, filter, limit, cursor.as_ref()).await.expect("list");
            assert!(page.items.len() <= limit as usize, "page longer than the limit");
            for r in &page.items {
                assert_eq!(&r.tenant, t, "listing leaked another tenant's run");
            }
            let empty = page.items.is_empty();
            pages.push(page.items.iter().map(|r| r.id.clone()).collect::<Vec<_>>());
            match page.next {
                Some(next) => {
                    assert!(!empty, "an empty page must be the last");
                    cursor = Some(next);
                }
                None => return pages,
            }
        }
        panic!("listing did not end");
    }

    fn flat(pages: Vec<Vec<RunId>>) -> Vec<RunId> {
        pages.into_iter().flatten().collect()
    }

    async fn receive_one(b: &Backend, visibility: Duration, wait: Duration) -> Delivery {
        let mut got = b.queue.receive(1, visibility, wait).await.expect("receive");
        assert_eq!(got.len(), 1, "expected one delivery, got {got:?}");
        got.remove(0)
    }

    async fn assert_nothing_visible(b: &Backend, wait: Duration) {
        let got = b.queue.receive(10, MINUTE, wait).await.expect("receive");
        assert!(got.is_empty(), "expected no delivery, got {got:?}");
    }

    fn key(tenant_name: &str) -> RunKey {
        RunKey {
            tenant: tenant(tenant_name),
            run: RunId::generate(),
        }
    }

    /// A file with `content` in a fresh temp dir (kept alive by the returned guard).
    fn temp_file(content: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("upload");
        std::fs::write(&path, content).expect("write temp file");
        (dir, path)
    }

    async fn read_all(b: &Backend, k: &RunKey, name: &str) -> (u64, String, Vec<u8>) {
        let body = b.artifacts.open(k, name).await.expect("open").expect("stored");
        let mut data = Vec::new();
        let mut stream = body.stream;
        while let Some(chunk) = stream.next().await {
            data.extend_from_slice(&chunk.expect("chunk"));
        }
        (body.size, body.content_type, data)
    }

    // ---- runs: create, get, list ----------------------------------------------------------------

    case!(runs_create_then_get, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let new = NewRun {
            id: RunId::generate(),
            tenant: acme.clone(),
            agent: "claude".into(),
            task: "Fix the flaky test — ünïcödé ✓".into(),
            repo: Some(RepoSpec {
                url: "https://example.com/acme/repo.git".into(),
                branch: Some("main".into()),
            }),
            timeout_secs: 900,
            idle_timeout_secs: None,
            created_at: Utc::now(),
        };
        let run = b.runs.create(new.clone()).await.expect("create");
        assert_eq!(run.id, new.id);
        assert_eq!(run.tenant, acme);
        assert_eq!(
            (run.agent.as_str(), run.task.as_str()),
            (new.agent.as_str(), new.task.as_str())
        );
        assert_eq!(run.repo, new.repo);
        assert_eq!(run.timeout_secs, 900);
        assert_eq!(run.status, RunStatus::Queued);
        assert_eq!(run.attempts, 0);
        assert_eq!(run.created_at.timestamp_millis(), new.created_at.timestamp_millis());
        assert_eq!(
            (run.started_at, run.finished_at, run.lease_expires_at),
            (None, None, None)
        );
        assert_eq!((run.exit_code, run.failure_reason, &run.worker_id), (None, None, &None));
        assert!(run.artifacts.is_empty());
        assert!(!run.cancel_requested);

        assert_eq!(b.runs.get(&acme, &run.id).await.expect("get"), Some(run.clone()));
        assert_eq!(b.runs.get_by_id(&run.id).await.expect("get_by_id"), Some(run.clone()));
        assert_eq!(b.runs.get(&tenant("other"), &run.id).await.expect("get other"), None);
        let unknown = RunId::generate();
        assert_eq!(b.runs.get(&acme, &unknown).await.expect("get unknown"), None);
        assert_eq!(b.runs.get_by_id(&unknown).await.expect("get_by_id unknown"), None);

        // A run without a repo round-trips too.
        let plain = create(b, &acme).await;
        assert_eq!(get(b, &plain).await, plain);
        assert_eq!(plain.repo, None);
    });

    case!(runs_duplicate_id_is_rejected, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let run = create(b, &acme).await;
        let mut again = new_run(&acme, run.id.clone(), "other-agent");
        again.task = "a different task".into();
        match b.runs.create(again).await {
            Err(StoreError::AlreadyExists(id)) => assert_eq!(id, run.id),
            other => panic!("expected AlreadyExists, got {other:?}"),
        }
        let elsewhere = new_run(&tenant("globex"), run.id.clone(), "fake");
        assert!(matches!(
            b.runs.create(elsewhere).await,
            Err(StoreError::AlreadyExists(_))
        ));
        assert_eq!(get(b, &run).await, run, "the first run is unchanged");
    });

    case!(runs_list_newest_first_with_cursor_pages, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        let ids = ordered_ids(7);
        // Created out of order: the listing orders by id (creation time), not by insertion.
        for i in [3, 0, 6, 1, 5, 2, 4] {
            create_with(b, &acme, ids[i].clone(), "fake").await;
        }
        let other: Vec<Run> = vec![create(b, &globex).await, create(b, &globex).await];
        let newest_first: Vec<RunId> = ids.iter().rev().cloned().collect();

        let pages = list_all(b, &acme, &RunFilter::default(), 3).await;
        assert_eq!(pages[0], newest_first[..3].to_vec());
        assert_eq!(pages[1], newest_first[3..6].to_vec());
        assert_eq!(flat(pages), newest_first);

        assert_eq!(flat(list_all(b, &acme, &RunFilter::default(), 100).await), newest_first);
        assert_eq!(flat(list_all(b, &acme, &RunFilter::default(), 1).await), newest_first);
        let mut globex_ids: Vec<RunId> = other.iter().map(|r| r.id.clone()).collect();
        globex_ids.sort();
        globex_ids.reverse();
        assert_eq!(flat(list_all(b, &globex, &RunFilter::default(), 10).await), globex_ids);
        assert!(flat(list_all(b, &tenant("nobody"), &RunFilter::default(), 10).await).is_empty());

        // Items are whole runs.
        let page = b.runs.list(&acme, &RunFilter::default(), 1, None).await.expect("list");
        let newest = b.runs.get_by_id(&ids[6]).await.expect("get").expect("exists");
        assert_eq!(page.items, vec![newest]);
        assert!(page.next.is_some());
    });

    case!(runs_list_filters_by_status_and_agent, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let ids = ordered_ids(6);
        let agents = ["claude", "codex", "claude", "claude", "codex", "claude"];
        let mut runs = Vec::new();
        for (id, agent) in ids.iter().zip(agents) {
            runs.push(create_with(b, &acme, id.clone(), agent).await);
        }
        claim(b, &runs[2], &worker("a"), MINUTE).await;
        claim(b, &runs[3], &worker("b"), MINUTE).await;
        b.runs.request_cancel(&acme, &runs[5].id).await.expect("cancel");
        let ids_of = |idx: &[usize]| idx.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();
        let filter = |status: Option<RunStatus>, agent: Option<&str>| RunFilter {
            status,
            agent: agent.map(str::to_owned),
        };

        let running = filter(Some(RunStatus::Running), None);
        assert_eq!(flat(list_all(b, &acme, &running, 10).await), ids_of(&[3, 2]));
        let pages = list_all(b, &acme, &running, 1).await;
        assert_eq!(pages[0], ids_of(&[3]));
        assert_eq!(flat(pages), ids_of(&[3, 2]));
        let queued = filter(Some(RunStatus::Queued), None);
        assert_eq!(flat(list_all(b, &acme, &queued, 10).await), ids_of(&[4, 1, 0]));
        let cancelled = filter(Some(RunStatus::Cancelled), None);
        assert_eq!(flat(list_all(b, &acme, &cancelled, 10).await), ids_of(&[5]));
        let claude = filter(None, Some("claude"));
        assert_eq!(flat(list_all(b, &acme, &claude, 10).await), ids_of(&[5, 3, 2, 0]));
        assert_eq!(flat(list_all(b, &acme, &claude, 3).await), ids_of(&[5, 3, 2, 0]));
        let queued_claude = filter(Some(RunStatus::Queued), Some("claude"));
        assert_eq!(flat(list_all(b, &acme, &queued_claude, 10).await), ids_of(&[0]));
        let none = filter(Some(RunStatus::Succeeded), None);
        assert!(flat(list_all(b, &acme, &none, 10).await).is_empty());
        let unknown_agent = filter(None, Some("nope"));
        assert!(flat(list_all(b, &acme, &unknown_agent, 10).await).is_empty());
    });

    case!(runs_list_rejects_a_bad_cursor, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        create(b, &acme).await;
        for junk in ["junk!", "../../etc/passwd", "%%%", "run_not_a_cursor"] {
            let res = b
                .runs
                .list(&acme, &RunFilter::default(), 10, Some(&Cursor(junk.into())))
                .await;
            assert!(
                matches!(res, Err(StoreError::BadCursor)),
                "cursor {junk:?} gave {res:?}"
            );
        }
    });

    case!(runs_count_running_across_tenants, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        assert_eq!(b.runs.count_running().await.expect("count"), 0);
        let a1 = create(b, &tenant("acme")).await;
        let g1 = create(b, &tenant("globex")).await;
        let a2 = create(b, &tenant("acme")).await;
        assert_eq!(b.runs.count_running().await.expect("count"), 0);
        let w = worker("a");
        claim(b, &a1, &w, MINUTE).await;
        claim(b, &g1, &w, MINUTE).await;
        assert_eq!(b.runs.count_running().await.expect("count"), 2);
        b.runs
            .finish(&a1.id, &w, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        b.runs.request_cancel(&a2.tenant, &a2.id).await.expect("cancel");
        assert_eq!(b.runs.count_running().await.expect("count"), 1);
    });

    // ---- runs: claim ----------------------------------------------------------------------------

    case!(claim_from_queued, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        let before = Utc::now();
        let claimed = claim(b, &run, &w, MINUTE).await;
        assert_eq!(claimed.status, RunStatus::Running);
        assert_eq!(claimed.attempts, 1);
        assert_eq!(claimed.worker_id, Some(w));
        let started = claimed.started_at.expect("started_at");
        assert_near(started, before, "started_at");
        let lease = claimed.lease_expires_at.expect("lease");
        assert_near(lease, started + MINUTE, "lease_expires_at");
        assert_eq!(claimed.finished_at, None);
        assert!(!claimed.cancel_requested);
        assert_eq!(
            (claimed.id.clone(), claimed.task.clone()),
            (run.id.clone(), run.task.clone())
        );
        assert_eq!(get(b, &run).await, claimed);
    });

    case!(claim_twice_is_held_elsewhere, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let claimed = claim(b, &run, &worker("a"), MINUTE).await;
        let lease = claimed.lease_expires_at.expect("lease");
        for w in [worker("b"), worker("a")] {
            match b.runs.claim(&run.id, &w, MINUTE, 3).await.expect("claim") {
                ClaimOutcome::HeldElsewhere { lease_expires_at } => assert_eq!(lease_expires_at, lease),
                other => panic!("expected HeldElsewhere, got {other:?}"),
            }
        }
        assert_eq!(get(b, &run).await, claimed, "a refused claim changes nothing");
    });

    case!(claim_races_have_one_winner, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let runs = b.runs.clone();
                let id = run.id.clone();
                tokio::spawn(async move { runs.claim(&id, &worker(&format!("racer{i}")), MINUTE, 3).await })
            })
            .collect();
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.expect("join").expect("claim") {
                ClaimOutcome::Claimed(r) => winners.push(r),
                ClaimOutcome::HeldElsewhere { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one claim wins");
        let stored = get(b, &run).await;
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.worker_id, winners[0].worker_id);
    });

    case!(claim_after_lease_expiry_starts_a_new_attempt, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let (a, w2) = (worker("a"), worker("b"));
        claim(b, &run, &a, ONE_SEC).await;
        tokio::time::sleep(PAST_ONE_SEC).await;
        let second = claim(b, &run, &w2, MINUTE).await;
        assert_eq!(second.status, RunStatus::Running);
        assert_eq!(second.attempts, 2);
        assert_eq!(second.worker_id, Some(w2.clone()));
        assert!(second.lease_expires_at.expect("lease") > Utc::now() + Duration::from_secs(30));
        // The first worker lost the run.
        assert!(matches!(
            b.runs.heartbeat(&run.id, &a, MINUTE).await,
            Err(StoreError::LeaseLost(_))
        ));
        let lost = b.runs.finish(&run.id, &a, Outcome::succeeded(), Vec::new()).await;
        assert!(matches!(lost, Err(StoreError::LeaseLost(_))), "got {lost:?}");
        assert_eq!(get(b, &run).await, second);
        b.runs
            .heartbeat(&run.id, &w2, MINUTE)
            .await
            .expect("new owner heartbeats");
    });

    case!(claim_exhausted_fails_the_run_as_worker_lost, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        match b.runs.claim(&run.id, &worker("a"), ONE_SEC, 1).await.expect("claim") {
            ClaimOutcome::Claimed(r) => assert_eq!(r.attempts, 1),
            other => panic!("expected Claimed, got {other:?}"),
        }
        tokio::time::sleep(PAST_ONE_SEC).await;
        let failed = match b.runs.claim(&run.id, &worker("b"), MINUTE, 1).await.expect("claim") {
            ClaimOutcome::Exhausted(r) => r,
            other => panic!("expected Exhausted, got {other:?}"),
        };
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.failure_reason, Some(FailureReason::WorkerLost));
        assert_eq!(failed.attempts, 1);
        assert!(failed.finished_at.is_some());
        assert_eq!(failed.lease_expires_at, None);
        assert_eq!(get(b, &run).await, failed);
        match b.runs.claim(&run.id, &worker("c"), MINUTE, 1).await.expect("claim") {
            ClaimOutcome::AlreadyFinished(r) => assert_eq!(r, failed),
            other => panic!("expected AlreadyFinished, got {other:?}"),
        }
    });

    case!(claim_of_unknown_or_finished_runs, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let unknown = b.runs.claim(&RunId::generate(), &worker("a"), MINUTE, 3).await;
        assert!(matches!(unknown, Err(StoreError::NotFound)), "got {unknown:?}");

        let acme = tenant("acme");
        let done = create(b, &acme).await;
        let w = worker("a");
        claim(b, &done, &w, MINUTE).await;
        let finished = b
            .runs
            .finish(&done.id, &w, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        match b.runs.claim(&done.id, &worker("b"), MINUTE, 3).await.expect("claim") {
            ClaimOutcome::AlreadyFinished(r) => assert_eq!(r, finished),
            other => panic!("expected AlreadyFinished, got {other:?}"),
        }

        let cancelled = create(b, &acme).await;
        let cancelled = b.runs.request_cancel(&acme, &cancelled.id).await.expect("cancel");
        match b.runs.claim(&cancelled.id, &w, MINUTE, 3).await.expect("claim") {
            ClaimOutcome::AlreadyFinished(r) => {
                assert_eq!(r.status, RunStatus::Cancelled);
                assert_eq!(r, cancelled);
            }
            other => panic!("expected AlreadyFinished, got {other:?}"),
        }
    });

    // ---- runs: remote tasks ---------------------------------------------------------------------

    case!(
        set_remote_is_the_lease_holders_and_survives_a_new_attempt_and_finish,
        |f| async move {
            let fx = fixture(&f).await;
            let b = &fx.backend;
            let run = create(b, &tenant("acme")).await;
            let (a, other) = (worker("a"), worker("b"));
            let task = RemoteTask {
                executor: ExecutorKind::Ecs,
                id: "arn:aws:ecs:us-east-1:123456789012:task/agents/0123456789abcdef".into(),
                host: None,
                attempt: 1,
            };
            // Not claimed yet: nobody holds it.
            let early = b.runs.set_remote(&run.id, &a, &task).await;
            assert!(matches!(early, Err(StoreError::LeaseLost(_))), "got {early:?}");
            assert_eq!(get(b, &run).await.remote, None);
            claim(b, &run, &a, ONE_SEC).await;
            let foreign = b.runs.set_remote(&run.id, &other, &task).await;
            assert!(matches!(foreign, Err(StoreError::LeaseLost(_))), "got {foreign:?}");
            let bad = RemoteTask {
                id: String::new(),
                ..task.clone()
            };
            assert!(matches!(
                b.runs.set_remote(&run.id, &a, &bad).await,
                Err(StoreError::Conflict { .. })
            ));
            b.runs.set_remote(&run.id, &a, &task).await.expect("set remote");
            assert_eq!(get(b, &run).await.remote.as_ref(), Some(&task));
            // A heartbeat, a lost lease and the next attempt keep it (the new attempt adopts it).
            b.runs.heartbeat(&run.id, &a, ONE_SEC).await.expect("heartbeat");
            tokio::time::sleep(PAST_ONE_SEC).await;
            let second = claim(b, &run, &other, MINUTE).await;
            assert_eq!((second.attempts, second.remote.as_ref()), (2, Some(&task)));
            let ssm = RemoteTask {
                executor: ExecutorKind::Ssm,
                id: "5f2c6a0e-0000-4000-8000-000000000001".into(),
                host: Some("i-0123456789abcdef0".into()),
                attempt: 2,
            };
            let stale = b.runs.set_remote(&run.id, &a, &ssm).await;
            assert!(
                matches!(stale, Err(StoreError::LeaseLost(_))),
                "the first worker lost it: {stale:?}"
            );
            b.runs.set_remote(&run.id, &other, &ssm).await.expect("replace");
            let done = b
                .runs
                .finish(&run.id, &other, Outcome::succeeded(), Vec::new())
                .await
                .expect("finish");
            assert_eq!(done.remote.as_ref(), Some(&ssm));
            assert_eq!(get(b, &run).await.remote, Some(ssm.clone()));
            let after = b.runs.set_remote(&run.id, &other, &ssm).await;
            assert!(
                matches!(after, Err(StoreError::LeaseLost(_))),
                "a finished run is nobody's: {after:?}"
            );
        }
    );

    // ---- runs: heartbeat ------------------------------------------------------------------------

    case!(heartbeat_extends_the_lease_and_reports_cancel, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        let claimed = claim(b, &run, &w, Duration::from_secs(30)).await;
        let hb = b
            .runs
            .heartbeat(&run.id, &w, Duration::from_secs(600))
            .await
            .expect("heartbeat");
        assert!(!hb.cancel_requested);
        assert!(hb.lease_expires_at > claimed.lease_expires_at.expect("lease") + Duration::from_secs(300));
        assert_near(
            hb.lease_expires_at,
            Utc::now() + Duration::from_secs(600),
            "extended lease",
        );
        let stored = get(b, &run).await;
        assert_eq!(stored.lease_expires_at, Some(hb.lease_expires_at));
        assert_eq!(stored.status, RunStatus::Running);

        b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel");
        let hb = b.runs.heartbeat(&run.id, &w, MINUTE).await.expect("heartbeat");
        assert!(hb.cancel_requested);
        assert_eq!(
            get(b, &run).await.status,
            RunStatus::Running,
            "cancel is the worker's to carry out"
        );
    });

    case!(heartbeat_keeps_the_run_held, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        claim(b, &run, &w, ONE_SEC).await;
        b.runs.heartbeat(&run.id, &w, MINUTE).await.expect("heartbeat");
        tokio::time::sleep(PAST_ONE_SEC).await;
        let other = b.runs.claim(&run.id, &worker("b"), MINUTE, 3).await.expect("claim");
        assert!(matches!(other, ClaimOutcome::HeldElsewhere { .. }), "got {other:?}");
        let stored = get(b, &run).await;
        assert_eq!((stored.attempts, stored.worker_id), (1, Some(w)));
    });

    case!(heartbeat_by_a_non_owner_is_lease_lost, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let run = create(b, &acme).await;
        let (a, other) = (worker("a"), worker("b"));
        // Not claimed yet.
        assert!(matches!(
            b.runs.heartbeat(&run.id, &a, MINUTE).await,
            Err(StoreError::LeaseLost(_))
        ));
        let claimed = claim(b, &run, &a, MINUTE).await;
        match b.runs.heartbeat(&run.id, &other, MINUTE).await {
            Err(StoreError::LeaseLost(id)) => assert_eq!(id, run.id),
            res => panic!("expected LeaseLost, got {res:?}"),
        }
        assert_eq!(get(b, &run).await, claimed, "a refused heartbeat changes nothing");
        b.runs
            .finish(&run.id, &a, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        assert!(matches!(
            b.runs.heartbeat(&run.id, &a, MINUTE).await,
            Err(StoreError::LeaseLost(_))
        ));
    });

    // ---- runs: release --------------------------------------------------------------------------

    case!(release_lets_the_next_claim_start_at_once, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let run = create(b, &acme).await;
        let (a, other) = (worker("a"), worker("b"));
        // Not claimed yet.
        assert!(matches!(
            b.runs.release(&run.id, &a).await,
            Err(StoreError::LeaseLost(_))
        ));
        let unknown = b.runs.release(&RunId::generate(), &a).await;
        assert!(matches!(unknown, Err(StoreError::LeaseLost(_))), "got {unknown:?}");

        let claimed = claim(b, &run, &a, MINUTE).await;
        match b.runs.release(&run.id, &other).await {
            Err(StoreError::LeaseLost(id)) => assert_eq!(id, run.id),
            res => panic!("expected LeaseLost, got {res:?}"),
        }
        assert_eq!(get(b, &run).await, claimed, "a refused release changes nothing");

        b.runs.release(&run.id, &a).await.expect("the owner releases");
        let released = get(b, &run).await;
        assert_eq!(released.status, RunStatus::Running, "the run stays running");
        assert_eq!((released.attempts, released.worker_id.clone()), (1, Some(a.clone())));
        let lease = released.lease_expires_at.expect("lease");
        assert!(lease <= Utc::now(), "the lease ended at {lease}");
        assert_near(lease, Utc::now(), "released lease");
        assert_eq!(b.runs.count_running().await.expect("count"), 1);

        // The next delivery claims it at once, as a new attempt.
        let second = claim(b, &run, &other, MINUTE).await;
        assert_eq!((second.attempts, second.worker_id.clone()), (2, Some(other.clone())));
        assert!(matches!(
            b.runs.release(&run.id, &a).await,
            Err(StoreError::LeaseLost(_))
        ));
        assert_eq!(get(b, &run).await, second, "the old owner's release changes nothing");

        b.runs
            .finish(&run.id, &other, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        assert!(matches!(
            b.runs.release(&run.id, &other).await,
            Err(StoreError::LeaseLost(_))
        ));
    });

    // ---- runs: finish ---------------------------------------------------------------------------

    case!(finish_records_outcome_and_artifacts, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        let claimed = claim(b, &run, &w, MINUTE).await;
        let manifest = vec![
            artifact("output.log", b"hello\n"),
            artifact("files/report.md", b"# Report"),
        ];
        let done = b
            .runs
            .finish(
                &run.id,
                &w,
                Outcome::failed(FailureReason::NonZeroExit, Some(3)),
                manifest.clone(),
            )
            .await
            .expect("finish");
        assert_eq!(done.status, RunStatus::Failed);
        assert_eq!(done.exit_code, Some(3));
        assert_eq!(done.failure_reason, Some(FailureReason::NonZeroExit));
        assert_eq!(done.artifacts, manifest);
        assert_eq!(done.attempts, 1);
        assert_eq!(done.started_at, claimed.started_at);
        let finished = done.finished_at.expect("finished_at");
        assert!(finished >= claimed.started_at.expect("started"));
        assert_near(finished, Utc::now(), "finished_at");
        assert_eq!(done.lease_expires_at, None);
        assert!(done.duration_ms().is_some_and(|ms| ms >= 0));
        assert_eq!(get(b, &run).await, done);
    });

    case!(finish_in_every_terminal_status, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let w = worker("a");
        let cases = [
            (Outcome::succeeded(), RunStatus::Succeeded),
            (Outcome::timed_out(Some(124)), RunStatus::TimedOut),
            (Outcome::cancelled(None), RunStatus::Cancelled),
            (Outcome::failed(FailureReason::SpawnFailed, None), RunStatus::Failed),
        ];
        for (outcome, status) in cases {
            let run = create(b, &tenant("acme")).await;
            claim(b, &run, &w, MINUTE).await;
            let done = b
                .runs
                .finish(&run.id, &w, outcome.clone(), Vec::new())
                .await
                .expect("finish");
            assert_eq!(done.status, status);
            assert_eq!(
                (done.exit_code, done.failure_reason),
                (outcome.exit_code, outcome.reason)
            );
            assert_eq!(get(b, &run).await, done);
        }
    });

    case!(finish_by_a_non_owner_is_lease_lost, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let queued = create(b, &tenant("acme")).await;
        let res = b
            .runs
            .finish(&queued.id, &worker("a"), Outcome::succeeded(), Vec::new())
            .await;
        assert!(
            matches!(res, Err(StoreError::LeaseLost(_))),
            "finishing a queued run: {res:?}"
        );
        assert_eq!(get(b, &queued).await, queued);

        let run = create(b, &tenant("acme")).await;
        let claimed = claim(b, &run, &worker("a"), MINUTE).await;
        match b
            .runs
            .finish(&run.id, &worker("b"), Outcome::succeeded(), Vec::new())
            .await
        {
            Err(StoreError::LeaseLost(id)) => assert_eq!(id, run.id),
            res => panic!("expected LeaseLost, got {res:?}"),
        }
        assert_eq!(get(b, &run).await, claimed);
    });

    case!(finish_twice_never_changes_a_terminal_run, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        claim(b, &run, &w, MINUTE).await;
        let done = b
            .runs
            .finish(&run.id, &w, Outcome::succeeded(), vec![artifact("output.log", b"ok")])
            .await
            .expect("finish");
        let again = b
            .runs
            .finish(
                &run.id,
                &w,
                Outcome::failed(FailureReason::NonZeroExit, Some(1)),
                Vec::new(),
            )
            .await;
        assert!(matches!(again, Err(StoreError::LeaseLost(_))), "got {again:?}");
        assert_eq!(b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel"), done);
        assert_eq!(
            b.runs
                .fail_unfinished(&run.id, FailureReason::WorkerLost)
                .await
                .expect("fail"),
            done
        );
        assert!(matches!(
            b.runs.claim(&run.id, &w, MINUTE, 3).await.expect("claim"),
            ClaimOutcome::AlreadyFinished(_)
        ));
        assert_eq!(get(b, &run).await, done);
    });

    // ---- runs: the agent's report and the idle timeout -------------------------------------

    /// `run` as `get`, `get_by_id` and a listing of its tenant each return it.
    async fn read_back_everywhere(b: &Backend, run: &Run) -> [Run; 3] {
        let by_tenant = get(b, run).await;
        let by_id = b.runs.get_by_id(&run.id).await.expect("get_by_id").expect("run exists");
        let page = b
            .runs
            .list(&run.tenant, &RunFilter::default(), 100, None)
            .await
            .expect("list");
        let listed = page
            .items
            .into_iter()
            .find(|r| r.id == run.id)
            .expect("the run is listed");
        [by_tenant, by_id, listed]
    }

    case!(finish_stores_the_agent_report, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        assert!(run.report.is_empty(), "a new run has no report");
        let w = worker("a");
        claim(b, &run, &w, MINUTE).await;
        assert!(get(b, &run).await.report.is_empty(), "a running run has no report");
        let report = AgentReport {
            result: Some("Fixed the flaky test — ünïcödé ✓ 修正しました\n\n```diff\n+ok\n```".into()),
            error: Some("API Error: 401 {\"type\":\"error\",\"message\":\"invalid x-api-key\"}".into()),
            usage: Some(Usage {
                input_tokens: Some(12_345),
                cached_input_tokens: Some(10_000),
                output_tokens: Some(678),
                cost_usd: Some(0.0123),
                source: "claude result.total_cost_usd".into(),
            }),
            session_id: Some("4f9c2b1e-5d3a-4e7f-9a8b-0c1d2e3f4a5b".into()),
        };
        let outcome = Outcome::failed(FailureReason::AgentError, Some(0)).with_report(report.clone());
        let done = b
            .runs
            .finish(&run.id, &w, outcome, vec![artifact("result.md", b"Fixed")])
            .await
            .expect("finish");
        assert_eq!(done.report, report);
        assert_eq!(done.failure_reason, Some(FailureReason::AgentError));
        for (how, read) in ["get", "get_by_id", "list"]
            .into_iter()
            .zip(read_back_everywhere(b, &run).await)
        {
            assert_eq!(read.report, report, "{how}");
            assert_eq!(read, done, "{how}");
        }

        // Figures the agent did not report stay unknown; an empty report reads back empty.
        let partial = AgentReport {
            usage: Some(Usage {
                output_tokens: Some(5),
                source: "codex turn.completed.usage".into(),
                ..Usage::default()
            }),
            ..AgentReport::default()
        };
        let run = create(b, &tenant("acme")).await;
        claim(b, &run, &w, MINUTE).await;
        let done = b
            .runs
            .finish(
                &run.id,
                &w,
                Outcome::succeeded().with_report(partial.clone()),
                Vec::new(),
            )
            .await
            .expect("finish");
        assert_eq!(get(b, &run).await.report, partial);
        assert_eq!(get(b, &run).await, done);
        let run = create(b, &tenant("acme")).await;
        claim(b, &run, &w, MINUTE).await;
        b.runs
            .finish(&run.id, &w, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        assert_eq!(get(b, &run).await.report, AgentReport::default());
    });

    case!(finish_stores_an_oversized_report_capped, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        claim(b, &run, &w, MINUTE).await;
        // Multi-byte characters, so a cut at the byte limit would split one.
        let report = AgentReport {
            result: Some("é✓".repeat(RESULT_RECORD_BYTES)),
            error: Some("ü".repeat(ERROR_RECORD_BYTES)),
            usage: None,
            session_id: Some("s".repeat(SESSION_ID_BYTES + 1)),
        };
        let done = b
            .runs
            .finish(
                &run.id,
                &w,
                Outcome::succeeded().with_report(report.clone()),
                Vec::new(),
            )
            .await
            .expect("finish");
        let capped = report.capped();
        assert_ne!(capped, report, "the report is over the caps");
        assert_eq!(done.report, capped);
        let result = done.report.result.as_deref().expect("result kept");
        assert!(result.len() <= RESULT_RECORD_BYTES, "result is {} bytes", result.len());
        assert!(result.starts_with("é✓é✓") && result.ends_with('…'), "cut, and marked");
        let error = done.report.error.as_deref().expect("error kept");
        assert!(error.len() <= ERROR_RECORD_BYTES, "error is {} bytes", error.len());
        assert_eq!(done.report.session_id, None, "an over-long session id is dropped");
        for (how, read) in ["get", "get_by_id", "list"]
            .into_iter()
            .zip(read_back_everywhere(b, &run).await)
        {
            assert_eq!(read.report, capped, "{how}");
        }
    });

    case!(runs_keep_their_idle_timeout, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let run = b
            .runs
            .create(NewRun {
                idle_timeout_secs: Some(42),
                ..new_run(&acme, RunId::generate(), "fake")
            })
            .await
            .expect("create");
        assert_eq!(run.idle_timeout_secs, Some(42));
        for (how, read) in ["get", "get_by_id", "list"]
            .into_iter()
            .zip(read_back_everywhere(b, &run).await)
        {
            assert_eq!(read.idle_timeout_secs, Some(42), "{how}");
            assert_eq!(read, run, "{how}");
        }
        // Kept through the run's life.
        let w = worker("a");
        let claimed = claim(b, &run, &w, MINUTE).await;
        assert_eq!(claimed.idle_timeout_secs, Some(42));
        let done = b
            .runs
            .finish(&run.id, &w, Outcome::idle(None), Vec::new())
            .await
            .expect("finish");
        assert_eq!(
            (done.status, done.failure_reason),
            (RunStatus::TimedOut, Some(FailureReason::Idle))
        );
        assert_eq!(get(b, &run).await.idle_timeout_secs, Some(42));
        // Without one, none is stored (the agent's default applies).
        let plain = create(b, &acme).await;
        assert_eq!(plain.idle_timeout_secs, None);
        assert_eq!(get(b, &plain).await.idle_timeout_secs, None);
    });

    // ---- runs: cancel and fail_unfinished -----------------------------------------------------

    case!(cancel_of_a_queued_run_is_immediate, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let cancelled = b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel");
        assert_eq!(cancelled.status, RunStatus::Cancelled);
        assert_eq!(cancelled.failure_reason, Some(FailureReason::Cancelled));
        assert_near(cancelled.finished_at.expect("finished_at"), Utc::now(), "finished_at");
        assert_eq!((cancelled.attempts, cancelled.started_at), (0, None));
        assert_eq!(get(b, &run).await, cancelled);
        // Asking again changes nothing.
        assert_eq!(
            b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel"),
            cancelled
        );
    });

    case!(cancel_of_a_running_run_sets_the_flag, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        let claimed = claim(b, &run, &w, MINUTE).await;
        let flagged = b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel");
        assert_eq!(flagged.status, RunStatus::Running);
        assert!(flagged.cancel_requested);
        assert_eq!(flagged.finished_at, None);
        assert_eq!(flagged.worker_id, claimed.worker_id);
        assert_eq!(get(b, &run).await, flagged);
        let done = b
            .runs
            .finish(&run.id, &w, Outcome::cancelled(Some(143)), Vec::new())
            .await
            .expect("finish");
        assert_eq!(done.status, RunStatus::Cancelled);
        assert_eq!(done.exit_code, Some(143));
    });

    case!(cancel_of_a_terminal_run_changes_nothing, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let w = worker("a");
        claim(b, &run, &w, MINUTE).await;
        let done = b
            .runs
            .finish(&run.id, &w, Outcome::timed_out(None), Vec::new())
            .await
            .expect("finish");
        let after = b.runs.request_cancel(&run.tenant, &run.id).await.expect("cancel");
        assert_eq!(after, done);
        assert_eq!(get(b, &run).await, done);
    });

    case!(cancel_is_tenant_scoped, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let res = b.runs.request_cancel(&tenant("globex"), &run.id).await;
        assert!(matches!(res, Err(StoreError::NotFound)), "got {res:?}");
        let res = b.runs.request_cancel(&run.tenant, &RunId::generate()).await;
        assert!(matches!(res, Err(StoreError::NotFound)), "got {res:?}");
        assert_eq!(get(b, &run).await, run, "untouched");
    });

    case!(fail_unfinished_rules, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let w = worker("a");

        let queued = create(b, &acme).await;
        let failed = b
            .runs
            .fail_unfinished(&queued.id, FailureReason::EnqueueFailed)
            .await
            .expect("fail queued");
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.failure_reason, Some(FailureReason::EnqueueFailed));
        assert!(failed.finished_at.is_some());
        assert_eq!(get(b, &queued).await, failed);

        let finished = create(b, &acme).await;
        claim(b, &finished, &w, MINUTE).await;
        let done = b
            .runs
            .finish(&finished.id, &w, Outcome::succeeded(), Vec::new())
            .await
            .expect("finish");
        assert_eq!(
            b.runs
                .fail_unfinished(&finished.id, FailureReason::WorkerLost)
                .await
                .expect("fail"),
            done
        );

        let live = create(b, &acme).await;
        let held = claim(b, &live, &w, MINUTE).await;
        assert_eq!(
            b.runs
                .fail_unfinished(&live.id, FailureReason::WorkerLost)
                .await
                .expect("fail"),
            held,
            "a live lease is left alone"
        );

        let lost = create(b, &acme).await;
        claim(b, &lost, &w, ONE_SEC).await;
        tokio::time::sleep(PAST_ONE_SEC).await;
        let failed = b
            .runs
            .fail_unfinished(&lost.id, FailureReason::WorkerLost)
            .await
            .expect("fail expired");
        assert_eq!(failed.status, RunStatus::Failed);
        assert_eq!(failed.failure_reason, Some(FailureReason::WorkerLost));
        assert_eq!(failed.lease_expires_at, None);
        assert!(failed.finished_at.is_some());
        assert_eq!(get(b, &lost).await, failed);

        let res = b
            .runs
            .fail_unfinished(&RunId::generate(), FailureReason::WorkerLost)
            .await;
        assert!(matches!(res, Err(StoreError::NotFound)), "got {res:?}");
    });

    // ---- queue ------------------------------------------------------------------------------------

    case!(queue_send_receive_delete, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        b.queue.send(&message(&run)).await.expect("send");
        let d = receive_one(b, MINUTE, Duration::from_secs(2)).await;
        assert_eq!(d.message, message(&run));
        assert_eq!(d.receive_count, 1);
        assert_depth(
            b,
            QueueDepth {
                visible: 0,
                in_flight: 1,
                dead: 0,
            },
        )
        .await;
        assert_nothing_visible(b, Duration::ZERO).await;
        b.queue.delete(&d.receipt).await.expect("delete");
        assert_depth(b, QueueDepth::default()).await;
        assert!(matches!(
            b.queue.delete(&d.receipt).await,
            Err(QueueError::StaleReceipt)
        ));
        assert_nothing_visible(b, ONE_SEC).await;
    });

    case!(queue_visibility_timeout_redelivers, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        b.queue.send(&message(&run)).await.expect("send");
        let first = receive_one(b, ONE_SEC, Duration::from_secs(2)).await;
        assert_eq!(first.receive_count, 1);
        let second = receive_one(b, MINUTE, Duration::from_secs(5)).await;
        assert_eq!(second.message, message(&run));
        assert_eq!(second.receive_count, 2);
        assert_ne!(second.receipt, first.receipt);
        assert!(matches!(
            b.queue.delete(&first.receipt).await,
            Err(QueueError::StaleReceipt)
        ));
        assert!(matches!(
            b.queue.extend_visibility(&first.receipt, MINUTE).await,
            Err(QueueError::StaleReceipt)
        ));
        b.queue.delete(&second.receipt).await.expect("delete");
        assert_depth(b, QueueDepth::default()).await;
    });

    case!(queue_extend_visibility_keeps_it_hidden, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        b.queue.send(&message(&run)).await.expect("send");
        let d = receive_one(b, ONE_SEC, Duration::from_secs(2)).await;
        b.queue.extend_visibility(&d.receipt, MINUTE).await.expect("extend");
        // Past the first visibility: still hidden.
        assert_nothing_visible(b, Duration::from_secs(2)).await;
        // Zero makes it visible now.
        b.queue
            .extend_visibility(&d.receipt, Duration::ZERO)
            .await
            .expect("release");
        let again = receive_one(b, MINUTE, Duration::from_secs(2)).await;
        assert_eq!(again.message, message(&run));
        assert_eq!(again.receive_count, 2);
        b.queue.delete(&again.receipt).await.expect("delete");
    });

    case!(queue_dead_letters_after_max_receives, |f| async move {
        let fx = f.make(ContractConfig { max_receive_count: 2 }).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let survivor = create(b, &tenant("acme")).await;
        b.queue.send(&message(&run)).await.expect("send");
        let first = receive_one(b, ONE_SEC, Duration::from_secs(2)).await;
        let second = receive_one(b, ONE_SEC, Duration::from_secs(5)).await;
        assert_eq!((first.receive_count, second.receive_count), (1, 2));
        // Received twice: once visible again it goes to the dead letters instead.
        tokio::time::sleep(PAST_ONE_SEC).await;
        b.queue.send(&message(&survivor)).await.expect("send");
        let next = receive_one(b, MINUTE, Duration::from_secs(3)).await;
        assert_eq!(
            next.message,
            message(&survivor),
            "the spent message is not delivered again"
        );
        assert_nothing_visible(b, ONE_SEC).await;
        assert!(matches!(
            b.queue.delete(&second.receipt).await,
            Err(QueueError::StaleReceipt)
        ));
        assert_depth(
            b,
            QueueDepth {
                visible: 0,
                in_flight: 1,
                dead: 1,
            },
        )
        .await;

        let dead = eventually(SETTLE, "a dead letter", || async {
            let got = b.queue.receive_dead_letters(10, MINUTE).await.expect("dead letters");
            (!got.is_empty()).then_some(got)
        })
        .await;
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].message, message(&run));
        assert!(b
            .queue
            .receive_dead_letters(10, MINUTE)
            .await
            .expect("again")
            .is_empty());
        assert!(matches!(
            b.queue.delete_dead_letter(&Receipt("junk".into())).await,
            Err(QueueError::StaleReceipt)
        ));
        b.queue.delete_dead_letter(&dead[0].receipt).await.expect("delete dead");
        b.queue.delete(&next.receipt).await.expect("delete");
        assert_depth(b, QueueDepth::default()).await;
    });

    case!(queue_long_poll_wakes_on_send, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        let queue = b.queue.clone();
        let start = Instant::now();
        let waiter = tokio::spawn(async move { queue.receive(1, MINUTE, Duration::from_secs(15)).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        b.queue.send(&message(&run)).await.expect("send");
        let got = waiter.await.expect("join").expect("receive");
        let waited = start.elapsed();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, message(&run));
        assert!(waited < Duration::from_secs(5), "woke only after {waited:?}");
    });

    case!(queue_long_poll_times_out_empty, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let start = Instant::now();
        let got = b.queue.receive(10, MINUTE, ONE_SEC).await.expect("receive");
        let waited = start.elapsed();
        assert!(got.is_empty());
        assert!(waited >= Duration::from_millis(900), "returned after {waited:?}");
        assert!(waited < Duration::from_secs(5), "returned after {waited:?}");
    });

    case!(queue_receive_respects_the_batch_max, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let acme = tenant("acme");
        let mut sent = HashSet::new();
        for _ in 0..15 {
            let run = create(b, &acme).await;
            b.queue.send(&message(&run)).await.expect("send");
            sent.insert(run.id);
        }
        let first = b
            .queue
            .receive(3, MINUTE, Duration::from_secs(2))
            .await
            .expect("receive");
        assert!((1..=3).contains(&first.len()), "got {}", first.len());
        let mut seen: HashSet<RunId> = first.iter().map(|d| d.message.run_id.clone()).collect();
        for _ in 0..30 {
            if seen.len() == sent.len() {
                break;
            }
            let batch = b
                .queue
                .receive(10, MINUTE, Duration::from_secs(2))
                .await
                .expect("receive");
            assert!(batch.len() <= 10);
            for d in batch {
                assert_eq!(d.receive_count, 1);
                assert!(seen.insert(d.message.run_id), "delivered twice while hidden");
            }
        }
        assert_eq!(seen, sent);
        assert_nothing_visible(b, Duration::ZERO).await;
        assert_depth(
            b,
            QueueDepth {
                visible: 0,
                in_flight: 15,
                dead: 0,
            },
        )
        .await;
    });

    case!(queue_tenants_take_turns, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let (busy, quiet) = (tenant("busy"), tenant("quiet"));
        for _ in 0..6 {
            let run = create(b, &busy).await;
            b.queue.send(&message(&run)).await.expect("send");
        }
        for _ in 0..2 {
            let run = create(b, &quiet).await;
            b.queue.send(&message(&run)).await.expect("send");
        }
        let mut first_four = Vec::new();
        while first_four.len() < 4 {
            let want = 4 - first_four.len();
            let got = b
                .queue
                .receive(want, MINUTE, Duration::from_secs(2))
                .await
                .expect("receive");
            assert!(!got.is_empty(), "backlog must be delivered");
            first_four.extend(got);
        }
        let quiet_count = first_four.iter().filter(|d| d.message.tenant == quiet).count();
        assert_eq!(
            quiet_count, 2,
            "the quiet tenant's messages should not wait behind the busy tenant's backlog"
        );
    });

    case!(queue_depth_counts, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        assert_depth(b, QueueDepth::default()).await;
        for _ in 0..3 {
            let run = create(b, &tenant("acme")).await;
            b.queue.send(&message(&run)).await.expect("send");
        }
        let depth = |visible, in_flight| QueueDepth {
            visible,
            in_flight,
            dead: 0,
        };
        assert_depth(b, depth(3, 0)).await;
        let mut got = Vec::new();
        while got.len() < 2 {
            got.extend(
                b.queue
                    .receive(2 - got.len(), MINUTE, Duration::from_secs(2))
                    .await
                    .expect("receive"),
            );
        }
        assert_depth(b, depth(1, 2)).await;
        b.queue.delete(&got[0].receipt).await.expect("delete");
        assert_depth(b, depth(1, 1)).await;
        b.queue
            .extend_visibility(&got[1].receipt, Duration::ZERO)
            .await
            .expect("release");
        assert_depth(b, depth(2, 0)).await;
    });

    case!(queue_bad_receipts_are_stale, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        for junk in ["junk", "", "1:deadbeef"] {
            let r = Receipt(junk.into());
            assert!(
                matches!(b.queue.delete(&r).await, Err(QueueError::StaleReceipt)),
                "{junk:?}"
            );
            assert!(
                matches!(
                    b.queue.extend_visibility(&r, MINUTE).await,
                    Err(QueueError::StaleReceipt)
                ),
                "{junk:?}"
            );
        }
    });

    case!(queue_trace_context_round_trips, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let traced = TaskMessage {
            trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..message(&create(b, &tenant("acme")).await)
        };
        let plain = message(&create(b, &tenant("acme")).await);
        b.queue.send(&traced).await.expect("send");
        b.queue.send(&plain).await.expect("send");
        let mut got = Vec::new();
        while got.len() < 2 {
            let batch = b
                .queue
                .receive(10, MINUTE, Duration::from_secs(2))
                .await
                .expect("receive");
            assert!(!batch.is_empty());
            got.extend(batch.into_iter().map(|d| d.message));
        }
        got.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        let mut want = vec![traced, plain];
        want.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(got, want);
    });

    // ---- artifacts --------------------------------------------------------------------------------

    case!(artifacts_put_open_and_read_range, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let k = key("acme");
        let content = br#"{"ok":true}"#;
        let (_dir, src) = temp_file(content);
        let a = b
            .artifacts
            .put_file(&k, "summary.json", &src, "application/json")
            .await
            .expect("put");
        assert_eq!(a.name, "summary.json");
        assert_eq!(a.size, content.len() as u64);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(content)));
        assert_eq!(a.content_type, "application/json");

        let (size, content_type, data) = read_all(b, &k, "summary.json").await;
        assert_eq!(
            (size, content_type.as_str(), data.as_slice()),
            (11, "application/json", &content[..])
        );

        let chunk = b
            .artifacts
            .read_range(&k, "summary.json", 2, 4)
            .await
            .expect("range")
            .expect("stored");
        assert_eq!(&chunk.data[..], &content[2..6]);
        assert_eq!((chunk.next_offset, chunk.size), (6, 11));
        let tail = b
            .artifacts
            .read_range(&k, "summary.json", 6, 1_000)
            .await
            .expect("range")
            .expect("stored");
        assert_eq!(&tail.data[..], &content[6..]);
        assert_eq!(tail.next_offset, 11);

        assert!(b.artifacts.open(&k, "missing.txt").await.expect("open").is_none());
        assert!(b
            .artifacts
            .read_range(&k, "missing.txt", 0, 10)
            .await
            .expect("range")
            .is_none());
        assert!(b
            .artifacts
            .open(&key("acme"), "summary.json")
            .await
            .expect("open")
            .is_none());
    });

    case!(artifacts_live_log_then_replaced_by_final_file, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let k = key("acme");
        let log = "output.log";
        b.artifacts.append_log(&k, log, 0, b"hello ").await.expect("append");
        b.artifacts.append_log(&k, log, 6, b"world\n").await.expect("append");
        let all = b
            .artifacts
            .read_range(&k, log, 0, 1 << 20)
            .await
            .expect("read")
            .expect("live");
        assert_eq!(&all.data[..], b"hello world\n");
        assert_eq!((all.next_offset, all.size), (12, 12));
        let part = b
            .artifacts
            .read_range(&k, log, 6, 3)
            .await
            .expect("read")
            .expect("live");
        assert_eq!(&part.data[..], b"wor");
        assert_eq!(part.next_offset, 9);
        // A retried append of bytes already written is fine.
        b.artifacts.append_log(&k, log, 6, b"world\n").await.expect("retry");
        // A gap is not.
        assert!(b.artifacts.append_log(&k, log, 100, b"gap").await.is_err());
        let (size, content_type, data) = read_all(b, &k, log).await;
        assert_eq!((size, data.as_slice()), (12, &b"hello world\n"[..]));
        assert!(
            content_type.starts_with("text/plain"),
            "live log served as {content_type}"
        );

        let (_dir, src) = temp_file(b"final log\n");
        let a = b
            .artifacts
            .put_file(&k, log, &src, "text/plain; charset=utf-8")
            .await
            .expect("put");
        assert_eq!(a.size, 10);
        let (size, content_type, data) = read_all(b, &k, log).await;
        assert_eq!((size, data.as_slice()), (10, &b"final log\n"[..]));
        assert_eq!(content_type, "text/plain; charset=utf-8");
        let chunk = b
            .artifacts
            .read_range(&k, log, 0, 100)
            .await
            .expect("read")
            .expect("final");
        assert_eq!((&chunk.data[..], chunk.size), (&b"final log\n"[..], 10));
    });

    case!(artifacts_bad_names_are_rejected, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let k = key("acme");
        let (_dir, src) = temp_file(b"x");
        let long = "a".repeat(513);
        for bad in [
            "",
            "/etc/passwd",
            "../up",
            "a/../../b",
            "a/./b",
            "a//b",
            "trailing/",
            "a\\b",
            "nul\0byte",
            long.as_str(),
        ] {
            let is_bad = |r: Result<(), ArtifactError>| matches!(r, Err(ArtifactError::BadName(_)));
            assert!(
                is_bad(b.artifacts.put_file(&k, bad, &src, "text/plain").await.map(|_| ())),
                "put {bad:?}"
            );
            assert!(is_bad(b.artifacts.append_log(&k, bad, 0, b"x").await), "append {bad:?}");
            assert!(
                is_bad(b.artifacts.read_range(&k, bad, 0, 1).await.map(|_| ())),
                "read {bad:?}"
            );
            assert!(is_bad(b.artifacts.open(&k, bad).await.map(|_| ())), "open {bad:?}");
        }
        assert!(src.exists(), "a rejected put leaves the source alone");
    });

    case!(artifacts_large_file_is_intact, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let k = key("acme");
        // 5 MiB of xorshift noise (incompressible, no repeating pattern).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let content: Vec<u8> = (0..5 * 1024 * 1024)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 32) as u8
            })
            .collect();
        let (_dir, src) = temp_file(&content);
        let a = b
            .artifacts
            .put_file(&k, "files/big.bin", &src, "application/octet-stream")
            .await
            .expect("put");
        assert_eq!(a.size, content.len() as u64);
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&content)));
        let (size, content_type, data) = read_all(b, &k, "files/big.bin").await;
        assert_eq!(
            (size, content_type.as_str()),
            (content.len() as u64, "application/octet-stream")
        );
        assert!(data == content, "streamed content differs");
        let from = 4 * 1024 * 1024;
        let chunk = b
            .artifacts
            .read_range(&k, "files/big.bin", from as u64, 2 * 1024 * 1024)
            .await
            .expect("read")
            .expect("stored");
        assert!(chunk.data[..] == content[from..], "range differs");
        assert_eq!(chunk.next_offset, content.len() as u64);
    });

    case!(artifacts_are_scoped_per_tenant_and_run, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let k1 = key("acme");
        let k2 = key("acme");
        let k3 = RunKey {
            tenant: tenant("globex"),
            run: k1.run.clone(),
        };
        for (k, text) in [(&k1, "one"), (&k2, "two"), (&k3, "three")] {
            let (_dir, src) = temp_file(text.as_bytes());
            b.artifacts
                .put_file(k, "files/src/main.rs", &src, "text/x-rust")
                .await
                .expect("put");
        }
        for (k, text) in [(&k1, "one"), (&k2, "two"), (&k3, "three")] {
            let (_, content_type, data) = read_all(b, k, "files/src/main.rs").await;
            assert_eq!(
                (content_type.as_str(), data.as_slice()),
                ("text/x-rust", text.as_bytes())
            );
        }
    });

    // ---- keys and workers -------------------------------------------------------------------------

    case!(keys_insert_and_lookup, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let (acme, globex) = (tenant("acme"), tenant("globex"));
        assert!(!b.keys.tenant_has_keys(&acme).await.expect("has keys"));
        let live = CreatedKey::generate(acme.clone(), ApiKeyKind::Live);
        b.keys.insert_key(&live).await.expect("insert");
        assert_eq!(
            b.keys.tenant_for_key_hash(&live.hash).await.expect("lookup"),
            Some(acme.clone())
        );
        assert_eq!(
            b.keys
                .tenant_for_key_hash(&hash_key(live.expose()))
                .await
                .expect("lookup"),
            Some(acme.clone())
        );
        assert!(b.keys.tenant_has_keys(&acme).await.expect("has keys"));
        assert!(!b.keys.tenant_has_keys(&globex).await.expect("has keys"));
        assert_eq!(
            b.keys
                .tenant_for_key_hash(&hash_key("op_live_not-a-key"))
                .await
                .expect("lookup"),
            None
        );

        let test_key = CreatedKey::generate(acme.clone(), ApiKeyKind::Test);
        let other = CreatedKey::generate(globex.clone(), ApiKeyKind::Live);
        b.keys.insert_key(&test_key).await.expect("insert");
        b.keys.insert_key(&other).await.expect("insert");
        assert_eq!(
            b.keys.tenant_for_key_hash(&test_key.hash).await.expect("lookup"),
            Some(acme.clone())
        );
        assert_eq!(
            b.keys.tenant_for_key_hash(&other.hash).await.expect("lookup"),
            Some(globex.clone())
        );
        assert_eq!(
            b.keys.tenant_for_key_hash(&live.hash).await.expect("lookup"),
            Some(acme)
        );
        assert!(b.keys.tenant_has_keys(&globex).await.expect("has keys"));
    });

    // ---- secrets -----------------------------------------------------------------------------------

    fn secret_name(name: &str) -> SecretName {
        name.parse().expect("secret name")
    }

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    case!(secrets_put_get_list_delete, |f| async move {
        let fx = fixture(&f).await;
        let s = &fx.backend.secrets;
        let acme = tenant("acme");
        let key = secret_name("ANTHROPIC_API_KEY");
        assert!(s.get_secret(&acme, &key).await.expect("get").is_none());
        assert!(s.list_secrets(&acme).await.expect("list").is_empty());
        assert!(!s.delete_secret(&acme, &key).await.expect("delete missing"));

        let before = now_ms() - chrono::Duration::seconds(5);
        s.put_secret(&acme, &key, &secret("sk-one")).await.expect("put");
        s.put_secret(&acme, &secret_name("GIT_TOKEN"), &secret("ghp_x"))
            .await
            .expect("put");
        let got = s.get_secret(&acme, &key).await.expect("get").expect("stored");
        assert_eq!(got.expose_secret(), "sk-one");

        // Replacing keeps one entry with the new value; values with any bytes survive.
        let odd = "sk two\n=\"quoted\" ünïcode ${HOME}";
        s.put_secret(&acme, &key, &secret(odd)).await.expect("replace");
        let got = s.get_secret(&acme, &key).await.expect("get").expect("stored");
        assert_eq!(got.expose_secret(), odd);

        let list = s.list_secrets(&acme).await.expect("list");
        let names: Vec<&str> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["ANTHROPIC_API_KEY", "GIT_TOKEN"]);
        for info in &list {
            assert!(
                info.updated_at >= before,
                "updated_at {} is in the past",
                info.updated_at
            );
            assert!(info.updated_at <= Utc::now() + chrono::Duration::seconds(5));
        }

        // Values outside 1..=4096 bytes are refused and change nothing.
        let too_big = "x".repeat(outpost_core::ports::secrets::MAX_SECRET_BYTES + 1);
        assert!(matches!(
            s.put_secret(&acme, &key, &secret(&too_big)).await,
            Err(SecretError::BadValue)
        ));
        assert!(matches!(
            s.put_secret(&acme, &key, &secret("")).await,
            Err(SecretError::BadValue)
        ));
        let got = s.get_secret(&acme, &key).await.expect("get").expect("stored");
        assert_eq!(got.expose_secret(), odd);

        assert!(s.delete_secret(&acme, &key).await.expect("delete"));
        assert!(s.get_secret(&acme, &key).await.expect("get").is_none());
        assert!(!s.delete_secret(&acme, &key).await.expect("delete again"));
        let names: Vec<String> = s
            .list_secrets(&acme)
            .await
            .expect("list")
            .into_iter()
            .map(|i| i.name.to_string())
            .collect();
        assert_eq!(names, ["GIT_TOKEN"]);
    });

    case!(secrets_are_scoped_per_tenant, |f| async move {
        let fx = fixture(&f).await;
        let s = &fx.backend.secrets;
        let (acme, globex, acme2) = (tenant("acme"), tenant("globex"), tenant("acme-2"));
        let key = secret_name("KEY");
        s.put_secret(&acme, &key, &secret("acme-value")).await.expect("put");
        s.put_secret(&acme2, &key, &secret("acme2-value")).await.expect("put");
        assert!(s.get_secret(&globex, &key).await.expect("get").is_none());
        assert!(s.list_secrets(&globex).await.expect("list").is_empty());
        assert!(!s.delete_secret(&globex, &key).await.expect("delete"));
        // A tenant whose name is another's prefix sees only its own.
        assert_eq!(s.list_secrets(&acme).await.expect("list").len(), 1);
        assert_eq!(
            s.get_secret(&acme, &key)
                .await
                .expect("get")
                .expect("stored")
                .expose_secret(),
            "acme-value"
        );
        assert_eq!(
            s.get_secret(&acme2, &key)
                .await
                .expect("get")
                .expect("stored")
                .expose_secret(),
            "acme2-value"
        );
        assert!(s.delete_secret(&acme2, &key).await.expect("delete"));
        assert!(s.get_secret(&acme, &key).await.expect("get").is_some());
    });

    case!(workers_report_list_and_remove, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let now = now_ms();
        let info = |id: &str, busy: u32, last_seen: DateTime<Utc>| WorkerInfo {
            id: worker(id),
            hostname: format!("host-{id}"),
            slots: 4,
            busy,
            started_at: now - Duration::from_secs(3_600),
            last_seen,
            agents: Vec::new(),
        };
        let fresh = info("fresh", 1, now);
        let stale = info("stale", 0, now - Duration::from_secs(600));
        b.workers.report_worker(&fresh).await.expect("report");
        b.workers.report_worker(&stale).await.expect("report");
        let sorted = |mut v: Vec<WorkerInfo>| {
            v.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
            v
        };
        let recent = b.workers.live_workers(now - MINUTE).await.expect("live");
        assert_eq!(recent, vec![fresh.clone()]);
        let all = sorted(
            b.workers
                .live_workers(now - Duration::from_secs(3_600))
                .await
                .expect("live"),
        );
        assert_eq!(all, vec![fresh.clone(), stale.clone()]);

        let busier = info("fresh", 3, now + ONE_SEC);
        b.workers.report_worker(&busier).await.expect("report again");
        assert_eq!(b.workers.live_workers(now - MINUTE).await.expect("live"), vec![busier]);

        b.workers.remove_worker(&fresh.id).await.expect("remove");
        assert!(b.workers.live_workers(now - MINUTE).await.expect("live").is_empty());
        let all = b
            .workers
            .live_workers(now - Duration::from_secs(3_600))
            .await
            .expect("live");
        assert_eq!(all, vec![stale]);
        b.workers
            .remove_worker(&worker("never-seen"))
            .await
            .expect("remove unknown");
    });

    case!(worker_agent_loads_round_trip, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let now = now_ms();
        let load =
            |agent: &str, executor: ExecutorKind, in_flight: u32, available: Option<bool>, detail: Option<&str>| {
                AgentLoad {
                    agent: agent.into(),
                    executor,
                    in_flight,
                    available,
                    detail: detail.map(Into::into),
                }
            };
        let mut info = WorkerInfo {
            id: worker("loaded"),
            hostname: "host-loaded".into(),
            slots: 8,
            busy: 3,
            started_at: now - Duration::from_secs(60),
            last_seen: now,
            agents: vec![
                load("claude", ExecutorKind::Process, 1, Some(true), None),
                load(
                    "claude-ecs",
                    ExecutorKind::Ecs,
                    0,
                    Some(false),
                    Some("task definition INACTIVE ✗"),
                ),
                load(
                    "codex-ssm",
                    ExecutorKind::Ssm,
                    2,
                    Some(true),
                    Some("2 of 3 hosts online"),
                ),
                load("new", ExecutorKind::Ssm, 0, None, None),
            ],
        };
        b.workers.report_worker(&info).await.expect("report");
        assert_eq!(
            b.workers.live_workers(now - MINUTE).await.expect("live"),
            vec![info.clone()]
        );

        // A later report replaces the loads (none left is none, not the old ones).
        info.last_seen = now + ONE_SEC;
        info.agents.truncate(1);
        info.agents[0].in_flight = 0;
        b.workers.report_worker(&info).await.expect("report again");
        assert_eq!(
            b.workers.live_workers(now - MINUTE).await.expect("live"),
            vec![info.clone()]
        );
        info.agents.clear();
        b.workers.report_worker(&info).await.expect("report without loads");
        assert_eq!(
            b.workers.live_workers(now - MINUTE).await.expect("live"),
            vec![info.clone()]
        );

        // What a store keeps is capped (`cap_agent_loads`), never refused.
        info.agents = (0..MAX_AGENT_LOADS + 3)
            .map(|i| {
                load(
                    &format!("a{i}"),
                    ExecutorKind::Ecs,
                    1,
                    Some(true),
                    Some(&"d".repeat(300)),
                )
            })
            .collect();
        b.workers.report_worker(&info).await.expect("report many");
        let kept = b.workers.live_workers(now - MINUTE).await.expect("live");
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].agents, cap_agent_loads(&info.agents));
        assert_eq!(kept[0].agents.len(), MAX_AGENT_LOADS);
    });

    // ---- the whole path of one run ------------------------------------------------------------------

    case!(dispatch_to_finish_flow, |f| async move {
        let fx = fixture(&f).await;
        let b = &fx.backend;
        let run = create(b, &tenant("acme")).await;
        b.queue.send(&message(&run)).await.expect("send");
        let d = receive_one(b, MINUTE, Duration::from_secs(2)).await;
        let w = worker("a");
        let claimed = match b.runs.claim(&d.message.run_id, &w, MINUTE, 3).await.expect("claim") {
            ClaimOutcome::Claimed(r) => r,
            other => panic!("expected Claimed, got {other:?}"),
        };
        b.queue.extend_visibility(&d.receipt, MINUTE).await.expect("extend");
        b.runs.heartbeat(&claimed.id, &w, MINUTE).await.expect("heartbeat");
        let k = RunKey {
            tenant: claimed.tenant.clone(),
            run: claimed.id.clone(),
        };
        b.artifacts
            .append_log(&k, "output.log", 0, b"working\n")
            .await
            .expect("log");
        let (_dir, src) = temp_file(b"working\ndone\n");
        let log = b
            .artifacts
            .put_file(&k, "output.log", &src, "text/plain; charset=utf-8")
            .await
            .expect("put");
        let done = b
            .runs
            .finish(&claimed.id, &w, Outcome::succeeded(), vec![log.clone()])
            .await
            .expect("finish");
        b.queue.delete(&d.receipt).await.expect("ack");
        assert_eq!(done.status, RunStatus::Succeeded);
        assert_eq!(done.artifacts, vec![log]);
        assert_eq!(b.runs.count_running().await.expect("count"), 0);
        assert_depth(b, QueueDepth::default()).await;
    });
}
