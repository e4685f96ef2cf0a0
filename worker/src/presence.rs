//! Fleet presence: the worker reports its slots and busy count to the WorkerRegistry every few
//! seconds so `GET /v1/fleet` can show it, and removes itself on a clean exit.

use chrono::{DateTime, Utc};
use outpost_core::domain::WorkerId;
use outpost_core::ports::{WorkerInfo, WorkerRegistry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often a worker reports itself by default.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// This machine's host name, for the fleet listing.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Reports forever (until the task is aborted).
pub async fn report_loop(
    registry: Arc<dyn WorkerRegistry>,
    id: WorkerId,
    slots: usize,
    busy: Arc<AtomicUsize>,
    started_at: DateTime<Utc>,
    interval: Duration,
) {
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
        };
        if let Err(e) = registry.report_worker(&info).await {
            tracing::warn!(error = %e, "reporting to the worker registry failed");
        }
    }
}
