//! The five built-in agents, run for real: the pinned CLI releases (`scripts/agent-clis`)
//! started by `outpost dev` through their real registry entries (only the base URL is pointed at
//! the loopback vendor stand-in, `tests/vendor-standin/`, serving HTTPS with a test CA's
//! certificate), with tenants' own keys as secrets. The entries hold the key in the run's egress
//! proxy (`key_injection`, `network = "allow"`): each CLI only has a placeholder and the proxy's
//! address, and the proxy forwards over TLS with the tenant's key swapped in, metering usage.
//!
//! Per agent: a run on a repository writes the stand-in's file (in `diff.patch`) and reports the
//! final answer, usage and session; a refused key ends `failed`/`agent_error` with the vendor's
//! message even where the CLI exits 0; a vendor that never answers ends by the idle timeout; a
//! dead vendor (nothing listening) ends the run with the CLI's error within its bounded retries;
//! the key appears in no log, artifact or record; every request the stand-in got carried a
//! tenant's key in the vendor's header and never the placeholder; `summary.json` says the key was
//! injected and has the usage the proxy read from the stand-in's answers. The worker runs as root
//! (agents then run as `nobody`) and, in a second server, as an unprivileged user itself.
//! `registry_flags_…` fails when a flag of a built-in entry is missing from the installed CLI's
//! `--help`.

use outpost_api::{DispatchRequest, RunView};
use outpost_core::domain::{AgentRegistry, FailureReason, RunStatus};
use outpost_tests::real_agents::{self, AgentCase, StandIn, ANSWER, MADE_CONTENT, MADE_FILE};
use outpost_tests::tls::TestCa;
use outpost_tests::TestApp;
use std::process::Command;
use std::time::Duration;

/// Generous: five CLIs start on two cores at once.
const RUN_PATIENCE: Duration = Duration::from_secs(240);
/// Idle timeout of the runs whose vendor never answers.
const IDLE_SECS: u64 = 8;
/// uid of the unprivileged deployment (`nobody`).
const NOBODY: u32 = 65534;

fn case(agent: &str) -> AgentCase {
    let base = AgentCase {
        agent: "",
        key_env: "",
        base_path: "",
        key_header: ("authorization", "Bearer "),
        refused_error: "standin-401",
        input_tokens: Some(real_agents::INPUT_TOKENS),
        output_tokens: Some(real_agents::OUTPUT_TOKENS),
        reports_cost: false,
        reports_session: false,
        exact_result: true,
        retry_notice: None,
        usage_every_answer: false,
    };
    match agent {
        "claude" => AgentCase {
            agent: "claude",
            key_env: "ANTHROPIC_API_KEY",
            key_header: ("x-api-key", ""),
            retry_notice: Some("\"subtype\":\"api_retry\""),
            reports_cost: true,
            reports_session: true,
            ..base
        },
        "codex" => AgentCase {
            agent: "codex",
            key_env: "CODEX_API_KEY",
            base_path: "/v1",
            reports_session: true,
            ..base
        },
        "gemini" => AgentCase {
            agent: "gemini",
            key_env: "GEMINI_API_KEY",
            key_header: ("x-goog-api-key", ""),
            reports_session: true,
            ..base
        },
        "aider" => AgentCase {
            agent: "aider",
            key_env: "DEEPSEEK_API_KEY",
            // Aider prints its own rounded figures ("1.2k sent, 56 received").
            input_tokens: Some(1200),
            reports_cost: true,
            exact_result: false,
            usage_every_answer: true,
            ..base
        },
        "grok" => AgentCase {
            agent: "grok",
            key_env: "GROK_API_KEY",
            base_path: "/v1",
            input_tokens: None,
            output_tokens: None,
            exact_result: false,
            usage_every_answer: true,
            ..base
        },
        other => panic!("no case for agent {other}"),
    }
}

fn dispatch(agent: &str, repo: Option<String>, idle: Option<u64>) -> DispatchRequest {
    DispatchRequest {
        agent: agent.to_owned(),
        // A task that starts with '-' (a Markdown list) must stay a prompt, never become options.
        task: format!("- create the file {MADE_FILE} --version\n- then say you are done"),
        repo,
        branch: None,
        timeout_secs: Some(180),
        idle_timeout_secs: idle,
    }
}

/// A tenant of `server` whose secret `case.key_env` is the key for stand-in mode `mode`.
async fn tenant(server: &TestApp, case: &AgentCase, mode: &str) -> outpost_api::client::OutpostClient {
    let api_key = server.create_key(&format!("t-{mode}")).expect("tenant key");
    let client = server.client_with_key(&api_key).expect("client");
    client
        .put_secret(case.key_env, &real_agents::key(case.agent, mode))
        .await
        .expect("store the tenant's vendor key");
    client
}

/// Every byte a client can read of a run: its record, its log and each artifact.
async fn everything_of(client: &outpost_api::client::OutpostClient, run: &RunView) -> Vec<u8> {
    let mut all = serde_json::to_vec(run).expect("json");
    for a in &run.artifacts {
        let bytes = client.artifact(&run.id, &a.name).await.expect("artifact");
        all.extend_from_slice(&bytes);
    }
    all
}

/// Waits for the run's end through its tenant's client.
async fn wait_end(client: &outpost_api::client::OutpostClient, id: &str) -> RunView {
    outpost_tests::wait_run_with(client, id, RUN_PATIENCE, |r| r.status.is_terminal())
        .await
        .expect("the run ends")
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn log_of(client: &outpost_api::client::OutpostClient, run: &RunView) -> String {
    String::from_utf8_lossy(&client.artifact(&run.id, "output.log").await.unwrap_or_default()).into_owned()
}

/// Runs the whole check of one agent.
async fn check(agent: &str) {
    let case = case(agent);
    let ca = TestCa::new().expect("the test CA");
    let standin = StandIn::start_tls(&ca).expect("stand-in");
    let cases = std::slice::from_ref(&case);
    let server = TestApp::spawn(real_agents::options(&standin.url, cases, &ca).expect("agent CLIs"))
        .await
        .expect("outpost dev");
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = outpost_tests::make_origin(&tmp.path().join("origin"));

    let ok = tenant(&server, &case, "ok").await;
    let refused = tenant(&server, &case, "401").await;
    let silent = tenant(&server, &case, "silent").await;
    let ok_run = ok
        .dispatch(&dispatch(agent, Some(repo), None))
        .await
        .expect("dispatch ok");
    let refused_run = refused
        .dispatch(&dispatch(agent, None, None))
        .await
        .expect("dispatch 401");
    let silent_run = silent
        .dispatch(&dispatch(agent, None, Some(IDLE_SECS)))
        .await
        .expect("dispatch silent");

    // A dead vendor (nothing listens): the CLI's bounded retries end the run, not its timeout.
    let dead_vendor = real_agents::closed_port_url().expect("a free port");
    let dead_server = TestApp::spawn(real_agents::options(&dead_vendor, cases, &ca).expect("agent CLIs"))
        .await
        .expect("outpost dev with a dead vendor");
    let dead = tenant(&dead_server, &case, "ok").await;
    let dead_run = dead
        .dispatch(&dispatch(agent, None, None))
        .await
        .expect("dispatch dead");

    // The same agent in a deployment that is not root (only when the tests are root: otherwise
    // the server above already is one).
    let unprivileged = if outpost_testkit::process::is_root() {
        let opts = real_agents::options(&standin.url, cases, &ca).expect("agent CLIs");
        let s = TestApp::spawn(opts.run_as(NOBODY))
            .await
            .expect("outpost dev as nobody");
        let c = tenant(&s, &case, "ok").await;
        let id = c.dispatch(&dispatch(agent, None, None)).await.expect("dispatch").id;
        Some((s, c, id))
    } else {
        None
    };

    // 1. A good key: the file, the answer, usage, session.
    let run = wait_end(&ok, &ok_run.id).await;
    let log = log_of(&ok, &run).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{agent}: {run:?}\n{log}");
    // Confined: strict mode, the run's own uid under this root worker (or a user namespace).
    let summary: serde_json::Value =
        serde_json::from_slice(&ok.artifact(&run.id, "summary.json").await.expect("summary")).expect("json");
    assert_eq!(summary["sandbox"]["mode"], strongest_mode(), "{agent}: {summary}");
    // The built-ins reach their vendor through the run's proxy and nothing else.
    assert_eq!(summary["sandbox"]["network"], "allow", "{agent}: {summary}");
    assert!(
        summary["sandbox"]["layers"].to_string().contains("landlock"),
        "{agent}: {summary}"
    );
    let patch = ok.artifact(&run.id, "diff.patch").await.expect("diff.patch");
    assert!(
        contains(&patch, MADE_FILE) && contains(&patch, MADE_CONTENT.trim()),
        "{agent}: {}",
        String::from_utf8_lossy(&patch)
    );
    let result = run.result.clone().unwrap_or_default();
    if case.exact_result {
        assert_eq!(result.trim(), ANSWER, "{agent}: {log}");
    } else {
        assert!(result.contains(ANSWER), "{agent}: result {result:?}\n{log}");
    }
    let result_md = ok.artifact(&run.id, "result.md").await.expect("result.md");
    assert_eq!(
        String::from_utf8_lossy(&result_md),
        result,
        "{agent}: result.md is the whole answer"
    );
    let usage = run.usage.clone();
    match (case.input_tokens, &usage) {
        (Some(n), Some(u)) => {
            assert_eq!(u.input_tokens, Some(n), "{agent}: {u:?}");
            assert_eq!(u.output_tokens, case.output_tokens, "{agent}: {u:?}");
            assert!(!u.source.is_empty());
        }
        (Some(_), None) => panic!("{agent}: no usage reported\n{log}"),
        (None, _) => assert!(
            usage.as_ref().is_none_or(|u| u.input_tokens.is_none()),
            "{agent}: {usage:?}"
        ),
    }
    assert_eq!(
        usage.as_ref().and_then(|u| u.cost_usd).is_some(),
        case.reports_cost,
        "{agent}: cost {usage:?}"
    );
    assert_eq!(
        run.session_id.is_some(),
        case.reports_session,
        "{agent}: session {:?}",
        run.session_id
    );
    let key = real_agents::key(agent, "ok");
    assert!(
        !contains(&everything_of(&ok, &run).await, &key),
        "{agent}: the key leaked"
    );
    assert_eq!(
        summary["redactions"], 0,
        "{agent}: the key reached the output: {summary}"
    );
    assert_metered(&case, &summary, &log);
    let (header, prefix) = case.key_header;
    let wanted = format!("{prefix}{key}");
    assert!(
        standin
            .requests()
            .iter()
            .any(|r| r["headers"][header].as_str() == Some(wanted.as_str())),
        "{agent}: the stand-in never saw the key in {header}"
    );

    // 2. A refused key: failed, agent_error, the vendor's message — whatever the exit code.
    let run = wait_end(&refused, &refused_run.id).await;
    let log = log_of(&refused, &run).await;
    assert_eq!(run.status, RunStatus::Failed, "{agent}: {run:?}\n{log}");
    assert_eq!(
        run.failure_reason,
        Some(FailureReason::AgentError),
        "{agent}: {run:?}\n{log}"
    );
    let error = run.agent_error.clone().unwrap_or_default();
    assert!(error.contains(case.refused_error), "{agent}: error {error:?}\n{log}");
    if let Some(notice) = case.retry_notice {
        assert!(log.contains(notice), "{agent}: its retries are not in the log\n{log}");
    }
    assert!(!contains(
        &everything_of(&refused, &run).await,
        &real_agents::key(agent, "401")
    ));
    let summary: serde_json::Value =
        serde_json::from_slice(&refused.artifact(&run.id, "summary.json").await.expect("summary")).expect("json");
    let egress = &summary["egress"];
    assert_eq!(egress["key_injected"], true, "{agent}: {summary}");
    assert!(
        egress["vendor_requests"].as_u64() >= Some(1),
        "{agent}: the refused key's requests did not go through the proxy: {summary}"
    );
    // A refused request is not a vendor answer: no usage.
    assert_eq!(egress["usage"]["responses"], 0, "{agent}: {summary}");
    assert_eq!(egress["usage"]["input_tokens"], 0, "{agent}: {summary}");

    // 3. A vendor that never answers: stopped by the idle timeout, not the run's timeout.
    let run = wait_end(&silent, &silent_run.id).await;
    let log = log_of(&silent, &run).await;
    assert_eq!(run.status, RunStatus::TimedOut, "{agent}: {run:?}\n{log}");
    assert_eq!(run.failure_reason, Some(FailureReason::Idle), "{agent}: {run:?}\n{log}");
    assert!(run.duration_ms.unwrap_or(i64::MAX) < 150_000, "{agent}: {run:?}");
    assert!(log.contains("idle timeout"), "{agent}: {log}");

    // 4. A dead vendor: failed with the CLI's own connection error, within its bounded retries
    // (aider's are the longest, about a minute), long before the run's 180 s timeout.
    let run = wait_end(&dead, &dead_run.id).await;
    let log = log_of(&dead, &run).await;
    assert_eq!(run.status, RunStatus::Failed, "{agent}: {run:?}\n{log}");
    assert_eq!(
        run.failure_reason,
        Some(FailureReason::AgentError),
        "{agent}: {run:?}\n{log}"
    );
    assert!(
        run.agent_error.as_deref().is_some_and(|e| !e.is_empty()),
        "{agent}: {run:?}"
    );
    assert!(run.duration_ms.unwrap_or(i64::MAX) < 150_000, "{agent}: {run:?}");
    // The proxy answered for the dead vendor (502): nothing metered.
    let summary: serde_json::Value =
        serde_json::from_slice(&dead.artifact(&run.id, "summary.json").await.expect("summary")).expect("json");
    assert_eq!(summary["egress"]["key_injected"], true, "{agent}: {summary}");
    assert_eq!(summary["egress"]["usage"]["responses"], 0, "{agent}: {summary}");
    drop(dead_server);

    // 5. The unprivileged deployment, in an empty workspace: the file, nothing of the tool's own.
    if let Some((s, c, id)) = unprivileged {
        let _server = s;
        let run = wait_end(&c, &id).await;
        let log = log_of(&c, &run).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{agent} as nobody: {run:?}\n{log}");
        let summary: serde_json::Value =
            serde_json::from_slice(&c.artifact(&run.id, "summary.json").await.expect("summary")).expect("json");
        let changed: Vec<&str> = summary["changed_files"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(
            changed,
            [MADE_FILE],
            "{agent} as nobody: only the agent's own change\n{log}"
        );
        assert!(
            summary["agent_report"]["usage"].is_object() || case.input_tokens.is_none(),
            "{summary}"
        );
        // Sandboxed as a non-root worker: a user namespace (a non-zero uid inside), namespaces,
        // Landlock.
        let layers = summary["sandbox"]["layers"].to_string();
        assert_eq!(summary["sandbox"]["mode"], strongest_mode(), "{summary}");
        assert!(
            layers.contains("landlock") && (strongest_mode() != "strict" || layers.contains("user namespace")),
            "{agent} as nobody: {summary}"
        );
        assert_eq!(summary["sandbox"]["network"], "allow", "{agent} as nobody: {summary}");
        assert_metered(&case, &summary, &log);
    }

    // Every request the vendor got (all tenants, both deployments) came with a tenant's key in
    // the vendor's header, swapped in by the proxy, and no placeholder anywhere.
    assert_standin_saw_only_real_keys(&case, &standin);
}

/// `summary.json` of a good run: the proxy held the key and read the stand-in's usage figures
/// from its answers (the final turn's; for chat completions, every answer's).
fn assert_metered(case: &AgentCase, summary: &serde_json::Value, log: &str) {
    let agent = case.agent;
    let egress = &summary["egress"];
    assert_eq!(egress["key_injected"], true, "{agent}: {summary}");
    assert!(
        egress["vendor_requests"].as_u64() >= Some(1),
        "{agent}: no vendor request through the proxy: {summary}\n{log}"
    );
    let usage = &egress["usage"];
    let responses = usage["responses"].as_u64().unwrap_or(0);
    assert!(responses >= 1, "{agent}: no metered answer: {summary}");
    let answers = if case.usage_every_answer { responses } else { 1 };
    assert_eq!(
        usage["input_tokens"].as_u64(),
        Some(real_agents::INPUT_TOKENS * answers),
        "{agent}: metered {usage}"
    );
    assert_eq!(
        usage["output_tokens"].as_u64(),
        Some(real_agents::OUTPUT_TOKENS * answers),
        "{agent}: metered {usage}"
    );
    assert_eq!(usage["cached_input_tokens"], 0, "{agent}: metered {usage}");
}

/// Every request in the stand-in's record carries one of the tenants' keys (ok, 401, silent) in
/// the case's header, with its prefix; none holds a placeholder (`sk-outpost-`).
fn assert_standin_saw_only_real_keys(case: &AgentCase, standin: &StandIn) {
    let (header, prefix) = case.key_header;
    let keys: Vec<String> = ["ok", "401", "silent"]
        .iter()
        .map(|m| format!("{prefix}{}", real_agents::key(case.agent, m)))
        .collect();
    let requests = standin.requests();
    assert!(!requests.is_empty(), "{}: the stand-in got no request", case.agent);
    for r in &requests {
        let what = format!("{} {}", r["method"], r["path"]);
        let value = r["headers"][header].as_str().unwrap_or("");
        let names: Vec<&String> = r["headers"].as_object().map(|h| h.keys().collect()).unwrap_or_default();
        assert!(
            keys.iter().any(|k| k == value),
            "{}: {what} came without a tenant's key in {header} (headers: {names:?})",
            case.agent
        );
        assert!(
            !r.to_string().contains("sk-outpost-"),
            "{}: {what} came with a placeholder key",
            case.agent
        );
    }
}

/// The sandbox mode `outpost dev` picks here: strict with bubblewrap (scripts/test installs it),
/// standard without.
fn strongest_mode() -> &'static str {
    let bwrap = ["/usr/bin/bwrap", "/bin/bwrap", "/usr/local/bin/bwrap"]
        .iter()
        .any(|p| std::path::Path::new(p).exists());
    if bwrap {
        "strict"
    } else {
        "standard"
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn claude_runs_for_real() {
    check("claude").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn codex_runs_for_real() {
    check("codex").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_runs_for_real() {
    check("gemini").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn aider_runs_for_real() {
    check("aider").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grok_runs_for_real() {
    check("grok").await;
}

/// Whether `help` lists `flag` as an option (not merely as part of another word).
fn help_lists(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(at, _)| {
        let before = help[..at].chars().next_back();
        let after = help[at + flag.len()..].chars().next();
        before.is_none_or(|c| c.is_whitespace() || c == ',' || c == '[' || c == '|')
            && after.is_none_or(|c| !(c.is_alphanumeric() || c == '-' || c == '_'))
    })
}

#[test]
fn registry_flags_are_in_the_installed_clis_help() {
    let clis = real_agents::clis_dir().expect("agent CLIs installed");
    let home = tempfile::tempdir().expect("home");
    let registry = AgentRegistry::builtin(false);
    let mut checked = 0;
    for spec in registry.enabled() {
        // The help of the subcommand the entry runs: `codex exec --help`, `claude --help`.
        let words: Vec<&str> = spec
            .command
            .iter()
            .skip(1)
            .take_while(|a| !a.starts_with('-') && !a.starts_with('{'))
            .map(String::as_str)
            .collect();
        let program = clis.join("bin").join(&spec.command[0]);
        let out = Command::new(&program)
            .args(&words)
            .arg("--help")
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", clis.join("bin").display()))
            .env("HOME", home.path())
            .env("TERM", "dumb")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let help = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for arg in spec.command.iter().chain(&spec.base_url_args) {
            if !arg.starts_with('-') || arg == "--" {
                continue;
            }
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(
                help_lists(&help, flag),
                "{}: flag {flag} of the built-in entry is not in `{} {} --help` of the installed release ({}):\n{help}",
                spec.name,
                spec.command[0],
                words.join(" "),
                spec.verified_with.as_deref().unwrap_or("?")
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} flags checked");
}

#[test]
fn help_lists_matches_whole_flags_only() {
    let help = "  -p, --print   Print\n  --output-format <f>\n  --yes-always\n";
    assert!(help_lists(help, "-p"));
    assert!(help_lists(help, "--print"));
    assert!(help_lists(help, "--output-format"));
    assert!(!help_lists(help, "--output"));
    assert!(!help_lists(help, "--yes"));
    assert!(!help_lists(help, "-o"));
}
