//! The egress proxy's rows of the embedded table:
//!
//! - (d) end to end: runs/s of a no-op agent that makes one HTTP request (`curl`) to a loopback
//!   stand-in of a vendor API through the run's proxy (`network = "allow"`, the key injected),
//!   beside (d0) the same agent with `network = "open"` going straight to the stand-in with the
//!   key in its environment;
//! - (e) the proxy's added latency per request: the same sequential requests through one run's
//!   proxy and straight to the stand-in, p50 and p99 of each, in this process;
//! - (f) its memory per run: the resident set before and after opening many runs' proxies, each
//!   with a kept-alive client connection that made one request.

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use outpost_worker::egress::{Egress, EgressConfig, Injection, Listen, RunProxy, RunProxySpec};
use std::time::Instant;

/// The stand-in's answer: a Messages-shaped JSON body with usage.
const ANSWER: &str =
    r#"{"type":"message","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":10,"output_tokens":2}}"#;

/// A loopback stand-in of a vendor API (any path answers [`ANSWER`]); its address.
pub async fn standin() -> anyhow::Result<std::net::SocketAddr> {
    let app =
        axum::Router::new().fallback(|| async { ([(axum::http::header::CONTENT_TYPE, "application/json")], ANSWER) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

/// The agents file of (d) and (d0): `curl` posting once to the entry's base URL with its key.
pub fn agents_toml(standin: std::net::SocketAddr) -> String {
    let curl = "curl -sS -o /dev/null --fail -H \"x-api-key: $BENCH_KEY\" -H 'content-type: application/json' -d '{}' \"$BENCH_BASE_URL/v1/messages\"";
    format!(
        r#"
[agents.req-proxy]
command = ["sh", "-c", {curl:?}]
key_env = "BENCH_KEY"
base_url_env = "BENCH_BASE_URL"
base_url = "http://{standin}"
network = "allow"
key_injection = {{ upstream = "http://{standin}", header = "x-api-key" }}

[agents.req-open]
command = ["sh", "-c", {curl:?}]
key_env = "BENCH_KEY"
base_url_env = "BENCH_BASE_URL"
base_url = "http://{standin}"
network = "open"
"#
    )
}

/// The tenant's vendor key of (d) and (d0).
pub const BENCH_KEY: &str = "sk-bench-vendor-key-0123456789abcdef";

/// Quantiles in ms of a histogram of microseconds.
fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// (e): `n` sequential POSTs through one run's proxy and straight to `standin`, interleaved in
/// blocks so that both see the same machine; histograms of µs (proxied, direct).
pub async fn latency(standin: std::net::SocketAddr, n: usize) -> anyhow::Result<(Histogram<u64>, Histogram<u64>)> {
    let egress = Egress::new(EgressConfig::default())?;
    let (proxy, via, placeholder) = open_proxy(&egress, standin).await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut proxied = Histogram::<u64>::new(3)?;
    let mut direct = Histogram::<u64>::new(3)?;
    let post = |addr: std::net::SocketAddr, key: String| {
        let http = http.clone();
        async move {
            let started = Instant::now();
            let r = http
                .post(format!("http://{addr}/v1/messages"))
                .header("x-api-key", key)
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("{addr} answered {}", r.status());
            }
            r.bytes().await?;
            Ok::<u64, anyhow::Error>(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
        }
    };
    // Warm both keep-alive paths first.
    for _ in 0..50 {
        post(via, placeholder.clone()).await?;
        post(standin, BENCH_KEY.to_owned()).await?;
    }
    for block in 0..n.div_ceil(100) {
        let count = 100.min(n - block * 100);
        for _ in 0..count {
            proxied.record(post(via, placeholder.clone()).await?)?;
        }
        for _ in 0..count {
            direct.record(post(standin, BENCH_KEY.to_owned()).await?)?;
        }
    }
    let report = proxy.close().await;
    if report.record.vendor_requests < n as u64 {
        bail!("the proxy forwarded {} of {n} requests", report.record.vendor_requests);
    }
    Ok((proxied, direct))
}

/// This process's resident set, KiB.
fn rss_kb() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// (f): KiB of resident memory per open run proxy, each holding one kept-alive client
/// connection that made one request through it (`runs` of them at once).
pub async fn memory_per_run(standin: std::net::SocketAddr, runs: usize) -> anyhow::Result<f64> {
    let egress = Egress::new(EgressConfig::default())?;
    // One proxy and one request first, so the shared parts (TLS roots, the client's pool) are in.
    let (first, _client) = open_and_use(&egress, standin).await?;
    let before = rss_kb()?;
    let mut held = Vec::with_capacity(runs);
    for _ in 0..runs {
        held.push(open_and_use(&egress, standin).await?);
    }
    let after = rss_kb()?;
    for (proxy, _) in held {
        proxy.close().await;
    }
    first.close().await;
    Ok(after.saturating_sub(before) as f64 / runs as f64)
}

/// One run's proxy holding [`BENCH_KEY`] for `standin`: the proxy, its address, the placeholder.
async fn open_proxy(
    egress: &Egress,
    standin: std::net::SocketAddr,
) -> anyhow::Result<(RunProxy, std::net::SocketAddr, String)> {
    let placeholder = Injection::new_placeholder();
    let proxy = egress
        .open(RunProxySpec {
            listen: vec![Listen::Loopback],
            allow: Vec::new(),
            inject: Some(Injection {
                upstream: format!("http://{standin}").parse()?,
                header: "x-api-key".into(),
                prefix: String::new(),
                real_key: BENCH_KEY.to_owned().into(),
                placeholder: placeholder.clone(),
            }),
            refuse_addrs: Vec::new(),
        })
        .await?;
    let via = proxy.local_addr().context("the proxy has no loopback address")?;
    Ok((proxy, via, placeholder))
}

/// Opens one run's proxy and makes one request through it on a client kept open.
async fn open_and_use(egress: &Egress, standin: std::net::SocketAddr) -> anyhow::Result<(RunProxy, reqwest::Client)> {
    let (proxy, via, placeholder) = open_proxy(egress, standin).await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let r = client
        .post(format!("http://{via}/v1/messages"))
        .header("x-api-key", placeholder)
        .body("{}")
        .send()
        .await?;
    r.bytes().await?;
    Ok((proxy, client))
}

/// The rows (e) and (f) of the table.
pub fn render_latency(proxied: &Histogram<u64>, direct: &Histogram<u64>, kb_per_run: f64, runs: usize) -> String {
    let add50 = ms(proxied, 0.5) - ms(direct, 0.5);
    let add99 = ms(proxied, 0.99) - ms(direct, 0.99);
    format!(
        "| (e) one vendor request through the run's proxy (key swapped in), sequential, {n} requests | p50 {p50:.3} ms, p99 {p99:.3} ms | straight to the stand-in: p50 {d50:.3} ms, p99 {d99:.3} ms | added p50 {add50:.3} ms, p99 {add99:.3} ms | ≤ 1 ms p50 added |\n\
         | (f) memory of a run's proxy (with one kept-alive client connection), {runs} open | {kb_per_run:.0} KiB per run | – | – | ≤ 2 MB per run |\n",
        n = proxied.len(),
        p50 = ms(proxied, 0.5),
        p99 = ms(proxied, 0.99),
        d50 = ms(direct, 0.5),
        d99 = ms(direct, 0.99),
    )
}
