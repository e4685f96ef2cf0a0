//! End-to-end: a real `outpost dev` process, driven over HTTP with the typed client and raw
//! requests; the fake agent does the work. Covers success with artifacts, non-zero exit, timeout,
//! cancel while running, 5 MB of output intact, live log tail, bad input and tenant isolation.

use outpost_api::client::ClientError;
use outpost_api::DispatchRequest;
use outpost_core::{FailureReason, RunStatus};
use outpost_testkit::sha256_hex;
use outpost_tests::{fake_output, fake_task, AppOptions, TestApp};
use std::time::Duration;

const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn successful_run_stores_output_summary_and_agent_files() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let accepted = client
        .dispatch(&fake_task("say hello from the agent; write notes.txt in workspace; artifact report.md # Report; artifact deep/data.json {\"ok\":true}; stderr a warning; exit 0"))
        .await?;
    assert_eq!(accepted.status, RunStatus::Queued);
    assert!(accepted.id.starts_with("run_"));

    let run = server.wait_terminal(&accepted.id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(run.attempts, 1);
    assert!(run.started_at.is_some() && run.finished_at.is_some());

    let names: Vec<&str> = run.artifacts.iter().map(|a| a.name.as_str()).collect();
    for expected in ["output.log", "summary.json", "files/report.md", "files/deep/data.json"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    // Every manifest entry matches what is served.
    for a in &run.artifacts {
        let body = client.artifact(&run.id, &a.name).await?;
        assert_eq!(body.len() as u64, a.size, "{}", a.name);
        assert_eq!(sha256_hex(&body), a.sha256, "{}", a.name);
    }
    let log = String::from_utf8(client.artifact(&run.id, "output.log").await?.to_vec())?;
    assert!(log.contains("hello from the agent"), "{log}");
    assert!(log.contains("a warning"), "stderr goes to the same log: {log}");
    assert_eq!(
        client.artifact(&run.id, "files/report.md").await?.as_ref(),
        b"# Report\n"
    );

    let summary: serde_json::Value = serde_json::from_slice(&client.artifact(&run.id, "summary.json").await?)?;
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["status"], "succeeded");
    let changed = summary["changed_files"].to_string();
    assert!(changed.contains("notes.txt"), "summary lists changed files: {summary}");
    Ok(())
}

#[tokio::test]
async fn non_zero_exit_fails_with_the_agents_code() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let id = client.dispatch(&fake_task("say about to fail; exit 7")).await?.id;
    let run = server.wait_terminal(&id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, Some(7));
    assert_eq!(run.failure_reason, Some(FailureReason::NonZeroExit));
    assert!(
        run.artifacts.iter().any(|a| a.name == "output.log"),
        "artifacts are kept for failed runs too"
    );
    Ok(())
}

#[tokio::test]
async fn timeout_kills_an_agent_that_ignores_sigterm() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let mut req = fake_task("ignore-term; say stuck; child 300; sleep 300");
    req.timeout_secs = Some(10);
    let id = client.dispatch(&req).await?.id;
    let run = server.wait_terminal(&id, Duration::from_secs(60)).await?;
    assert_eq!(run.status, RunStatus::TimedOut, "{run:?}");
    assert_eq!(run.failure_reason, Some(FailureReason::Timeout));
    let took = run.duration_ms.unwrap_or_default();
    assert!(
        (9_000..40_000).contains(&took),
        "stopped around its 10 s timeout, took {took} ms"
    );
    let log = client.logs(&id, 0).await?;
    assert!(String::from_utf8_lossy(&log.data).contains("stuck"));
    Ok(())
}

#[tokio::test]
async fn cancel_while_running_stops_the_agent() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let id = client.dispatch(&fake_task("say started; sleep 120")).await?.id;
    server
        .wait_run(&id, RUN_TIMEOUT, |r| r.status == RunStatus::Running)
        .await?;
    let after_cancel = client.cancel_run(&id).await?;
    assert!(after_cancel.cancel_requested);
    let run = server.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    assert_eq!(run.failure_reason, Some(FailureReason::Cancelled));
    assert!(
        run.duration_ms.unwrap_or(i64::MAX) < 60_000,
        "stopped long before its sleep ended"
    );
    Ok(())
}

#[tokio::test]
async fn cancel_of_a_queued_run_is_immediate_and_it_never_runs() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev().slots(0)).await?;
    let client = server.client()?;
    let marker = server.shared.join("ran.txt");
    let id = client
        .dispatch(&fake_task(format!("count {}", marker.display())))
        .await?
        .id;
    let run = client.cancel_run(&id).await?;
    assert_eq!(run.status, RunStatus::Cancelled);
    // A worker that starts now gets the message and must drop it.
    let _worker = server.start_worker(2, 3)?;
    outpost_tests::eventually_async(Duration::from_secs(30), "queue to drain", || async {
        client
            .fleet()
            .await
            .map(|f| f.queue.visible == 0 && f.queue.in_flight == 0)
            .unwrap_or(false)
    })
    .await?;
    assert!(!marker.exists(), "a cancelled run's agent never starts");
    assert_eq!(client.get_run(&id).await?.status, RunStatus::Cancelled);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_megabytes_of_output_arrive_intact() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let n = 5 * 1024 * 1024 + 17;
    let id = client.dispatch(&fake_task(format!("print {n}"))).await?.id;
    let run = server.wait_terminal(&id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Succeeded);
    let expected = fake_output(n);
    let log = run
        .artifacts
        .iter()
        .find(|a| a.name == "output.log")
        .expect("output.log in manifest");
    assert_eq!(log.size, n as u64);
    assert_eq!(log.sha256, sha256_hex(&expected));
    let body = client.artifact(&id, "output.log").await?;
    assert!(body.as_ref() == expected.as_slice(), "downloaded log differs");
    // Paged reads through the logs endpoint reassemble the same bytes.
    let mut offset = 0;
    let mut paged = Vec::new();
    loop {
        let chunk = client.logs(&id, offset).await?;
        if chunk.data.is_empty() {
            break;
        }
        paged.extend_from_slice(&chunk.data);
        offset = chunk.next_offset;
    }
    assert_eq!(paged.len(), n);
    assert!(paged == expected, "paged log differs");
    Ok(())
}

#[tokio::test]
async fn log_can_be_tailed_while_the_run_is_going() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let id = client
        .dispatch(&fake_task("say first line; sleep 6; say last line"))
        .await?
        .id;
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    loop {
        let chunk = client.logs(&id, 0).await?;
        let text = String::from_utf8_lossy(&chunk.data).to_string();
        if text.contains("first line") {
            assert_eq!(chunk.status, RunStatus::Running, "seen before the run ended");
            assert!(!text.contains("last line"));
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "live log never showed the first line"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let run = server.wait_terminal(&id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Succeeded);
    let all = client.logs(&id, 0).await?;
    assert!(String::from_utf8_lossy(&all.data).contains("last line"));
    Ok(())
}

#[tokio::test]
async fn agent_gets_a_clean_environment_and_its_key_is_scrubbed() -> anyhow::Result<()> {
    let secret = "sk-fake-0123456789abcdef";
    let server = TestApp::spawn(
        AppOptions::dev()
            .env("FAKE_API_KEY", secret)
            .env("UNRELATED_SECRET", "leak-me"),
    )
    .await?;
    let client = server.client()?;
    let id = client
        .dispatch(&fake_task("env FAKE_API_KEY; env UNRELATED_SECRET; env OUTPOST_RUN_ID"))
        .await?
        .id;
    let run = server.wait_terminal(&id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Succeeded);
    let log = String::from_utf8(client.artifact(&id, "output.log").await?.to_vec())?;
    assert!(
        log.contains("FAKE_API_KEY=[REDACTED]"),
        "the agent got its key, and the log hides it: {log}"
    );
    assert!(!log.contains(secret));
    assert!(
        log.contains("UNRELATED_SECRET is unset"),
        "only named env vars reach the agent: {log}"
    );
    assert!(log.contains(&format!("OUTPOST_RUN_ID={id}")));
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_code() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let cases: Vec<(DispatchRequest, u16, &str)> = vec![
        (
            DispatchRequest {
                agent: "nope".into(),
                ..fake_task("x")
            },
            422,
            "unknown_agent",
        ),
        (fake_task(""), 422, "validation_failed"),
        (fake_task("x".repeat(50_001)), 422, "validation_failed"),
        (
            DispatchRequest {
                timeout_secs: Some(5),
                ..fake_task("x")
            },
            422,
            "validation_failed",
        ),
        (
            DispatchRequest {
                timeout_secs: Some(90_000),
                ..fake_task("x")
            },
            422,
            "validation_failed",
        ),
        (
            DispatchRequest {
                repo: Some("http://example.com/x.git".into()),
                ..fake_task("x")
            },
            422,
            "validation_failed",
        ),
        (
            DispatchRequest {
                repo: Some("file:///tmp/x".into()),
                branch: Some("a..b".into()),
                ..fake_task("x")
            },
            422,
            "validation_failed",
        ),
    ];
    for (req, status, code) in cases {
        match client.dispatch(&req).await {
            Err(ClientError::Api {
                status: s,
                code: c,
                message,
            }) => {
                assert_eq!((s, c.as_str()), (status, code), "{message}");
                assert!(!message.is_empty());
            }
            other => panic!("expected {status} {code}, got {other:?}"),
        }
    }

    let http = reqwest::Client::new();
    let url = format!("{}/v1/runs", server.url);
    let auth = format!("Bearer {}", server.api_key);
    let resp = http
        .post(&url)
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 400);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "invalid_json");

    let big = serde_json::json!({"agent": "fake", "task": "x".repeat(300 * 1024)}).to_string();
    let resp = http
        .post(&url)
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 413);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "payload_too_large");

    let resp = http.get(&url).send().await?;
    assert_eq!(resp.status().as_u16(), 401);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized");

    let resp = http
        .get(&url)
        .header("authorization", "Bearer op_live_wrong")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 401);

    let resp = http
        .get(format!("{}/v1/nowhere", server.url))
        .header("authorization", &auth)
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 404);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"]["code"], "not_found");
    Ok(())
}

#[tokio::test]
async fn other_tenants_runs_are_not_found() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let mine = server.client()?;
    let other_key = server.create_key("other-team")?;
    let other = server.client_with_key(&other_key)?;
    let id = mine
        .dispatch(&fake_task("say private; artifact secret.txt mine"))
        .await?
        .id;
    let run = server.wait_terminal(&id, RUN_TIMEOUT).await?;
    assert_eq!(run.status, RunStatus::Succeeded);

    let not_found = |r: Result<_, ClientError>| matches!(r, Err(ClientError::Api { status: 404, ref code, .. }) if code == "not_found");
    assert!(not_found(other.get_run(&id).await.map(|_| ())));
    assert!(not_found(other.cancel_run(&id).await.map(|_| ())));
    assert!(not_found(other.logs(&id, 0).await.map(|_| ())));
    assert!(not_found(other.artifact(&id, "files/secret.txt").await.map(|_| ())));
    assert!(not_found(other.artifacts(&id).await.map(|_| ())));
    let listed = other.list_runs(&Default::default()).await?;
    assert!(listed.runs.is_empty(), "the other tenant sees none of our runs");
    // The owner still sees it.
    assert_eq!(mine.get_run(&id).await?.id, id);
    Ok(())
}

#[tokio::test]
async fn fleet_and_health_describe_the_deployment() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    assert_eq!(client.health().await?.status, "ok");
    let deadline = std::time::Instant::now() + RUN_TIMEOUT;
    let fleet = loop {
        let f = client.fleet().await?;
        if !f.workers.is_empty() || std::time::Instant::now() > deadline {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = fleet.agents.iter().map(|a| a.name.as_str()).collect();
    for n in ["claude", "codex", "gemini", "aider", "grok", "shell", "fake"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    assert_eq!(fleet.workers.len(), 1);
    assert_eq!(fleet.slots_total, 4);
    Ok(())
}
