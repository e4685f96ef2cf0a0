//! The per-run egress proxy end to end (docs/SECURITY.md, `worker/src/egress/`): keys that never
//! enter the sandbox, host allow-lists, and usage metered by the proxy.
//!
//! Real parts only: a throwaway CA made with `openssl` ([`TestCa`]); the vendor stand-in
//! (`tests/vendor-standin/standin.py`) serving HTTPS with its certificate as the agent entry's
//! vendor (`base_url`), trusted by the worker's proxy through `OUTPOST_EGRESS_CA` (agents never
//! see it); a plain-HTTP "allowed host" on 198.18.0.7 (given to `lo` when the tests are root; the
//! proxy does not refuse that benchmarking range) with a decoy on 127.0.0.1 at the same port, so
//! that a name wrongly let through to loopback would show; and `OUTPOST_EGRESS_RESOLVE` pointing
//! test names at the allowed host, at loopback (a rebinding name) and at the instance metadata
//! address. The fake agent (`tests/src/egress.rs`) plays the hostile agent with plain sockets:
//!
//! - its environment holds a per-run placeholder key (`sk-outpost-<32 hex>`) and the proxy as its
//!   base URL and `HTTPS_PROXY`; never the tenant's real key, nor `GIT_TOKEN` (with which the
//!   worker cloned the run's repository from a token-checking git smart-HTTP server); neither is
//!   in its environment, command line or any file it can read (`key-find`, over the checkout);
//! - two vendor requests through the proxy (JSON and SSE) reach the HTTPS stand-in with the real
//!   key swapped in (the stand-in's record has the key, never a placeholder), and the proxy's
//!   count of their usage in `summary.json` is exactly what the stand-in reported; a request with
//!   a wrong placeholder is refused (401) and never reaches the stand-in;
//! - `CONNECT` opens a tunnel to an allowed name only: an unlisted name, a raw IP, names that
//!   resolve to loopback (`localhost`, a rebinding name) or to the metadata endpoint are refused
//!   (403), each with an `egress refused` note in `output.log`; a TLS ClientHello naming another
//!   server than the tunnel's allowed host closes the tunnel before anything reaches that host;
//!   plain-HTTP proxying is refused; a direct TCP connect that skips the proxy is blocked by the
//!   sandbox;
//! - the run still succeeds, and the real key is in no artifact, no log and not in the run record
//!   (`summary.json` `redactions == 0`: the scrubber had nothing to scrub);
//! - with `network = "open"` the key is still held by the proxy, and there are no proxy
//!   variables; `GET /v1/fleet` shows each entry's network, `allow_hosts` and `key_injection`.
//!
//! The strict sandbox and `sandbox = "standard"` run on the embedded backend (`outpost dev`, one
//! server, three runs at once), the strict one on the AWS backend (moto, `outpost-worker`).

use anyhow::{ensure, Context};
use outpost_api::client::OutpostClient;
use outpost_api::DispatchRequest;
use outpost_core::domain::NetworkPolicy;
use outpost_core::RunStatus;
use outpost_testkit::git_ok;
use outpost_testkit::process::is_root;
use outpost_tests::git_http::GitHttpServer;
use outpost_tests::real_agents::{StandIn, StandInOptions};
use outpost_tests::tls::TestCa;
use outpost_tests::{fake_agent_bin, wait_run_with, AppOptions, TestApp};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(150);
/// The stand-in's usage figures for its final turn (distinct from its defaults and each other).
const IN_TOKENS: u64 = 3001;
const OUT_TOKENS: u64 = 407;
/// The allowed host's address: benchmarking range, which the proxy does not refuse.
const ALLOWED_IP: &str = "198.18.0.7";
/// What the allowed host and its loopback decoy answer.
const ALLOWED_BODY: &str = "allowed-host-says-hi";
const DECOY_BODY: &str = "loopback-decoy-REACHED";

/// A tiny plain-HTTP server answering 200 with `body` to every request on `listener`, counting
/// them; stopped when dropped.
struct Responder {
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Responder {
    fn start(listener: std::net::TcpListener, body: &'static str) -> anyhow::Result<Self> {
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(Self { hits, task })
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Gives `ip/32` to `lo` (root only; a second run of the tests finds it there). `false` when the
/// tests are not root.
fn lo_address(ip: &str) -> anyhow::Result<bool> {
    if !is_root() {
        return Ok(false);
    }
    let added = std::process::Command::new("ip")
        .args(["addr", "add", &format!("{ip}/32"), "dev", "lo"])
        .output()
        .context("ip addr add")?;
    let shown = std::process::Command::new("ip")
        .args(["-4", "addr", "show", "dev", "lo"])
        .output()?;
    let present = String::from_utf8_lossy(&shown.stdout).contains(&format!("{ip}/32"));
    ensure!(
        added.status.success() || present,
        "ip addr add {ip}/32 dev lo: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    Ok(true)
}

/// The allowed host on `ALLOWED_IP:port` (root only) and a decoy on `127.0.0.1:port`.
struct AllowedHost {
    port: u16,
    allowed: Option<Responder>,
    decoy: Responder,
}

impl AllowedHost {
    fn start() -> anyhow::Result<Self> {
        let on_lo = lo_address(ALLOWED_IP)?;
        for _ in 0..20 {
            let (allowed, port) = if on_lo {
                let l = std::net::TcpListener::bind((ALLOWED_IP, 0))?;
                let port = l.local_addr()?.port();
                (Some(l), port)
            } else {
                let l = std::net::TcpListener::bind("127.0.0.1:0")?;
                let port = l.local_addr()?.port();
                drop(l);
                (None, port)
            };
            // The same port on loopback: the decoy a rebinding name would reach.
            let Ok(decoy) = std::net::TcpListener::bind(("127.0.0.1", port)) else {
                continue;
            };
            return Ok(Self {
                port,
                allowed: allowed.map(|l| Responder::start(l, ALLOWED_BODY)).transpose()?,
                decoy: Responder::start(decoy, DECOY_BODY)?,
            });
        }
        anyhow::bail!("no port free on both {ALLOWED_IP} and 127.0.0.1")
    }
}

/// One backend's setup: the CA, the HTTPS stand-in, the allowed host, the tenant's real key.
struct World {
    _ca: TestCa,
    standin: StandIn,
    host: AllowedHost,
    real_key: String,
    git_token: String,
    /// A repository behind a git smart-HTTP server that wants `git_token`: the worker clones
    /// it, so the runs' workspaces hold a checkout and its `.git` for `key-find` to search.
    repo: String,
    _git: GitHttpServer,
    _repos: tempfile::TempDir,
    server: TestApp,
}

/// A bare repository `root/srv/app.git` with one commit on `main`.
fn make_bare(root: &std::path::Path) -> anyhow::Result<()> {
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed)?;
    git_ok(&seed, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(seed.join("app.txt"), "v1\n")?;
    git_ok(&seed, &["add", "-A"]);
    git_ok(&seed, &["commit", "--quiet", "-m", "seed"]);
    let bare = root.join("srv").join("app.git");
    std::fs::create_dir_all(&bare)?;
    git_ok(&bare, &["init", "--quiet", "--bare", "--initial-branch=main"]);
    git_ok(&seed, &["push", "--quiet", &bare.display().to_string(), "main"]);
    Ok(())
}

fn agents_toml(standin_port: u16, allowed_port: u16) -> anyhow::Result<String> {
    let fake = fake_agent_bin()?.display().to_string();
    let entry = |name: &str, extra: &str| {
        format!(
            r#"
[agents.{name}]
command = [{fake:?}, "--prompt", "{{prompt}}"]
key_env = "ANTHROPIC_API_KEY"
base_url_env = "ANTHROPIC_BASE_URL"
base_url = "https://127.0.0.1:{standin_port}"
key_injection = {{ upstream = "https://api.anthropic.com", header = "x-api-key" }}
{extra}
"#
        )
    };
    let allow = format!(
        "network = \"allow\"\nallow_hosts = [\"allowed.outpost.test:{allowed_port}\", \"rebind.outpost.test:{allowed_port}\", \"metadata.outpost.test:80\", \"localhost:{allowed_port}\"]"
    );
    Ok(entry("vendor", &allow)
        + &entry("vendor-std", &format!("sandbox = \"standard\"\n{allow}"))
        + &entry("vendor-open", "network = \"open\""))
}

impl World {
    async fn start(opts: AppOptions) -> anyhow::Result<Self> {
        let ca = TestCa::new()?;
        let standin = StandIn::start_with(StandInOptions::default().tls(&ca).tokens(IN_TOKENS, OUT_TOKENS))?;
        let host = AllowedHost::start()?;
        if host.allowed.is_none() {
            eprintln!(
                "egress_e2e: not root, so {ALLOWED_IP} cannot be given to lo: the tunnel to an allowed host and the direct connect are not checked"
            );
        }
        let opts = opts
            .agents_toml(agents_toml(standin.port(), host.port)?)
            .worker_env("OUTPOST_EGRESS_CA", ca.ca_pem.display().to_string())
            .worker_env(
                "OUTPOST_EGRESS_RESOLVE",
                format!(
                    "allowed.outpost.test={ALLOWED_IP},rebind.outpost.test=127.0.0.1,metadata.outpost.test=169.254.169.254"
                ),
            );
        let server = TestApp::spawn(opts).await?;
        let real_key = format!("sk-ant-REAL-{}", ulid::Ulid::new().to_string().to_lowercase());
        let git_token = format!("ghp_REALGIT{}", ulid::Ulid::new().to_string().to_lowercase());
        let repos = tempfile::tempdir()?;
        make_bare(repos.path())?;
        let git = GitHttpServer::start(&repos.path().join("srv"), &git_token)?;
        let client = server.client()?;
        client.put_secret("ANTHROPIC_API_KEY", &real_key).await?;
        client.put_secret("GIT_TOKEN", &git_token).await?;
        Ok(Self {
            _ca: ca,
            standin,
            host,
            real_key,
            git_token,
            repo: git.repo_url("app.git"),
            _git: git,
            _repos: repos,
            server,
        })
    }

    /// `key-find` of the real key and of the git token, each in four parts (never whole on the
    /// agent's command line).
    fn key_finds(&self) -> [String; 2] {
        let parts = |k: &str, a: usize, b: usize| {
            let (p1, rest) = k.split_at(a);
            let (p2, rest) = rest.split_at(b);
            let (p3, p4) = rest.split_at(rest.len() / 2);
            format!("key-find {p1} {p2} {p3} {p4}")
        };
        [
            parts(&self.real_key, "sk-ant-".len(), "REAL-".len()),
            parts(&self.git_token, "ghp_".len(), "REALGIT".len()),
        ]
    }
}

/// A Messages API body the stand-in answers with its final turn (usage IN_TOKENS/OUT_TOKENS):
/// the `Write` tool is offered and the last user message carries its result.
fn messages_body(stream: bool) -> String {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": stream,
        "tools": [{"name": "Write", "description": "write a file", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "write the file"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_egress_1", "name": "Write", "input": {"file_path": "x", "content": "y"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_egress_1", "content": "written"}
            ]}
        ]
    })
    .to_string()
}

fn vendor_request(stream: bool, key: &str) -> String {
    format!(
        "http POST $ANTHROPIC_BASE_URL/v1/messages x-api-key:{key} anthropic-version:2023-06-01 content-type:application/json body={}",
        messages_body(stream)
    )
}

/// A wrong placeholder: the proxy must refuse it (it is not this run's).
const WRONG_PLACEHOLDER: &str = "sk-outpost-00000000000000000000000000000000";

/// The script of a run of `vendor` or `vendor-std`.
fn allow_script(w: &World) -> String {
    let p = w.host.port;
    let mut lines = vec![
        "env ANTHROPIC_API_KEY".to_owned(),
        "env ANTHROPIC_BASE_URL".to_owned(),
        "env HTTPS_PROXY".to_owned(),
        "env NO_PROXY".to_owned(),
        "env GIT_TOKEN".to_owned(),
    ];
    lines.extend(w.key_finds());
    lines.extend([
        vendor_request(false, "$ANTHROPIC_API_KEY"),
        vendor_request(true, "$ANTHROPIC_API_KEY"),
        vendor_request(false, WRONG_PLACEHOLDER),
    ]);
    if w.host.allowed.is_some() {
        lines.push(format!("tunnel allowed.outpost.test:{p} /"));
    }
    lines.extend([
        "tunnel evil.outpost.test:443".to_owned(),
        format!("tunnel {ALLOWED_IP}:{p}"),
        format!("tunnel rebind.outpost.test:{p}"),
        format!("tunnel localhost:{p}"),
        "tunnel metadata.outpost.test:80".to_owned(),
    ]);
    // Plain-HTTP proxying; fronting: an allowed tunnel whose TLS names another server.
    lines.push(format!("proxy-get http://allowed.outpost.test:{p}/"));
    if w.host.allowed.is_some() {
        lines.push(format!("tls-tunnel allowed.outpost.test:{p} evil.outpost.test"));
        lines.push(format!("try-connect {ALLOWED_IP}:{p}"));
    }
    lines.push("say egress-done".to_owned());
    lines.join("\n")
}

/// The script of a run of `vendor-open`.
fn open_script(w: &World) -> String {
    let mut lines = vec![
        "env ANTHROPIC_API_KEY".to_owned(),
        "env ANTHROPIC_BASE_URL".to_owned(),
        "env HTTPS_PROXY".to_owned(),
        "env HTTP_PROXY".to_owned(),
        "env ALL_PROXY".to_owned(),
        "env GIT_TOKEN".to_owned(),
    ];
    lines.extend(w.key_finds());
    lines.extend([
        vendor_request(false, "$ANTHROPIC_API_KEY"),
        format!("tunnel allowed.outpost.test:{} /", w.host.port),
        "say egress-done".to_owned(),
    ]);
    lines.join("\n")
}

fn task(agent: &str, script: String, repo: &str) -> DispatchRequest {
    DispatchRequest {
        agent: agent.into(),
        task: script,
        repo: Some(repo.to_owned()),
        branch: Some("main".to_owned()),
        timeout_secs: Some(120),
        idle_timeout_secs: None,
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// The value the fake agent printed for `env NAME` (`None`: unset or not printed).
fn printed_env<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    log.lines().find_map(|l| l.strip_prefix(&format!("{name}=")))
}

/// Whether `v` is a per-run placeholder key: `sk-outpost-` and 32 lower-case hex digits.
fn is_placeholder(v: &str) -> bool {
    v.strip_prefix("sk-outpost-")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// The real key and the git token are nowhere a client can read of the run: its record as the
/// API serves it (`GET /v1/runs/{id}`), its log, every artifact. Never prints them.
async fn assert_no_secret(w: &World, client: &OutpostClient, api_key: &str, id: &str) -> anyhow::Result<()> {
    let raw = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}", w.server.url))
        .bearer_auth(api_key)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(contains(&raw, id), "GET /v1/runs/{id} is not the run's record");
    let mut places = vec![("the run record".to_owned(), raw.to_vec())];
    for a in client.artifacts(id).await? {
        places.push((a.name.clone(), client.artifact(id, &a.name).await?.to_vec()));
    }
    ensure!(
        places.iter().any(|(n, _)| n == "output.log") && places.iter().any(|(n, _)| n == "summary.json"),
        "the run has no output.log or summary.json: {:?}",
        places.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, bytes) in &places {
        ensure!(
            !contains(bytes, &w.real_key),
            "run {id}: the tenant's real key is in {name}"
        );
        ensure!(
            !contains(bytes, &w.git_token),
            "run {id}: the tenant's GIT_TOKEN is in {name}"
        );
    }
    Ok(())
}

/// Every request the stand-in received carried the real key in `x-api-key` and no placeholder
/// anywhere; returns how many there were. Never prints the key.
fn standin_requests_carry_the_real_key(w: &World) -> anyhow::Result<usize> {
    let requests = w.standin.requests();
    for (i, r) in requests.iter().enumerate() {
        let path = r["path"].as_str().unwrap_or("?");
        let header = r["headers"]["x-api-key"].as_str();
        let what = match header {
            None => "no x-api-key".to_owned(),
            Some(v) if v == w.real_key => String::new(),
            Some(v) if v.starts_with("sk-outpost-") => "the placeholder in x-api-key".to_owned(),
            Some(v) => format!("another x-api-key ({} characters)", v.len()),
        };
        ensure!(what.is_empty(), "stand-in request {i} ({path}) came with {what}");
        ensure!(
            !r.to_string().contains("sk-outpost-"),
            "stand-in request {i} ({path}) holds a placeholder key"
        );
    }
    Ok(requests.len())
}

async fn artifact_json(client: &OutpostClient, id: &str, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::from_slice(&client.artifact(id, name).await?)?)
}

/// Both `key-find`s found nothing, in a workspace that holds a clone (files were searched).
fn keys_nowhere(log: &str, mode: &str) -> anyhow::Result<()> {
    ensure!(!log.contains("KEY found in"), "{mode}: the agent found a secret\n{log}");
    let searched: Vec<usize> = log
        .lines()
        .filter_map(|l| l.strip_prefix("KEY nowhere ("))
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    ensure!(
        searched.len() == 2 && searched.iter().all(|n| *n > 0),
        "{mode}: key-find did not search the run's files: {searched:?}\n{log}"
    );
    Ok(())
}

/// The lines of `log` that are the proxy's refusal notes.
fn refusal_notes(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("egress refused")).collect()
}

/// Checks a finished run of `vendor` (strict) or `vendor-std` (standard).
async fn check_allow_run(w: &World, id: &str, strict: bool) -> anyhow::Result<String> {
    let client = w.server.client()?;
    let view = wait_run_with(&client, id, WAIT, |r| r.status.is_terminal()).await?;
    // The secrets first, before anything prints the log.
    assert_no_secret(w, &client, &w.server.api_key, id).await?;
    let log = String::from_utf8_lossy(&client.artifact(id, "output.log").await?).into_owned();
    let summary = artifact_json(&client, id, "summary.json").await?;
    let mode = if strict { "strict" } else { "standard" };
    ensure!(view.status == RunStatus::Succeeded, "{mode}: {view:?}\n{log}");
    ensure!(log.contains("egress-done"), "{mode}: the script did not finish\n{log}");
    ensure!(
        summary["redactions"] == 0,
        "{mode}: the scrubber found a secret to scrub: {summary}"
    );
    ensure!(summary["sandbox"]["mode"] == mode, "{summary}");
    ensure!(summary["sandbox"]["network"] == "allow", "{summary}");

    // The environment: a placeholder, the proxy as the base URL and proxy, no GIT_TOKEN.
    let placeholder = printed_env(&log, "ANTHROPIC_API_KEY").unwrap_or_default().to_owned();
    ensure!(
        is_placeholder(&placeholder),
        "{mode}: the agent's key is not a placeholder\n{log}"
    );
    let base = printed_env(&log, "ANTHROPIC_BASE_URL").unwrap_or_default();
    ensure!(
        base.starts_with("http://127.0.0.1:"),
        "{mode}: base URL {base:?}\n{log}"
    );
    let proxy = printed_env(&log, "HTTPS_PROXY").unwrap_or_default();
    ensure!(
        proxy.starts_with("http://127.0.0.1:"),
        "{mode}: HTTPS_PROXY {proxy:?}\n{log}"
    );
    let no_proxy = printed_env(&log, "NO_PROXY").unwrap_or_default();
    ensure!(no_proxy.contains("127.0.0.1"), "{mode}: NO_PROXY {no_proxy:?}\n{log}");
    ensure!(
        log.contains("GIT_TOKEN is unset"),
        "{mode}: GIT_TOKEN reached the agent\n{log}"
    );
    keys_nowhere(&log, mode)?;

    // The vendor requests: two answered by the stand-in (its final turn), the wrong placeholder
    // refused by the proxy.
    let statuses: Vec<&str> = log.lines().filter(|l| l.starts_with("HTTP ")).collect();
    ensure!(
        statuses == ["HTTP 200", "HTTP 200", "HTTP 401"],
        "{mode}: vendor answers {statuses:?}\n{log}"
    );
    ensure!(
        log.contains(&format!("\"input_tokens\": {IN_TOKENS}")) && log.contains("message_delta"),
        "{mode}: not the stand-in's final turn, JSON and SSE\n{log}"
    );

    // The tunnels.
    let p = w.host.port;
    let tunnel = |target: &str| {
        let prefix = format!("TUNNEL {target}: ");
        log.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or("(no report)")
            .to_owned()
    };
    let mut tunnels = 0;
    if w.host.allowed.is_some() {
        let allowed = tunnel(&format!("allowed.outpost.test:{p}"));
        ensure!(allowed == "open, HTTP 200", "{mode}: allowed host: {allowed}\n{log}");
        tunnels = 1;
        let direct = format!("REACH connect {ALLOWED_IP}:{p}: blocked");
        ensure!(log.contains(&direct), "{mode}: a direct connect got out\n{log}");
    }
    let refused_hosts = [
        ("evil.outpost.test:443".to_owned(), "evil.outpost.test"),
        (format!("{ALLOWED_IP}:{p}"), ALLOWED_IP),
        (format!("rebind.outpost.test:{p}"), "rebind.outpost.test"),
        (format!("localhost:{p}"), "localhost"),
        ("metadata.outpost.test:80".to_owned(), "metadata.outpost.test"),
    ];
    let notes = refusal_notes(&log);
    for (target, host) in &refused_hosts {
        let report = tunnel(target);
        ensure!(
            report.starts_with("refused (HTTP/1.1 403"),
            "{mode}: tunnel to {target}: {report}\n{log}"
        );
        ensure!(
            notes.iter().any(|n| n.contains(host)),
            "{mode}: no egress refused note for {host}: {notes:#?}\n{log}"
        );
    }
    ensure!(
        !notes
            .iter()
            .any(|n| n.contains(&format!("CONNECT allowed.outpost.test:{p}")) && !n.contains("TLS server name")),
        "{mode}: the allowed host was refused: {notes:#?}"
    );
    ensure!(!log.contains(DECOY_BODY), "{mode}: a tunnel reached loopback\n{log}");
    // A ClientHello naming another server than the tunnel's host: the proxy closes the tunnel
    // before anything reaches the allowed host; plain-HTTP proxying is refused.
    let mut refused = refused_hosts.len() as u64 + 2;
    if w.host.allowed.is_some() {
        let fronted = format!("TLS allowed.outpost.test:{p} as evil.outpost.test: ");
        let fronted = log
            .lines()
            .find_map(|l| l.strip_prefix(&fronted))
            .unwrap_or("(no report)");
        ensure!(
            fronted == "closed by the proxy before the server answered",
            "{mode}: fronting: {fronted}\n{log}"
        );
        ensure!(
            notes
                .iter()
                .any(|n| n.contains("evil.outpost.test") && n.contains("allowed.outpost.test")),
            "{mode}: no note of the fronting attempt: {notes:#?}"
        );
        refused += 1;
    }
    let plain = format!("PROXY-GET http://allowed.outpost.test:{p}/: HTTP 403");
    ensure!(
        log.contains(&plain),
        "{mode}: plain-HTTP proxying was not refused\n{log}"
    );
    ensure!(
        notes.iter().any(|n| n.contains("plain HTTP")),
        "{mode}: no note of the plain-HTTP request: {notes:#?}"
    );
    // Five tunnels, the plain-HTTP request, the wrong placeholder (and the fronting, above).
    ensure!(notes.len() as u64 == refused, "{mode}: refusal notes {notes:#?}");

    // What the proxy counted.
    let e = &summary["egress"];
    ensure!(e["key_injected"] == true, "{mode}: {summary}");
    ensure!(e["vendor_requests"] == 2, "{mode}: {summary}");
    ensure!(e["tunnels"] == tunnels, "{mode}: {summary}");
    ensure!(e["refused"] == refused, "{mode}: {summary}");
    let u = &e["usage"];
    ensure!(u["input_tokens"] == 2 * IN_TOKENS, "{mode}: usage {u}");
    ensure!(u["output_tokens"] == 2 * OUT_TOKENS, "{mode}: usage {u}");
    ensure!(u["cached_input_tokens"] == 0, "{mode}: usage {u}");
    ensure!(u["responses"] == 2, "{mode}: usage {u}");
    ensure!(u["unmetered_responses"] == 0, "{mode}: usage {u}");
    Ok(placeholder)
}

/// Checks a finished run of `vendor-open`.
async fn check_open_run(w: &World, id: &str) -> anyhow::Result<()> {
    let client = w.server.client()?;
    let view = wait_run_with(&client, id, WAIT, |r| r.status.is_terminal()).await?;
    assert_no_secret(w, &client, &w.server.api_key, id).await?;
    let log = String::from_utf8_lossy(&client.artifact(id, "output.log").await?).into_owned();
    let summary = artifact_json(&client, id, "summary.json").await?;
    ensure!(view.status == RunStatus::Succeeded, "open: {view:?}\n{log}");
    ensure!(log.contains("egress-done"), "open: the script did not finish\n{log}");
    ensure!(summary["redactions"] == 0, "open: {summary}");
    ensure!(summary["sandbox"]["network"] == "open", "{summary}");
    let placeholder = printed_env(&log, "ANTHROPIC_API_KEY").unwrap_or_default();
    ensure!(
        is_placeholder(placeholder),
        "open: the agent's key is not a placeholder\n{log}"
    );
    let base = printed_env(&log, "ANTHROPIC_BASE_URL").unwrap_or_default();
    ensure!(base.starts_with("http://127.0.0.1:"), "open: base URL {base:?}\n{log}");
    for var in ["HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "GIT_TOKEN"] {
        ensure!(log.contains(&format!("{var} is unset")), "open: {var} is set\n{log}");
    }
    keys_nowhere(&log, "open")?;
    let statuses: Vec<&str> = log.lines().filter(|l| l.starts_with("HTTP ")).collect();
    ensure!(statuses == ["HTTP 200"], "open: vendor answers {statuses:?}\n{log}");
    let tunnel = format!("TUNNEL allowed.outpost.test:{}: no proxy", w.host.port);
    ensure!(log.contains(&tunnel), "open: {log}");
    let e = &summary["egress"];
    ensure!(e["key_injected"] == true, "open: {summary}");
    ensure!(e["vendor_requests"] == 1, "open: {summary}");
    ensure!(e["usage"]["input_tokens"] == IN_TOKENS, "open: {summary}");
    ensure!(e["usage"]["output_tokens"] == OUT_TOKENS, "open: {summary}");
    Ok(())
}

/// `GET /v1/fleet`: each entry's network, allow-list and whether the proxy holds its key.
async fn check_fleet(w: &World) -> anyhow::Result<()> {
    let fleet = w.server.client()?.fleet().await?;
    let of = |name: &str| fleet.agents.iter().find(|a| a.name == name);
    let vendor = of("vendor").context("vendor is not in the fleet")?;
    ensure!(vendor.network == NetworkPolicy::Allow, "{vendor:?}");
    ensure!(vendor.key_injection, "{vendor:?}");
    let p = w.host.port;
    let hosts: Vec<String> = [
        format!("allowed.outpost.test:{p}"),
        format!("rebind.outpost.test:{p}"),
        "metadata.outpost.test:80".to_owned(),
        format!("localhost:{p}"),
    ]
    .into();
    ensure!(vendor.allow_hosts == hosts, "{vendor:?}");
    let open = of("vendor-open").context("vendor-open is not in the fleet")?;
    ensure!(open.network == NetworkPolicy::Open && open.key_injection, "{open:?}");
    let claude = of("claude").context("claude is not in the fleet")?;
    ensure!(
        claude.network == NetworkPolicy::Allow && claude.key_injection,
        "the built-ins hold no key: {claude:?}"
    );
    let fake = of("fake").context("fake is not in the fleet")?;
    ensure!(!fake.key_injection && fake.allow_hosts.is_empty(), "{fake:?}");
    Ok(())
}

/// The whole suite on one backend: runs of `agents` (`vendor`, `vendor-std`, `vendor-open`) at
/// once, then their checks.
async fn egress_suite(opts: AppOptions, agents: &[&str]) -> anyhow::Result<()> {
    let w = World::start(opts).await?;
    check_fleet(&w).await?;
    let client = w.server.client()?;
    let mut runs = Vec::new();
    for agent in agents {
        let script = if *agent == "vendor-open" {
            open_script(&w)
        } else {
            allow_script(&w)
        };
        runs.push((*agent, client.dispatch(&task(agent, script, &w.repo)).await?.id));
    }
    let mut placeholders = Vec::new();
    let mut expected_requests = 0;
    for (agent, id) in &runs {
        match *agent {
            "vendor-open" => {
                check_open_run(&w, id).await?;
                expected_requests += 1;
            }
            a => {
                placeholders.push(check_allow_run(&w, id, a == "vendor").await?);
                expected_requests += 2;
            }
        }
    }
    let n = standin_requests_carry_the_real_key(&w)?;
    ensure!(
        n == expected_requests,
        "the stand-in saw {n} requests, {expected_requests} were forwarded"
    );
    placeholders.sort();
    placeholders.dedup();
    ensure!(
        placeholders.len() == runs.iter().filter(|(a, _)| *a != "vendor-open").count(),
        "two runs had the same placeholder"
    );
    if let Some(allowed) = &w.host.allowed {
        let tunnelled = placeholders.len();
        ensure!(
            allowed.hits() == tunnelled,
            "the allowed host saw {} requests, {tunnelled} tunnels were opened",
            allowed.hits()
        );
    }
    ensure!(w.host.decoy.hits() == 0, "a tunnel reached the loopback decoy");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_stay_out_and_hosts_are_allow_listed_on_the_embedded_backend() -> anyhow::Result<()> {
    egress_suite(AppOptions::dev(), &["vendor", "vendor-std", "vendor-open"]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_stay_out_and_hosts_are_allow_listed_on_the_aws_backend() -> anyhow::Result<()> {
    // The runs' repository is on loopback, which the AWS deployment refuses by default.
    let opts = AppOptions::aws(5).slots(2).env("OUTPOST_ALLOW_LOCAL_REPOS", "true");
    egress_suite(opts, &["vendor"]).await
}

/// The parts the suites stand on: the test CA's leaf is accepted by a webpki client (reqwest
/// with rustls) that trusts only that CA, the HTTPS stand-in serves with it (and on another
/// address with `--bind`), and a client that does not trust the CA is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_https_standin_serves_a_certificate_of_the_test_ca() -> anyhow::Result<()> {
    let ca = TestCa::new()?;
    let root = reqwest::Certificate::from_pem(&std::fs::read(&ca.ca_pem)?)?;
    let trusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(root)
        .build()?;
    let mut standins = vec![StandIn::start_tls(&ca)?];
    if lo_address(ALLOWED_IP)? {
        standins.push(StandIn::start_with(
            StandInOptions::default().tls(&ca).bind(ALLOWED_IP),
        )?);
    }
    for standin in &standins {
        ensure!(standin.url.starts_with("https://"), "{}", standin.url);
        let models: Value = trusting
            .get(format!("{}/v1/models", standin.url))
            .header("anthropic-version", "2023-06-01")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ensure!(models["data"][0]["type"] == "model", "{models}");
        let untrusting = reqwest::Client::builder().tls_built_in_root_certs(true).build()?;
        let refused = untrusting.get(format!("{}/v1/models", standin.url)).send().await;
        ensure!(refused.is_err(), "a client without the test CA was served: {refused:?}");
        let recorded = standin.requests();
        ensure!(
            recorded.len() == 1 && recorded[0]["path"] == "/v1/models",
            "{recorded:?}"
        );
    }
    Ok(())
}
