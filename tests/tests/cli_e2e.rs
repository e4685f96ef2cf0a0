//! End-to-end through the `outpost` binary: dispatch --wait mirrors the run's exit code and
//! streams its log, runs list/get/logs/cancel, fleet, --json output, the agent's report (answer,
//! error, usage, session) and the idle timeout, and clear one-line errors with a non-zero exit
//! code.

use outpost_tests::{outpost_bin, AppOptions, TestApp};
use std::process::Command;
use std::time::Duration;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test]
async fn dispatch_wait_streams_the_log_and_mirrors_the_exit_code() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let ok = server.cli(&[
        "dispatch",
        "--agent",
        "shell",
        "--wait",
        "echo hello from shell; echo to-stderr >&2",
    ])?;
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("hello from shell"),
        "log streamed to stdout: {}",
        stdout(&ok)
    );
    assert!(
        stderr(&ok).contains("succeeded"),
        "final line on stderr: {}",
        stderr(&ok)
    );

    let failed = server.cli(&["dispatch", "--agent", "fake", "--wait", "say nope; exit 3"])?;
    assert_eq!(failed.status.code(), Some(3), "{}", stderr(&failed));
    assert!(stderr(&failed).contains("failed"));

    let json = server.cli(&["dispatch", "--agent", "shell", "--wait", "--json", "true"])?;
    assert!(json.status.success(), "{}", stderr(&json));
    let run: serde_json::Value = serde_json::from_str(&stdout(&json))?;
    assert_eq!(run["status"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn runs_commands_list_get_logs_and_cancel() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let out = server.cli(&["dispatch", "--agent", "fake", "say line one; say line two"])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).split_whitespace().next().unwrap_or_default().to_owned();
    assert!(
        id.starts_with("run_"),
        "dispatch prints the run id first: {}",
        stdout(&out)
    );
    server.wait_terminal(&id, Duration::from_secs(60)).await?;

    let list = server.cli(&["runs", "list"])?;
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        stdout(&list).contains(&id) && stdout(&list).contains("succeeded"),
        "{}",
        stdout(&list)
    );

    let list_json = server.cli(&["runs", "list", "--json", "--status", "succeeded"])?;
    let page: serde_json::Value = serde_json::from_str(&stdout(&list_json))?;
    assert_eq!(page["runs"][0]["id"], id.as_str());

    let get = server.cli(&["runs", "get", &id])?;
    assert!(stdout(&get).contains("output.log"), "{}", stdout(&get));

    let logs = server.cli(&["runs", "logs", &id])?;
    assert_eq!(stdout(&logs), "line one\nline two\n");

    let follow = server.cli(&["runs", "logs", "-f", &id])?;
    assert_eq!(stdout(&follow), "line one\nline two\n");

    let long = server.cli(&["dispatch", "--agent", "fake", "sleep 60"])?;
    let long_id = stdout(&long).split_whitespace().next().unwrap_or_default().to_owned();
    server
        .wait_run(&long_id, Duration::from_secs(60), |r| {
            r.status == outpost_core::RunStatus::Running
        })
        .await?;
    let cancel = server.cli(&["runs", "cancel", &long_id])?;
    assert!(cancel.status.success(), "{}", stderr(&cancel));
    let run = server.wait_terminal(&long_id, Duration::from_secs(30)).await?;
    assert_eq!(run.status, outpost_core::RunStatus::Cancelled);

    let fleet = server.cli(&["fleet"])?;
    assert!(
        stdout(&fleet).contains("claude") && stdout(&fleet).contains("queue:"),
        "{}",
        stdout(&fleet)
    );

    let artifact = server.cli(&["runs", "artifact", &id, "output.log"])?;
    assert_eq!(stdout(&artifact), "line one\nline two\n");
    Ok(())
}

#[tokio::test]
async fn errors_are_one_readable_line_and_a_non_zero_exit() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let unknown = server.cli(&["dispatch", "--agent", "nope", "x"])?;
    assert_eq!(unknown.status.code(), Some(1));
    let err = stderr(&unknown);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("unknown_agent"), "{err}");

    let missing = server.cli(&["runs", "get", "run_01ARZ3NDEKTSV4RRFFQ69G5FAV"])?;
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("not_found"), "{}", stderr(&missing));

    let bad_timeout = server.cli(&["dispatch", "--agent", "shell", "--timeout", "1", "true"])?;
    assert_eq!(bad_timeout.status.code(), Some(1));
    assert!(stderr(&bad_timeout).contains("timeout"), "{}", stderr(&bad_timeout));

    let no_key = Command::new(outpost_bin()?)
        .args(["fleet", "--url", &server.url])
        .env_remove("OUTPOST_API_KEY")
        .output()?;
    assert_eq!(no_key.status.code(), Some(1));
    assert!(stderr(&no_key).contains("API key"), "{}", stderr(&no_key));

    let wrong_key = Command::new(outpost_bin()?)
        .args(["fleet", "--url", &server.url, "--api-key", "op_live_nope"])
        .output()?;
    assert_eq!(wrong_key.status.code(), Some(1));
    assert!(stderr(&wrong_key).contains("unauthorized"), "{}", stderr(&wrong_key));

    let unreachable = Command::new(outpost_bin()?)
        .args(["fleet", "--url", "http://127.0.0.1:9", "--api-key", "op_live_x"])
        .output()?;
    assert_eq!(unreachable.status.code(), Some(1));
    assert_eq!(
        stderr(&unreachable).trim_end().lines().count(),
        1,
        "{}",
        stderr(&unreachable)
    );

    let usage = Command::new(outpost_bin()?).args(["dispatch"]).output()?;
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");
    Ok(())
}

#[tokio::test]
async fn runs_get_and_list_show_the_agents_report_and_idle_timeout() -> anyhow::Result<()> {
    use outpost_core::ports::ClaimOutcome;
    use outpost_core::{AgentReport, FailureReason, Outcome, RunId, Usage, WorkerId};
    // No worker in the server: the test plays the worker's part through the store.
    let server = TestApp::spawn(AppOptions::dev().slots(0)).await?;
    let out = server.cli(&[
        "dispatch",
        "--agent",
        "fake",
        "--timeout",
        "600",
        "--idle-timeout",
        "42",
        "answer me",
    ])?;
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).split_whitespace().next().unwrap_or_default().to_owned();
    let run_id: RunId = id.parse()?;

    let backend = outpost_embedded::open(&server.data, outpost_embedded::EmbeddedOptions::default())?;
    let stored = backend
        .runs
        .get_by_id(&run_id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("not stored"))?;
    assert_eq!(stored.idle_timeout_secs, Some(42), "--idle-timeout reaches the record");
    let worker = WorkerId::generate();
    let claimed = backend.runs.claim(&run_id, &worker, Duration::from_secs(60), 3).await?;
    assert!(matches!(claimed, ClaimOutcome::Claimed(_)), "{claimed:?}");
    let answer = "## Fixed\n\nThe flaky test now waits for the server — ünïcödé ✓";
    let report = AgentReport {
        result: Some(answer.into()),
        error: Some("API Error: 401 invalid x-api-key".into()),
        usage: Some(Usage {
            input_tokens: Some(1_200),
            cached_input_tokens: Some(1_000),
            output_tokens: Some(34),
            cost_usd: Some(0.0123),
            source: "claude result.total_cost_usd".into(),
        }),
        session_id: Some("4f9c2b1e-session".into()),
    };
    backend
        .runs
        .finish(
            &run_id,
            &worker,
            Outcome::failed(FailureReason::AgentError, Some(0)).with_report(report),
            Vec::new(),
        )
        .await?;

    let get = server.cli(&["runs", "get", &id])?;
    assert!(get.status.success(), "{}", stderr(&get));
    let text = stdout(&get);
    for line in [
        "idle timeout  42s\n",
        "reason        agent_error\n",
        "agent error   API Error: 401 invalid x-api-key\n",
        "usage         1200 in (1000 cached) · 34 out · $0.0123\n",
        "session       4f9c2b1e-session\n",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(
        text.contains(&format!("\nresult\n{answer}\n")),
        "the whole answer as its own section:\n{text}"
    );

    let list = server.cli(&["runs", "list"])?;
    let table = stdout(&list);
    assert!(table.lines().next().is_some_and(|h| h.contains("COST")), "{table}");
    assert!(
        table.lines().any(|l| l.contains(&id) && l.contains("$0.0123")),
        "{table}"
    );

    let json = server.cli(&["runs", "get", "--json", &id])?;
    let run: serde_json::Value = serde_json::from_str(&stdout(&json))?;
    assert_eq!(run["idle_timeout_secs"], 42);
    assert_eq!(run["result"], answer);
    assert_eq!(run["agent_error"], "API Error: 401 invalid x-api-key");
    assert_eq!(run["usage"]["output_tokens"], 34);
    assert_eq!(run["usage"]["cost_usd"], 0.0123);
    assert_eq!(run["session_id"], "4f9c2b1e-session");
    let page: serde_json::Value = serde_json::from_str(&stdout(&server.cli(&["runs", "list", "--json"])?))?;
    assert_eq!(page["runs"][0]["usage"], run["usage"]);

    // An idle timeout above the run's timeout is refused, naming the field.
    let bad = server.cli(&[
        "dispatch",
        "--agent",
        "fake",
        "--timeout",
        "60",
        "--idle-timeout",
        "61",
        "x",
    ])?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("idle_timeout_secs"), "{}", stderr(&bad));
    Ok(())
}

#[tokio::test]
async fn keys_create_prints_the_key_last_and_it_works() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let key = server.create_key("acme")?;
    assert!(key.starts_with("op_live_") && key.len() == 8 + 64, "{key}");
    let client = server.client_with_key(&key)?;
    assert!(client.list_runs(&Default::default()).await?.runs.is_empty());
    let bad = Command::new(outpost_bin()?)
        .args(["keys", "create", "--tenant", "Not A Slug", "--data"])
        .arg(&server.data)
        .output()?;
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("tenant"), "{}", stderr(&bad));
    Ok(())
}

#[tokio::test]
async fn dev_survives_a_restart_with_its_data() -> anyhow::Result<()> {
    let mut server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let id = client
        .dispatch(&outpost_api::DispatchRequest {
            agent: "shell".into(),
            task: "echo persisted".into(),
            repo: None,
            branch: None,
            timeout_secs: None,
            idle_timeout_secs: None,
        })
        .await?
        .id;
    server.wait_terminal(&id, Duration::from_secs(60)).await?;
    assert!(
        server
            .process()
            .expect("outpost dev")
            .terminate(Duration::from_secs(30)),
        "outpost dev exits cleanly on SIGTERM"
    );

    // Same data dir, new process: the run and the key are still there.
    let restarted = Command::new(outpost_bin()?)
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(&server.data)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut restarted = outpost_tests::KillOnDrop(restarted);
    let out = restarted.0.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut url = None;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    for line in lines.by_ref() {
        let line = line?;
        if let Some(u) = line.trim().strip_prefix("URL:") {
            url = Some(u.trim().to_owned());
        }
        if line.contains("API key:") {
            assert!(
                line.contains("printed at first start"),
                "no new dev key on restart: {line}"
            );
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let url = url.ok_or_else(|| anyhow::anyhow!("no URL printed"))?;
    let client = outpost_api::client::OutpostClient::new(&url, Some(server.api_key.clone()))?;
    let run = client.get_run(&id).await?;
    assert_eq!(run.status, outpost_core::RunStatus::Succeeded);
    Ok(())
}

#[tokio::test]
async fn a_dev_start_that_cannot_listen_stores_no_unseen_key() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let taken = server.url.trim_start_matches("http://").to_owned();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let failed = Command::new(outpost_bin()?)
        .args(["dev", "--listen", &taken, "--data"])
        .arg(&data)
        .output()?;
    assert_eq!(failed.status.code(), Some(1));
    let err = stderr(&failed);
    assert!(err.contains("cannot listen"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");

    // The next start on that data dir still shows a fresh dev key: none was made and lost.
    let mut next = outpost_tests::KillOnDrop(
        Command::new(outpost_bin()?)
            .args(["dev", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .stdout(std::process::Stdio::piped())
            .spawn()?,
    );
    let out = next.0.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let key_line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("API key:"))
        .ok_or_else(|| anyhow::anyhow!("no API key line"))?;
    std::thread::spawn(move || for _ in lines {});
    assert!(key_line.contains("op_live_"), "a new key is shown: {key_line}");
    Ok(())
}
