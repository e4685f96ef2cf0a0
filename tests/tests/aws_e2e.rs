//! End-to-end on the AWS backend, on moto server: the real `ingest-lambda` binary served as a
//! Lambda function behind the API Gateway emulator (`outpost_testkit::lambda_gateway`, payload
//! v2 through the Lambda runtime API), the real `outpost-worker --backend aws`, the fake agent,
//! artifacts in the emulator's S3 fetched through presigned URLs, state in DynamoDB, tasks in
//! SQS, tenants' secrets in SSM Parameter Store.

use outpost_api::client::ClientError;
use outpost_api::RunView;
use outpost_core::{FailureReason, RunStatus};
use outpost_testkit::sha256_hex;
use outpost_tests::aws::AwsDeployment;
use outpost_tests::{fake_task, AppOptions, TestApp};
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A deployment on fresh AWS resources (five deliveries before the DLQ): the API as a Lambda
/// function with `instances` instances behind the gateway, a key of `acme`, and an AWS worker of
/// `slots` slots (10 s leases; 0: none).
async fn spawn(instances: usize, slots: usize) -> anyhow::Result<TestApp> {
    TestApp::spawn(AppOptions::aws(5).instances(instances).slots(slots).lease_secs(10)).await
}

fn resources(app: &TestApp) -> &AwsDeployment {
    app.aws().expect("an AWS deployment")
}

/// Polls the run through the API until its status satisfies `done`.
async fn wait_status(app: &TestApp, id: &str, done: impl Fn(RunStatus) -> bool) -> anyhow::Result<RunView> {
    app.wait_run(id, RUN_TIMEOUT, |run| done(run.status)).await
}

async fn wait_terminal(app: &TestApp, id: &str) -> anyhow::Result<RunView> {
    wait_status(app, id, RunStatus::is_terminal).await
}

#[tokio::test]
async fn a_run_dispatched_through_the_lambda_runs_on_an_aws_worker_with_artifacts_in_s3() -> anyhow::Result<()> {
    let app = spawn(2, 2).await?;
    let aws = resources(&app);
    let client = app.client()?;

    let accepted = client
        .dispatch(&fake_task(
            "say hello from the fleet; print 40000; artifact report.md # Report; artifact deep/data.json {\"ok\":true}; exit 0",
        ))
        .await?;
    assert_eq!(accepted.status, RunStatus::Queued);
    let run = wait_terminal(&app, &accepted.id).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.attempts, 1);

    let names: Vec<&str> = run.artifacts.iter().map(|a| a.name.as_str()).collect();
    for expected in ["output.log", "summary.json", "files/report.md", "files/deep/data.json"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // Every artifact link is a presigned S3 URL on the emulator that serves exactly the manifest's
    // bytes, without the API key.
    let http = reqwest::Client::new();
    for a in &run.artifacts {
        assert!(
            a.url.starts_with(&aws.endpoint) && a.url.contains("X-Amz-Signature="),
            "{}: not a presigned URL: {}",
            a.name,
            a.url
        );
        let resp = http.get(&a.url).send().await?;
        assert_eq!(resp.status().as_u16(), 200, "{}", a.name);
        let body = resp.bytes().await?;
        assert_eq!(body.len() as u64, a.size, "{}", a.name);
        assert_eq!(sha256_hex(&body), a.sha256, "{}", a.name);
    }
    // The same bytes through the API (Lambda) route, and the log through the logs route.
    assert_eq!(
        client.artifact(&run.id, "files/report.md").await?.as_ref(),
        b"# Report\n"
    );
    let log = client.artifact(&run.id, "output.log").await?;
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("hello from the fleet"), "{text:.200}");
    assert!(log.len() > 40_000, "the whole output is stored: {} bytes", log.len());
    let page = client.logs(&run.id, 0).await?;
    assert_eq!(page.size, log.len() as u64);
    assert_eq!(page.status, RunStatus::Succeeded);

    // The objects really are in the bucket, under the documented layout, encrypted.
    let head = aws
        .clients
        .s3
        .head_object()
        .bucket(&aws.settings.bucket)
        .key(format!("runs/acme/{}/files/report.md", run.id))
        .send()
        .await?;
    assert_eq!(
        head.server_side_encryption().map(|s| s.as_str()),
        Some("AES256"),
        "artifacts are encrypted at rest"
    );

    // The message was acknowledged and the listing sees the run.
    let list = client.list_runs(&Default::default()).await?;
    assert_eq!(list.runs.first().map(|r| r.id.as_str()), Some(run.id.as_str()));
    let fleet = client.fleet().await?;
    assert_eq!(fleet.queue.visible + fleet.queue.in_flight, 0, "{fleet:?}");
    assert!(
        fleet.workers.iter().any(|w| w.slots == 2),
        "the AWS worker reports itself: {fleet:?}"
    );
    Ok(())
}

#[tokio::test]
async fn failures_cancels_and_tenant_isolation_on_aws() -> anyhow::Result<()> {
    let app = spawn(1, 2).await?;
    let client = app.client()?;
    let other = app.client_with_key(&app.create_key("globex")?)?;

    let failing = client.dispatch(&fake_task("say about to fail; exit 3")).await?;
    let sleeping = client.dispatch(&fake_task("say sleeping; sleep 60")).await?;

    let run = wait_terminal(&app, &failing.id).await?;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.failure_reason, Some(FailureReason::NonZeroExit));
    assert_eq!(run.exit_code, Some(3));

    // Repositories on the server's machine are refused on a shared (AWS) deployment.
    let mut local = fake_task("say hi");
    local.repo = Some("file:///etc".into());
    match client.dispatch(&local).await {
        Err(ClientError::Api { status, code, .. }) => assert_eq!((status, code.as_str()), (422, "validation_failed")),
        other => panic!("expected a 422 for a file:// repo on AWS, got {other:?}"),
    }

    // Another tenant sees nothing of acme's runs.
    match other.get_run(&sleeping.id).await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected 404 for another tenant, got {other:?}"),
    }
    assert!(other.list_runs(&Default::default()).await?.runs.is_empty());

    // Cancel while running: the worker stops the agent at its next heartbeat.
    wait_status(&app, &sleeping.id, |s| s == RunStatus::Running).await?;
    client.cancel_run(&sleeping.id).await?;
    let run = wait_terminal(&app, &sleeping.id).await?;
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    Ok(())
}

#[tokio::test]
async fn a_tenants_secret_reaches_its_agent_and_never_comes_back() -> anyhow::Result<()> {
    let app = spawn(1, 1).await?;
    let aws = resources(&app);
    let client = app.client()?;

    let secret = "sk-tenant-own-0123456789";
    client.put_secret("FAKE_API_KEY", secret).await?;
    let list = client.list_secrets().await?;
    let names: Vec<&str> = list.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["FAKE_API_KEY"]);
    let raw = serde_json::to_string(&list)?;
    assert!(!raw.contains(secret), "the list never carries values: {raw}");

    // Stored as a SecureString under the tenant's path.
    let param = aws
        .clients
        .ssm
        .get_parameter()
        .name(format!("{}/acme/FAKE_API_KEY", aws.settings.secrets_prefix))
        .send()
        .await?;
    let param = param.parameter().expect("parameter");
    assert_eq!(param.r#type().map(|t| t.as_str()), Some("SecureString"));

    // The agent gets it (its length proves the value) while the log shows only [REDACTED].
    let run = client
        .dispatch(&fake_task("env FAKE_API_KEY; write key.txt x; exit 0"))
        .await?;
    let run = wait_terminal(&app, &run.id).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    let log = String::from_utf8(client.artifact(&run.id, "output.log").await?.to_vec())?;
    assert!(log.contains("FAKE_API_KEY=[REDACTED]"), "{log}");
    assert!(!log.contains(secret), "{log}");

    client.delete_secret("FAKE_API_KEY").await?;
    assert!(client.list_secrets().await?.secrets.is_empty());
    match client.delete_secret("FAKE_API_KEY").await {
        Err(ClientError::Api { status, .. }) => assert_eq!(status, 404),
        other => panic!("expected 404 deleting a missing secret, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn the_aws_worker_drains_on_sigterm() -> anyhow::Result<()> {
    let app = spawn(1, 0).await?;
    let mut worker = app.start_worker(1, 10)?;
    let client = app.client()?;

    let run = client
        .dispatch(&fake_task("say working; sleep 2; say done; exit 0"))
        .await?;
    wait_status(&app, &run.id, |s| s == RunStatus::Running).await?;
    // SIGTERM: stop receiving, finish the run in flight, exit on its own.
    assert!(
        worker.terminate(Duration::from_secs(30)),
        "the worker did not exit by itself after SIGTERM"
    );
    let run = client.get_run(&run.id).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "the in-flight run finished: {run:?}");
    let fleet = client.fleet().await?;
    assert!(fleet.workers.is_empty(), "a drained worker leaves the fleet: {fleet:?}");
    Ok(())
}

#[tokio::test]
async fn a_dead_lettered_task_fails_its_run_as_worker_lost() -> anyhow::Result<()> {
    // One delivery allowed: the second receive moves the message to the DLQ (SQS redrive).
    let app = TestApp::spawn(AppOptions::aws(1)).await?;
    let aws = resources(&app);
    let client = app.client()?;
    let run = client.dispatch(&fake_task("say never runs")).await?;

    // A consumer that takes the message and dies without deleting it (no worker is running).
    let sqs = &aws.clients.sqs;
    let first = sqs
        .receive_message()
        .queue_url(&aws.settings.queue_url)
        .visibility_timeout(0)
        .wait_time_seconds(1)
        .send()
        .await?;
    assert_eq!(first.messages().len(), 1, "the dispatched task is on the queue");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Receiving past maxReceiveCount is what moves the message to the DLQ.
        let again = sqs
            .receive_message()
            .queue_url(&aws.settings.queue_url)
            .visibility_timeout(0)
            .wait_time_seconds(0)
            .send()
            .await?;
        assert!(
            again.messages().is_empty(),
            "a message past maxReceiveCount is not delivered"
        );
        let dlq = sqs
            .get_queue_attributes()
            .queue_url(&aws.settings.dead_letter_queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .send()
            .await?;
        let dead = dlq
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if dead == 1 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the task never reached the DLQ");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get_run(&run.id).await?.status, RunStatus::Queued);

    // A worker's dead-letter drain fails the run; the agent never starts.
    let _worker = app.start_worker(1, 10)?;
    let failed = wait_terminal(&app, &run.id).await?;
    assert_eq!(failed.status, RunStatus::Failed, "{failed:?}");
    assert_eq!(failed.failure_reason, Some(FailureReason::WorkerLost));
    assert_eq!(failed.attempts, 0, "no worker ever claimed it");
    let fleet = client.fleet().await?;
    assert_eq!(
        fleet.queue.dead, 0,
        "the dead letter was deleted once handled: {fleet:?}"
    );
    Ok(())
}
