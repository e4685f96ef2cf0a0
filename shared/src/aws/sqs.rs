//! TaskQueue on SQS with a dead-letter queue (skeleton: being written).

use super::AwsSetupError;
use crate::ports::{Delivery, QueueDepth, QueueError, Receipt, TaskMessage, TaskQueue};
use async_trait::async_trait;
use std::time::Duration;

/// The task queue `queue_url` and its redrive target `dead_letter_queue_url`.
#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_queue_url: String,
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String, dead_letter_queue_url: String) -> Self {
        Self {
            client,
            queue_url,
            dead_letter_queue_url,
        }
    }
}

/// Creates `{name}-dlq` and `{name}` with a redrive policy of `max_receive_count`; returns
/// `(queue_url, dead_letter_queue_url)`.
pub async fn create_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String), AwsSetupError> {
    let _ = (client, name, max_receive_count);
    Err(AwsSetupError::MissingSetting("sqs::create_queues is not written yet"))
}

fn pending() -> QueueError {
    QueueError::Backend("SqsQueue is not written yet".into())
}

#[async_trait]
impl TaskQueue for SqsQueue {
    async fn send(&self, _message: &TaskMessage) -> Result<(), QueueError> {
        let _ = (&self.client, &self.queue_url, &self.dead_letter_queue_url);
        Err(pending())
    }
    async fn receive(&self, _max: usize, _visibility: Duration, _wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        Err(pending())
    }
    async fn extend_visibility(&self, _receipt: &Receipt, _visibility: Duration) -> Result<(), QueueError> {
        Err(pending())
    }
    async fn delete(&self, _receipt: &Receipt) -> Result<(), QueueError> {
        Err(pending())
    }
    async fn receive_dead_letters(&self, _max: usize, _visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        Err(pending())
    }
    async fn delete_dead_letter(&self, _receipt: &Receipt) -> Result<(), QueueError> {
        Err(pending())
    }
    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        Err(pending())
    }
}
