//! Fleet presence: the worker reports its slots and busy count to the WorkerRegistry every few
//! seconds so `GET /v1/fleet` can show it, with per agent its executor, the runs in flight and
//! whether the executor can take runs ([`Loads`]), and removes itself on a clean exit.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outpost_core::domain::{ExecutorKind, WorkerId};
use outpost_core::ports::workers::AgentLoad;
use outpost_core::ports::{Availability, WorkerInfo, WorkerRegistry};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How often a worker reports itself by default.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// How often [`report_loop`] asks its [`AvailabilityProbe`] at most.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(30);

/// This machine's host name, for the fleet listing.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Tells, per remote agent, whether its executor can take runs now (the remote executors' cached
/// `RemoteLauncher::availability`). Called by [`report_loop`] at most every [`PROBE_INTERVAL`].
#[async_trait]
pub trait AvailabilityProbe: Send + Sync {
    async fn probe(&self) -> Vec<(String, ExecutorKind, Availability)>;
}

type Key = (String, ExecutorKind);

#[derive(Debug, Default)]
struct LoadsInner {
    in_flight: HashMap<Key, u32>,
    availability: HashMap<Key, Availability>,
}

/// What this worker runs per agent and executor, and the latest availability of each, for its
/// presence reports. Cheap to share (`Arc`) and thread-safe.
#[derive(Debug, Default)]
pub struct Loads {
    inner: Arc<Mutex<LoadsInner>>,
}

/// One run in flight of an agent: counted in [`Loads`] until dropped.
#[derive(Debug)]
#[must_use = "the run counts as in flight only while its guard lives"]
pub struct LoadGuard {
    inner: Arc<Mutex<LoadsInner>>,
    key: Key,
}

fn lock(inner: &Mutex<LoadsInner>) -> MutexGuard<'_, LoadsInner> {
    // Every change leaves the maps whole: a panic elsewhere cannot have left them half-done.
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Loads {
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists `agent` on `executor` with nothing in flight (so an idle agent is reported too).
    pub fn serve(&self, agent: &str, executor: ExecutorKind) {
        lock(&self.inner)
            .in_flight
            .entry((agent.to_owned(), executor))
            .or_insert(0);
    }

    /// Counts one run of `agent` on `executor` in flight until the guard is dropped.
    pub fn start(&self, agent: &str, executor: ExecutorKind) -> LoadGuard {
        let key = (agent.to_owned(), executor);
        let mut inner = lock(&self.inner);
        let n = inner.in_flight.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        drop(inner);
        LoadGuard {
            inner: Arc::clone(&self.inner),
            key,
        }
    }

    /// Records the latest availability of `agent` on `executor`.
    pub fn set_availability(&self, agent: &str, executor: ExecutorKind, a: Availability) {
        lock(&self.inner).availability.insert((agent.to_owned(), executor), a);
    }

    /// Every agent served, in flight or with a known availability, by agent then executor.
    pub fn snapshot(&self) -> Vec<AgentLoad> {
        let inner = lock(&self.inner);
        let mut keys: Vec<&Key> = inner.in_flight.keys().chain(inner.availability.keys()).collect();
        keys.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
        keys.dedup();
        keys.into_iter()
            .map(|key| {
                let availability = inner.availability.get(key);
                AgentLoad {
                    agent: key.0.clone(),
                    executor: key.1,
                    in_flight: inner.in_flight.get(key).copied().unwrap_or(0),
                    available: availability.map(|a| a.available),
                    detail: availability.map(|a| a.detail.clone()).filter(|d| !d.is_empty()),
                }
            })
            .collect()
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if let Some(n) = lock(&self.inner).in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Aborts its task when dropped (the probe loop ends with the report loop).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Asks `probe` every [`PROBE_INTERVAL`] and stores what it says in `loads`.
async fn probe_loop(probe: Arc<dyn AvailabilityProbe>, loads: Arc<Loads>) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (agent, executor, a) in probe.probe().await {
            loads.set_availability(&agent, executor, a);
        }
    }
}

/// Reports forever (until the task is aborted), each report with `loads`' snapshot; asks
/// `probe` (if any) at most every [`PROBE_INTERVAL`], apart from the reports so a slow probe
/// never delays one.
#[allow(clippy::too_many_arguments)]
pub async fn report_loop(
    registry: Arc<dyn WorkerRegistry>,
    id: WorkerId,
    slots: usize,
    busy: Arc<AtomicUsize>,
    started_at: DateTime<Utc>,
    interval: Duration,
    loads: Arc<Loads>,
    probe: Option<Arc<dyn AvailabilityProbe>>,
) {
    let _probing = probe.map(|p| AbortOnDrop(tokio::spawn(probe_loop(p, Arc::clone(&loads)))));
    let hostname = hostname();
    let slots32 = u32::try_from(slots).unwrap_or(u32::MAX);
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let busy = busy.load(Ordering::Relaxed).min(slots);
        let info = WorkerInfo {
            id: id.clone(),
            hostname: hostname.clone(),
            slots: slots32,
            busy: u32::try_from(busy).unwrap_or(u32::MAX),
            started_at,
            last_seen: Utc::now(),
            agents: loads.snapshot(),
        };
        if let Err(e) = registry.report_worker(&info).await {
            tracing::warn!(error = %e, "reporting to the worker registry failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn avail(available: bool, detail: &str) -> Availability {
        Availability {
            available,
            detail: detail.into(),
        }
    }

    #[test]
    fn loads_count_runs_in_flight_until_their_guards_drop() {
        let loads = Loads::new();
        loads.serve("shell", ExecutorKind::Process);
        loads.set_availability("shell", ExecutorKind::Process, avail(true, ""));
        let a = loads.start("claude", ExecutorKind::Ecs);
        let b = loads.start("claude", ExecutorKind::Ecs);
        let c = loads.start("claude", ExecutorKind::Process);
        loads.set_availability("claude", ExecutorKind::Ecs, avail(false, "task definition INACTIVE"));
        loads.set_availability("codex", ExecutorKind::Ssm, avail(true, "2 of 3 hosts online"));
        let load = |agent: &str, executor, in_flight, available: Option<bool>, detail: Option<&str>| AgentLoad {
            agent: agent.into(),
            executor,
            in_flight,
            available,
            detail: detail.map(Into::into),
        };
        assert_eq!(
            loads.snapshot(),
            vec![
                load(
                    "claude",
                    ExecutorKind::Ecs,
                    2,
                    Some(false),
                    Some("task definition INACTIVE")
                ),
                load("claude", ExecutorKind::Process, 1, None, None),
                load("codex", ExecutorKind::Ssm, 0, Some(true), Some("2 of 3 hosts online")),
                load("shell", ExecutorKind::Process, 0, Some(true), None),
            ]
        );
        drop(a);
        drop(c);
        let snap = loads.snapshot();
        assert_eq!((snap[0].in_flight, snap[1].in_flight), (1, 0));
        // A guard may be dropped on another thread.
        std::thread::spawn(move || drop(b)).join().expect("thread");
        assert_eq!(loads.snapshot()[0].in_flight, 0);
        assert_eq!(loads.snapshot().len(), 4, "agents served stay listed when idle");
    }

    /// A registry that keeps every report.
    #[derive(Default)]
    struct Reports(Mutex<Vec<WorkerInfo>>);

    #[async_trait]
    impl WorkerRegistry for Reports {
        async fn report_worker(&self, info: &WorkerInfo) -> Result<(), outpost_core::ports::StoreError> {
            self.0.lock().expect("reports").push(info.clone());
            Ok(())
        }
        async fn live_workers(
            &self,
            _since: DateTime<Utc>,
        ) -> Result<Vec<WorkerInfo>, outpost_core::ports::StoreError> {
            Ok(self.0.lock().expect("reports").clone())
        }
        async fn remove_worker(&self, _id: &WorkerId) -> Result<(), outpost_core::ports::StoreError> {
            Ok(())
        }
    }

    /// A probe that counts its calls and says "available, call n".
    #[derive(Default)]
    struct Counting(AtomicU32);

    #[async_trait]
    impl AvailabilityProbe for Counting {
        async fn probe(&self) -> Vec<(String, ExecutorKind, Availability)> {
            let n = self.0.fetch_add(1, Ordering::SeqCst) + 1;
            vec![("codex".into(), ExecutorKind::Ssm, avail(true, &format!("call {n}")))]
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reports_carry_the_loads_and_the_probe_runs_at_most_every_30_seconds() {
        let registry = Arc::new(Reports::default());
        let loads = Arc::new(Loads::new());
        loads.serve("shell", ExecutorKind::Process);
        let probe = Arc::new(Counting::default());
        let task = tokio::spawn(report_loop(
            Arc::clone(&registry) as Arc<dyn WorkerRegistry>,
            WorkerId("wrk_t".into()),
            2,
            Arc::new(AtomicUsize::new(1)),
            Utc::now(),
            Duration::from_secs(5),
            Arc::clone(&loads),
            Some(Arc::clone(&probe) as Arc<dyn AvailabilityProbe>),
        ));
        let guard = loads.start("shell", ExecutorKind::Process);
        // 0 s, 5 s, …, 60 s: 13 reports; probes at 0, 30 and 60 s.
        tokio::time::sleep(Duration::from_millis(62_500)).await;
        task.abort();
        let _ = task.await;
        drop(guard);
        let reports = registry.0.lock().expect("reports").clone();
        assert_eq!(reports.len(), 13, "{reports:?}");
        assert_eq!(probe.0.load(Ordering::SeqCst), 3);
        let last = reports.last().expect("a report");
        assert_eq!(last.busy, 1);
        let codex = |r: &WorkerInfo| r.agents.iter().find(|l| l.agent == "codex").cloned();
        let seen = codex(&reports[8]).expect("the report at 40 s has the probed agent");
        assert_eq!((seen.available, seen.detail.as_deref()), (Some(true), Some("call 2")));
        let latest = loads
            .snapshot()
            .into_iter()
            .find(|l| l.agent == "codex")
            .expect("probed");
        assert_eq!(latest.detail.as_deref(), Some("call 3"));
        let shell = last.agents.iter().find(|l| l.agent == "shell").expect("served agent");
        assert_eq!(shell.in_flight, 1);
        // The probe loop ended with the report loop.
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(probe.0.load(Ordering::SeqCst), 3);
    }
}
