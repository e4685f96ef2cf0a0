//! Step 3 for an agent entry with `executor = "ecs" | "ssm"`: the agent runs elsewhere, started
//! and watched by a [`RemoteRuns`] (the AWS one is `crate::remote::Dispatcher`), which reads the
//! run's outcome and manifest from the `summary.json` the remote entrypoint stored.
//!
//! Steps 1, 2 (up to the agent's entry and the tenant's secrets, for scrubbing the notes), 5 and
//! 6 are the pipeline's as for every run; no agent uid, clone or proxy is made on the worker.
//! When the execution ended without a `summary.json` (the task died, the host vanished, the
//! executor refused it), [`RunPipeline::finalize`] stores what is known with the same code as
//! every run: the live log the entrypoint streamed so far (copied into the spool), then the
//! notes, as `output.log`, and `summary.json`.

use super::{Attempt, Execution, RunPipeline};
use crate::executor::StopSignal;
use async_trait::async_trait;
use outpost_core::domain::run_files::OUTPUT_LOG;
use outpost_core::domain::{AgentSpec, Artifact, ExecutorKind, Outcome, Run};
use std::io::Write;

/// Most bytes of a lost run's live log copied into its `output.log`.
const MAX_LOST_LOG: u64 = 64 * 1024 * 1024;
/// Bytes read from the store per request while copying a lost run's live log.
const COPY_CHUNK: u64 = 4 * 1024 * 1024;

/// How a remote execution ended, for the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteOutcome {
    /// The entrypoint stored every artifact and `summary.json`: this is the record.
    Recorded { outcome: Outcome, artifacts: Vec<Artifact> },
    /// It ended without `summary.json`: the worker stores `output.log` (the live log so far and
    /// these notes) and `summary.json` with this outcome.
    Lost { outcome: Outcome, notes: Vec<String> },
    /// Stopped on [`Stop::Abandon`](crate::executor::Stop::Abandon) (drain, lost lease): the
    /// execution is left running and recorded on the run, so that the next attempt adopts it.
    Abandoned,
}

/// Runs agents of remote executors.
#[async_trait]
pub trait RemoteRuns: Send + Sync + 'static {
    /// Whether this worker has `kind` (an entry of another executor is refused, never run here).
    fn handles(&self, kind: ExecutorKind) -> bool;

    /// Starts the run's execution, or adopts the one `run.remote` records, and watches it to
    /// its end; a cancel stops it, an abandon leaves it.
    async fn execute(&self, run: &Run, agent: &AgentSpec, stop: &mut StopSignal) -> RemoteOutcome;

    /// The reconciliation sweep, run by the worker every `remote_sweep_interval`: stops every
    /// execution whose run is over, gone or taken over by another execution. Returns how many
    /// were stopped.
    async fn sweep(&self) -> usize {
        0
    }

    /// How often the worker runs [`sweep`](Self::sweep).
    fn sweep_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(5 * 60)
    }
}

/// Runs `remote`'s sweep every [`RemoteRuns::sweep_interval`] until the task is aborted.
pub async fn sweep_loop(remote: std::sync::Arc<dyn RemoteRuns>) {
    let mut tick = tokio::time::interval(remote.sweep_interval().max(std::time::Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stopped = remote.sweep().await;
        if stopped > 0 {
            tracing::warn!(stopped, "the reconciliation sweep stopped orphaned remote executions");
        }
    }
}

impl RunPipeline {
    /// The remote executors of this pipeline, if it has any.
    pub fn remote(&self) -> Option<&std::sync::Arc<dyn RemoteRuns>> {
        self.remote.as_ref()
    }

    /// Whether `run`'s agent runs on one of this worker's remote executors.
    pub(super) fn runs_remotely(&self, run: &Run) -> bool {
        match (&self.remote, self.agents.get(&run.agent)) {
            (Some(r), Some(a)) => a.executor.is_remote() && r.handles(a.executor),
            _ => false,
        }
    }

    /// Step 3 and 4 of a remote run, once step 2 found its entry and secrets.
    pub(super) async fn run_remote(&self, mut a: Attempt<'_>, agent: &AgentSpec, stop: &mut StopSignal) -> Execution {
        let Some(remote) = &self.remote else {
            return Execution::Abandoned; // runs_remotely said yes: cannot happen
        };
        match remote.execute(a.run, agent, stop).await {
            RemoteOutcome::Recorded { outcome, artifacts } => Execution::Finished { outcome, artifacts },
            RemoteOutcome::Abandoned => Execution::Abandoned,
            RemoteOutcome::Lost { outcome, notes } => {
                a.pump.bytes = self.copy_live_log(&mut a).await;
                for n in notes {
                    a.notes.push(n);
                }
                self.finalize(a, outcome).await
            }
        }
    }

    /// Copies what the store holds of the run's `output.log` (the live log the entrypoint
    /// streamed, or its final upload) into the spool; returns the bytes copied.
    async fn copy_live_log(&self, a: &mut Attempt<'_>) -> u64 {
        let key = super::run_key(a.run);
        let mut offset = 0u64;
        while offset < MAX_LOST_LOG {
            let want = COPY_CHUNK.min(MAX_LOST_LOG - offset);
            match self.store.read_range(&key, OUTPUT_LOG, offset, want).await {
                Ok(Some(chunk)) if !chunk.data.is_empty() => {
                    if let Err(e) = a.spool.write_all(&chunk.data) {
                        tracing::warn!(error = %e, "copying the live log into the spool failed");
                        break;
                    }
                    offset += chunk.data.len() as u64;
                }
                Ok(_) => break,
                Err(e) => {
                    a.notes.push(format!("the live log could not be read back: {e}"));
                    break;
                }
            }
        }
        if offset >= MAX_LOST_LOG {
            a.notes.push(format!(
                "output.log holds the first {MAX_LOST_LOG} bytes of the live log"
            ));
        }
        offset
    }
}
