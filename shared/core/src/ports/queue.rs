//! TaskQueue: at-least-once delivery of run ids to workers, with SQS semantics so the embedded
//! queue and SQS are interchangeable.
//!
//! - `receive` hides each returned message for `visibility`; if it is neither deleted nor
//!   extended in that time it becomes visible again and its receive count goes up.
//! - A message received more than the queue's max receive count times moves to the dead-letter
//!   state instead of being delivered again; `receive_dead_letters` returns those.
//! - Delivery order is roughly FIFO with round-robin across tenants; nothing relies on order.

use super::BackendError;
use crate::domain::{RunId, TenantId};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is unknown or stale (the message was deleted or delivered again since).
    #[error("receipt is no longer valid")]
    StaleReceipt,
    #[error("queue backend error: {0}")]
    Backend(#[source] BackendError),
}

/// The body of one queued task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskMessage {
    pub run_id: RunId,
    pub tenant: TenantId,
    /// W3C `traceparent` of the dispatch, so one trace spans API → queue → worker.
    pub trace_context: Option<String>,
}

/// Handle to delete or extend one delivery (SQS receipt handle).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(pub String);

/// One delivery of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message: TaskMessage,
    pub receipt: Receipt,
    /// 1 on the first delivery (SQS ApproximateReceiveCount).
    pub receive_count: u32,
}

/// Approximate counts, as SQS reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Messages waiting to be received.
    pub visible: u64,
    /// Messages received and not yet deleted.
    pub in_flight: u64,
    /// Messages in the dead-letter state.
    pub dead: u64,
}

#[async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    async fn send(&self, message: &TaskMessage) -> Result<(), QueueError>;

    /// Up to `max` (1..=10) messages, waiting up to `wait` for the first one (long poll).
    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Makes a delivery invisible for `visibility` from now (SQS ChangeMessageVisibility).
    async fn extend_visibility(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError>;

    /// Deletes a delivered message (done with it).
    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError>;

    /// Up to `max` dead-lettered messages, hidden for `visibility` like `receive`.
    async fn receive_dead_letters(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError>;

    /// Deletes a dead-lettered message.
    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), QueueError>;

    async fn depth(&self) -> Result<QueueDepth, QueueError>;
}
