//! One run, top to bottom. Every delivery of a run message goes through these steps, in this
//! order, whichever [`Executor`] runs the agent:
//!
//! 1. **Claim** ([`crate::lease`]): claim the run under a lease. A duplicate of a finished run, a
//!    run out of attempts, a run held by another worker or a missing run stops here (one
//!    conditional write, then the message is deleted or hidden).
//! 2. **Prepare** ([`prepare`]): the run's own agent uid when the worker is root
//!    ([`crate::sandbox::uids`], held until its processes are swept), the run's folders
//!    `{work_dir}/{run_id}/` given to it (a pooled empty tree for runs without a repository,
//!    [`crate::dirpool`]), the private output spool, the tenant's
//!    secrets (cached, [`crate::tenant_secrets`]) and the values to scrub, the clone of the
//!    repository and its base commit, the agent's HOME files, the run's egress proxy
//!    ([`crate::egress`], closed after step 3; its refusals become notes and its counts go to
//!    `summary.json`) and the agent's environment. Without a
//!    repository this is a handful of syscalls; a clone costs what git costs, within the run's
//!    timeout.
//! 3. **Run the agent** ([`Executor::run`]): start it confined ([`crate::sandbox`]), supervise
//!    (timeout, idle timeout, the output, disk and CPU caps, cancel or abandon through the
//!    [`StopSignal`]), stop. Meanwhile heartbeats extend the lease and the
//!    message's visibility every `lease / 3` and turn a cancel request, a lost lease or the
//!    drain's kill into a stop ([`crate::lease`]). An entry with `executor = "ecs" | "ssm"` on a
//!    worker that has that executor runs elsewhere instead ([`RemoteRuns`], `remote.rs`): the
//!    remote entrypoint does steps 2–4 there, and the outcome and manifest come from its
//!    `summary.json`; without one, step 4 here stores the live log and the notes.
//! 4. **Finalize** ([`finalize`]): read the agent's report from its output and judge the outcome,
//!    then, artifact-first: the diff and the created files, scrubbed, uploaded with `result.md`,
//!    `output.log` (with the worker's notes) and `summary.json`, the manifest in
//!    [`manifest_rank`](outpost_core::domain::run_files::manifest_rank) order. One put per
//!    artifact; with no repository and no files, two (the log and the summary), besides the
//!    live log's appends while the agent ran.
//! 5. **Finish** ([`crate::lease`]): record the outcome and the manifest (retried on transient
//!    errors), which frees the run's slot.
//! 6. **Ack**: delete the message (beside the next run; a lost delete only makes a duplicate that
//!    step 1 drops).
//!
//! A run stopped by [`Stop::Abandon`] (lost lease, drain timeout) skips 4–6: nothing is stored,
//! and unless the lease was lost the run is released at once for another attempt.

pub mod finalize;
mod prepare;
mod remote;

use crate::artifacts::Limits;
use crate::dirpool::DirPool;
use crate::egress::{Egress, EgressConfig};
use crate::executor::{stop_channel, AgentExit, AgentJob, Ended, Executor, Limit, Stop, StopSignal};
use crate::lease;
use crate::output::{LiveLog, PumpReport};
use crate::scrub::{Scrubber, Secrets};
use crate::tenant_secrets::TenantSecrets;
use crate::workspace::{self, RunDirs};
use crate::{agent_output, identity, WorkerConfig};
use outpost_core::domain::{
    AgentRegistry, AgentReport, Artifact, FailureReason, Outcome, Run, TerminalStatus, WorkerId,
};
use outpost_core::ports::{ArtifactStore, Backend, Delivery, RunKey};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

pub use prepare::EnvLookup;
pub use remote::{sweep_loop, RemoteOutcome, RemoteRuns};

/// Most empty run trees kept for reuse.
const MAX_IDLE_TREES: usize = 256;

/// What every delivery task shares.
pub struct Shared {
    pub backend: Backend,
    pub pipeline: RunPipeline,
    pub worker: WorkerId,
    pub config: WorkerConfig,
    /// Becomes `true` when a draining worker runs out of time: in-flight runs are killed and
    /// released.
    pub kill_all: watch::Receiver<bool>,
    /// Runs in flight per agent and executor, for the worker's presence reports.
    pub loads: Arc<crate::presence::Loads>,
}

/// Handles one delivery to the end (steps 1–6 above). Never panics on bad data; on errors the
/// message is either deleted (nothing left to do) or left to come back.
pub async fn handle_delivery(shared: Arc<Shared>, delivery: Delivery) {
    let run_id = delivery.message.run_id.clone();
    let span = tracing::info_span!("run", run_id = %run_id, receive_count = delivery.receive_count);
    async move {
        // 1. Claim.
        let Some(run) = lease::claim(&shared, &delivery).await else {
            return;
        };
        tracing::debug!(attempt = run.attempts, agent = %run.agent, "run claimed");
        // Counted in this worker's fleet report until the run is handled.
        let executor = shared
            .pipeline
            .agents
            .get(&run.agent)
            .map_or(outpost_core::domain::ExecutorKind::Process, |a| a.executor);
        let _load = shared.loads.start(&run.agent, executor);
        // 2–4. Prepare, run the agent, finalize: under heartbeats.
        let (stop, signal) = stop_channel();
        let (execution, lease_lost) = lease::with_heartbeats(
            &shared,
            &run.id,
            &delivery.receipt,
            &stop,
            shared.pipeline.run(&run, signal),
        )
        .await;
        match execution {
            // 5–6. Finish, then ack.
            Execution::Finished { outcome, artifacts } => {
                lease::finish(&shared, &run.id, &delivery.receipt, outcome, artifacts).await;
            }
            Execution::Abandoned if lease_lost => tracing::warn!("run abandoned: this worker lost its lease"),
            Execution::Abandoned => lease::release(&shared, &run.id, &delivery.receipt).await,
        }
    }
    .instrument(span)
    .await
}

/// How steps 2–4 of a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Execution {
    /// The run reached a final outcome; every artifact in the manifest is stored.
    Finished { outcome: Outcome, artifacts: Vec<Artifact> },
    /// Stopped on [`Stop::Abandon`]: the agent is killed and nothing is reported.
    Abandoned,
}

/// Settings of the run pipeline.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Runs get `{work_dir}/{run_id}/`.
    pub work_dir: PathBuf,
    /// Caps on `files/...` artifacts.
    pub limits: Limits,
    /// Stream output to the store's live log while the agent runs.
    pub live_log: bool,
    /// The worker's own ports (its API, a database) that runs' egress proxies refuse on every
    /// address, besides the address classes they always refuse.
    pub refuse_ports: Vec<u16>,
}

impl PipelineConfig {
    pub fn new(work_dir: PathBuf) -> Self {
        Self {
            work_dir,
            limits: Limits::default(),
            live_log: true,
            refuse_ports: Vec::new(),
        }
    }
}

/// Steps 2–4 of every run: prepares it, has the executor run its agent, stores its artifacts.
pub struct RunPipeline {
    store: Arc<dyn ArtifactStore>,
    agents: Arc<AgentRegistry>,
    executor: Arc<dyn Executor>,
    config: PipelineConfig,
    pool: DirPool,
    env: EnvLookup,
    /// The tenants' own secrets, given to their agents; `None` gives agents only `env`'s values.
    tenant_secrets: Option<Arc<TenantSecrets>>,
    /// The runs' egress proxies (made on first use with the default settings unless given).
    egress: std::sync::OnceLock<Result<Arc<Egress>, String>>,
    /// The remote executors (ECS, SSM) this worker has, if any.
    remote: Option<Arc<dyn RemoteRuns>>,
}

impl RunPipeline {
    pub fn new(
        store: Arc<dyn ArtifactStore>,
        agents: Arc<AgentRegistry>,
        executor: Arc<dyn Executor>,
        config: PipelineConfig,
    ) -> Self {
        let pool = DirPool::new(&config.work_dir, MAX_IDLE_TREES);
        if executor.agent_user().is_some() {
            // Agents pass through the work dir to their own run but never list the other runs.
            let made =
                std::fs::create_dir_all(&config.work_dir).and_then(|()| identity::pass_through_only(&config.work_dir));
            if let Err(e) = made {
                tracing::warn!(path = %config.work_dir.display(), error = %e, "cannot make the work dir pass-through only");
            }
        }
        Self {
            store,
            agents,
            executor,
            config,
            pool,
            env: Arc::new(|name: &str| std::env::var_os(name)),
            tenant_secrets: None,
            egress: std::sync::OnceLock::new(),
            remote: None,
        }
    }

    /// Runs' egress proxies go through `egress` (its upstream CAs and fixed addresses), or, when
    /// the configured one could not be made, runs that need a proxy fail and
    /// [`egress_ready`](Self::egress_ready) says why.
    pub fn with_egress_result(self, egress: Result<Arc<Egress>, String>) -> Self {
        let _ = self.egress.set(egress);
        self
    }

    /// `Ok` when runs' egress proxies can be opened.
    pub fn egress_ready(&self) -> Result<(), String> {
        self.egress().map(|_| ()).map_err(str::to_owned)
    }

    /// The egress proxy service, made with the defaults on first use.
    fn egress(&self) -> Result<&Arc<Egress>, &str> {
        self.egress
            .get_or_init(|| {
                Egress::new(EgressConfig::default())
                    .map(Arc::new)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(String::as_str)
    }

    /// Gives each run's agent its tenant's secrets as environment variables (see
    /// [`crate::tenant_secrets`]).
    pub fn with_tenant_secrets(mut self, secrets: Arc<TenantSecrets>) -> Self {
        self.tenant_secrets = Some(secrets);
        self
    }

    /// Takes the agents' key and pass-through variables from `lookup` instead of the worker's
    /// environment.
    pub fn with_env_lookup(mut self, lookup: EnvLookup) -> Self {
        self.env = lookup;
        self
    }

    /// Runs entries of the executors `remote` has there instead of refusing them.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteRuns>) -> Self {
        self.remote = Some(remote);
        self
    }

    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// Runs steps 2–4 of `run` until it ends, `stop` asks it to, or its timeout passes. Never
    /// panics on bad data: every failure is a `Finished` outcome with a failure reason.
    pub async fn run(&self, run: &Run, mut stop: StopSignal) -> Execution {
        let span = tracing::debug_span!("execute", run_id = %run.id, agent = %run.agent);
        async {
            // 2. Prepare: the run's folders first (given back below, whatever happens)...
            let dirs = RunDirs::new(&self.config.work_dir, run.id.as_str());
            if run.attempts > 1 {
                let stopped = self.executor.stop_leftovers(&dirs).await;
                if stopped > 0 {
                    tracing::warn!(groups = stopped, "stopped agents left running by an earlier attempt");
                }
            }
            // The run's own agent user (held until its agent is over and swept); a remote run
            // has none here.
            let remote = self.runs_remotely(run);
            let lease = match if remote { Ok(None) } else { self.executor.acquire_user() } {
                Ok(l) => l,
                Err(why) => {
                    tracing::error!(%why, "no agent user for the run");
                    return Execution::Finished {
                        outcome: Outcome::failed(FailureReason::SandboxUnavailable, None),
                        artifacts: Vec::new(),
                    };
                }
            };
            let user = lease.as_ref().map(crate::sandbox::uids::UidLease::user);
            // A repository run's `ws` is made by the clone; others get a pooled empty tree.
            let with_ws = run.repo.is_none();
            if let Err(e) = self.pool.acquire(&dirs, with_ws, user) {
                tracing::error!(path = %dirs.root.display(), error = %e, "cannot create the run directory");
                workspace::remove_run_dir(&dirs.root);
                return Execution::Finished {
                    outcome: Outcome::failed(FailureReason::WorkspaceFailed, None),
                    artifacts: Vec::new(),
                };
            }
            let result = self.run_in(run, &mut stop, &dirs, user).await;
            drop(lease);
            if with_ws {
                self.pool.release(&dirs);
            } else {
                // A clone can be large: remove it off the async threads.
                let root = dirs.root.clone();
                let _ = tokio::task::spawn_blocking(move || workspace::remove_run_dir(&root)).await;
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn run_in(
        &self,
        run: &Run,
        stop: &mut StopSignal,
        dirs: &RunDirs,
        user: Option<identity::AgentUser>,
    ) -> Execution {
        // 2. ...then the spool, secrets, clone, HOME and environment.
        let (mut attempt, mut launch) = match self.prepare(run, dirs, stop, user).await {
            prepare::Prepared::Ready(attempt, launch) => (attempt, launch),
            prepare::Prepared::Ended(attempt, outcome) => return self.finalize(attempt, outcome).await,
            prepare::Prepared::Remote(attempt, agent) => return self.run_remote(attempt, &agent, stop).await,
            prepare::Prepared::Abandoned => return Execution::Abandoned,
            prepare::Prepared::Unrecorded(outcome) => {
                return Execution::Finished {
                    outcome,
                    artifacts: Vec::new(),
                }
            }
        };
        // 3. Run the agent.
        let live = self.config.live_log.then(|| LiveLog {
            store: Arc::clone(&self.store),
            key: run_key(run),
        });
        let job = AgentJob {
            run,
            dirs,
            program: &launch.program,
            args: &launch.args,
            env: &launch.env,
            output: &mut attempt.spool,
            secrets: &attempt.notes.secrets,
            live,
            deadline: launch.deadline,
            idle: launch.idle_secs.map(|s| std::time::Duration::from_secs(u64::from(s))),
            user,
            sandbox: launch.sandbox,
            egress: launch.egress.as_ref().map(|e| &e.port),
        };
        let exit = self.executor.run(job, stop).await;
        // The agent is gone: close its proxy, its refusals become notes.
        if let Some(open) = launch.egress.take() {
            let report = open.proxy.close().await;
            for line in &report.refusals {
                attempt.notes.push(line);
            }
            attempt.egress = Some(report.record);
        }
        // 4. Finalize: how it ended, then the artifacts.
        let Some(outcome) = outcome_of(exit, &launch, &mut attempt).await else {
            tracing::info!("agent stopped: run abandoned");
            return Execution::Abandoned;
        };
        self.finalize(attempt, outcome).await
    }

    async fn finalize(&self, attempt: Attempt<'_>, outcome: Outcome) -> Execution {
        finalize::finalize(&*self.store, self.config.limits, attempt, outcome).await
    }
}

/// What step 2 resolved for step 3.
struct Launch {
    program: String,
    args: Vec<String>,
    env: crate::executor::AgentEnv,
    deadline: Instant,
    timeout_secs: u32,
    idle_secs: Option<u32>,
    output_reader: outpost_core::domain::OutputReader,
    sandbox: crate::executor::SandboxAsk,
    /// The run's egress proxy, open while the agent runs.
    egress: Option<prepare::OpenProxy>,
}

/// The state of one attempt of a run on its way to [`finalize`].
pub(crate) struct Attempt<'a> {
    pub run: &'a Run,
    pub dirs: &'a RunDirs,
    /// The output spool, open for appending the worker's notes.
    pub spool: File,
    pub notes: Notes,
    /// The commit the agent started from (repository runs with at least one commit).
    pub base: Option<String>,
    /// Whether `ws` holds a workspace worth collecting from.
    pub ws_ready: bool,
    pub pump: PumpReport,
    pub started: Instant,
    /// The agent CLI's own files in the workspace (never its change).
    pub ignore: Vec<String>,
    /// How the agent was confined (once it started).
    pub sandbox: Option<outpost_core::domain::SandboxRecord>,
    /// What went through the run's egress proxy (once it closed).
    pub egress: Option<outpost_core::domain::EgressRecord>,
}

/// Messages of the worker about a run, scrubbed, for output.log and summary.json.
pub(crate) struct Notes {
    pub secrets: Secrets,
    pub list: Vec<String>,
}

impl Notes {
    pub fn new(secrets: Secrets) -> Self {
        Self {
            secrets,
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, msg: impl AsRef<str>) {
        let mut s = Scrubber::new(self.secrets.clone());
        let mut out = Vec::new();
        let mut clean = s.push(msg.as_ref().as_bytes(), &mut out).to_vec();
        clean.extend_from_slice(&s.finish());
        self.list.push(String::from_utf8_lossy(&clean).into_owned());
    }
}

/// The outcome of a run whose agent the executor ran (`None`: abandoned), with the notes that
/// explain it, judged with the agent's report (read from the spool as the pump wrote it, before
/// the notes).
async fn outcome_of(exit: AgentExit, launch: &Launch, a: &mut Attempt<'_>) -> Option<Outcome> {
    let (ended, output) = match exit {
        AgentExit::NotStarted(why) => {
            a.notes.push(why);
            return Some(Outcome::failed(FailureReason::SpawnFailed, None));
        }
        AgentExit::Refused(why) => {
            a.notes.push(format!("sandbox unavailable: {why}"));
            return Some(Outcome::failed(FailureReason::SandboxUnavailable, None));
        }
        AgentExit::Ran { ended, output, sandbox } => {
            if let Some(s) = &sandbox {
                for gap in &s.not_enforced {
                    a.notes.push(format!("sandbox ({}): not enforced: {gap}", s.mode));
                }
            }
            a.sandbox = sandbox;
            (ended, output)
        }
    };
    match output {
        Some(r) => {
            if let Some(e) = &r.error {
                a.notes.push(format!("output.log is incomplete: {e}"));
            }
            a.pump = r;
        }
        None => a
            .notes
            .push("output.log may be incomplete: a process that left the agent's process group kept its output open"),
    }
    let outcome = match ended {
        Ended::Exited(Some(code)) => Outcome::from_exit_code(code),
        Ended::Exited(None) => {
            a.notes.push("the agent's exit status could not be read");
            Outcome::failed(FailureReason::NonZeroExit, None)
        }
        Ended::TimedOut(code) => {
            a.notes.push(format!(
                "timed out after {} s; the agent was stopped",
                launch.timeout_secs
            ));
            Outcome::timed_out(code)
        }
        Ended::Idle(code) => {
            a.notes.push(format!(
                "no output for {} s (idle timeout); the agent was stopped",
                launch.idle_secs.unwrap_or_default()
            ));
            Outcome::idle(code)
        }
        Ended::Limit(limit, code) => {
            a.notes.push(match limit {
                Limit::Memory => "the run went over its memory limit (memory_mb); the kernel killed the agent".to_owned(),
                Limit::Disk => "the workspace and HOME went over the run's disk limit (disk_mb); the agent was stopped".to_owned(),
                Limit::Output => "the agent printed more than the run's output limit (output_mb); output.log is cut there and the agent was stopped".to_owned(),
                Limit::Cpu => "the run used up its CPU seconds (cpu_secs); the agent was stopped".to_owned(),
            });
            Outcome::failed(limit.reason(), code)
        }
        Ended::Stopped(Stop::Abandon, _) => return None,
        Ended::Stopped(_, code) => {
            a.notes.push("cancelled on request; the agent was stopped");
            Outcome::cancelled(code)
        }
    };
    let reader = launch.output_reader;
    let spool_path = a.dirs.spool.clone();
    let report = tokio::task::spawn_blocking(move || agent_output::read_spool(reader, &spool_path))
        .await
        .unwrap_or_default();
    Some(judge(outcome, report, &mut a.notes))
}

/// The outcome once the agent's own report is known: an agent that reported a failure failed
/// (`agent_error`) even when it exited 0; stops by timeout, idle timeout or cancel stay as they
/// are. The report travels with the outcome (the store keeps a capped copy).
fn judge(outcome: Outcome, report: AgentReport, notes: &mut Notes) -> Outcome {
    let ran_to_end = outcome.status == TerminalStatus::Succeeded || outcome.reason == Some(FailureReason::NonZeroExit);
    let outcome = match &report.error {
        Some(err) if ran_to_end => {
            notes.push(format!("the agent reported a failure: {err}"));
            Outcome::failed(FailureReason::AgentError, outcome.exit_code)
        }
        _ => outcome,
    };
    outcome.with_report(report)
}

/// Where a run's artifacts go in the store.
pub(crate) fn run_key(run: &Run) -> RunKey {
    RunKey {
        tenant: run.tenant.clone(),
        run: run.id.clone(),
    }
}

#[cfg(test)]
mod tests;
