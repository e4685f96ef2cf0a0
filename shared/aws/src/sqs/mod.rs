//! TaskQueue on SQS: a standard queue whose redrive policy moves a message to the dead-letter queue
//! after `maxReceiveCount` receives.
//!
//! Requests per operation:
//!
//! - `send`: one SendMessage. The body is JSON `{"run_id","tenant","trace_context"?}`; the same
//!   values are also message attributes (`tenant`, `run_id`, `traceparent`) for tooling, and the
//!   tenant is the `MessageGroupId` (SQS fair queues: a busy tenant's backlog makes a quiet
//!   tenant's messages wait less; SQS does not promise strict turns across tenants).
//! - `receive` / `receive_dead_letters`: one ReceiveMessage (asking for `ApproximateReceiveCount`).
//!   A body that does not decode is skipped with a warning (on the task queue it reaches the DLQ
//!   after max receives; on the DLQ it is deleted, one more request).
//! - `extend_visibility`: one ChangeMessageVisibility. `delete_dead_letter`: one DeleteMessage.
//! - `delete`: concurrent deletes share one DeleteMessageBatch (see `batch.rs`); a lone delete
//!   waits ~15 ms for company, then is one DeleteMessage.
//! - `depth`: GetQueueAttributes on both queues, concurrently.
//!
//! Stale receipts: SQS reports a receipt that is malformed or whose message is gone, but accepts
//! a receipt of an earlier delivery, or of a message already deleted. The queue remembers the
//! receipts this process handled (see `ledger.rs`) and reports those as
//! [`QueueError::StaleReceipt`] without a request; receipts handled by another process are judged
//! by SQS alone.

mod batch;
mod ledger;

use super::{sdk_error, AwsSetupError};
use async_trait::async_trait;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName};
use batch::{DeleteBatcher, Outcome};
use ledger::Ledger;
use outpost_core::domain::{RunId, TenantId};
use outpost_core::ports::{BackendError, Delivery, QueueDepth, QueueError, Receipt, TaskMessage, TaskQueue};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECS: u64 = 43_200;
/// Longest long poll SQS accepts.
const MAX_WAIT_SECS: u64 = 20;
/// Most messages one ReceiveMessage returns.
const MAX_RECEIVE: usize = 10;
/// Retention of the dead-letter queue: the SQS maximum, 14 days.
const DEAD_LETTER_RETENTION_SECS: u32 = 14 * 24 * 60 * 60;
/// Longest piece of a decoding error that is logged (the error may quote the body).
const MAX_LOGGED_ERROR: usize = 200;

/// The task queue `queue_url` and its redrive target `dead_letter_queue_url`. Clones share one
/// delete batcher and one receipt ledger.
#[derive(Clone)]
pub struct SqsQueue {
    inner: Arc<Inner>,
}

struct Inner {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_queue_url: String,
    deletes: DeleteBatcher,
    ledger: Mutex<Ledger>,
}

impl fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqsQueue")
            .field("queue_url", &self.inner.queue_url)
            .field("dead_letter_queue_url", &self.inner.dead_letter_queue_url)
            .finish_non_exhaustive()
    }
}

impl SqsQueue {
    pub fn new(client: aws_sdk_sqs::Client, queue_url: String, dead_letter_queue_url: String) -> Self {
        let deletes = DeleteBatcher::new(client.clone(), queue_url.clone());
        Self {
            inner: Arc::new(Inner {
                client,
                queue_url,
                dead_letter_queue_url,
                deletes,
                ledger: Mutex::new(Ledger::default()),
            }),
        }
    }

    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.inner.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `receipt` is certainly stale without asking SQS (empty, or known here).
    fn known_stale(&self, receipt: &Receipt) -> bool {
        receipt.0.is_empty() || self.ledger().is_stale(&receipt.0)
    }

    /// Records what a delete or visibility change learnt about `receipt`.
    fn settle(&self, receipt: &Receipt, outcome: Outcome) -> Result<(), QueueError> {
        match outcome {
            Outcome::Deleted => {
                self.ledger().gone(&receipt.0);
                Ok(())
            }
            Outcome::Stale => {
                self.ledger().gone(&receipt.0);
                Err(QueueError::StaleReceipt)
            }
            Outcome::Failed(e) => Err(QueueError::Backend(e)),
        }
    }

    /// One ReceiveMessage on `queue_url`, decoded. Returns the deliveries and the receipts of
    /// messages whose body did not decode.
    async fn receive_from(
        &self,
        queue_url: &str,
        max: usize,
        visibility: Duration,
        wait_secs: u64,
    ) -> Result<(Vec<Delivery>, Vec<String>), QueueError> {
        let output = self
            .inner
            .client
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(to_i32(max.clamp(1, MAX_RECEIVE) as u64))
            .visibility_timeout(to_i32(visibility_secs(visibility)))
            .wait_time_seconds(to_i32(wait_secs.min(MAX_WAIT_SECS)))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| QueueError::Backend(sdk_error(e)))?;
        let mut deliveries = Vec::new();
        let mut undecodable = Vec::new();
        for m in output.messages() {
            let message_id = m.message_id().unwrap_or("?");
            let Some(receipt) = m.receipt_handle().filter(|r| !r.is_empty()) else {
                tracing::warn!(
                    message_id,
                    "SQS returned a message without a receipt handle; skipping it"
                );
                continue;
            };
            if let Some(id) = m.message_id() {
                self.ledger().received(id, receipt);
            }
            let message = match decode_body(m.body().unwrap_or_default()) {
                Ok(message) => message,
                Err(e) => {
                    tracing::warn!(
                        message_id,
                        body_bytes = m.body().map_or(0, str::len),
                        error = %truncate(&e.to_string(), MAX_LOGGED_ERROR),
                        "queued message does not decode as a task; skipping it"
                    );
                    undecodable.push(receipt.to_owned());
                    continue;
                }
            };
            let receive_count = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|c| c.parse::<u32>().ok())
                .unwrap_or_else(|| {
                    tracing::warn!(message_id, "SQS returned no ApproximateReceiveCount; assuming 1");
                    1
                });
            deliveries.push(Delivery {
                message,
                receipt: Receipt(receipt.to_owned()),
                receive_count,
            });
        }
        Ok((deliveries, undecodable))
    }

    /// ApproximateNumberOfMessages and ApproximateNumberOfMessagesNotVisible of `queue_url`.
    async fn counts(&self, queue_url: &str) -> Result<(u64, u64), QueueError> {
        let output = self
            .inner
            .client
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| QueueError::Backend(sdk_error(e)))?;
        let attrs = output.attributes();
        let count = |name: QueueAttributeName| -> Result<u64, QueueError> {
            let value = attrs.and_then(|a| a.get(&name));
            value.and_then(|v| v.parse().ok()).ok_or_else(|| {
                QueueError::Backend(format!("GetQueueAttributes returned {name} as {value:?}, not a count").into())
            })
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages)?,
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        ))
    }
}

/// The message body: the task, as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Body {
    run_id: RunId,
    tenant: TenantId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_context: Option<String>,
}

fn encode_body(message: &TaskMessage) -> Result<String, serde_json::Error> {
    serde_json::to_string(&Body {
        run_id: message.run_id.clone(),
        tenant: message.tenant.clone(),
        trace_context: message.trace_context.clone(),
    })
}

fn decode_body(body: &str) -> Result<TaskMessage, serde_json::Error> {
    let body: Body = serde_json::from_str(body)?;
    Ok(TaskMessage {
        run_id: body.run_id,
        tenant: body.tenant,
        trace_context: body.trace_context,
    })
}

/// A `String` message attribute.
fn string_attribute(value: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| QueueError::Backend(Box::new(e)))
}

/// Whole seconds of a visibility timeout: rounded up (never hidden for less than asked), at most
/// 12 hours.
fn visibility_secs(visibility: Duration) -> u64 {
    let secs = visibility.as_secs() + u64::from(visibility.subsec_nanos() > 0);
    secs.min(MAX_VISIBILITY_SECS)
}

fn to_i32(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Whether an SQS error code (and message) says the receipt handle is invalid or not current.
/// Codes come bare (`ReceiptHandleIsInvalid`) or qualified (`AWS.SimpleQueueService.MessageNotInflight`).
pub(super) fn is_stale(code: Option<&str>, message: Option<&str>) -> bool {
    let Some(code) = code else { return false };
    let code = code.rsplit(['.', '#']).next().unwrap_or(code);
    match code {
        "ReceiptHandleIsInvalid" | "MessageNotInflight" | "InvalidIdFormat" | "InvalidReceiptHandle" => true,
        // "Value … for parameter ReceiptHandle is invalid. Reason: Message does not exist or is
        // not available for visibility timeout change."
        "InvalidParameterValue" | "MissingParameter" => {
            message.is_some_and(|m| m.to_ascii_lowercase().contains("receipt"))
        }
        _ => false,
    }
}

/// Creates `{name}-dlq` (14-day retention) and `{name}` with a redrive policy of
/// `max_receive_count` to it; returns `(queue_url, dead_letter_queue_url)`. Idempotent: existing
/// queues with the same attributes are returned as they are.
pub async fn create_queues(
    client: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
) -> Result<(String, String), AwsSetupError> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = create_queue(
        client,
        &dlq_name,
        QueueAttributeName::MessageRetentionPeriod,
        DEAD_LETTER_RETENTION_SECS.to_string(),
    )
    .await?;
    let what = || format!("reading the ARN of SQS queue {dlq_name}");
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| setup_error(what(), sdk_error(e)))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| setup_error(what(), "GetQueueAttributes returned no QueueArn".into()))?;
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count,
    });
    let queue_url = create_queue(client, name, QueueAttributeName::RedrivePolicy, redrive.to_string()).await?;
    Ok((queue_url, dlq_url))
}

/// CreateQueue `name` with one attribute; returns its URL (also when it already exists alike).
async fn create_queue(
    client: &aws_sdk_sqs::Client,
    name: &str,
    attribute: QueueAttributeName,
    value: String,
) -> Result<String, AwsSetupError> {
    let what = || format!("creating SQS queue {name}");
    client
        .create_queue()
        .queue_name(name)
        .attributes(attribute, value)
        .send()
        .await
        .map_err(|e| setup_error(what(), sdk_error(e)))?
        .queue_url
        .ok_or_else(|| setup_error(what(), "CreateQueue returned no queue URL".into()))
}

fn setup_error(what: String, source: BackendError) -> AwsSetupError {
    AwsSetupError::Call { what, source }
}

#[async_trait]
impl TaskQueue for SqsQueue {
    async fn send(&self, message: &TaskMessage) -> Result<(), QueueError> {
        let body = encode_body(message).map_err(|e| QueueError::Backend(Box::new(e)))?;
        let mut request = self
            .inner
            .client
            .send_message()
            .queue_url(&self.inner.queue_url)
            .message_body(body)
            .message_group_id(message.tenant.as_str())
            .message_attributes("tenant", string_attribute(message.tenant.as_str())?)
            .message_attributes("run_id", string_attribute(message.run_id.as_str())?);
        if let Some(trace) = message.trace_context.as_deref().filter(|t| !t.is_empty()) {
            request = request.message_attributes("traceparent", string_attribute(trace)?);
        }
        request.send().await.map_err(|e| QueueError::Backend(sdk_error(e)))?;
        Ok(())
    }

    async fn receive(&self, max: usize, visibility: Duration, wait: Duration) -> Result<Vec<Delivery>, QueueError> {
        let (deliveries, _undecodable) = self
            .receive_from(&self.inner.queue_url, max, visibility, wait.as_secs())
            .await?;
        // Undecodable messages stay: they reach the dead-letter queue after max receives.
        Ok(deliveries)
    }

    async fn extend_visibility(&self, receipt: &Receipt, visibility: Duration) -> Result<(), QueueError> {
        if self.known_stale(receipt) {
            return Err(QueueError::StaleReceipt);
        }
        let result = self
            .inner
            .client
            .change_message_visibility()
            .queue_url(&self.inner.queue_url)
            .receipt_handle(&receipt.0)
            .visibility_timeout(to_i32(visibility_secs(visibility)))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_stale(e.code(), e.message()) => self.settle(receipt, Outcome::Stale),
            Err(e) => Err(QueueError::Backend(sdk_error(e))),
        }
    }

    async fn delete(&self, receipt: &Receipt) -> Result<(), QueueError> {
        if self.known_stale(receipt) {
            return Err(QueueError::StaleReceipt);
        }
        let outcome = self.inner.deletes.delete(&receipt.0).await;
        self.settle(receipt, outcome)
    }

    async fn receive_dead_letters(&self, max: usize, visibility: Duration) -> Result<Vec<Delivery>, QueueError> {
        let dlq = self.inner.dead_letter_queue_url.as_str();
        let (deliveries, undecodable) = self.receive_from(dlq, max, visibility, 0).await?;
        if !undecodable.is_empty() {
            // Nothing to mark failed for these: drop them.
            let receipts: Vec<&str> = undecodable.iter().map(String::as_str).collect();
            let outcomes = batch::delete_many(&self.inner.client, dlq, &receipts).await;
            for (receipt, outcome) in undecodable.iter().zip(outcomes) {
                match outcome {
                    Outcome::Deleted | Outcome::Stale => self.ledger().gone(receipt),
                    Outcome::Failed(e) => {
                        tracing::warn!(error = %e, "deleting an undecodable dead letter failed")
                    }
                }
            }
        }
        Ok(deliveries)
    }

    async fn delete_dead_letter(&self, receipt: &Receipt) -> Result<(), QueueError> {
        if self.known_stale(receipt) {
            return Err(QueueError::StaleReceipt);
        }
        let outcome = batch::delete_one(&self.inner.client, &self.inner.dead_letter_queue_url, &receipt.0).await;
        self.settle(receipt, outcome)
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        let ((visible, in_flight), (dead_visible, dead_in_flight)) = tokio::try_join!(
            self.counts(&self.inner.queue_url),
            self.counts(&self.inner.dead_letter_queue_url)
        )?;
        Ok(QueueDepth {
            visible,
            in_flight,
            dead: dead_visible + dead_in_flight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_omit_an_absent_trace() {
        let plain = TaskMessage {
            run_id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            trace_context: None,
        };
        let body = encode_body(&plain).expect("encode");
        assert!(!body.contains("trace_context"), "{body}");
        assert_eq!(decode_body(&body).expect("decode"), plain);
        let traced = TaskMessage {
            trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..plain
        };
        assert_eq!(
            decode_body(&encode_body(&traced).expect("encode")).expect("decode"),
            traced
        );
    }

    #[test]
    fn bad_bodies_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "{}",
            r#"{"run_id":"run_x","tenant":"acme"}"#,
            r#"{"run_id":"run_01ARZ3NDEKTSV4RRFFQ69G5FAV","tenant":"Bad Tenant"}"#,
        ] {
            assert!(decode_body(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn visibility_rounds_up_to_whole_seconds_within_the_limit() {
        assert_eq!(visibility_secs(Duration::ZERO), 0);
        assert_eq!(visibility_secs(Duration::from_millis(1)), 1);
        assert_eq!(visibility_secs(Duration::from_secs(1)), 1);
        assert_eq!(visibility_secs(Duration::from_millis(1_500)), 2);
        assert_eq!(visibility_secs(Duration::from_secs(u64::MAX)), MAX_VISIBILITY_SECS);
    }

    #[test]
    fn stale_codes() {
        assert!(is_stale(Some("ReceiptHandleIsInvalid"), None));
        assert!(is_stale(Some("AWS.SimpleQueueService.MessageNotInflight"), None));
        assert!(is_stale(Some("com.amazonaws.sqs#ReceiptHandleIsInvalid"), None));
        assert!(is_stale(
            Some("InvalidParameterValue"),
            Some("Value x for parameter ReceiptHandle is invalid. Reason: Message does not exist")
        ));
        assert!(!is_stale(
            Some("InvalidParameterValue"),
            Some("Value 99999 for parameter VisibilityTimeout is invalid.")
        ));
        assert!(!is_stale(Some("ThrottlingException"), None));
        assert!(!is_stale(None, None));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("üüü", 2), "üü");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
