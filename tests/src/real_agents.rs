//! Harness of the tests that run the five real agent CLIs (the pinned releases installed by
//! `scripts/agent-clis`) through `outpost dev` and their real registry entries, pointed at the
//! loopback vendor stand-in `tests/vendor-standin/standin.py`.
//!
//! One stand-in serves every vendor API shape; the key a tenant stores picks the stand-in's
//! behaviour for that tenant's runs (`-401-` in the key: the vendor refuses it; `-silent-`: the
//! vendor never answers), so one server and one stand-in cover good, refused and dead vendors.
//!
//! The stand-in serves HTTPS ([`StandIn::start_tls`]) with a certificate of a throwaway CA
//! ([`TestCa`]) that the worker's egress proxy trusts (`OUTPOST_EGRESS_CA`), as a vendor does: each
//! CLI talks plain HTTP to its run's proxy on loopback with a placeholder key, and the proxy
//! forwards over TLS with the tenant's key swapped in.

use crate::tls::TestCa;
use crate::{AppOptions, KillOnDrop};
use anyhow::{bail, Context};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The file the stand-in's tool call makes the agent write, and what it writes.
pub const MADE_FILE: &str = "standin-made.txt";
pub const MADE_CONTENT: &str = "written by the stand-in's tool call\n";
/// The stand-in's final answer and usage figures (its defaults).
pub const ANSWER: &str = "Done: I wrote the file.";
pub const INPUT_TOKENS: u64 = 1234;
pub const OUTPUT_TOKENS: u64 = 56;

/// The folder holding `bin/{claude,codex,gemini,grok,aider}`: `OUTPOST_AGENT_CLIS` or the
/// default of `scripts/agent-clis`.
pub fn clis_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::var_os("OUTPOST_AGENT_CLIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/outpost-agent-clis"));
    for cli in ["claude", "codex", "gemini", "grok", "aider"] {
        if !dir.join("bin").join(cli).exists() {
            bail!(
                "{} has no bin/{cli}: run scripts/agent-clis (scripts/test does) or set OUTPOST_AGENT_CLIS",
                dir.display()
            );
        }
    }
    Ok(dir)
}

/// How [`StandIn::start_with`] starts the stand-in: plain HTTP on 127.0.0.1 with the default
/// figures ([`INPUT_TOKENS`], [`OUTPUT_TOKENS`]) unless told otherwise.
#[derive(Debug, Clone, Default)]
pub struct StandInOptions {
    /// Serve HTTPS with this CA's leaf certificate ([`TestCa::cert_pem`]).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The address to listen on (default 127.0.0.1; e.g. 198.18.0.7 once it is on `lo`).
    pub bind: Option<String>,
    /// The usage figures of the final turn (default [`INPUT_TOKENS`], [`OUTPUT_TOKENS`]).
    pub tokens: Option<(u64, u64)>,
}

impl StandInOptions {
    /// HTTPS with `ca`'s leaf certificate.
    pub fn tls(mut self, ca: &TestCa) -> Self {
        self.tls = Some((ca.cert_pem.clone(), ca.key_pem.clone()));
        self
    }

    pub fn bind(mut self, addr: impl Into<String>) -> Self {
        self.bind = Some(addr.into());
        self
    }

    /// The final turn's usage: `input` input tokens, `output` output tokens.
    pub fn tokens(mut self, input: u64, output: u64) -> Self {
        self.tokens = Some((input, output));
        self
    }
}

/// A running stand-in of the vendors' APIs.
pub struct StandIn {
    /// `http://127.0.0.1:PORT`, or `https://…` for [`StandIn::start_tls`].
    pub url: String,
    record: PathBuf,
    _process: KillOnDrop,
    _dir: tempfile::TempDir,
}

impl StandIn {
    /// Plain HTTP on loopback, the default figures.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(StandInOptions::default())
    }

    /// HTTPS on loopback with `ca`'s leaf certificate (valid for 127.0.0.1): what a vendor
    /// serves, reached by the worker's egress proxy when it trusts `ca` (`OUTPOST_EGRESS_CA`).
    pub fn start_tls(ca: &TestCa) -> anyhow::Result<Self> {
        Self::start_with(StandInOptions::default().tls(ca))
    }

    pub fn start_with(opts: StandInOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let record = dir.path().join("requests.jsonl");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor-standin/standin.py");
        let (input, output) = opts.tokens.unwrap_or((INPUT_TOKENS, OUTPUT_TOKENS));
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--port", "0", "--record"])
            .arg(&record)
            .args(["--file", MADE_FILE, "--content", MADE_CONTENT, "--answer", ANSWER])
            .args(["--input-tokens", &input.to_string()])
            .args(["--output-tokens", &output.to_string()]);
        if let Some(bind) = &opts.bind {
            cmd.args(["--bind", bind]);
        }
        if let Some((cert, key)) = &opts.tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start python3 tests/vendor-standin/standin.py")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let process = KillOnDrop(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(url) = line.trim().strip_prefix("listening ") else {
            bail!("the stand-in did not print its address: {line:?}");
        };
        Ok(Self {
            url: url.to_owned(),
            record,
            _process: process,
            _dir: dir,
        })
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(0)
    }

    /// Every request the stand-in received so far (method, path, headers, body).
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// What a built-in agent is checked against.
#[derive(Debug, Clone)]
pub struct AgentCase {
    pub agent: &'static str,
    /// The key's variable (the tenant's secret of that name reaches the agent).
    pub key_env: &'static str,
    /// What the entry's base URL is, after the stand-in's address (e.g. `/v1`).
    pub base_path: &'static str,
    /// The request header the vendor key arrives in, and the value's prefix before the key.
    pub key_header: (&'static str, &'static str),
    /// Part of the run's agent error when the vendor refuses the key.
    pub refused_error: &'static str,
    /// Usage figures the agent reports for the stand-in's answer (`None`: not reported).
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub reports_cost: bool,
    pub reports_session: bool,
    /// Whether the agent's final answer is read exactly (`false`: it only contains the answer).
    pub exact_result: bool,
    /// What the CLI prints when it retries a refused request (its retries reach the log as they
    /// happen); `None` for CLIs that do not retry a refused key.
    pub retry_notice: Option<&'static str>,
    /// Whether every answer of the stand-in's API shape carries the usage figures (chat
    /// completions), so that the proxy meters them once per response; otherwise only the final
    /// turn does and the run's metered total is exactly [`INPUT_TOKENS`]/[`OUTPUT_TOKENS`].
    pub usage_every_answer: bool,
}

/// The `agents.toml` overrides pointing every agent of `cases` at the vendor API `base`.
pub fn agents_toml(base: &str, cases: &[AgentCase]) -> String {
    cases
        .iter()
        .map(|c| format!("[agents.{}]\nbase_url = \"{base}{}\"\n", c.agent, c.base_path))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `https://127.0.0.1:PORT` of a loopback port nothing listens on: a dead vendor.
pub fn closed_port_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("https://127.0.0.1:{port}"))
}

/// The [`crate::TestApp`] of these tests: an `outpost dev` whose agents reach the vendor API at
/// `base` (the stand-in's URL, or a dead port) through their runs' egress proxies, which trust
/// `ca`, with the CLIs on its PATH. Add [`AppOptions::run_as`] to start it as another uid (the
/// tests' root then plays a non-root deployment).
pub fn options(base: &str, cases: &[AgentCase], ca: &TestCa) -> anyhow::Result<AppOptions> {
    let clis = clis_dir()?;
    let path = format!(
        "{}:{}",
        clis.join("bin").display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())
    );
    Ok(AppOptions::dev()
        .slots(4)
        .lease_secs(10)
        .env("PATH", path)
        .worker_env("OUTPOST_EGRESS_CA", ca.ca_pem.display().to_string())
        .agents_toml(agents_toml(base, cases)))
}

/// A key for `agent` whose stand-in behaviour is `mode` (`ok`, `401`, `silent`).
pub fn key(agent: &str, mode: &str) -> String {
    format!("sk-test-{mode}-{agent}-7f3a9c1e5b2d4680")
}
