//! The per-run egress proxy: the only way out of a sandbox with `network = "allow"` (tunnels to
//! the agent entry's `allow_hosts`), and the holder of the vendor key when the entry has
//! `key_injection` (the agent gets a placeholder key and the proxy's address as its base URL).
//!
//! One [`Egress`] serves every run of a worker (one pooled upstream HTTP client); each run gets
//! its own [`RunProxy`] from [`Egress::open`]: its listeners (127.0.0.1 and/or Unix sockets, the
//! same proxy behind each), one HTTP/1 server connection per accepted client connection, and at
//! the end [`RunProxy::close`] with what happened ([`EgressReport`]).
//!
//! # What a run's proxy does
//! - `CONNECT host:port` opens a tunnel when `host` (a name: IP literals are refused) matches one
//!   of the run's [`HostRule`]s. The name is resolved once ([`EgressConfig::resolve`] first, then
//!   the system resolver) and the tunnel connects to the first address that is not in a refused
//!   class ([`refused_class`]: loopback, link-local with the instance metadata and ECS credential
//!   endpoints, private ranges, …) nor one of the worker's own sockets
//!   ([`RunProxySpec::refuse_addrs`]); that checked address is used, never a second lookup, so a
//!   name that re-resolves (DNS rebinding) cannot reach the inside. When the client's first
//!   bytes are a TLS ClientHello whose server name (SNI) differs from the `CONNECT` host, the
//!   tunnel is closed (domain fronting); a ClientHello the proxy cannot read, larger than 16 KiB
//!   or not complete within 10 s is refused the same way (an Encrypted ClientHello is judged by
//!   its outer, public name). Bytes that are not TLS, TLS without SNI, and protocols whose server
//!   speaks first (SSH, SMTP) are tunnelled as they are: the `CONNECT` host was checked.
//! - Absolute-form requests (`GET http://host/…`, plain HTTP proxying) are refused (403): traffic
//!   leaves over TLS tunnels only. (An agent reaches the proxy's own vendor side directly, so its
//!   `NO_PROXY` must name 127.0.0.1.)
//! - Origin-form requests (`POST /v1/messages`) go to the vendor when the run has an
//!   [`Injection`]: the request must carry the run's placeholder key in the injection's header
//!   (401 otherwise, so no other local process spends the run's key); it is forwarded to the
//!   vendor's origin with the same path and query, the real key in place of the placeholder,
//!   `accept-encoding: identity`, hop-by-hop headers (and `expect`, answered by the proxy) dropped,
//!   bodies streamed both ways; redirects are passed back, not followed.
//!   Protocol upgrades (WebSocket) are refused (501). Token usage is read from the successful
//!   responses as they stream (see [`meter`]) into [`EgressRecord::usage`]. Without an
//!   injection, origin-form requests are refused (403).
//! - Malformed requests get 400 from the HTTP server; nothing a client sends makes the proxy
//!   panic.
//!
//! Every refusal is counted and noted (the first [`EgressRecord::NOTED_REFUSALS`] lines, with
//! host names and addresses but never a key, a placeholder, a query string or a body) and logged
//! at `info`. Failures that are not policy (a name that does not resolve, a refused connect, an
//! unreachable vendor) answer 502 (504 for a tunnel's connect timeout) and are only logged.
//!
//! # Costs
//! Per run: the [`RunProxy`] state (counters, the allow-list, at most 50 noted refusals of a few
//! hundred bytes), a listener and an accept-loop task: a few KiB. Per accepted connection: one
//! task whose HTTP/1 buffers start at 8 KiB for writing and grow to at most 16 KiB for reading
//! (headers larger than that are refused with 431), about 24 KiB while idle; a tunnel instead
//! holds two 8 KiB copy buffers, and while it reads a ClientHello up to 32 KiB. At most
//! [`EgressConfig::max_connections`] (64) connections are served at once; more wait in the
//! listen backlog until one ends, so idle connections of one run stay under about 1.5 MiB
//! (measured: 64 idle keep-alive vendor connections add about 0.4 MiB of resident memory). A
//! vendor response being metered holds at most 1 MiB more (an SSE line or event, or a JSON
//! body; past that it is unmetered). Upstream vendor connections are pooled across runs in the
//! shared client (at most 16 idle per host). A tunnelled connection costs one DNS lookup and
//! one TCP connect; a vendor request reuses a pooled TLS connection when one is idle (measured on
//! loopback, debug build: about 1 ms more per request than calling the vendor directly).

mod addr;
pub mod meter;
mod tunnel;
mod vendor;

#[cfg(test)]
mod tests;

pub use addr::refused_class;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use outpost_core::domain::{EgressRecord, HostRule};
use secrecy::SecretString;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

/// The body of every response the proxy writes. Its error is a concrete type (a vendor body cut
/// short): with `Box<dyn Error>` the compiler cannot prove the connection task `Send`.
type Body = UnsyncBoxBody<Bytes, reqwest::Error>;

/// The largest HTTP/1 read buffer of one client connection (request heads must fit in it).
const MAX_BUF: usize = 16 * 1024;

/// Errors opening the egress proxy. Nothing here holds a key.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress: upstream_ca_pem: {0}")]
    UpstreamCa(String),
    #[error("egress: cannot build the upstream HTTP client: {0}")]
    Client(String),
    #[error("egress: cannot listen on {what}: {source}")]
    Listen {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("egress: a run's proxy needs at least one listener")]
    NoListener,
    #[error("egress: key injection: {0}")]
    Injection(String),
}

/// Settings shared by every run of a worker.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Extra root certificates (PEM, may hold several) trusted for upstream vendor TLS, besides
    /// the webpki roots (tests: the stand-in's self-signed CA — trusted by the proxy only).
    pub upstream_ca_pem: Option<Vec<u8>>,
    /// Fixed addresses for host names, consulted before DNS (like curl `--resolve`); addresses
    /// found here are checked exactly like resolved ones. A name may have several.
    pub resolve: Vec<(String, IpAddr)>,
    /// Timeout of a tunnel's DNS lookup and of its connect, and of upstream vendor connects.
    pub connect_timeout: Duration,
    /// Most client connections one run's proxy serves at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            upstream_ca_pem: None,
            resolve: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            max_connections: 64,
        }
    }
}

/// The proxy side shared by every run of a worker: the config and one pooled upstream client
/// (keep-alive, no proxy of its own, no decompression, redirects passed to the agent as they
/// are). Cheap to clone.
#[derive(Clone)]
pub struct Egress {
    shared: Arc<Shared>,
}

struct Shared {
    client: reqwest::Client,
    config: EgressConfig,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// Where a run's proxy listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// 127.0.0.1, port chosen by the kernel.
    Loopback,
    /// A Unix socket at this path (the sandbox reaches it through a bind mount and a relay):
    /// mode 0600 after bind and, with `owner`, owned by that uid/gid (the run's agent user; the
    /// worker is root then). A stale socket at the path is replaced; any other file there is an
    /// error. Removed on close. Between bind and chmod the socket has the process umask's mode:
    /// put it in a directory only the worker and the agent can reach.
    Unix { path: PathBuf, owner: Option<(u32, u32)> },
}

/// What one run's proxy allows.
#[derive(Debug)]
pub struct RunProxySpec {
    /// Where it listens (at least one; e.g. the worker's loopback for an injected base URL and a
    /// Unix socket for a network namespace's relay): the same proxy behind each.
    pub listen: Vec<Listen>,
    /// Hosts the agent may reach by `CONNECT`.
    pub allow: Vec<HostRule>,
    /// The vendor behind the proxy, when it holds the key.
    pub inject: Option<Injection>,
    /// Extra addresses never to connect to (the worker's own listening sockets), besides the
    /// refused classes of [`refused_class`]. An unspecified address (`0.0.0.0:P`, `[::]:P`)
    /// stands for port `P` on every address.
    pub refuse_addrs: Vec<SocketAddr>,
}

/// The vendor behind a run's proxy and the key it holds.
pub struct Injection {
    /// Origin of the vendor API (its path is ignored: the agent's request path is used as it
    /// is), e.g. `https://api.anthropic.com`; `http://` is allowed too (an operator's local
    /// gateway, benchmarks).
    pub upstream: url::Url,
    /// The header the key travels in (`x-api-key`, `authorization`, `x-goog-api-key`; any case).
    pub header: String,
    /// What comes before the key in that header (`Bearer ` or empty).
    pub prefix: String,
    /// The tenant's real key.
    pub real_key: SecretString,
    /// The run's placeholder the agent was given (at least 16 characters).
    pub placeholder: String,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injection")
            .field("upstream", &self.upstream.as_str())
            .field("header", &self.header)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Injection {
    /// The shortest placeholder [`Egress::open`] takes.
    pub const MIN_PLACEHOLDER_LEN: usize = 16;

    /// A fresh placeholder key: `sk-outpost-` and 32 random hex digits (128 bits from the thread
    /// CSPRNG), so no other process can guess it.
    pub fn new_placeholder() -> String {
        use rand::Rng;
        use std::fmt::Write;
        let bytes: [u8; 16] = rand::rng().random();
        let mut s = String::with_capacity(11 + 32);
        s.push_str("sk-outpost-");
        for b in bytes {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// What went through one run's proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressReport {
    pub record: EgressRecord,
    /// One line per refusal (`egress refused: CONNECT evil.example:443: not in allow_hosts`), at
    /// most [`EgressRecord::NOTED_REFUSALS`], then `… and N more refusals`. No secrets in them.
    pub refusals: Vec<String>,
}

/// One run's proxy, serving until [`RunProxy::close`] (or until dropped, which stops it the
/// same way without a report).
pub struct RunProxy {
    run: Arc<Run>,
    /// Dropped or sent to: every accept loop stops.
    stop: Option<watch::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
    local_addr: Option<SocketAddr>,
    unix_paths: Vec<PathBuf>,
}

impl std::fmt::Debug for RunProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunProxy")
            .field("local_addr", &self.local_addr)
            .field("unix_paths", &self.unix_paths)
            .finish_non_exhaustive()
    }
}

/// One run's state, shared by its connection tasks.
struct Run {
    shared: Arc<Shared>,
    allow: Vec<HostRule>,
    vendor: Option<vendor::Vendor>,
    refuse_addrs: Vec<SocketAddr>,
    tally: Mutex<Tally>,
}

#[derive(Default)]
struct Tally {
    record: EgressRecord,
    refusals: Vec<String>,
}

impl Run {
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts and notes one refusal (the line has no secret: it is also logged).
    fn refuse(&self, line: String) {
        tracing::info!("{line}");
        let mut t = self.tally();
        t.record.refused = t.record.refused.saturating_add(1);
        if t.refusals.len() < EgressRecord::NOTED_REFUSALS {
            t.refusals.push(line);
        }
    }
}

impl Egress {
    /// The shared side: builds the upstream client (webpki roots plus `upstream_ca_pem`).
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_max_idle_per_host(16);
        if let Some(pem) = &config.upstream_ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| EgressError::UpstreamCa(e.to_string()))?;
            if certs.is_empty() {
                return Err(EgressError::UpstreamCa("no certificate in it".to_owned()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder.build().map_err(|e| EgressError::Client(e.to_string()))?;
        Ok(Self {
            shared: Arc::new(Shared { client, config }),
        })
    }

    /// Opens one run's proxy: binds its listeners and spawns their accept loops on the current
    /// tokio runtime. Nothing is left bound when it fails.
    pub async fn open(&self, spec: RunProxySpec) -> Result<RunProxy, EgressError> {
        if spec.listen.is_empty() {
            return Err(EgressError::NoListener);
        }
        let vendor = spec.inject.map(vendor::Vendor::new).transpose()?;
        let mut listeners = Vec::with_capacity(spec.listen.len());
        let mut local_addr = None;
        let mut unix_paths = Vec::new();
        for listen in spec.listen {
            match bind(listen).await {
                Ok((l, addr, path)) => {
                    local_addr = local_addr.or(addr);
                    unix_paths.extend(path);
                    listeners.push(l);
                }
                Err(e) => {
                    drop(listeners);
                    unix_paths.iter().for_each(|p| remove_socket(p));
                    return Err(e);
                }
            }
        }
        let run = Arc::new(Run {
            shared: self.shared.clone(),
            allow: spec.allow,
            vendor,
            refuse_addrs: spec.refuse_addrs,
            tally: Mutex::new(Tally::default()),
        });
        run.tally().record.key_injected = run.vendor.is_some();
        let (stop, stopped) = watch::channel(());
        let limit = Arc::new(Semaphore::new(self.shared.config.max_connections.max(1)));
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(l, run.clone(), limit.clone(), stopped.clone())))
            .collect();
        tracing::debug!(addr = ?local_addr, unix = ?unix_paths, "egress proxy open");
        Ok(RunProxy {
            run,
            stop: Some(stop),
            tasks,
            local_addr,
            unix_paths,
        })
    }
}

/// Binds one listener: the listener, its loopback address or its socket path.
async fn bind(listen: Listen) -> Result<(Listener, Option<SocketAddr>, Option<PathBuf>), EgressError> {
    match listen {
        Listen::Loopback => {
            let err = |source| EgressError::Listen {
                what: "127.0.0.1".to_owned(),
                source,
            };
            let l = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))
                .await
                .map_err(err)?;
            let addr = l.local_addr().map_err(err)?;
            Ok((Listener::Tcp(l), Some(addr), None))
        }
        Listen::Unix { path, owner } => {
            let l = bind_unix(&path, owner).map_err(|source| EgressError::Listen {
                what: path.display().to_string(),
                source,
            })?;
            Ok((Listener::Unix(l), None, Some(path)))
        }
    }
}

/// Binds a Unix listener at `path` with mode 0600 and the given owner.
fn bind_unix(path: &Path, owner: Option<(u32, u32)>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    let set = || -> std::io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        }
        Ok(())
    };
    if let Err(e) = set() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(l)
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Accepted {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Self::Tcp(l) => {
                let (s, _) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s))
            }
            Self::Unix(l) => Ok(Accepted::Unix(l.accept().await?.0)),
        }
    }
}

/// Accepts connections (at most `limit` at once over the run's listeners) until `stopped` fires
/// or its sender is dropped, then aborts every connection still open and waits for them to end.
async fn accept_loop(listener: Listener, run: Arc<Run>, limit: Arc<Semaphore>, mut stopped: watch::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        let next = async {
            let permit = limit.clone().acquire_owned().await;
            (permit, listener.accept().await)
        };
        tokio::select! {
            biased;
            _ = stopped.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            (permit, accepted) = next => {
                let Ok(permit) = permit else { break };
                match accepted {
                    Ok(Accepted::Tcp(s)) => {
                        conns.spawn(serve(s, run.clone(), permit));
                    }
                    Ok(Accepted::Unix(s)) => {
                        conns.spawn(serve(s, run.clone(), permit));
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "egress proxy accept failed");
                        drop(permit);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Where a `CONNECT` handler leaves its tunnel for the connection's task, which runs it once
/// hyper hands over the connection.
type HandleFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

type TunnelSlot = Mutex<Option<oneshot::Sender<tunnel::Tunnel>>>;

/// Serves one client connection: HTTP/1 requests until it closes or upgrades to a tunnel, then
/// the tunnel, all in this one task (so aborting it ends both).
async fn serve<I>(io: I, run: Arc<Run>, _permit: OwnedSemaphorePermit)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let slot: Arc<TunnelSlot> = Arc::new(Mutex::new(Some(tx)));
    let svc = {
        let run = run.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| -> HandleFuture {
            let run = run.clone();
            let slot = slot.clone();
            // Boxed: the compiler cannot prove `Send` for the unboxed nested futures (rust#102211).
            Box::pin(async move { Ok(handle(&run, req, &slot).await) })
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_BUF)
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    let tunnel = async {
        if let Ok(t) = rx.await {
            t.run(&run).await;
        }
    };
    let (served, ()) = tokio::join!(conn, tunnel);
    if let Err(e) = served {
        tracing::debug!(error = %e, "egress proxy connection ended with an error");
    }
}

/// One request: a tunnel, a refused absolute-form request, or a vendor request.
async fn handle(run: &Arc<Run>, req: Request<Incoming>, slot: &TunnelSlot) -> Response<Body> {
    if req.method() == http::Method::CONNECT {
        return tunnel::connect(run, req, slot).await;
    }
    let uri = req.uri();
    if let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) {
        run.refuse(format!(
            "egress refused: {} {}://{}: plain HTTP through the proxy is not forwarded (use https)",
            req.method(),
            clip(scheme.as_str()),
            clip(authority.as_str())
        ));
        return text(
            StatusCode::FORBIDDEN,
            "outpost egress proxy: plain HTTP is not forwarded (use https)\n",
        );
    }
    if !uri.path().starts_with('/') {
        return text(StatusCode::BAD_REQUEST, "outpost egress proxy: malformed request\n");
    }
    match &run.vendor {
        Some(v) => vendor::forward(run, v, req).await,
        None => {
            run.refuse(format!(
                "egress refused: {} {}: no vendor behind this proxy",
                req.method(),
                clip(uri.path())
            ));
            text(
                StatusCode::FORBIDDEN,
                "outpost egress proxy: no vendor behind this proxy\n",
            )
        }
    }
}

/// Client-given text cut for a note or a log line.
fn clip(s: &str) -> String {
    const MAX: usize = 200;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

fn text(status: StatusCode, msg: &'static str) -> Response<Body> {
    let mut r = Response::new(full(msg));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The JSON error vendors' clients understand well enough to show its message.
fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"type": "error", "error": {"type": "outpost_proxy", "message": message}});
    let mut r = Response::new(full(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

impl RunProxy {
    /// `127.0.0.1:PORT` of the (first) [`Listen::Loopback`]; `None` without one.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addr
    }

    /// The socket paths of the [`Listen::Unix`] listeners.
    pub fn unix_paths(&self) -> &[PathBuf] {
        &self.unix_paths
    }

    /// The counters so far (the run is still going).
    pub fn record(&self) -> EgressRecord {
        self.run.tally().record.clone()
    }

    /// Stops accepting, aborts every connection still open (the agent is gone), removes a Unix
    /// socket file, and returns what happened. Usage of a response cut short is counted as far
    /// as it was read.
    pub async fn close(mut self) -> EgressReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in std::mem::take(&mut self.tasks) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "egress proxy accept loop ended abnormally");
            }
        }
        for path in std::mem::take(&mut self.unix_paths) {
            remove_socket(&path);
        }
        let t = self.run.tally();
        let mut refusals = t.refusals.clone();
        let more = t.record.refused.saturating_sub(refusals.len() as u64);
        if more > 0 {
            refusals.push(format!("… and {more} more refusals"));
        }
        EgressReport {
            record: t.record.clone(),
            refusals,
        }
    }
}

fn remove_socket(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove the egress proxy socket");
        }
    }
}

impl Drop for RunProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            // Dropping an accept loop drops its JoinSet, which aborts its connections.
            task.abort();
        }
        for path in &self.unix_paths {
            remove_socket(path);
        }
    }
}
