//! The worker's side of a remote run ([`Dispatcher`], the AWS [`RemoteRuns`]): stage the spec,
//! start the execution (or adopt the one the run records), record it on the run, watch it,
//! stop it on cancel or past its deadline, then read the outcome and manifest from the
//! `summary.json` the entrypoint stored. Never from what the task or command printed.
//!
//! One attempt, in order:
//! 1. **Adopt or start.** `run.remote` of the same executor (an earlier attempt's worker died or
//!    released the run): watch that one, start nothing. Otherwise: two POST policies for the
//!    run's prefixes (`runs/…`, `live/…`) signed with the worker's credentials, living the run's
//!    timeout plus [`DispatchConfig::start_slack`]; the spec staged at `specs/…` with a GET URL
//!    living [`SPEC_URL_TTL`]; the launcher's `start` (idempotent per attempt, its own bounded
//!    retries on capacity and throttling); then [`RunStore::set_remote`] (one conditional
//!    write). A launcher that gave up fails the run `executor_unavailable`; an API error
//!    releases it for a later attempt; a lost lease stops the task just started (no one would
//!    watch it) and abandons.
//! 2. **Watch.** The launcher's `wait` (ECS: one batched `DescribeTasks` per poll for every run
//!    of the worker). A cancel calls `stop` and waits up to [`DispatchConfig::stop_grace`] for
//!    the entrypoint to store what it has; so does the deadline (timeout + slack: the
//!    entrypoint enforces the run's timeout itself, this is the backstop). An abandon (drain,
//!    lost lease) leaves the execution running: the run keeps it in `remote`, and the next
//!    attempt adopts it.
//! 3. **Collect.** `summary.json` read through the worker's own store (a few tries): its outcome
//!    and manifest (each name checked) plus its own entry. Without one, the run is lost:
//!    `executor_lost` (or `cancelled` / `timed_out` when the worker stopped it, or the executor
//!    did for running too long) with notes saying what the executor reported, and the pipeline
//!    stores the live log so far and the notes.
//!
//! Cost per run, besides the launcher's requests: one PutObject (the spec), one conditional
//! write (`set_remote`), one GetObject (`summary.json`); signing is local.

use super::spec::{RunSpec, SecretsFrom, SPEC_URL_TTL, SPEC_VERSION};
use crate::executor::{Stop, StopSignal};
use crate::pipeline::{RemoteOutcome, RemoteRuns};
use async_trait::async_trait;
use outpost_aws::s3::post::{live_prefix, run_prefix, sdk_credentials};
use outpost_aws::s3::S3ArtifactStore;
use outpost_core::domain::run_files::{Summary, SUMMARY_JSON, SUMMARY_JSON_TYPE};
use outpost_core::domain::{
    AgentSpec, Artifact, EntrypointExit, ExecutorKind, FailureReason, Outcome, RemoteTask, Run, WorkerId,
};
use outpost_core::ports::artifacts::check_artifact_name;
use outpost_core::ports::{
    ArtifactStore, EndHow, LaunchError, LaunchRequest, RemoteEnd, RemoteLauncher, RunKey, RunStore,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest `summary.json` read back.
const MAX_SUMMARY_BYTES: u64 = 4 * 1024 * 1024;
/// Most manifest entries taken from one `summary.json`.
const MAX_MANIFEST: usize = 10_000;
/// Reads of `summary.json` before a run without one is called lost.
const SUMMARY_TRIES: u32 = 3;
/// Largest object one POST policy admits (S3's limit for a POST).
const MAX_POST_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// Settings of remote runs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Added to a run's timeout for the executor's start (Fargate provisioning, image pull) and
    /// the entrypoint's uploads: the POST policies' lifetime and the worker's deadline.
    pub start_slack: Duration,
    /// After a stop, how long the entrypoint gets to store what it has before the run is lost.
    pub stop_grace: Duration,
    /// Parameter Store prefix of tenants' secrets (SSM hosts read their run's keys there).
    pub secrets_prefix: String,
    /// How often the reconciliation sweep looks for orphaned executions.
    pub sweep_interval: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            start_slack: Duration::from_secs(10 * 60),
            stop_grace: Duration::from_secs(2 * 60),
            secrets_prefix: outpost_aws::DEFAULT_SECRETS_PREFIX.to_owned(),
            sweep_interval: Duration::from_secs(5 * 60),
        }
    }
}

/// Runs remote agents for one worker (see the module docs).
pub struct Dispatcher {
    launchers: Vec<Arc<dyn RemoteLauncher>>,
    /// The artifacts bucket, for staging specs and signing POST policies.
    s3: S3ArtifactStore,
    /// The worker's SDK configuration, whose credentials sign the POST policies.
    sdk: aws_config::SdkConfig,
    runs: Arc<dyn RunStore>,
    artifacts: Arc<dyn ArtifactStore>,
    worker: WorkerId,
    config: DispatchConfig,
}

/// Why step 1 did not yield an execution to watch.
enum NotStarted {
    /// The run fails `executor_unavailable` with this note.
    Unavailable(String),
    /// Release the run for a later attempt.
    Release,
}

impl Dispatcher {
    pub fn new(
        launchers: Vec<Arc<dyn RemoteLauncher>>,
        s3: S3ArtifactStore,
        sdk: aws_config::SdkConfig,
        runs: Arc<dyn RunStore>,
        artifacts: Arc<dyn ArtifactStore>,
        worker: WorkerId,
        config: DispatchConfig,
    ) -> Self {
        Self {
            launchers,
            s3,
            sdk,
            runs,
            artifacts,
            worker,
            config,
        }
    }

    /// The executors this dispatcher has.
    pub fn kinds(&self) -> Vec<ExecutorKind> {
        self.launchers.iter().map(|l| l.kind()).collect()
    }

    /// The launcher of `kind`.
    pub fn launcher(&self, kind: ExecutorKind) -> Option<&Arc<dyn RemoteLauncher>> {
        self.launchers.iter().find(|l| l.kind() == kind)
    }

    /// The run's timeout (its own, else the entry's default).
    fn timeout(run: &Run, agent: &AgentSpec) -> Duration {
        Duration::from_secs(u64::from(agent.timeout_secs_for(run)))
    }

    /// Step 1 for a run with no execution to adopt.
    async fn start(
        &self,
        launcher: &dyn RemoteLauncher,
        run: &Run,
        agent: &AgentSpec,
    ) -> Result<RemoteTask, NotStarted> {
        let key = crate::pipeline::run_key(run);
        let lifetime = Self::timeout(run, agent) + self.config.start_slack;
        let spec_url = self.stage(run, agent, &key, lifetime).await.map_err(|e| {
            tracing::warn!(error = %e, "staging the run spec failed; releasing the run");
            NotStarted::Release
        })?;
        let request = LaunchRequest {
            run,
            agent,
            spec_url: &spec_url,
            max_duration: lifetime,
        };
        let task = match launcher.start(request).await {
            Ok(t) => t,
            Err(LaunchError::Unavailable(why)) => return Err(NotStarted::Unavailable(why)),
            Err(e) => {
                tracing::warn!(error = %e, "starting the remote execution failed; releasing the run");
                return Err(NotStarted::Release);
            }
        };
        match self.runs.set_remote(&run.id, &self.worker, &task).await {
            Ok(()) => Ok(task),
            Err(e) => {
                // Nobody would watch it: stop it now (a later attempt starts its own).
                tracing::warn!(error = %e, task = %task.id, "recording the remote execution failed; stopping it");
                if let Err(e) = launcher.stop(&task, "outpost: the run's lease was lost").await {
                    tracing::warn!(error = %e, "stopping the unrecorded execution failed");
                }
                Err(NotStarted::Release)
            }
        }
    }

    /// Step 1 for a run that records no execution: a later attempt first asks the executor for
    /// one started for the run whose record was lost with its worker (one request), and adopts
    /// it; otherwise it starts one.
    async fn found_or_start(
        &self,
        launcher: &dyn RemoteLauncher,
        run: &Run,
        agent: &AgentSpec,
        notes: &mut Vec<String>,
    ) -> Result<RemoteTask, NotStarted> {
        if run.attempts > 1 {
            match launcher.find(run).await {
                Ok(Some(task)) => {
                    if let Err(e) = self.runs.set_remote(&run.id, &self.worker, &task).await {
                        tracing::warn!(error = %e, "recording the found execution failed; releasing the run");
                        return Err(NotStarted::Release);
                    }
                    tracing::info!(task = %task.id, "adopting an unrecorded execution of the run");
                    notes.push(format!(
                        "attempt {} adopted the {} execution {}, which an earlier attempt started but did not record",
                        run.attempts, task.executor, task.id
                    ));
                    return Ok(task);
                }
                Ok(None) => {}
                Err(e) => {
                    // Starting now could run the agent twice: try again later.
                    tracing::warn!(error = %e, "looking for the run's execution failed; releasing the run");
                    return Err(NotStarted::Release);
                }
            }
        }
        self.start(launcher, run, agent).await
    }

    /// Signs the run's POST policies and stages its spec; returns the spec's GET URL.
    async fn stage(&self, run: &Run, agent: &AgentSpec, key: &RunKey, lifetime: Duration) -> Result<String, String> {
        let credentials = sdk_credentials(&self.sdk).await.map_err(|e| e.to_string())?;
        let artifacts = self
            .s3
            .presign_post(&credentials, &run_prefix(key), lifetime, MAX_POST_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let live = self
            .s3
            .presign_post(&credentials, &live_prefix(key), lifetime, MAX_POST_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let secrets = match agent.executor {
            ExecutorKind::Ssm => SecretsFrom::Ssm {
                prefix: self.config.secrets_prefix.clone(),
            },
            _ => SecretsFrom::Env,
        };
        let spec = RunSpec {
            version: SPEC_VERSION,
            run: run.clone(),
            agent: agent.clone(),
            artifacts,
            live,
            secrets,
        };
        let body = serde_json::to_vec(&spec).map_err(|e| e.to_string())?;
        self.s3
            .stage_spec(key, run.attempts, body, SPEC_URL_TTL)
            .await
            .map_err(|e| e.to_string())
    }

    /// Step 2: the end of `task` (`None`: abandoned), and which stop the worker asked for.
    async fn watch(
        &self,
        launcher: &dyn RemoteLauncher,
        task: &RemoteTask,
        deadline: Instant,
        stop: &mut StopSignal,
    ) -> Option<(Result<RemoteEnd, LaunchError>, Option<Asked>)> {
        let wait = launcher.wait(task);
        tokio::pin!(wait);
        let asked = tokio::select! {
            end = &mut wait => return Some((end, None)),
            s = stop.requested() => match s {
                Stop::Abandon => return None,
                _ => Asked::Cancel,
            },
            () = tokio::time::sleep_until(deadline) => Asked::Deadline,
        };
        let reason = match asked {
            Asked::Cancel => "outpost: cancelled on request",
            Asked::Deadline => "outpost: the run's deadline passed",
        };
        if let Err(e) = launcher.stop(task, reason).await {
            tracing::warn!(error = %e, "stopping the remote execution failed");
        }
        let end = match tokio::time::timeout(self.config.stop_grace, &mut wait).await {
            Ok(end) => end,
            Err(_) => Err(LaunchError::Api(format!(
                "it did not end within {} s of the stop",
                self.config.stop_grace.as_secs()
            ))),
        };
        Some((end, Some(asked)))
    }

    /// Step 3: `summary.json` and its manifest, when the entrypoint stored one.
    async fn read_summary(&self, key: &RunKey) -> Result<Option<(Summary, Artifact)>, String> {
        let mut last = String::new();
        for attempt in 0..SUMMARY_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            match self.artifacts.read_range(key, SUMMARY_JSON, 0, MAX_SUMMARY_BYTES).await {
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) if chunk.size > MAX_SUMMARY_BYTES => {
                    return Err(format!("summary.json is larger than {MAX_SUMMARY_BYTES} bytes"))
                }
                Ok(Some(chunk)) => {
                    let summary: Summary =
                        serde_json::from_slice(&chunk.data).map_err(|e| format!("summary.json does not parse: {e}"))?;
                    let entry = Artifact {
                        name: SUMMARY_JSON.to_owned(),
                        size: chunk.data.len() as u64,
                        sha256: hex::encode(Sha256::digest(&chunk.data)),
                        content_type: SUMMARY_JSON_TYPE.to_owned(),
                    };
                    return Ok(Some((summary, entry)));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(format!("summary.json could not be read: {last}"))
    }
}

/// A stop the worker asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Cancel,
    Deadline,
}

/// What the sweep does with an execution still running for `run` (`None`: the run is gone).
fn sweep_verdict(run: Option<&Run>, task: &RemoteTask) -> Option<&'static str> {
    match run {
        None => Some("outpost: its run no longer exists"),
        Some(r) if r.status.is_terminal() => Some("outpost: its run is over"),
        Some(r) => match &r.remote {
            Some(recorded) if recorded.id != task.id => Some("outpost: its run is watched on another execution"),
            // Its own, or one just started whose record is on its way.
            _ => None,
        },
    }
}

#[async_trait]
impl RemoteRuns for Dispatcher {
    fn sweep_interval(&self) -> Duration {
        self.config.sweep_interval
    }

    async fn sweep(&self) -> usize {
        let mut stopped = 0;
        for launcher in &self.launchers {
            let active = match launcher.active().await {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(executor = %launcher.kind(), error = %e, "listing remote executions failed");
                    continue;
                }
            };
            for a in active {
                let Ok(id) = a.run_id.parse::<outpost_core::domain::RunId>() else {
                    continue; // not one of ours
                };
                let run = match self.runs.get_by_id(&id).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(run_id = %id, error = %e, "reading a swept execution's run failed");
                        continue;
                    }
                };
                if let Some(reason) = sweep_verdict(run.as_ref(), &a.task) {
                    tracing::warn!(run_id = %id, task = %a.task.id, reason, "stopping an orphaned remote execution");
                    match launcher.stop(&a.task, reason).await {
                        Ok(()) => stopped += 1,
                        Err(e) => {
                            tracing::warn!(task = %a.task.id, error = %e, "stopping an orphaned execution failed")
                        }
                    }
                }
            }
        }
        stopped
    }

    fn handles(&self, kind: ExecutorKind) -> bool {
        self.launcher(kind).is_some()
    }

    async fn execute(&self, run: &Run, agent: &AgentSpec, stop: &mut StopSignal) -> RemoteOutcome {
        let Some(launcher) = self.launcher(agent.executor) else {
            return lost(
                Outcome::failed(FailureReason::ExecutorUnavailable, None),
                format!("this worker has no {} executor", agent.executor),
            );
        };
        let key = crate::pipeline::run_key(run);
        let mut notes = Vec::new();
        let task = match run.remote.as_ref().filter(|t| t.executor == agent.executor) {
            Some(t) => {
                tracing::info!(task = %t.id, started_by = t.attempt, "adopting the run's remote execution");
                notes.push(format!(
                    "attempt {} adopted the {} execution {} started by attempt {}",
                    run.attempts, t.executor, t.id, t.attempt
                ));
                t.clone()
            }
            None => match self.found_or_start(&**launcher, run, agent, &mut notes).await {
                Ok(t) => t,
                Err(NotStarted::Unavailable(why)) => {
                    return lost(
                        Outcome::failed(FailureReason::ExecutorUnavailable, None),
                        format!("the {} executor could not start the run: {why}", agent.executor),
                    )
                }
                Err(NotStarted::Release) => return RemoteOutcome::Abandoned,
            },
        };
        tracing::debug!(task = %task.id, "watching the remote execution");
        let timeout = Self::timeout(run, agent);
        let deadline = Instant::now() + timeout + self.config.start_slack;
        let Some((end, asked)) = self.watch(&**launcher, &task, deadline, stop).await else {
            tracing::info!(task = %task.id, "run abandoned; its remote execution is left for the next attempt");
            return RemoteOutcome::Abandoned;
        };
        if let (Err(LaunchError::Api(e)), None) = (&end, asked) {
            // Nothing is known of its end: a later attempt adopts it and watches again.
            tracing::warn!(error = %e, "watching the remote execution failed; releasing the run");
            return RemoteOutcome::Abandoned;
        }
        match self.read_summary(&key).await {
            Ok(Some((summary, entry))) => recorded(summary, entry),
            Ok(None) => {
                notes.push(describe_end(&task, &end));
                let outcome = lost_outcome(&end, asked, &mut notes, timeout);
                RemoteOutcome::Lost { outcome, notes }
            }
            Err(why) => {
                notes.push(describe_end(&task, &end));
                notes.push(why);
                RemoteOutcome::Lost {
                    outcome: Outcome::failed(FailureReason::ExecutorLost, None),
                    notes,
                }
            }
        }
    }
}

/// The fleet report's availability of every enabled agent on one of `dispatcher`'s executors
/// (each launcher caches its own answers).
pub struct DispatchProbe {
    pub dispatcher: Arc<Dispatcher>,
    pub agents: Arc<outpost_core::domain::AgentRegistry>,
}

#[async_trait]
impl crate::presence::AvailabilityProbe for DispatchProbe {
    async fn probe(&self) -> Vec<(String, ExecutorKind, outpost_core::ports::Availability)> {
        let mut out = Vec::new();
        for agent in self.agents.enabled().filter(|a| a.executor.is_remote()) {
            if let Some(launcher) = self.dispatcher.launcher(agent.executor) {
                out.push((agent.name.clone(), agent.executor, launcher.availability(agent).await));
            }
        }
        out
    }
}

fn lost(outcome: Outcome, note: String) -> RemoteOutcome {
    RemoteOutcome::Lost {
        outcome,
        notes: vec![note],
    }
}

/// The record the entrypoint stored: its outcome, its manifest (names checked, duplicates and
/// `summary.json` itself dropped) and `summary.json`'s own entry.
fn recorded(summary: Summary, entry: Artifact) -> RemoteOutcome {
    let outcome = Outcome {
        status: summary.status,
        exit_code: summary.exit_code,
        reason: summary.failure_reason,
        report: summary.agent_report,
    };
    let mut seen = HashSet::new();
    let mut artifacts: Vec<Artifact> = summary
        .artifacts
        .into_iter()
        .filter(|a| a.name != SUMMARY_JSON && check_artifact_name(&a.name).is_ok() && seen.insert(a.name.clone()))
        .take(MAX_MANIFEST)
        .collect();
    artifacts.push(entry);
    artifacts.sort_by_key(|a| outpost_core::domain::run_files::manifest_rank(&a.name));
    RemoteOutcome::Recorded { outcome, artifacts }
}

/// A note on how the execution ended, for a run without `summary.json`.
fn describe_end(task: &RemoteTask, end: &Result<RemoteEnd, LaunchError>) -> String {
    let what = match &task.host {
        Some(h) => format!("the {} execution {} on {h}", task.executor, task.id),
        None => format!("the {} execution {}", task.executor, task.id),
    };
    match end {
        Ok(e) => {
            let code = match e.exit_code {
                Some(c) => match EntrypointExit::from_code(c) {
                    Some(EntrypointExit::BadSpec) => {
                        format!(", exit code {c}: the entrypoint could not read its run spec")
                    }
                    _ => format!(", exit code {c}"),
                },
                None => String::new(),
            };
            format!("{what} ended without storing summary.json ({}{code})", e.detail)
        }
        Err(e) => format!("{what} ended without storing summary.json: {e}"),
    }
}

/// The outcome of a run whose execution stored no `summary.json`.
fn lost_outcome(
    end: &Result<RemoteEnd, LaunchError>,
    asked: Option<Asked>,
    notes: &mut Vec<String>,
    timeout: Duration,
) -> Outcome {
    let code = end.as_ref().ok().and_then(|e| e.exit_code);
    match asked {
        Some(Asked::Cancel) => {
            notes.push("cancelled on request; the execution was stopped".to_owned());
            Outcome::cancelled(code)
        }
        Some(Asked::Deadline) => {
            notes.push(format!(
                "the execution outlived the run's timeout of {} s and the start allowance; it was stopped",
                timeout.as_secs()
            ));
            Outcome::timed_out(code)
        }
        None => match end {
            Ok(RemoteEnd {
                how: EndHow::TimedOut, ..
            }) => Outcome::timed_out(code),
            _ => Outcome::failed(FailureReason::ExecutorLost, code),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::domain::TerminalStatus;

    fn artifact(name: &str) -> Artifact {
        Artifact {
            name: name.to_owned(),
            size: 1,
            sha256: "00".repeat(32),
            content_type: "text/plain".to_owned(),
        }
    }

    fn summary(artifacts: Vec<Artifact>) -> Summary {
        serde_json::from_value(serde_json::json!({
            "run_id": "r", "agent": "a", "status": "failed", "exit_code": 3,
            "failure_reason": "non_zero_exit", "duration_ms": 5, "attempts": 1,
            "output_bytes": 10, "redactions": 0,
        }))
        .map(|s: Summary| Summary { artifacts, ..s })
        .expect("a summary")
    }

    #[test]
    fn a_recorded_run_takes_the_summary_s_outcome_and_only_well_formed_names() {
        let listed = vec![
            artifact("files/b.txt"),
            artifact("output.log"),
            artifact("../other-run/output.log"),
            artifact("output.log"),
            artifact("summary.json"),
            artifact("/etc/passwd"),
        ];
        let RemoteOutcome::Recorded { outcome, artifacts } = recorded(summary(listed), artifact("summary.json")) else {
            panic!("recorded");
        };
        assert_eq!(outcome.status, TerminalStatus::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.reason, Some(FailureReason::NonZeroExit));
        let names: Vec<&str> = artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["output.log", "summary.json", "files/b.txt"]);
    }

    #[test]
    fn a_run_without_summary_is_lost_unless_the_worker_or_executor_stopped_it() {
        let end = |how, code| {
            Ok(RemoteEnd {
                how,
                exit_code: code,
                detail: "EssentialContainerExited: exited".into(),
            })
        };
        let t = Duration::from_secs(60);
        let mut notes = Vec::new();
        let o = lost_outcome(&end(EndHow::Exited, Some(0)), None, &mut notes, t);
        assert_eq!(
            o.reason,
            Some(FailureReason::ExecutorLost),
            "exit 0 without a summary is not a success"
        );
        let o = lost_outcome(&end(EndHow::Stopped, Some(143)), Some(Asked::Cancel), &mut notes, t);
        assert_eq!(o.status, TerminalStatus::Cancelled);
        let o = lost_outcome(&end(EndHow::Lost, None), Some(Asked::Deadline), &mut notes, t);
        assert_eq!(o.status, TerminalStatus::TimedOut);
        let o = lost_outcome(&end(EndHow::TimedOut, None), None, &mut notes, t);
        assert_eq!(o.status, TerminalStatus::TimedOut);
        let o = lost_outcome(&Err(LaunchError::Gone("MISSING".into())), None, &mut notes, t);
        assert_eq!(o.reason, Some(FailureReason::ExecutorLost));
        assert_eq!(notes.len(), 2, "the worker's own stops are noted: {notes:?}");
    }

    #[test]
    fn the_sweep_stops_executions_of_runs_that_are_over_gone_or_watched_elsewhere() {
        let task = |id: &str| RemoteTask {
            executor: ExecutorKind::Ecs,
            id: id.into(),
            host: None,
            attempt: 1,
        };
        let mut run = crate::testing::run_of("fake", "x", None, 60);
        run.status = outpost_core::domain::RunStatus::Running;
        assert_eq!(
            sweep_verdict(None, &task("a")),
            Some("outpost: its run no longer exists")
        );
        assert_eq!(
            sweep_verdict(Some(&run), &task("a")),
            None,
            "not recorded yet: just started"
        );
        run.remote = Some(task("a"));
        assert_eq!(sweep_verdict(Some(&run), &task("a")), None, "its own");
        assert!(sweep_verdict(Some(&run), &task("b")).is_some(), "another attempt's");
        run.status = outpost_core::domain::RunStatus::Succeeded;
        assert!(sweep_verdict(Some(&run), &task("a")).is_some(), "over");
    }

    #[test]
    fn the_note_of_a_lost_run_names_the_task_and_a_spec_failure() {
        let task = RemoteTask {
            executor: ExecutorKind::Ssm,
            id: "cmd-1".into(),
            host: Some("i-1".into()),
            attempt: 1,
        };
        let end = Ok(RemoteEnd {
            how: EndHow::Exited,
            exit_code: Some(EntrypointExit::BadSpec.code()),
            detail: "Failed".into(),
        });
        let note = describe_end(&task, &end);
        assert!(note.contains("ssm execution cmd-1 on i-1"), "{note}");
        assert!(note.contains("could not read its run spec"), "{note}");
    }
}
