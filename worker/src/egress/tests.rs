//! The egress proxy end to end: real TCP and Unix sockets, real HTTP/1, real TLS (a test CA and
//! server certificate made with the openssl CLI; stand-in servers on tokio-rustls).
//!
//! Tunnels need a target that is not in a refused class: the tests that open one run on a thread
//! of their own in a private network namespace (root only, else skipped with a message) where
//! `198.18.0.1` (benchmarking range, not refused) is put on that namespace's loopback. Nothing
//! outside this machine, nor outside that namespace, is ever connected to: refused addresses are
//! refused before any connect.

use super::meter::tests::{ANTHROPIC_JSON, ANTHROPIC_SSE, CHAT_JSON, GEMINI_SSE, OPENAI_RESPONSES_SSE};
use super::*;
use futures_util::StreamExt;
use http_body_util::StreamBody;
use hyper::body::Frame;
use outpost_core::domain::MeteredUsage;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::Ipv4Addr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::OnceLock;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const REAL_KEY: &str = "sk-real-tenant-key-0123456789abcdef";
/// A "public" address: tunnels' stand-ins listen on it inside a test thread's network namespace.
const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// TLS material and stand-in servers

struct Pki {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A CA and a server certificate for `localhost`, `a.example`, 127.0.0.1 and 198.18.0.1.
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let ca = outpost_testkit::tls::TestCa::new().expect("the test CA (openssl)");
        let read = |p: &std::path::Path| std::fs::read(p).expect("a PEM file");
        Pki {
            ca_pem: read(&ca.ca_pem),
            cert_pem: read(&ca.cert_pem),
            key_pem: read(&ca.key_pem),
        }
    })
}

fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    let p = pki();
    let certs = CertificateDer::pem_slice_iter(&p.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("certificate");
    let key = PrivateKeyDer::from_pem_slice(&p.key_pem).expect("key");
    let cfg = rustls::ServerConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pki().ca_pem) {
        roots.add(c.expect("CA")).expect("root");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(ring())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// One request a stand-in vendor got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path_and_query: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// An HTTPS stand-in vendor: records what it gets and answers as `x-test-reply` asks.
struct Vendor {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Vendor {
    async fn start(ip: IpAddr) -> Self {
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind vendor");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let acceptor = tls_acceptor();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let log = log.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper::service::service_fn(move |req| reply(req, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn url(&self, path: &str) -> url::Url {
        format!("https://{}{path}", self.addr).parse().expect("url")
    }
}

type TestBody = UnsyncBoxBody<Bytes, Infallible>;

async fn reply(req: Request<Incoming>, log: Arc<Mutex<Vec<Seen>>>) -> Result<Response<TestBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let which = parts
        .headers
        .get("x-test-reply")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    log.lock().expect("lock").push(Seen {
        method: parts.method.to_string(),
        path_and_query: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
        headers: parts.headers,
        body: body.clone(),
    });
    let (status, content_type, payload): (u16, &str, Bytes) = match which.as_str() {
        "anthropic-json" => (200, "application/json", Bytes::from_static(ANTHROPIC_JSON.as_bytes())),
        "anthropic-sse" => (
            200,
            "text/event-stream; charset=utf-8",
            Bytes::from_static(ANTHROPIC_SSE.as_bytes()),
        ),
        "responses-sse" => (
            200,
            "text/event-stream",
            Bytes::from_static(OPENAI_RESPONSES_SSE.as_bytes()),
        ),
        "chat-json" => (200, "application/json", Bytes::from_static(CHAT_JSON.as_bytes())),
        "gemini-sse" => (200, "text/event-stream", Bytes::from_static(GEMINI_SSE.as_bytes())),
        "models" => (200, "application/json", Bytes::from_static(br#"{"data":[{"id":"m"}]}"#)),
        "rate-limited" => (
            429,
            "application/json",
            Bytes::from_static(
                br#"{"error":{"type":"rate_limit_error"},"usage":{"input_tokens":5,"output_tokens":5}}"#,
            ),
        ),
        "echo" => {
            let mut r = Response::new(Full::new(body).boxed_unsync());
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            return Ok(r);
        }
        _ => (404, "text/plain", Bytes::from_static(b"no such reply\n")),
    };
    // Streamed in 7-byte frames: the proxy meets chunk boundaries inside lines.
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = payload
        .chunks(7)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let mut r = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_str(content_type).expect("type"),
    );
    Ok(r)
}

/// A TCP stand-in on `ip`: echoes what it reads, after a banner when `banner` is given (a
/// server that speaks first, like SSH). `ended` fires when a connection sees EOF.
async fn echo_server(
    ip: IpAddr,
    banner: Option<&'static [u8]>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.expect("bind echo");
    let addr = listener.local_addr().expect("addr");
    let (ended, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let ended = ended.clone();
            tokio::spawn(async move {
                if let Some(b) = banner {
                    if s.write_all(b).await.is_err() {
                        return;
                    }
                }
                let mut buf = vec![0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = ended.send(());
            });
        }
    });
    (addr, rx)
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn rules(list: &[&str]) -> Vec<HostRule> {
    list.iter().map(|r| r.parse().expect("a rule")).collect()
}

fn spec(allow: Vec<HostRule>, inject: Option<Injection>) -> RunProxySpec {
    RunProxySpec {
        listen: vec![Listen::Loopback],
        allow,
        inject,
        refuse_addrs: Vec::new(),
    }
}

fn injection(upstream: url::Url, header: &str, prefix: &str, placeholder: &str) -> Injection {
    Injection {
        upstream,
        header: header.to_owned(),
        prefix: prefix.to_owned(),
        real_key: SecretString::from(REAL_KEY),
        placeholder: placeholder.to_owned(),
    }
}

fn egress(resolve: Vec<(String, IpAddr)>) -> Egress {
    Egress::new(EgressConfig {
        upstream_ca_pem: Some(pki().ca_pem.clone()),
        resolve,
        ..EgressConfig::default()
    })
    .expect("egress")
}

fn addr_of(p: &RunProxy) -> SocketAddr {
    p.local_addr().expect("a loopback listener")
}

/// Reads a response head (through the blank line), byte by byte so nothing after it is taken.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b).await {
            Ok(1) => head.push(b[0]),
            _ => break,
        }
        assert!(head.len() < 64 * 1024, "a response head that never ends");
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The body of a whole raw response, chunked transfer coding undone.
fn body_of(response: &str) -> String {
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        panic!("no head in {response:?}")
    };
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return body.to_owned();
    }
    let (mut rest, mut out) = (body, String::new());
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("a chunk size in {rest:?}"));
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

/// Sends one raw request on a new connection and reads the whole answer (the request should
/// say `Connection: close`).
async fn one_shot(proxy: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(proxy).await.expect("connect to the proxy");
    s.write_all(request.as_bytes()).await.expect("send");
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .expect("the proxy answers")
        .expect("read");
    let text = String::from_utf8_lossy(&all).into_owned();
    (status_of(&text), text)
}

/// Opens a tunnel: the stream after the proxy's `200`.
async fn tunnel(proxy: SocketAddr, target: &str) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.expect("connect to the proxy");
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .expect("send CONNECT");
    let head = read_head(&mut s).await;
    assert_eq!(status_of(&head), 200, "{head}");
    assert!(head.starts_with("HTTP/1.1 200 Connection Established\r\n"), "{head}");
    s
}

/// The agent's side of a vendor call: plain HTTP to the proxy.
fn agent_client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client")
}

/// Runs `test` on a thread of its own in a new network namespace whose loopback is up and also
/// holds [`PUBLIC`]; skipped (with a message) where that cannot be made (not root).
fn in_netns<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping {name}: a private network namespace needs root");
        return;
    }
    let thread = std::thread::spawn(move || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        for args in [
            &["link", "set", "lo", "up"][..],
            &["addr", "add", "198.18.0.1/32", "dev", "lo"][..],
        ] {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("ip {args:?}: {e}"))?;
            if !out.status.success() {
                return Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(test());
        Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => eprintln!("skipping {name}: {why}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

// ---------------------------------------------------------------------------------------------
// Tunnels

/// A run's proxy that lets tunnels reach `a.example` (resolved to [`PUBLIC`]) on `ports`.
async fn proxy_to_a_example(ports: &[u16]) -> RunProxy {
    let allow: Vec<String> = ports.iter().map(|p| format!("a.example:{p}")).collect();
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    egress(vec![("a.example".into(), PUBLIC.into())])
        .open(spec(rules(&allow), None))
        .await
        .expect("open")
}

#[test]
fn a_tunnel_reaches_an_allowed_name_over_tls() {
    in_netns("a_tunnel_reaches_an_allowed_name_over_tls", || async {
        let target = Vendor::start(PUBLIC.into()).await;
        let port = target.addr.port();
        let proxy = proxy_to_a_example(&[port]).await;
        // SNI a.example, as the CONNECT host.
        let s = tunnel(addr_of(&proxy), &format!("a.example:{port}")).await;
        let name = ServerName::try_from("a.example").expect("name");
        let mut tls = tls_connector().connect(name, s).await.expect("TLS through the tunnel");
        tls.write_all(
            b"GET /through HTTP/1.1\r\nHost: a.example\r\nx-test-reply: chat-json\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("send");
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert_eq!(body_of(&got), CHAT_JSON, "the body arrives through the tunnel");
        // No SNI at all (an IP server name): allowed, the CONNECT host was checked.
        let s = tunnel(addr_of(&proxy), &format!("a.example:{port}")).await;
        let ip = ServerName::IpAddress(IpAddr::from(PUBLIC).into());
        let mut tls = tls_connector().connect(ip, s).await.expect("TLS without SNI");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nx-test-reply: models\r\nConnection: close\r\n\r\n")
            .await
            .expect("send");
        let mut got = Vec::new();
        let _ = tls.read_to_end(&mut got).await;
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200 OK"));
        let report = proxy.close().await;
        assert_eq!(target.seen().len(), 2);
        assert_eq!(target.seen()[0].path_and_query, "/through");
        assert_eq!(report.record.tunnels, 2);
        assert_eq!(report.record.refused, 0, "{:?}", report.refusals);
        assert_eq!(report.record.usage, MeteredUsage::default(), "tunnels are not metered");
        assert!(!report.record.key_injected);
    });
}

#[test]
fn a_tls_server_name_other_than_the_connect_host_closes_the_tunnel() {
    in_netns(
        "a_tls_server_name_other_than_the_connect_host_closes_the_tunnel",
        || async {
            let target = Vendor::start(PUBLIC.into()).await;
            let port = target.addr.port();
            let proxy = proxy_to_a_example(&[port]).await;
            let s = tunnel(addr_of(&proxy), &format!("a.example:{port}")).await;
            let name = ServerName::try_from("other.example").expect("name");
            let handshake = tokio::time::timeout(WAIT, tls_connector().connect(name, s))
                .await
                .expect("the proxy answers the handshake");
            assert!(handshake.is_err(), "the tunnel is closed before the handshake");
            let report = proxy.close().await;
            assert_eq!(
            report.refusals,
            vec![format!(
                "egress refused: CONNECT a.example:{port}: TLS server name other.example differs from CONNECT host a.example"
            )]
        );
            assert_eq!((report.record.refused, report.record.tunnels), (1, 0));
            assert!(target.seen().is_empty(), "nothing reached the other name");
        },
    );
}

#[test]
fn plain_tcp_and_servers_that_speak_first_are_tunnelled() {
    in_netns("plain_tcp_and_servers_that_speak_first_are_tunnelled", || async {
        let (echo, _) = echo_server(PUBLIC.into(), None).await;
        let (ssh, _) = echo_server(PUBLIC.into(), Some(b"SSH-2.0-stand-in\r\n")).await;
        let proxy = proxy_to_a_example(&[echo.port(), ssh.port()]).await;
        let mut s = tunnel(addr_of(&proxy), &format!("a.example:{}", echo.port())).await;
        s.write_all(b"ping").await.expect("send");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("echo");
        assert_eq!(&buf, b"ping");
        let mut s = tunnel(addr_of(&proxy), &format!("a.example:{}", ssh.port())).await;
        let mut banner = [0u8; 18];
        tokio::time::timeout(WAIT, s.read_exact(&mut banner))
            .await
            .expect("the banner arrives before the client says anything")
            .expect("read");
        assert_eq!(&banner, b"SSH-2.0-stand-in\r\n");
        s.write_all(b"\x16hi").await.expect("send");
        let mut back = [0u8; 3];
        s.read_exact(&mut back).await.expect("echo");
        assert_eq!(&back, b"\x16hi", "after the server spoke first, bytes pass as they are");
        let report = proxy.close().await;
        assert_eq!((report.record.tunnels, report.record.refused), (2, 0));
    });
}

#[test]
fn close_aborts_an_open_tunnel_promptly() {
    in_netns("close_aborts_an_open_tunnel_promptly", || async {
        let (echo, mut ended) = echo_server(PUBLIC.into(), None).await;
        let proxy = proxy_to_a_example(&[echo.port()]).await;
        let mut s = tunnel(addr_of(&proxy), &format!("a.example:{}", echo.port())).await;
        s.write_all(b"ping").await.expect("send");
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.expect("echo");
        let started = Instant::now();
        let report = tokio::time::timeout(Duration::from_secs(2), proxy.close())
            .await
            .expect("close returns promptly");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "close took {:?}",
            started.elapsed()
        );
        assert_eq!(report.record.tunnels, 1);
        let mut rest = [0u8; 16];
        let eof = tokio::time::timeout(WAIT, s.read(&mut rest))
            .await
            .expect("the agent's side ends");
        assert!(matches!(eof, Ok(0) | Err(_)), "the agent sees EOF, got {eof:?}");
        tokio::time::timeout(WAIT, ended.recv())
            .await
            .expect("the host's side ends too")
            .expect("ended");
    });
}

// ---------------------------------------------------------------------------------------------
// Refusals

#[tokio::test]
async fn refused_targets_get_403_and_a_note() {
    let e = egress(vec![
        ("meta.example".into(), "169.254.169.254".parse().expect("ip")),
        ("ecs.example".into(), "169.254.170.2".parse().expect("ip")),
        ("vpc.example".into(), "10.0.0.1".parse().expect("ip")),
        ("v6.example".into(), "::1".parse().expect("ip")),
        ("mapped.example".into(), "::ffff:127.0.0.1".parse().expect("ip")),
    ]);
    let allow = rules(&[
        "allowed.example",
        "localhost",
        "meta.example",
        "ecs.example",
        "vpc.example",
        "v6.example",
        "mapped.example",
    ]);
    let proxy = e.open(spec(allow, None)).await.expect("open");
    let p = addr_of(&proxy);
    let connect = |t: &str| format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\nConnection: close\r\n\r\n");
    for (target, why) in [
        ("evil.example:443", "not in allow_hosts".to_owned()),
        ("allowed.example:8443", "not in allow_hosts".to_owned()),
        ("1.2.3.4:443", "is an IP address".to_owned()),
        ("[::1]:443", "is an IP address".to_owned()),
        (
            "meta.example:443",
            "resolves to 169.254.169.254 (link-local)".to_owned(),
        ),
        ("ecs.example:80", "resolves to 169.254.170.2 (link-local)".to_owned()),
        ("vpc.example:443", "resolves to 10.0.0.1 (private)".to_owned()),
        ("v6.example:443", "resolves to ::1 (loopback)".to_owned()),
        (
            "mapped.example:443",
            "resolves to ::ffff:127.0.0.1 (loopback)".to_owned(),
        ),
    ] {
        let (status, text) = one_shot(p, &connect(target)).await;
        assert_eq!(status, 403, "{target}: {text}");
        assert!(text.contains(&why), "{target}: the answer says why: {text}");
    }
    // `localhost` is listed, but resolves (real resolver) to loopback: DNS rebinding is no way in.
    let (status, text) = one_shot(p, &connect("localhost:443")).await;
    assert_eq!(status, 403, "{text}");
    // Plain HTTP proxying, and origin-form without a vendor.
    let (status, _) = one_shot(
        p,
        "GET http://allowed.example/path?token=s3cret HTTP/1.1\r\nHost: allowed.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = one_shot(
        p,
        "POST /v1/messages HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);

    let report = proxy.close().await;
    let r = |s: &str| format!("egress refused: {s}");
    let mut want = vec![
        r("CONNECT evil.example:443: not in allow_hosts"),
        r("CONNECT allowed.example:8443: not in allow_hosts"),
        r("CONNECT 1.2.3.4:443: is an IP address"),
        r("CONNECT [::1]:443: is an IP address"),
        r("CONNECT meta.example:443: resolves to 169.254.169.254 (link-local)"),
        r("CONNECT ecs.example:80: resolves to 169.254.170.2 (link-local)"),
        r("CONNECT vpc.example:443: resolves to 10.0.0.1 (private)"),
        r("CONNECT v6.example:443: resolves to ::1 (loopback)"),
        r("CONNECT mapped.example:443: resolves to ::ffff:127.0.0.1 (loopback)"),
    ];
    let localhost = report.refusals.get(want.len()).cloned().unwrap_or_default();
    assert!(
        localhost == r("CONNECT localhost:443: resolves to 127.0.0.1 (loopback)")
            || localhost == r("CONNECT localhost:443: resolves to ::1 (loopback)"),
        "{localhost}"
    );
    want.push(localhost);
    want.push(r(
        "GET http://allowed.example: plain HTTP through the proxy is not forwarded (use https)",
    ));
    want.push(r("POST /v1/messages: no vendor behind this proxy"));
    assert_eq!(report.refusals, want);
    assert_eq!(report.record.refused, want.len() as u64);
    assert_eq!(report.record.tunnels, 0);
    assert!(
        report.refusals.iter().all(|l| !l.contains("s3cret")),
        "no query string in notes"
    );
}

#[tokio::test]
async fn the_worker_s_own_sockets_are_refused() {
    let e = egress(vec![("self.example".into(), "198.18.0.1".parse().expect("ip"))]);
    let mut s = spec(rules(&["self.example"]), None);
    s.refuse_addrs = vec!["198.18.0.1:443".parse().expect("addr")];
    let proxy = e.open(s).await.expect("open");
    let (status, _) = one_shot(
        addr_of(&proxy),
        "CONNECT self.example:443 HTTP/1.1\r\nHost: self.example:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let report = proxy.close().await;
    assert_eq!(
        report.refusals,
        vec!["egress refused: CONNECT self.example:443: resolves to 198.18.0.1 (the worker's own socket)".to_owned()]
    );
}

#[tokio::test]
async fn refusal_notes_are_capped() {
    let proxy = egress(Vec::new()).open(spec(Vec::new(), None)).await.expect("open");
    let mut s = TcpStream::connect(addr_of(&proxy)).await.expect("connect");
    let extra = 7;
    for i in 0..EgressRecord::NOTED_REFUSALS + extra {
        let t = format!("h{i}.example:443");
        s.write_all(format!("CONNECT {t} HTTP/1.1\r\nHost: {t}\r\n\r\n").as_bytes())
            .await
            .expect("send");
        let head = read_head(&mut s).await;
        assert_eq!(status_of(&head), 403);
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a length");
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.expect("body");
    }
    let report = proxy.close().await;
    assert_eq!(report.record.refused, (EgressRecord::NOTED_REFUSALS + extra) as u64);
    assert_eq!(report.refusals.len(), EgressRecord::NOTED_REFUSALS + 1);
    assert_eq!(
        report.refusals.last().map(String::as_str),
        Some("… and 7 more refusals")
    );
    assert_eq!(
        report.refusals[0],
        "egress refused: CONNECT h0.example:443: not in allow_hosts"
    );
}

#[tokio::test]
async fn malformed_requests_get_400_and_no_panic() {
    let proxy = egress(Vec::new())
        .open(spec(rules(&["a.example"]), None))
        .await
        .expect("open");
    let p = addr_of(&proxy);
    for garbage in [
        "HELLO\r\n\r\n",
        "GET /\r\n\r\n",
        "CONNECT a.example HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        "\x16\x03\x01\x00\x05hello",
    ] {
        let (status, text) = one_shot(p, garbage).await;
        assert_eq!(status, 400, "{garbage:?}: {text}");
    }
    // A request head larger than the proxy's 16 KiB read buffer.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nx-pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20_000)
    );
    let (status, _) = one_shot(p, &big).await;
    assert_eq!(status, 431);
    // The proxy still serves.
    let (status, _) = one_shot(
        p,
        "CONNECT b.example:443 HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 403);
    let report = proxy.close().await;
    assert_eq!(report.record.refused, 1, "{:?}", report.refusals);
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let e = Egress::new(EgressConfig {
        max_connections: 2,
        ..EgressConfig::default()
    })
    .expect("egress");
    let proxy = e.open(spec(Vec::new(), None)).await.expect("open");
    let p = addr_of(&proxy);
    let idle_a = TcpStream::connect(p).await.expect("connect");
    let _idle_b = TcpStream::connect(p).await.expect("connect");
    let mut third = TcpStream::connect(p).await.expect("the kernel queues it");
    third
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("send");
    let mut buf = [0u8; 12];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read_exact(&mut buf)).await;
    assert!(early.is_err(), "no third connection is served while two are open");
    drop(idle_a);
    tokio::time::timeout(WAIT, third.read_exact(&mut buf))
        .await
        .expect("served once a slot is free")
        .expect("read");
    assert_eq!(&buf, b"HTTP/1.1 403");
    proxy.close().await;
}

// ---------------------------------------------------------------------------------------------
// Key injection

/// One vendor call through the proxy: (status, content type, body).
async fn call(
    proxy: SocketAddr,
    path: &str,
    key: Option<(&str, &str)>,
    reply: &str,
    body: &'static str,
) -> (u16, String, Bytes) {
    let mut req = agent_client()
        .post(format!("http://{proxy}{path}"))
        .header("x-test-reply", reply)
        .header("accept-encoding", "gzip, br")
        .header("content-type", "application/json")
        .body(body);
    if let Some((name, value)) = key {
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("the proxy answers");
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (status, ct, resp.bytes().await.expect("body"))
}

#[tokio::test]
async fn the_real_key_reaches_each_vendor_and_usage_is_metered() {
    let vendor = Vendor::start(Ipv4Addr::LOCALHOST.into()).await;
    let e = egress(Vec::new());

    // Anthropic: x-api-key, JSON and SSE. The upstream's path is not used for forwarding.
    let ph = Injection::new_placeholder();
    let proxy = e
        .open(spec(
            Vec::new(),
            Some(injection(vendor.url("/ignored"), "x-api-key", "", &ph)),
        ))
        .await
        .expect("open");
    let p = addr_of(&proxy);
    let key = Some(("x-api-key", ph.as_str()));
    let (s, ct, body) = call(
        p,
        "/v1/messages",
        key,
        "anthropic-json",
        r#"{"model":"m","stream":false}"#,
    )
    .await;
    assert_eq!((s, ct.as_str()), (200, "application/json"));
    assert_eq!(body, ANTHROPIC_JSON.as_bytes());
    let (s, ct, body) = call(p, "/v1/messages?beta=true", key, "anthropic-sse", r#"{"stream":true}"#).await;
    assert_eq!((s, ct.as_str()), (200, "text/event-stream; charset=utf-8"));
    assert_eq!(body, ANTHROPIC_SSE.as_bytes(), "the stream arrives unchanged");
    let report = proxy.close().await;
    assert!(report.record.key_injected);
    assert_eq!(report.record.vendor_requests, 2);
    assert_eq!(
        report.record.usage,
        MeteredUsage {
            input_tokens: 2468,
            output_tokens: 112,
            cached_input_tokens: 0,
            responses: 2,
            unmetered_responses: 0
        }
    );
    let seen = vendor.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path_and_query.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(seen[1].path_and_query, "/v1/messages?beta=true");
    assert_eq!(seen[0].body, r#"{"model":"m","stream":false}"#.as_bytes());
    for s in &seen {
        assert_eq!(
            s.headers.get("x-api-key").map(|v| v.as_bytes()),
            Some(REAL_KEY.as_bytes())
        );
        assert_eq!(
            s.headers.get("accept-encoding").map(|v| v.as_bytes()),
            Some(&b"identity"[..])
        );
        assert_eq!(
            s.headers.get("host").map(|v| v.as_bytes()),
            Some(vendor.addr.to_string().as_bytes())
        );
        assert_eq!(
            s.headers.get("content-type").map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert!(
            s.headers
                .values()
                .all(|v| !String::from_utf8_lossy(v.as_bytes()).contains(&ph)),
            "the placeholder never reaches the vendor"
        );
        assert!(s.headers.get("authorization").is_none());
    }

    // OpenAI: `Authorization: Bearer`, Responses SSE and chat completions JSON.
    let ph = Injection::new_placeholder();
    let proxy = e
        .open(spec(
            Vec::new(),
            Some(injection(vendor.url("/v1"), "authorization", "Bearer ", &ph)),
        ))
        .await
        .expect("open");
    let p = addr_of(&proxy);
    let bearer = format!("Bearer {ph}");
    let key = Some(("authorization", bearer.as_str()));
    let (s, _, body) = call(p, "/v1/responses", key, "responses-sse", "{}").await;
    assert_eq!((s, &body[..]), (200, OPENAI_RESPONSES_SSE.as_bytes()));
    let (s, _, body) = call(p, "/v1/chat/completions", key, "chat-json", "{}").await;
    assert_eq!((s, &body[..]), (200, CHAT_JSON.as_bytes()));
    let (s, _, _) = call(p, "/v1/models", key, "models", "").await;
    assert_eq!(s, 200);
    let (s, _, _) = call(p, "/v1/responses", key, "rate-limited", "{}").await;
    assert_eq!(s, 429, "the vendor's status passes through");
    let report = proxy.close().await;
    assert_eq!(report.record.vendor_requests, 4);
    assert_eq!(
        report.record.usage,
        MeteredUsage {
            input_tokens: 2468,
            output_tokens: 112,
            cached_input_tokens: 0,
            responses: 2,
            unmetered_responses: 1
        },
        "a 2xx without usage is unmetered; a 429 is not counted"
    );
    let seen = vendor.seen();
    for s in &seen[2..] {
        let want = format!("Bearer {REAL_KEY}");
        assert_eq!(
            s.headers.get("authorization").map(|v| v.as_bytes()),
            Some(want.as_bytes())
        );
    }

    // Gemini: x-goog-api-key, SSE with cumulative chunks.
    let ph = Injection::new_placeholder();
    let proxy = e
        .open(spec(
            Vec::new(),
            Some(injection(vendor.url("/"), "X-Goog-Api-Key", "", &ph)),
        ))
        .await
        .expect("open");
    let path = "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse";
    let (s, _, body) = call(addr_of(&proxy), path, Some(("x-goog-api-key", &ph)), "gemini-sse", "{}").await;
    assert_eq!((s, &body[..]), (200, GEMINI_SSE.as_bytes()));
    let report = proxy.close().await;
    assert_eq!(
        (
            report.record.usage.input_tokens,
            report.record.usage.output_tokens,
            report.record.usage.responses
        ),
        (1234, 56, 1)
    );
    let last = vendor.seen().pop().expect("a request");
    assert_eq!(last.path_and_query, path);
    assert_eq!(
        last.headers.get("x-goog-api-key").map(|v| v.as_bytes()),
        Some(REAL_KEY.as_bytes())
    );
}

#[tokio::test]
async fn vendor_requests_without_the_placeholder_get_401() {
    let vendor = Vendor::start(Ipv4Addr::LOCALHOST.into()).await;
    let ph = Injection::new_placeholder();
    let proxy = egress(Vec::new())
        .open(spec(Vec::new(), Some(injection(vendor.url("/"), "x-api-key", "", &ph))))
        .await
        .expect("open");
    let p = addr_of(&proxy);
    let wrong = Injection::new_placeholder();
    let bearer = format!("Bearer {ph}");
    for key in [
        None,
        Some(("x-api-key", wrong.as_str())),
        Some(("authorization", bearer.as_str())),
    ] {
        let (s, ct, body) = call(p, "/v1/messages", key, "anthropic-json", "{}").await;
        assert_eq!((s, ct.as_str()), (401, "application/json"));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        assert_eq!(v["error"]["type"], "outpost_proxy");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.contains(&ph)));
    }
    // A WebSocket upgrade, even with the key.
    let resp = agent_client()
        .get(format!("http://{p}/v1/responses"))
        .header("x-api-key", &ph)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 501);
    let report = proxy.close().await;
    assert!(vendor.seen().is_empty(), "nothing reached the vendor");
    let line = "egress refused: POST /v1/messages: vendor request without the run's placeholder key".to_owned();
    assert_eq!(
        report.refusals,
        vec![
            line.clone(),
            line.clone(),
            line,
            "egress refused: GET /v1/responses: protocol upgrade refused".to_owned()
        ]
    );
    assert_eq!(report.record.vendor_requests, 0);
    assert!(report.refusals.iter().all(|l| !l.contains(&ph) && !l.contains(&wrong)));
}

#[tokio::test]
async fn request_and_response_bodies_stream_through_unchanged() {
    let vendor = Vendor::start(Ipv4Addr::LOCALHOST.into()).await;
    let ph = Injection::new_placeholder();
    let proxy = egress(Vec::new())
        .open(spec(Vec::new(), Some(injection(vendor.url("/"), "x-api-key", "", &ph))))
        .await
        .expect("open");
    let p = addr_of(&proxy);
    let big: Vec<u8> = (0..(3 * 1024 * 1024 + 17))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    // Chunked (length unknown to the proxy), in 64 KiB pieces.
    let pieces: Vec<Result<Bytes, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let resp = agent_client()
        .post(format!("http://{p}/v1/files"))
        .header("x-api-key", &ph)
        .header("x-test-reply", "echo")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(pieces)))
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status().as_u16(), 200);
    let mut got = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    assert!(got == big, "the echoed body is unchanged ({} bytes back)", got.len());
    // With a length: the vendor gets it as `content-length`.
    let resp = agent_client()
        .post(format!("http://{p}/v1/files"))
        .header("x-api-key", &ph)
        .header("x-test-reply", "echo")
        .body(big[..100_000].to_vec())
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.content_length(), Some(100_000));
    assert_eq!(resp.bytes().await.expect("body"), &big[..100_000]);
    let report = proxy.close().await;
    let seen = vendor.seen();
    assert_eq!(seen[0].body, big);
    assert!(seen[0].headers.get("content-length").is_none());
    assert_eq!(
        seen[1].headers.get("content-length").map(|v| v.as_bytes()),
        Some(&b"100000"[..])
    );
    assert_eq!(report.record.vendor_requests, 2);
    assert_eq!(
        report.record.usage,
        MeteredUsage::default(),
        "octet streams are not metered"
    );
}

#[tokio::test]
async fn an_unreachable_vendor_is_a_502() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let ph = Injection::new_placeholder();
    let upstream: url::Url = format!("https://{closed}").parse().expect("url");
    let proxy = egress(Vec::new())
        .open(spec(Vec::new(), Some(injection(upstream, "x-api-key", "", &ph))))
        .await
        .expect("open");
    let (s, ct, body) = call(
        addr_of(&proxy),
        "/v1/messages",
        Some(("x-api-key", &ph)),
        "anthropic-json",
        "{}",
    )
    .await;
    assert_eq!((s, ct.as_str()), (502, "application/json"));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
    assert_eq!(v["error"]["type"], "outpost_proxy");
    let report = proxy.close().await;
    assert_eq!((report.record.refused, report.record.usage.responses), (0, 0));
}

#[tokio::test]
async fn bad_specs_are_refused_when_opening() {
    let e = egress(Vec::new());
    let mut s = spec(Vec::new(), None);
    s.listen.clear();
    assert!(matches!(e.open(s).await, Err(EgressError::NoListener)));
    let s = spec(
        Vec::new(),
        Some(injection(
            "https://a.example".parse().expect("url"),
            "x-api-key",
            "",
            "short",
        )),
    );
    assert!(matches!(e.open(s).await, Err(EgressError::Injection(_))));
    assert!(matches!(
        Egress::new(EgressConfig {
            upstream_ca_pem: Some(b"not a certificate".to_vec()),
            ..EgressConfig::default()
        }),
        Err(EgressError::UpstreamCa(_))
    ));
}

// ---------------------------------------------------------------------------------------------
// Unix sockets

#[tokio::test]
async fn a_unix_listener_serves_is_private_and_goes_away_on_close() {
    let vendor = Vendor::start(Ipv4Addr::LOCALHOST.into()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("egress.sock");
    // A stale socket from an earlier run is replaced; any other file is not touched.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("stale socket"));
    let root = nix::unistd::geteuid().is_root();
    let owner = root.then_some((65534, 65534));
    let ph = Injection::new_placeholder();
    let e = egress(Vec::new());
    let proxy = e
        .open(RunProxySpec {
            listen: vec![
                Listen::Loopback,
                Listen::Unix {
                    path: path.clone(),
                    owner,
                },
            ],
            allow: Vec::new(),
            inject: Some(injection(vendor.url("/"), "x-api-key", "", &ph)),
            refuse_addrs: Vec::new(),
        })
        .await
        .expect("open");
    assert_eq!(proxy.unix_paths(), std::slice::from_ref(&path));
    let meta = std::fs::metadata(&path).expect("the socket exists");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    if root {
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "owned by the agent's user");
    }
    let mut s = UnixStream::connect(&path).await.expect("connect");
    s.write_all(
        format!(
            "POST /v1/messages HTTP/1.1\r\nHost: proxy\r\nx-api-key: {ph}\r\nx-test-reply: anthropic-json\r\n\
             content-length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    )
    .await
    .expect("send");
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .expect("answer")
        .expect("read");
    let text = String::from_utf8_lossy(&all);
    assert_eq!(status_of(&text), 200, "{text}");
    assert_eq!(body_of(&text), ANTHROPIC_JSON);
    // The loopback listener is the same proxy.
    let (st, _, _) = call(
        addr_of(&proxy),
        "/v1/messages",
        Some(("x-api-key", &ph)),
        "anthropic-json",
        "{}",
    )
    .await;
    assert_eq!(st, 200);
    let report = proxy.close().await;
    assert!(!path.exists(), "the socket file is removed");
    assert_eq!((report.record.vendor_requests, report.record.usage.responses), (2, 2));

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"keep me").expect("file");
    let err = e
        .open(RunProxySpec {
            listen: vec![
                Listen::Loopback,
                Listen::Unix {
                    path: file.clone(),
                    owner: None,
                },
            ],
            allow: Vec::new(),
            inject: None,
            refuse_addrs: Vec::new(),
        })
        .await
        .map(|_| ())
        .expect_err("a file in the way");
    assert!(matches!(err, EgressError::Listen { .. }), "{err}");
    assert_eq!(std::fs::read(&file).expect("still there"), b"keep me");
}
