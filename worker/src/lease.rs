//! The lease side of one delivery (steps 1, 5 and 6 of [`crate::pipeline`], and the heartbeats
//! around 2–4): claim the run under a lease (duplicates stop here), keep the lease and the
//! message's visibility alive while the run goes on and watch for a cancel, then record the
//! outcome and delete the message, or give the run back.

use crate::executor::{Stop, StopHandle};
use crate::pipeline::Shared;
use chrono::Utc;
use outpost_core::domain::{Run, RunId};
use outpost_core::ports::{ClaimOutcome, Delivery, QueueError, Receipt, StoreError, TaskQueue};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// SQS's cap on a message's visibility timeout.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// Attempts of the final status write before the message is left for re-delivery.
const FINISH_TRIES: u32 = 4;

/// Claims the delivery's run under a lease: the run when this worker is to run it, `None` when
/// the delivery is done with (a finished run's duplicate, exhausted attempts, a missing run:
/// message deleted; a run held by another worker: message hidden until that lease ends; a
/// transient error: message left to come back).
pub async fn claim(shared: &Shared, delivery: &Delivery) -> Option<Run> {
    let cfg = &shared.config;
    let run_id = &delivery.message.run_id;
    let claim = shared
        .backend
        .runs
        .claim(run_id, &shared.worker, cfg.lease, cfg.max_attempts)
        .await;
    match claim {
        Ok(ClaimOutcome::Claimed(run)) => return Some(run),
        Ok(ClaimOutcome::AlreadyFinished(run)) => {
            tracing::debug!(status = %run.status, "duplicate delivery of a finished run");
            delete_message(&*shared.backend.queue, &delivery.receipt).await;
        }
        Ok(ClaimOutcome::Exhausted(run)) => {
            tracing::warn!(
                attempts = run.attempts,
                "run lost its worker too often: failed worker_lost"
            );
            delete_message(&*shared.backend.queue, &delivery.receipt).await;
        }
        Ok(ClaimOutcome::HeldElsewhere { lease_expires_at }) => {
            // Keep the message: it recovers the run if that worker dies. Come back just after
            // its lease would expire.
            let left = (lease_expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            let visibility = (left + Duration::from_secs(1)).min(MAX_VISIBILITY);
            tracing::debug!(
                ?visibility,
                "run held by another worker; message hidden until its lease ends"
            );
            if let Err(e) = shared
                .backend
                .queue
                .extend_visibility(&delivery.receipt, visibility)
                .await
            {
                tracing::warn!(error = %e, "hiding a duplicate message failed");
            }
        }
        Err(StoreError::NotFound) => {
            tracing::warn!("message names a run that does not exist; deleting it");
            delete_message(&*shared.backend.queue, &delivery.receipt).await;
        }
        Err(e) => {
            // Transient: the message becomes visible again after the lease and is retried.
            tracing::warn!(error = %e, "claiming the run failed; it will be re-delivered");
        }
    }
    None
}

async fn delete_message(queue: &dyn TaskQueue, receipt: &Receipt) {
    match queue.delete(receipt).await {
        Ok(()) | Err(QueueError::StaleReceipt) => {}
        Err(e) => tracing::warn!(error = %e, "deleting the message failed; a duplicate will be dropped later"),
    }
}

/// Runs `work` (the claimed run's steps 2–4) while heartbeats keep its lease, and returns its
/// result with whether the lease was lost meanwhile.
pub async fn with_heartbeats<T>(
    shared: &Shared,
    id: &RunId,
    receipt: &Receipt,
    stop: &StopHandle,
    work: impl Future<Output = T>,
) -> (T, bool) {
    let lease_lost = AtomicBool::new(false);
    let result = {
        let beats = heartbeats(shared, id, receipt, stop, &lease_lost);
        tokio::pin!(work, beats);
        tokio::select! {
            r = &mut work => r,
            never = &mut beats => match never {},
        }
    };
    (result, lease_lost.load(Ordering::Relaxed))
}

/// Beats every `lease / 3` until dropped: extends the lease and the message's visibility, turns a
/// cancel flag into [`Stop::Cancel`], a lost lease or the drain's kill into [`Stop::Abandon`].
async fn heartbeats(
    shared: &Shared,
    id: &RunId,
    receipt: &Receipt,
    stop: &StopHandle,
    lease_lost: &AtomicBool,
) -> Infallible {
    let cfg = &shared.config;
    let interval = cfg.heartbeat_interval();
    let mut kill = shared.kill_all.clone();
    if *kill.borrow_and_update() {
        stop.request(Stop::Abandon);
    }
    let mut watch_kill = true;
    let mut next = Instant::now() + interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                next = Instant::now() + interval;
                if lease_lost.load(Ordering::Relaxed) {
                    continue;
                }
                beat(shared, id, receipt, stop, lease_lost).await;
            }
            changed = kill.changed(), if watch_kill => {
                if changed.is_err() {
                    watch_kill = false;
                } else if *kill.borrow_and_update() {
                    tracing::warn!("drain timed out: stopping the agent and releasing the run");
                    stop.request(Stop::Abandon);
                    watch_kill = false;
                }
            }
        }
    }
}

async fn beat(shared: &Shared, id: &RunId, receipt: &Receipt, stop: &StopHandle, lease_lost: &AtomicBool) {
    let lease = shared.config.lease;
    match shared.backend.runs.heartbeat(id, &shared.worker, lease).await {
        Ok(hb) => {
            if hb.cancel_requested && stop.current() == Stop::Continue {
                tracing::info!("cancel requested: stopping the agent");
                stop.request(Stop::Cancel);
            }
        }
        Err(StoreError::LeaseLost(_)) => {
            tracing::warn!("lease lost: stopping the agent and abandoning the run");
            lease_lost.store(true, Ordering::Relaxed);
            stop.request(Stop::Abandon);
            return;
        }
        Err(e) => tracing::warn!(error = %e, "heartbeat failed; retrying at the next beat"),
    }
    if let Err(e) = shared.backend.queue.extend_visibility(receipt, lease).await {
        tracing::warn!(error = %e, "extending the message's visibility failed");
    }
}

/// Writes the outcome (retrying transient errors), then acknowledges: deletes the message.
pub async fn finish(
    shared: &Shared,
    id: &RunId,
    receipt: &Receipt,
    outcome: outpost_core::domain::Outcome,
    artifacts: Vec<outpost_core::domain::Artifact>,
) {
    let mut delay = Duration::from_millis(100);
    for attempt in 1..=FINISH_TRIES {
        match shared
            .backend
            .runs
            .finish(id, &shared.worker, outcome.clone(), artifacts.clone())
            .await
        {
            Ok(run) => {
                tracing::debug!(status = %run.status, exit_code = ?run.exit_code, reason = ?run.failure_reason, "run finished");
                // The run is final: its slot is free now. Deleting the message needs no slot, so
                // it goes on beside the next run (if it is lost, the re-delivery of a finished
                // run is dropped as a duplicate).
                let queue = Arc::clone(&shared.backend.queue);
                let receipt = receipt.clone();
                tokio::spawn(async move { delete_message(&*queue, &receipt).await }.in_current_span());
                return;
            }
            Err(StoreError::LeaseLost(_)) => {
                tracing::warn!("lease lost before the outcome could be written; another attempt owns the run");
                return;
            }
            Err(StoreError::NotFound) | Err(StoreError::Conflict { .. }) => {
                tracing::warn!("run cannot take this outcome (gone or already final); dropping the message");
                delete_message(&*shared.backend.queue, receipt).await;
                return;
            }
            Err(e) if attempt < FINISH_TRIES => {
                tracing::warn!(error = %e, attempt, "writing the outcome failed; retrying");
                tokio::time::sleep(delay).await;
                delay *= 4;
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the outcome failed; the message will be re-delivered");
            }
        }
    }
}

/// Gives a run back: its lease expires now and its message is visible again, so the next worker
/// to receive it claims a new attempt.
pub async fn release(shared: &Shared, id: &RunId, receipt: &Receipt) {
    match shared.backend.runs.release(id, &shared.worker).await {
        Ok(()) | Err(StoreError::LeaseLost(_)) => {}
        Err(e) => tracing::warn!(error = %e, "expiring the lease failed; it runs out by itself"),
    }
    if let Err(e) = shared.backend.queue.extend_visibility(receipt, Duration::ZERO).await {
        tracing::warn!(error = %e, "making the message visible failed; it comes back by itself");
    }
    tracing::info!("run released for another attempt");
}
