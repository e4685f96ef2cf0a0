//! What the port contract cannot see of the SQS queue and the SSM secret store, checked on moto
//! server through the AWS APIs directly: the redrive policy, message attributes and group id, the
//! coalescing of deletes into DeleteMessageBatch (by counting requests), and the parameter type
//! and path of secrets. Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `scripts/test`).

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use outpost_aws::sqs::{create_queues, SqsQueue};
use outpost_aws::ssm::SsmSecretStore;
use outpost_aws::{AwsClients, RequestCounter};
use outpost_core::domain::{RunId, TenantId};
use outpost_core::ports::{QueueDepth, QueueError, Receipt, SecretName, SecretStore, TaskMessage, TaskQueue};
use outpost_testkit::aws::emulator_clients;
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashSet;
use std::time::{Duration, Instant};

const MINUTE: Duration = Duration::from_secs(60);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase())
}

fn tenant(name: &str) -> TenantId {
    name.parse().expect("tenant")
}

fn task(tenant_name: &str) -> TaskMessage {
    TaskMessage {
        run_id: RunId::generate(),
        tenant: tenant(tenant_name),
        trace_context: None,
    }
}

/// Fresh queues on the emulator, and a queue over them.
async fn fresh_queue(clients: &AwsClients, max_receive_count: u32) -> (SqsQueue, String, String) {
    let (url, dlq_url) = create_queues(&clients.sqs, &unique("q"), max_receive_count)
        .await
        .expect("create queues");
    (
        SqsQueue::new(clients.sqs.clone(), url.clone(), dlq_url.clone()),
        url,
        dlq_url,
    )
}

/// Receives until `n` deliveries are in hand.
async fn receive_n(queue: &SqsQueue, n: usize) -> Vec<outpost_core::ports::Delivery> {
    let mut got = Vec::new();
    for _ in 0..20 {
        if got.len() >= n {
            break;
        }
        got.extend(
            queue
                .receive(n - got.len(), MINUTE, Duration::from_secs(1))
                .await
                .expect("receive"),
        );
    }
    assert_eq!(got.len(), n, "expected {n} deliveries");
    got
}

fn count(counter: &RequestCounter, service: &str, operation: &str) -> u64 {
    counter
        .snapshot()
        .get(&(service.to_owned(), operation.to_owned()))
        .copied()
        .unwrap_or(0)
}

async fn queue_attribute(clients: &AwsClients, url: &str, name: QueueAttributeName) -> String {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(name.clone())
        .send()
        .await
        .expect("get queue attributes")
        .attributes
        .and_then(|mut a| a.remove(&name))
        .unwrap_or_else(|| panic!("queue has no {name}"))
}

#[tokio::test]
async fn queues_are_created_with_a_redrive_policy_idempotently() {
    let clients = emulator_clients(None).await;
    let name = unique("q");
    let (url, dlq_url) = create_queues(&clients.sqs, &name, 3).await.expect("create");
    assert!(url.ends_with(&format!("/{name}")), "{url}");
    assert!(dlq_url.ends_with(&format!("/{name}-dlq")), "{dlq_url}");
    let again = create_queues(&clients.sqs, &name, 3).await.expect("create again");
    assert_eq!(again, (url.clone(), dlq_url.clone()));

    let dlq_arn = queue_attribute(&clients, &dlq_url, QueueAttributeName::QueueArn).await;
    let policy: serde_json::Value =
        serde_json::from_str(&queue_attribute(&clients, &url, QueueAttributeName::RedrivePolicy).await)
            .expect("redrive policy is JSON");
    assert_eq!(policy["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "3");
    let retention = queue_attribute(&clients, &dlq_url, QueueAttributeName::MessageRetentionPeriod).await;
    assert_eq!(retention, "1209600");
}

#[tokio::test]
async fn the_redrive_policy_moves_a_spent_message_to_the_dead_letter_queue() {
    let clients = emulator_clients(None).await;
    let (queue, url, dlq_url) = fresh_queue(&clients, 2).await;
    let spent = task("acme");
    queue.send(&spent).await.expect("send");

    // Received twice through the API directly, each time made visible again at once.
    for want in 1..=2 {
        let got = clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .visibility_timeout(0)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .expect("receive");
        let m = got.messages().first().expect("the message");
        let count = m
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
            .cloned();
        assert_eq!(count, Some(want.to_string()));
    }
    // The next receive finds it spent: SQS moves it instead of delivering it.
    let third = clients
        .sqs
        .receive_message()
        .queue_url(&url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive");
    assert!(third.messages().is_empty(), "a spent message was delivered again");

    let moved = clients
        .sqs
        .receive_message()
        .queue_url(&dlq_url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the DLQ");
    let m = moved.messages().first().expect("the message is in the DLQ");
    let body: serde_json::Value = serde_json::from_str(m.body().expect("body")).expect("JSON body");
    assert_eq!(body["run_id"], spent.run_id.as_str());
    assert_eq!(body["tenant"], "acme");
}

#[tokio::test]
async fn sent_messages_carry_attributes_and_the_tenant_as_group() {
    let clients = emulator_clients(None).await;
    let (queue, url, _) = fresh_queue(&clients, 5).await;
    let traced = TaskMessage {
        trace_context: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        ..task("acme")
    };
    let plain = task("globex");
    queue.send(&traced).await.expect("send");
    queue.send(&plain).await.expect("send");

    let mut seen = 0;
    for _ in 0..10 {
        if seen == 2 {
            break;
        }
        let got = clients
            .sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive");
        for m in got.messages() {
            seen += 1;
            let body: serde_json::Value = serde_json::from_str(m.body().expect("body")).expect("JSON body");
            let want = if body["run_id"] == traced.run_id.as_str() {
                &traced
            } else {
                &plain
            };
            assert_eq!(body["run_id"], want.run_id.as_str());
            assert_eq!(body["tenant"], want.tenant.as_str());
            let attrs = m.message_attributes().expect("message attributes");
            let attr = |name: &str| attrs.get(name).and_then(|v| v.string_value()).map(str::to_owned);
            assert_eq!(attr("tenant").as_deref(), Some(want.tenant.as_str()));
            assert_eq!(attr("run_id").as_deref(), Some(want.run_id.as_str()));
            assert_eq!(attr("traceparent"), want.trace_context);
            match &want.trace_context {
                Some(t) => assert_eq!(body["trace_context"], t.as_str()),
                None => assert!(body.get("trace_context").is_none(), "absent trace is omitted: {body}"),
            }
            let group = m
                .attributes()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            assert_eq!(group.as_deref(), Some(want.tenant.as_str()));
        }
    }
    assert_eq!(seen, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deletes_share_one_delete_message_batch() {
    let counter = RequestCounter::new();
    let clients = emulator_clients(Some(&counter)).await;
    let (queue, _, _) = fresh_queue(&clients, 5).await;
    for _ in 0..12 {
        queue.send(&task("acme")).await.expect("send");
    }
    let mut deliveries = receive_n(&queue, 12).await;
    let lone = deliveries.pop().expect("twelve");
    let stale_too = deliveries.pop().expect("eleven");

    // Ten at once: one request.
    counter.reset();
    let results = futures_util::future::join_all(deliveries.iter().map(|d| queue.delete(&d.receipt))).await;
    for r in results {
        r.expect("delete");
    }
    assert_eq!(
        count(&counter, "SQS", "DeleteMessageBatch"),
        1,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(counter.total(), 1, "{:?}", counter.snapshot());

    // A bad entry in a batch fails only its own caller.
    counter.reset();
    let junk = Receipt("1:deadbeef".into());
    let (good, bad) = tokio::join!(queue.delete(&stale_too.receipt), queue.delete(&junk));
    good.expect("the good entry is deleted");
    assert!(matches!(bad, Err(QueueError::StaleReceipt)), "{bad:?}");
    assert_eq!(
        count(&counter, "SQS", "DeleteMessageBatch"),
        1,
        "{:?}",
        counter.snapshot()
    );
    assert_eq!(counter.total(), 1, "{:?}", counter.snapshot());

    // A lone delete does not wait for company long.
    counter.reset();
    let start = Instant::now();
    queue.delete(&lone.receipt).await.expect("delete");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(counter.total(), 1, "{:?}", counter.snapshot());

    // Receipts known to be deleted are stale without a request.
    counter.reset();
    assert!(matches!(
        queue.delete(&lone.receipt).await,
        Err(QueueError::StaleReceipt)
    ));
    assert!(matches!(
        queue.extend_visibility(&lone.receipt, MINUTE).await,
        Err(QueueError::StaleReceipt)
    ));
    assert_eq!(counter.total(), 0, "{:?}", counter.snapshot());

    // Depth: both queues, one GetQueueAttributes each.
    assert_eq!(queue.depth().await.expect("depth"), QueueDepth::default());
    assert_eq!(count(&counter, "SQS", "GetQueueAttributes"), 2);
}

#[test]
fn deletes_still_complete_after_the_batcher_runtime_is_gone() {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let first = runtime();
    let (queue, receipts) = first.block_on(async {
        let clients = emulator_clients(None).await;
        let (queue, _, _) = fresh_queue(&clients, 5).await;
        queue.send(&task("acme")).await.expect("send");
        queue.send(&task("acme")).await.expect("send");
        let got = receive_n(&queue, 2).await;
        // Starts the batcher on this runtime.
        queue.delete(&got[0].receipt).await.expect("delete");
        (queue, vec![got[1].receipt.clone()])
    });
    drop(first);
    let second = runtime();
    second.block_on(async {
        let deleted = tokio::time::timeout(Duration::from_secs(10), queue.delete(&receipts[0])).await;
        deleted.expect("the delete did not hang").expect("delete");
        assert_eq!(queue.depth().await.expect("depth"), QueueDepth::default());
    });
}

#[tokio::test]
async fn undecodable_messages_are_skipped_and_dead_ones_dropped() {
    let clients = emulator_clients(None).await;
    let (queue, url, dlq_url) = fresh_queue(&clients, 5).await;
    for target in [&url, &dlq_url] {
        clients
            .sqs
            .send_message()
            .queue_url(target)
            .message_body("{\"not\": \"a task\"}")
            .send()
            .await
            .expect("send junk");
    }
    let good = task("acme");
    queue.send(&good).await.expect("send");

    let mut got = Vec::new();
    for _ in 0..5 {
        got.extend(
            queue
                .receive(10, MINUTE, Duration::from_secs(1))
                .await
                .expect("receive"),
        );
        if !got.is_empty() {
            break;
        }
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].message, good);

    assert!(queue
        .receive_dead_letters(10, MINUTE)
        .await
        .expect("dead letters")
        .is_empty());
    queue.delete(&got[0].receipt).await.expect("delete");
    // The junk on the task queue stays (in flight) until it is dead-lettered; the DLQ's is gone.
    assert_eq!(
        queue.depth().await.expect("depth"),
        QueueDepth {
            visible: 0,
            in_flight: 1,
            dead: 0
        }
    );
}

#[tokio::test]
async fn secrets_are_secure_strings_at_the_documented_path() {
    let clients = emulator_clients(None).await;
    let prefix = format!("/{}", unique("s"));
    // A trailing slash on the prefix is dropped.
    let store = SsmSecretStore::new(clients.ssm.clone(), format!("{prefix}/"));
    let acme = tenant("acme");
    let key: SecretName = "ANTHROPIC_API_KEY".parse().expect("name");
    store
        .put_secret(&acme, &key, &SecretString::from("sk-test".to_owned()))
        .await
        .expect("put");

    let name = format!("{prefix}/acme/ANTHROPIC_API_KEY");
    let p = clients
        .ssm
        .get_parameter()
        .name(&name)
        .with_decryption(true)
        .send()
        .await
        .expect("the parameter is at the documented path")
        .parameter
        .expect("parameter");
    assert_eq!(p.r#type(), Some(&aws_sdk_ssm::types::ParameterType::SecureString));
    assert_eq!(p.value(), Some("sk-test"));

    // Parameters in the folder that are not secret names, or deeper down, are not listed.
    for odd in ["not-a-name", "sub/NESTED"] {
        clients
            .ssm
            .put_parameter()
            .name(format!("{prefix}/acme/{odd}"))
            .value("x")
            .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
            .send()
            .await
            .expect("put odd parameter");
    }
    // More than one page of GetParametersByPath (10 a page).
    let mut want: HashSet<String> = HashSet::from([key.to_string()]);
    for i in 0..11 {
        let n: SecretName = format!("K{i:02}").parse().expect("name");
        store
            .put_secret(&acme, &n, &SecretString::from(format!("v{i}")))
            .await
            .expect("put");
        want.insert(n.to_string());
    }
    let listed: Vec<String> = store
        .list_secrets(&acme)
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.name.to_string())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "sorted by name");
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), want);
    let got = store.get_secret(&acme, &key).await.expect("get").expect("stored");
    assert_eq!(got.expose_secret(), "sk-test");
}
