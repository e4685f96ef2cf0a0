//! The worker: a pool of `slots` concurrent runs fed by a receive loop that asks the queue for no
//! more messages than there are free slots, plus the dead-letter drain and fleet reports. On
//! shutdown it drains: stops receiving, lets in-flight runs finish within `drain_timeout`, then
//! kills and releases the rest.

use crate::dead_letters;
use crate::executor::{Executor, ProcessConfig, ProcessExecutor};
use crate::pipeline::{self, PipelineConfig, RemoteRuns, RunPipeline, Shared};
use crate::presence;
use crate::tenant_secrets::TenantSecrets;
use crate::{WorkerConfig, WorkerError};
use chrono::Utc;
use outpost_core::domain::{AgentRegistry, ExecutorKind, WorkerId};
use outpost_core::ports::{Availability, Backend};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

/// Most messages one receive may return (SQS's limit).
const MAX_BATCH: usize = 10;
/// Pause after a failed receive.
const RECEIVE_BACKOFF: Duration = Duration::from_secs(1);
/// After the drain's kill, how long runs get (beyond the kill grace) to stop and release.
const RELEASE_SLACK: Duration = Duration::from_secs(10);

/// A worker process's run pool.
pub struct Worker {
    id: WorkerId,
    backend: Backend,
    pipeline: RunPipeline,
    /// The agents it serves: listed in its presence reports even when idle.
    agents: Arc<AgentRegistry>,
    /// Tells the remote executors' availability for the presence reports, if any.
    probe: Option<Arc<dyn presence::AvailabilityProbe>>,
    config: WorkerConfig,
}

impl Worker {
    /// A worker running agents as local processes ([`ProcessExecutor`]).
    pub fn new(backend: Backend, agents: Arc<AgentRegistry>, config: WorkerConfig) -> Self {
        let unconfined: Vec<&str> = agents
            .enabled()
            .filter(|a| a.sandbox.or(config.sandbox.default_mode) == Some(outpost_core::domain::SandboxMode::None))
            .map(|a| a.name.as_str())
            .collect();
        if !unconfined.is_empty() {
            tracing::warn!(
                agents = ?unconfined,
                refused = config.sandbox.refuse_none,
                "agents configured with sandbox = \"none\": they run with only a separate uid and a clean environment"
            );
        }
        let executor = ProcessExecutor::new(ProcessConfig {
            kill_grace: config.kill_grace,
            sandbox: config.sandbox.clone(),
        });
        Self::with_executor(backend, agents, Arc::new(executor), config)
    }

    /// A worker whose agents run on another executor (ECS, SSM, or a test's), through the same
    /// run pipeline: tenants' secrets from the backend, artifacts into its store.
    pub fn with_executor(
        backend: Backend,
        agents: Arc<AgentRegistry>,
        executor: Arc<dyn Executor>,
        config: WorkerConfig,
    ) -> Self {
        let secrets = TenantSecrets::new(Arc::clone(&backend.secrets), config.secrets_ttl);
        let egress = config
            .egress()
            .and_then(|c| crate::egress::Egress::new(c).map_err(|e| e.to_string()));
        let pipeline = RunPipeline::new(
            Arc::clone(&backend.artifacts),
            Arc::clone(&agents),
            executor,
            PipelineConfig {
                refuse_ports: config.sandbox.protected_ports.clone(),
                ..PipelineConfig::new(config.work_dir.clone())
            },
        )
        .with_tenant_secrets(Arc::new(secrets))
        .with_egress_result(egress.map(Arc::new));
        Self {
            id: WorkerId::generate(),
            backend,
            pipeline,
            agents,
            probe: None,
            config,
        }
    }

    /// Reports what `probe` says of the remote executors (asked at most every
    /// [`presence::PROBE_INTERVAL`]) with the worker's presence.
    pub fn with_availability_probe(mut self, probe: Arc<dyn presence::AvailabilityProbe>) -> Self {
        self.probe = Some(probe);
        self
    }

    pub fn id(&self) -> &WorkerId {
        &self.id
    }

    /// Gives this worker remote executors (ECS tasks, SSM hosts: `crate::remote::Dispatcher`,
    /// made for this worker's [`id`](Self::id), the lease holder that records their executions).
    pub fn with_remote(mut self, remote: Arc<dyn RemoteRuns>) -> Self {
        self.pipeline = self.pipeline.with_remote(remote);
        self
    }

    /// Runs until `shutdown` resolves, then drains (stops receiving; lets in-flight runs finish
    /// within `drain_timeout`; past it kills them and releases them: their messages visible
    /// again and their leases expired now) and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), WorkerError> {
        let cfg = self.config.clone();
        if cfg.slots == 0 {
            return Err(WorkerError::Config("slots must be at least 1".into()));
        }
        if cfg.lease.is_zero() {
            return Err(WorkerError::Config("lease must be longer than zero".into()));
        }
        if cfg.max_attempts == 0 {
            return Err(WorkerError::Config("max_attempts must be at least 1".into()));
        }
        if let Err(why) = self.pipeline.egress_ready() {
            return Err(WorkerError::Config(format!("the egress proxy: {why}")));
        }
        std::fs::create_dir_all(&cfg.work_dir).map_err(|source| WorkerError::WorkDir {
            path: cfg.work_dir.clone(),
            source,
        })?;

        let (kill_tx, kill_rx) = watch::channel(false);
        let loads = Arc::new(served_loads(&self.agents));
        let shared = Arc::new(Shared {
            backend: self.backend.clone(),
            pipeline: self.pipeline,
            worker: self.id.clone(),
            config: cfg.clone(),
            kill_all: kill_rx,
            loads: Arc::clone(&loads),
        });
        let free = Arc::new(Semaphore::new(cfg.slots));
        // Runs being handled now; permits also cover slots reserved for a receive in progress.
        let busy = Arc::new(AtomicUsize::new(0));
        let presence = tokio::spawn(presence::report_loop(
            Arc::clone(&self.backend.workers),
            self.id.clone(),
            cfg.slots,
            Arc::clone(&busy),
            Utc::now(),
            cfg.presence_interval,
            loads,
            self.probe.clone(),
        ));
        let dlq = tokio::spawn(dead_letters::drain_loop(
            self.backend.clone(),
            cfg.dead_letter_interval,
            cfg.lease,
        ));
        let sweep = shared
            .pipeline
            .remote()
            .map(|remote| tokio::spawn(pipeline::sweep_loop(Arc::clone(remote))));
        tracing::info!(worker_id = %self.id, slots = cfg.slots, lease = ?cfg.lease, "worker started");

        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            reap(&mut tasks);
            let first = tokio::select! {
                biased;
                () = &mut shutdown => break,
                p = Arc::clone(&free).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break, // never closed
                },
            };
            let mut permits = first;
            let extra = free.available_permits().min(MAX_BATCH - 1);
            if extra > 0 {
                if let Ok(more) = Arc::clone(&free).try_acquire_many_owned(u32::try_from(extra).unwrap_or(1)) {
                    permits.merge(more);
                }
            }
            let max = permits.num_permits();
            let received = tokio::select! {
                biased;
                () = &mut shutdown => break,
                r = self.backend.queue.receive(max, cfg.lease, cfg.receive_wait) => r,
            };
            let deliveries = match received {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "receiving messages failed; retrying");
                    drop(permits);
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(RECEIVE_BACKOFF) => continue,
                    }
                }
            };
            let mut permits = Some(permits);
            for delivery in deliveries {
                let Some(permit) = take_one(&mut permits) else {
                    // The queue returned more than asked for: give the extra back at once.
                    tracing::warn!("queue returned more messages than free slots; returning the extra");
                    let _ = self
                        .backend
                        .queue
                        .extend_visibility(&delivery.receipt, Duration::ZERO)
                        .await;
                    continue;
                };
                let shared = Arc::clone(&shared);
                let busy = Arc::clone(&busy);
                busy.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    pipeline::handle_delivery(shared, delivery).await;
                    busy.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        }

        // Drain.
        let in_flight = tasks.len();
        tracing::info!(in_flight, timeout = ?cfg.drain_timeout, "worker draining");
        let finished = tokio::time::timeout(cfg.drain_timeout, join_all(&mut tasks))
            .await
            .is_ok();
        if !finished {
            tracing::warn!(
                left = tasks.len(),
                "drain timeout passed: killing and releasing the runs still in flight"
            );
            let _ = kill_tx.send(true);
            let bound = cfg.kill_grace + RELEASE_SLACK;
            if tokio::time::timeout(bound, join_all(&mut tasks)).await.is_err() {
                tracing::error!(left = tasks.len(), "runs did not stop in time; aborting them");
                tasks.shutdown().await;
            }
        }
        dlq.abort();
        presence.abort();
        if let Some(sweep) = sweep {
            sweep.abort();
            let _ = sweep.await;
        }
        let _ = dlq.await;
        let _ = presence.await;
        if let Err(e) = self.backend.workers.remove_worker(&self.id).await {
            tracing::warn!(error = %e, "removing this worker from the registry failed");
        }
        tracing::info!(worker_id = %self.id, "worker stopped");
        Ok(())
    }
}

/// The loads of a worker that runs nothing yet: every enabled agent at zero in flight, those of
/// the process executor available (the worker itself runs them); a remote executor's
/// availability comes from its probe.
fn served_loads(agents: &AgentRegistry) -> presence::Loads {
    let loads = presence::Loads::new();
    for a in agents.enabled() {
        loads.serve(&a.name, a.executor);
        if a.executor == ExecutorKind::Process {
            loads.set_availability(
                &a.name,
                a.executor,
                Availability {
                    available: true,
                    detail: String::new(),
                },
            );
        }
    }
    loads
}

/// Splits one permit off `permits` (taking the last one whole).
fn take_one(permits: &mut Option<OwnedSemaphorePermit>) -> Option<OwnedSemaphorePermit> {
    match permits {
        Some(p) if p.num_permits() > 1 => p.split(1),
        _ => permits.take(),
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            tracing::error!(error = %e, "a run task panicked; its message will be re-delivered");
        }
    }
}

/// Collects finished run tasks without waiting.
fn reap(tasks: &mut JoinSet<()>) {
    while let Some(res) = tasks.try_join_next() {
        log_join(res);
    }
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while let Some(res) = tasks.join_next().await {
        log_join(res);
    }
}
