//! End-to-end tests of Outpost's MCP server with MCP clients written elsewhere: the official MCP
//! Inspector CLI (npm `@modelcontextprotocol/inspector`, in `tests/mcp-clients/`) and the
//! official Python SDK (PyPI `mcp` 2.x, driven by `tests/mcp-clients/client.py`), each over stdio
//! (`outpost mcp`) and over streamable HTTP (`/mcp`) against a live `outpost dev`; plus raw
//! JSON-RPC to `/mcp` through the Lambda + API Gateway emulator (stateless, two instances, MCP
//! tasks).
//!
//! `scripts/test` installs the clients and exports `OUTPOST_MCP_INSPECTOR` (the inspector's
//! launcher script) and `OUTPOST_MCP_PYTHON` (a Python with `mcp` installed); without them the
//! defaults are `tests/mcp-clients/node_modules/.bin/mcp-inspector` and `target/mcp-venv/bin/python`.

use anyhow::{bail, Context};
use outpost_testkit::lambda_gateway::LambdaGateway;
use outpost_tests::{outpost_bin, AppOptions, TestApp};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TOOLS: [&str; 6] = [
    "cancel_run",
    "dispatch",
    "fleet_status",
    "get_run",
    "list_runs",
    "promote",
];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn inspector() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("OUTPOST_MCP_INSPECTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("tests/mcp-clients/node_modules/.bin/mcp-inspector"));
    if !path.exists() {
        bail!(
            "{} not found: run `npm ci` in tests/mcp-clients (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

fn python() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("OUTPOST_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/mcp-venv/bin/python"));
    if !path.exists() {
        bail!(
            "{} not found: create it with `python3 -m venv target/mcp-venv && target/mcp-venv/bin/pip install 'mcp>=2,<3'` (scripts/test does)",
            path.display()
        );
    }
    Ok(path)
}

/// How the inspector reaches the server.
enum Target<'a> {
    Stdio(&'a TestApp),
    Http(&'a TestApp),
}

/// One inspector CLI call (`--cli -q --format json`): its exit code and the JSON on stdout.
fn inspect(target: &Target<'_>, args: &[&str]) -> anyhow::Result<(i32, Value)> {
    let mut cmd = Command::new("node");
    cmd.arg(inspector()?).args(["--cli", "-q", "--format", "json"]);
    match target {
        Target::Stdio(server) => {
            cmd.arg("-e")
                .arg(format!("OUTPOST_URL={}", server.url))
                .arg("-e")
                .arg(format!("OUTPOST_API_KEY={}", server.api_key))
                .arg(outpost_bin()?)
                .arg("mcp");
        }
        Target::Http(server) => {
            // The target goes before `--header`, whose values are variadic.
            cmd.arg(format!("{}/mcp", server.url))
                .arg("--header")
                .arg(format!("Authorization: Bearer {}", server.api_key));
        }
    }
    let out = cmd
        .args(args)
        .env("HOME", std::env::temp_dir().join("outpost-mcp-inspector-home"))
        .stdin(Stdio::null())
        .output()
        .context("cannot run node (the MCP inspector needs Node.js)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let value: Value = serde_json::from_str(stdout.trim()).with_context(|| {
        format!(
            "inspector {args:?} printed no JSON: stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((out.status.code().unwrap_or(-1), value))
}

/// `tools/call` through the inspector; the tool result (`result`) and whether it was an error.
fn call(target: &Target<'_>, tool: &str, args: &[(&str, &str)]) -> anyhow::Result<(bool, Value)> {
    let pairs: Vec<String> = args.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut argv = vec!["--method", "tools/call", "--tool-name", tool];
    if !pairs.is_empty() {
        argv.push("--tool-arg");
        argv.extend(pairs.iter().map(String::as_str));
    }
    let (code, value) = inspect(target, &argv)?;
    let result = value
        .get("result")
        .cloned()
        .with_context(|| format!("{tool}: no result: {value}"))?;
    let is_error = result["isError"] == json!(true);
    assert_eq!(code != 0, is_error, "{tool}: exit {code} for {value}");
    Ok((is_error, result["structuredContent"].clone()))
}

async fn inspector_drives_every_tool(target: Target<'_>, server: &TestApp) -> anyhow::Result<()> {
    let (code, listed) = inspect(&target, &["--method", "tools/list"])?;
    assert_eq!(code, 0, "{listed}");
    let mut names: Vec<String> = listed["result"]["tools"]
        .as_array()
        .context("tools")?
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    assert_eq!(names, TOOLS);

    let (err, fleet) = call(&target, "fleet_status", &[])?;
    assert!(!err);
    assert!(
        fleet["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "fake")),
        "{fleet}"
    );

    let (err, accepted) = call(
        &target,
        "dispatch",
        &[
            ("agent", "fake"),
            ("task", "say inspector; sleep 60"),
            ("timeout_secs", "60"),
        ],
    )?;
    assert!(!err, "{accepted}");
    let id = accepted["id"].as_str().context("run id")?.to_owned();
    assert!(id.starts_with("run_"), "{accepted}");
    assert_eq!(accepted["status"], "queued");

    server
        .wait_run(&id, Duration::from_secs(30), |r| r.status.as_str() == "running")
        .await?;
    let (err, run) = call(&target, "get_run", &[("run_id", &id)])?;
    assert!(!err, "{run}");
    assert_eq!(run["id"], json!(id));
    assert_eq!(run["status"], "running");
    assert!(run["output_tail"].is_string(), "{run}");

    let (err, list) = call(&target, "list_runs", &[("agent", "fake"), ("limit", "50")])?;
    assert!(!err, "{list}");
    assert!(
        list["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["id"] == json!(id))),
        "{list}"
    );

    let (err, cancelled) = call(&target, "cancel_run", &[("run_id", &id)])?;
    assert!(!err, "{cancelled}");
    assert_eq!(cancelled["cancel_requested"], true, "{cancelled}");
    let ended = server.wait_terminal(&id, Duration::from_secs(30)).await?;
    assert_eq!(ended.status.as_str(), "cancelled");
    let (_, run) = call(&target, "get_run", &[("run_id", &id)])?;
    assert_eq!(run["status"], "cancelled", "{run}");

    // A run without a repository has nothing to promote: a tool error with the REST code.
    let (err, promoted) = call(&target, "promote", &[("run_id", &id)])?;
    assert!(err, "{promoted}");
    assert_eq!(promoted["error"]["code"], "not_promotable", "{promoted}");

    let (err, missing) = call(&target, "get_run", &[("run_id", "run_00000000000000000000000000")])?;
    assert!(err);
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
    Ok(())
}

#[tokio::test]
async fn inspector_cli_over_stdio() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    inspector_drives_every_tool(Target::Stdio(&server), &server).await
}

#[tokio::test]
async fn inspector_cli_over_http() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    inspector_drives_every_tool(Target::Http(&server), &server).await
}

/// Runs `client.py` and checks what the Python SDK saw.
fn python_sdk_scenario(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(python()?)
        .arg(repo_root().join("tests/mcp-clients/client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "client.py failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).context("client.py output")?;

    assert_eq!(seen["server_name"], "outpost");
    assert_eq!(seen["tools"], json!(TOOLS));
    assert_eq!(seen["dispatch_schema"]["required"], json!(["agent", "task"]));
    for field in ["agent", "task", "repo", "branch", "timeout_secs", "wait"] {
        assert!(seen["dispatch_schema"]["properties"].get(field).is_some(), "{field}");
    }
    assert_eq!(seen["fleet_status"]["is_error"], false);

    // dispatch with wait: the ended run, its output, and progress on the way.
    let waited = &seen["dispatch_wait"];
    assert_eq!(waited["is_error"], false, "{waited}");
    assert_eq!(waited["structured"]["status"], "succeeded", "{waited}");
    assert_eq!(waited["structured"]["exit_code"], 0);
    assert_eq!(waited["structured"]["output_tail"], "hello from python\ndone\n");
    assert!(
        waited["structured"]["artifacts"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x["name"] == "output.log")),
        "{waited}"
    );
    let progress = seen["progress"].as_array().context("progress")?;
    assert!(!progress.is_empty(), "no progress notifications");
    assert!(progress[0]["message"].as_str().is_some_and(|m| m.contains("run_")));

    let id = seen["dispatch"]["structured"]["id"].as_str().context("run id")?;
    assert_eq!(seen["get_run"]["structured"]["id"], json!(id));
    assert!(seen["list_runs"]["structured"]["runs"]
        .as_array()
        .is_some_and(|runs| runs.iter().any(|r| r["id"] == json!(id))));
    assert_eq!(seen["cancel_run"]["is_error"], false);
    assert_eq!(
        seen["after_cancel"]["structured"]["status"], "cancelled",
        "{}",
        seen["after_cancel"]
    );
    assert_eq!(seen["promote"]["is_error"], true);
    assert_eq!(seen["promote"]["structured"]["error"]["code"], "not_promotable");
    // The text of an error result is the REST error body.
    let text: Value = serde_json::from_str(seen["promote"]["text"][0].as_str().context("text")?)?;
    assert_eq!(text["error"]["code"], "not_promotable");
    assert_eq!(seen["get_run_unknown"]["structured"]["error"]["code"], "not_found");
    assert_eq!(
        seen["dispatch_unknown_agent"]["structured"]["error"]["code"],
        "unknown_agent"
    );
    Ok(())
}

#[tokio::test]
async fn python_sdk_over_stdio() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let bin = outpost_bin()?;
    python_sdk_scenario(&["stdio", &bin.display().to_string(), &server.url, &server.api_key])
}

#[tokio::test]
async fn python_sdk_over_http() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    python_sdk_scenario(&["http", &format!("{}/mcp", server.url), &server.api_key])
}

#[tokio::test]
async fn mcp_endpoint_needs_a_key_and_only_takes_post() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev().slots(0)).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/mcp", server.url);
    let anonymous = http
        .post(&url)
        .header("accept", "application/json, text/event-stream")
        .json(&initialize(1))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized", "{body}");
    let wrong = http
        .post(&url)
        .bearer_auth("op_live_nope")
        .json(&initialize(1))
        .send()
        .await?;
    assert_eq!(wrong.status(), 401);
    let get = http
        .get(&url)
        .bearer_auth(&server.api_key)
        .header("accept", "text/event-stream")
        .send()
        .await?;
    assert_eq!(get.status(), 405);
    Ok(())
}

fn initialize(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "outpost-test", "version": "1"}}
    })
}

/// `_meta` of a self-contained (2026-07-28, sessionless) request declaring the tasks extension.
fn task_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "outpost-test", "version": "1"},
        "io.modelcontextprotocol/clientCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}
    })
}

/// One JSON-RPC request to `/mcp` through the gateway, with no session id; the JSON answer.
async fn rpc(
    http: &reqwest::Client,
    gateway: &LambdaGateway,
    key: &str,
    version: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let mut request = http
        .post(format!("{}/mcp", gateway.url()))
        .bearer_auth(key)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", version);
    if version >= "2026-07-28" {
        // Sessionless requests name their method (and tool) in headers too (SEP-2243).
        if let Some(method) = body["method"].as_str() {
            request = request.header("mcp-method", method);
        }
        if let Some(name) = body["params"]["name"].as_str().or(body["params"]["taskId"].as_str()) {
            request = request.header("mcp-name", name);
        }
    }
    let resp = request.json(&body).send().await?;
    let status = resp.status();
    assert!(
        resp.headers().get("mcp-session-id").is_none(),
        "stateless: no session id"
    );
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = resp.text().await?;
    anyhow::ensure!(status == 200, "{status}: {text}");
    anyhow::ensure!(content_type.starts_with("application/json"), "{content_type}: {text}");
    Ok(serde_json::from_str(&text)?)
}

#[tokio::test]
async fn mcp_over_lambda_gateway_is_stateless() -> anyhow::Result<()> {
    // Two sandboxes: consecutive requests of one client may land on either.
    let app = TestApp::spawn(AppOptions::lambda().instances(2).function_arg("--allow-shell")).await?;
    let key = app.api_key.clone();
    let gateway = app.gateway().context("a Lambda front")?;
    let http = reqwest::Client::new();
    let v = "2025-11-25";

    let init = rpc(&http, gateway, &key, v, initialize(1)).await?;
    assert_eq!(init["result"]["serverInfo"]["name"], "outpost", "{init}");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");

    // No `initialized`, no session: every request stands alone.
    let listed = rpc(
        &http,
        gateway,
        &key,
        v,
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    )
    .await?;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .context("tools")?
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names.len(), TOOLS.len(), "{listed}");

    let called = rpc(
        &http,
        gateway,
        &key,
        v,
        json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "dispatch", "arguments": {"agent": "shell", "task": "echo hi"}}
        }),
    )
    .await?;
    let run_id = called["result"]["structuredContent"]["id"]
        .as_str()
        .context("run id")?
        .to_owned();
    let got = rpc(
        &http,
        gateway,
        &key,
        v,
        json!({
            "jsonrpc": "2.0", "id": 4, "method": "tools/call",
            "params": {"name": "get_run", "arguments": {"run_id": run_id}}
        }),
    )
    .await?;
    assert_eq!(got["result"]["structuredContent"]["status"], "queued", "{got}");
    let missing = rpc(
        &http,
        gateway,
        &key,
        v,
        json!({
            "jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "cancel_run", "arguments": {"run_id": "run_00000000000000000000000000"}}
        }),
    )
    .await?;
    assert_eq!(missing["result"]["isError"], true, "{missing}");
    assert_eq!(missing["result"]["structuredContent"]["error"]["code"], "not_found");

    // MCP tasks: `dispatch` with `wait` from a client declaring the extension is a task = the run.
    let m = "2026-07-28";
    let created = rpc(&http, gateway, &key, m, json!({
        "jsonrpc": "2.0", "id": 6, "method": "tools/call",
        "params": {"name": "dispatch", "arguments": {"agent": "shell", "task": "sleep 30", "wait": true}, "_meta": task_meta()}
    }))
    .await?;
    assert_eq!(created["result"]["resultType"], "task", "{created}");
    let task_id = created["result"]["taskId"].as_str().context("task id")?.to_owned();
    assert!(task_id.starts_with("run_"));
    let polled = rpc(
        &http,
        gateway,
        &key,
        m,
        json!({
            "jsonrpc": "2.0", "id": 7, "method": "tasks/get", "params": {"taskId": task_id, "_meta": task_meta()}
        }),
    )
    .await?;
    assert_eq!(polled["result"]["status"], "working", "{polled}");
    let ack = rpc(
        &http,
        gateway,
        &key,
        m,
        json!({
            "jsonrpc": "2.0", "id": 8, "method": "tasks/cancel", "params": {"taskId": task_id, "_meta": task_meta()}
        }),
    )
    .await?;
    assert!(ack.get("error").is_none(), "{ack}");
    let polled = rpc(
        &http,
        gateway,
        &key,
        m,
        json!({
            "jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"taskId": task_id, "_meta": task_meta()}
        }),
    )
    .await?;
    assert_eq!(polled["result"]["status"], "cancelled", "{polled}");

    // Without a key: the API's 401, through the gateway.
    let anonymous = http
        .post(format!("{}/mcp", gateway.url()))
        .header("accept", "application/json, text/event-stream")
        .json(&initialize(10))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized");
    Ok(())
}
