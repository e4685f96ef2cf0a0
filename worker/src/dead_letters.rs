//! The dead-letter drain: a message received too many times lands in the dead-letter state; its
//! run (unless already final, or still held under a live lease) is marked `failed` with reason
//! `worker_lost` and the dead letter deleted.

use outpost_core::domain::FailureReason;
use outpost_core::ports::{Backend, Delivery, StoreError};
use std::time::Duration;

const BATCH: usize = 10;

/// Drains every `interval` until the task is aborted. `visibility` hides a dead letter while it
/// is handled (and, for a run still under a live lease, until it is looked at again).
pub async fn drain_loop(backend: Backend, interval: Duration, visibility: Duration) {
    loop {
        let handled = drain_once(&backend, visibility).await;
        if handled < BATCH {
            tokio::time::sleep(interval).await;
        }
    }
}

/// One batch. Returns how many dead letters were received.
pub async fn drain_once(backend: &Backend, visibility: Duration) -> usize {
    let letters = match backend.queue.receive_dead_letters(BATCH, visibility).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "receiving dead letters failed");
            return 0;
        }
    };
    let n = letters.len();
    for letter in letters {
        handle(backend, letter).await;
    }
    n
}

async fn handle(backend: &Backend, letter: Delivery) {
    let id = &letter.message.run_id;
    let done = match backend.runs.fail_unfinished(id, FailureReason::WorkerLost).await {
        Ok(run) if run.status.is_terminal() => {
            tracing::warn!(run_id = %id, status = %run.status, reason = ?run.failure_reason, "dead letter handled");
            true
        }
        Ok(_) => {
            // Still running under a live lease: its worker may finish it. Look again later.
            tracing::debug!(run_id = %id, "dead letter of a run under a live lease; kept for later");
            false
        }
        Err(StoreError::NotFound) => true,
        Err(e) => {
            tracing::warn!(run_id = %id, error = %e, "failing a dead-lettered run failed; retrying later");
            false
        }
    };
    if done {
        if let Err(e) = backend.queue.delete_dead_letter(&letter.receipt).await {
            tracing::warn!(run_id = %id, error = %e, "deleting a dead letter failed");
        }
    }
}
