//! A git smart-HTTP server for tests: serves the bare repositories under a folder through
//! `git http-backend` (CGI), on a loopback port, on its own thread and runtime, and answers 401
//! unless the request carries `Authorization: Basic base64(<any user>:<token>)`. Pushes are
//! allowed for authenticated requests (`REMOTE_USER` is set for the backend).

use anyhow::Context;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// A running server; stopped when dropped.
pub struct GitHttpServer {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    stats: Arc<Stats>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Requests seen, by outcome.
#[derive(Default)]
struct Stats {
    refused: AtomicUsize,
    served: AtomicUsize,
}

struct Config {
    root: PathBuf,
    token: String,
    stats: Arc<Stats>,
}

impl GitHttpServer {
    /// Serves the bare repositories under `root` (e.g. `root/app.git`), requiring `token`.
    pub fn start(root: &Path, token: &str) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let config = Arc::new(Config {
            root: root.to_path_buf(),
            token: token.to_owned(),
            stats: Arc::clone(&stats),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("git http runtime")?;
        let thread = std::thread::spawn(move || {
            rt.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new().fallback(serve).with_state(config);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = rx.await;
                    })
                    .await;
            });
        });
        Ok(Self {
            base_url: format!("http://{addr}"),
            stats,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// URL of the repository `name` (e.g. `app.git`).
    pub fn repo_url(&self, name: &str) -> String {
        format!("{}/{name}", self.base_url)
    }

    /// Requests refused for want of the token so far.
    pub fn refused(&self) -> usize {
        self.stats.refused.load(Ordering::SeqCst)
    }

    /// Requests served by `git http-backend` so far.
    pub fn served(&self) -> usize {
        self.stats.served.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttpServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded);
    decoded.split_once(':').is_some_and(|(_, pass)| pass == token)
}

async fn serve(
    State(config): State<Arc<Config>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    if !authorized(&headers, &config.token) {
        config.stats.refused.fetch_add(1, Ordering::SeqCst);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", "Basic realm=\"git\"")
            .body(Body::from("authentication required\n"))
            .unwrap_or_default();
    }
    match cgi(&config, &method, &uri, &headers, body).await {
        Ok(resp) => {
            config.stats.served.fetch_add(1, Ordering::SeqCst);
            resp
        }
        Err(e) => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::from(format!("git http-backend: {e:#}\n")))
            .unwrap_or_default(),
    }
}

/// Runs `git http-backend` for one request and turns its CGI answer into a response.
async fn cgi(
    config: &Config,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<Response<Body>> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &config.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("REMOTE_USER", "outpost-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header("content-encoding"))
        .env("GIT_PROTOCOL", header("git-protocol"))
        .env("HTTP_GIT_PROTOCOL", header("git-protocol"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("spawn git http-backend")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(&body).await.context("write request body")?;
    }
    let out = child.wait_with_output().await.context("wait for git http-backend")?;
    let raw = out.stdout;
    let (head_end, sep) = find_header_end(&raw).context("no CGI header end")?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut resp = Response::builder();
    let mut status = StatusCode::OK;
    for line in head.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("200");
            status = StatusCode::from_bytes(code.as_bytes()).unwrap_or(StatusCode::OK);
        } else {
            resp = resp.header(name.trim(), value);
        }
    }
    Ok(resp.status(status).body(Body::from(raw[head_end + sep..].to_vec()))?)
}

/// Where the CGI headers end (`\r\n\r\n` or `\n\n`) and the separator's length.
fn find_header_end(raw: &[u8]) -> Option<(usize, usize)> {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, 4));
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
