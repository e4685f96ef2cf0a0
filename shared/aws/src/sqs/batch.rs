//! Deletes coalesced into DeleteMessageBatch, to spend fewer SQS requests per run.
//!
//! Callers hand their receipt to a background task through a channel and wait on a oneshot for
//! their own entry's result. The task collects deletes for up to [`LINGER`] after the first one
//! (or until [`MAX_BATCH`] are pending) and sends them as one request: DeleteMessage for a lone
//! receipt, DeleteMessageBatch for more. A failed entry fails only its own caller.
//!
//! The task is started on first use, on the caller's tokio runtime, and ends when the last
//! sender is dropped (when the queue is). If it is gone (its runtime shut down) or drops a
//! request, the caller deletes with its own DeleteMessage: deleting is idempotent, so a retry
//! after a lost reply is harmless. No caller waits for the task forever.

use super::is_stale;
use crate::sdk_error;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use outpost_core::ports::BackendError;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most entries of one DeleteMessageBatch (the SQS limit).
pub(super) const MAX_BATCH: usize = 10;
/// How long the first delete of a batch waits for company. Workers acknowledge a run after its
/// final status is written and the message stays invisible for a whole lease, so a later delete
/// costs nothing but lets more runs share one request.
pub(super) const LINGER: Duration = Duration::from_millis(50);
/// Deletes waiting for the task before callers are held back.
const CHANNEL_CAPACITY: usize = 1024;

/// The result of deleting one receipt.
#[derive(Debug)]
pub(super) enum Outcome {
    Deleted,
    /// SQS refused the receipt as invalid or no longer current.
    Stale,
    Failed(BackendError),
}

struct Job {
    receipt: String,
    reply: oneshot::Sender<Outcome>,
}

/// Deletes on one queue, batched by a background task.
#[derive(Debug)]
pub(super) struct DeleteBatcher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// The running task's inbox, once started.
    inbox: Mutex<Option<mpsc::Sender<Job>>>,
}

impl DeleteBatcher {
    pub(super) fn new(client: aws_sdk_sqs::Client, queue_url: String) -> Self {
        Self {
            client,
            queue_url,
            inbox: Mutex::new(None),
        }
    }

    /// Deletes `receipt`, in a batch with whatever other deletes arrive meanwhile.
    pub(super) async fn delete(&self, receipt: &str) -> Outcome {
        if let Some(inbox) = self.inbox() {
            let (reply, result) = oneshot::channel();
            let job = Job {
                receipt: receipt.to_owned(),
                reply,
            };
            if inbox.send(job).await.is_ok() {
                if let Ok(outcome) = result.await {
                    return outcome;
                }
            }
            tracing::debug!("delete batcher unavailable; deleting directly");
        }
        delete_one(&self.client, &self.queue_url, receipt).await
    }

    /// The task's inbox, starting the task if it is not running. `None` outside a tokio runtime.
    fn inbox(&self) -> Option<mpsc::Sender<Job>> {
        let mut inbox = self.inbox.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = inbox.as_ref().filter(|tx| !tx.is_closed()) {
            return Some(tx.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        runtime.spawn(run(self.client.clone(), self.queue_url.clone(), rx));
        *inbox = Some(tx.clone());
        Some(tx)
    }
}

/// The task: collects jobs into batches and sends each batch from its own task, so a slow
/// request never holds back the next batch.
async fn run(client: aws_sdk_sqs::Client, queue_url: String, mut inbox: mpsc::Receiver<Job>) {
    while let Some(first) = inbox.recv().await {
        let mut jobs = vec![first];
        let deadline = Instant::now() + LINGER;
        while jobs.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, inbox.recv()).await {
                Ok(Some(job)) => jobs.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let (client, queue_url) = (client.clone(), queue_url.clone());
        tokio::spawn(async move {
            let receipts: Vec<&str> = jobs.iter().map(|j| j.receipt.as_str()).collect();
            let outcomes = delete_many(&client, &queue_url, &receipts).await;
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                // The caller may have given up; its delete happened anyway.
                let _ = job.reply.send(outcome);
            }
        });
    }
    tracing::debug!(queue_url = %queue_url, "delete batcher stopped");
}

/// DeleteMessage of one receipt.
pub(super) async fn delete_one(client: &aws_sdk_sqs::Client, queue_url: &str, receipt: &str) -> Outcome {
    match client
        .delete_message()
        .queue_url(queue_url)
        .receipt_handle(receipt)
        .send()
        .await
    {
        Ok(_) => Outcome::Deleted,
        Err(e) if is_stale(e.code(), e.message()) => Outcome::Stale,
        Err(e) => Outcome::Failed(sdk_error(e)),
    }
}

/// Deletes `receipts` in one request (at most [`MAX_BATCH`]); one outcome per receipt, in order.
pub(super) async fn delete_many(client: &aws_sdk_sqs::Client, queue_url: &str, receipts: &[&str]) -> Vec<Outcome> {
    if let [receipt] = receipts {
        return vec![delete_one(client, queue_url, receipt).await];
    }
    let entries: Result<Vec<_>, _> = receipts
        .iter()
        .enumerate()
        .map(|(i, receipt)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(*receipt)
                .build()
        })
        .collect();
    let entries = match entries {
        Ok(entries) => entries,
        Err(e) => {
            let message = format!("building DeleteMessageBatch entries: {e}");
            return receipts
                .iter()
                .map(|_| Outcome::Failed(message.clone().into()))
                .collect();
        }
    };
    let output = client
        .delete_message_batch()
        .queue_url(queue_url)
        .set_entries(Some(entries))
        .send()
        .await;
    let output = match output {
        Ok(output) => output,
        Err(e) if is_stale(e.code(), e.message()) => {
            // The whole batch refused over some receipt, without saying which: ask one by one so
            // only that caller sees it.
            tracing::debug!(error = %e.code().unwrap_or("?"), "DeleteMessageBatch refused; deleting one by one");
            let each = receipts.iter().map(|r| delete_one(client, queue_url, r));
            return futures_util::future::join_all(each).await;
        }
        Err(e) => {
            let message = sdk_error(e).to_string();
            return receipts
                .iter()
                .map(|_| Outcome::Failed(format!("DeleteMessageBatch: {message}").into()))
                .collect();
        }
    };
    let mut outcomes: Vec<Option<Outcome>> = receipts.iter().map(|_| None).collect();
    for ok in output.successful() {
        if let Some(slot) = ok.id().parse::<usize>().ok().and_then(|i| outcomes.get_mut(i)) {
            *slot = Some(Outcome::Deleted);
        }
    }
    for failed in output.failed() {
        if let Some(slot) = failed.id().parse::<usize>().ok().and_then(|i| outcomes.get_mut(i)) {
            *slot = Some(if is_stale(Some(failed.code()), failed.message()) {
                Outcome::Stale
            } else {
                Outcome::Failed(
                    format!(
                        "DeleteMessageBatch entry failed: {}: {}",
                        failed.code(),
                        failed.message().unwrap_or("no message")
                    )
                    .into(),
                )
            });
        }
    }
    outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("DeleteMessageBatch returned no result for this entry".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offline_client() -> aws_sdk_sqs::Client {
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .build();
        aws_sdk_sqs::Client::from_conf(config)
    }

    async fn alive_tasks_after_yielding() -> usize {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        tokio::runtime::Handle::current().metrics().num_alive_tasks()
    }

    #[tokio::test]
    async fn the_task_starts_once_and_ends_with_its_batcher() {
        let before = alive_tasks_after_yielding().await;
        let batcher = DeleteBatcher::new(offline_client(), "http://sqs.invalid/q".into());
        let first = batcher.inbox().expect("inside a runtime");
        let second = batcher.inbox().expect("inside a runtime");
        assert!(first.same_channel(&second), "one task per batcher");
        assert_eq!(alive_tasks_after_yielding().await, before + 1);
        drop((first, second));
        drop(batcher);
        assert_eq!(
            alive_tasks_after_yielding().await,
            before,
            "the task ends with the batcher"
        );
    }

    #[test]
    fn outside_a_runtime_there_is_no_task() {
        let batcher = DeleteBatcher::new(offline_client(), "http://sqs.invalid/q".into());
        assert!(batcher.inbox().is_none());
    }
}
