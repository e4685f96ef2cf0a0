//! `CONNECT` tunnels: the allow-list, one checked resolution, the ClientHello's server name.

use super::addr::pick;
use super::{clip, full, text, Body, Run, TunnelSlot};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::ext::ReasonPhrase;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes read while waiting for a complete ClientHello.
const HELLO_CAP: usize = 16 * 1024;
/// How long a client that started a TLS handshake has to finish its ClientHello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

const ESTABLISHED: ReasonPhrase = ReasonPhrase::from_static(b"Connection Established");

/// A checked, connected tunnel waiting for hyper to hand over the client's connection.
pub(super) struct Tunnel {
    on: OnUpgrade,
    upstream: TcpStream,
    /// The `CONNECT` host, as the client wrote it (brackets stripped).
    host: String,
    /// `host:port` for notes.
    target: String,
}

/// Answers one `CONNECT`: 200 and a [`Tunnel`] in `slot`, or a refusal.
pub(super) async fn connect(run: &Arc<Run>, mut req: Request<Incoming>, slot: &TunnelSlot) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "outpost egress proxy: CONNECT needs host:port\n",
        );
    };
    let Some(port) = authority.port_u16() else {
        return text(
            StatusCode::BAD_REQUEST,
            "outpost egress proxy: CONNECT needs host:port\n",
        );
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let target = format!("{}:{port}", clip(authority.host()));
    let refuse = |why: String| {
        run.refuse(format!("egress refused: CONNECT {target}: {why}"));
        let mut r = Response::new(full(format!("outpost egress proxy: {target} {why}\n")));
        *r.status_mut() = StatusCode::FORBIDDEN;
        r
    };
    if host.parse::<IpAddr>().is_ok() {
        return refuse("is an IP address".to_owned());
    }
    if !run.allow.iter().any(|r| r.matches(&host, port)) {
        return refuse("not in allow_hosts".to_owned());
    }
    let addrs = match resolve(run, &host, port).await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(target = %target, error = %e, "egress proxy: CONNECT host did not resolve");
            return text(
                StatusCode::BAD_GATEWAY,
                "outpost egress proxy: the host did not resolve\n",
            );
        }
    };
    let addr = match pick(&addrs, &run.refuse_addrs) {
        Ok(a) => a,
        Err(Some((ip, class))) => return refuse(format!("resolves to {ip} ({class})")),
        Err(None) => {
            tracing::warn!(target = %target, "egress proxy: CONNECT host has no address");
            return text(
                StatusCode::BAD_GATEWAY,
                "outpost egress proxy: the host has no address\n",
            );
        }
    };
    let upstream = match tokio::time::timeout(run.shared.config.connect_timeout, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(target = %target, addr = %addr, error = %e, "egress proxy: CONNECT failed");
            return text(
                StatusCode::BAD_GATEWAY,
                "outpost egress proxy: cannot connect to the host\n",
            );
        }
        Err(_) => {
            tracing::warn!(target = %target, addr = %addr, "egress proxy: CONNECT timed out");
            return text(
                StatusCode::GATEWAY_TIMEOUT,
                "outpost egress proxy: connecting to the host timed out\n",
            );
        }
    };
    let _ = upstream.set_nodelay(true);
    let Some(tx) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return text(
            StatusCode::BAD_REQUEST,
            "outpost egress proxy: one tunnel per connection\n",
        );
    };
    let on = hyper::upgrade::on(&mut req);
    let _ = tx.send(Tunnel {
        on,
        upstream,
        host,
        target,
    });
    let mut r = Response::new(full(""));
    r.extensions_mut().insert(ESTABLISHED);
    r
}

/// The addresses of `host`: the fixed ones of the config, else the system resolver's.
async fn resolve(run: &Run, host: &str, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    let name = host.trim_end_matches('.');
    let fixed: Vec<SocketAddr> = run
        .shared
        .config
        .resolve
        .iter()
        .filter(|(n, _)| n.trim_end_matches('.').eq_ignore_ascii_case(name))
        .map(|(_, ip)| SocketAddr::new(*ip, port))
        .collect();
    if !fixed.is_empty() {
        return Ok(fixed);
    }
    match tokio::time::timeout(run.shared.config.connect_timeout, tokio::net::lookup_host((name, port))).await {
        Ok(found) => Ok(found?.collect()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "DNS lookup timed out",
        )),
    }
}

/// What the start of a client's TLS handshake said.
enum Hello {
    /// A ClientHello, with its server name if it has one.
    Read(Option<String>),
    Unreadable,
    TooLarge,
    Closed,
}

impl Tunnel {
    /// Runs the tunnel once hyper hands over the connection: checks the ClientHello's server
    /// name, then copies both ways until both sides are done.
    pub(super) async fn run(self, run: &Run) {
        let Tunnel {
            on,
            mut upstream,
            host,
            target,
        } = self;
        let upgraded = match on.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(target = %target, error = %e, "egress proxy: tunnel upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(upgraded);
        let mut head = Vec::new();
        // Whoever speaks first: the client (TLS, HTTP) or the server (SSH banner, SMTP).
        let server_first = loop {
            tokio::select! {
                r = client.read_buf(&mut head) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(_) => break false,
                },
                r = upstream.readable() => {
                    if r.is_err() {
                        return;
                    }
                    match upstream.try_read_buf(&mut head) {
                        Ok(0) => return,
                        Ok(_) => break true,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => return,
                    }
                }
            }
        };
        if !server_first && head.first() == Some(&0x16) {
            let why = match tokio::time::timeout(HELLO_TIMEOUT, client_hello(&mut client, &mut head)).await {
                Ok(Hello::Read(Some(name))) if !same_host(&name, &host) => Some(format!(
                    "TLS server name {} differs from CONNECT host {}",
                    clip(&name),
                    clip(&host)
                )),
                Ok(Hello::Read(_)) => None,
                Ok(Hello::Unreadable) => Some("TLS ClientHello unreadable".to_owned()),
                Ok(Hello::TooLarge) => Some(format!("TLS ClientHello larger than {} KiB", HELLO_CAP / 1024)),
                Ok(Hello::Closed) => return,
                Err(_) => Some(format!(
                    "no complete TLS ClientHello within {} s",
                    HELLO_TIMEOUT.as_secs()
                )),
            };
            if let Some(why) = why {
                run.refuse(format!("egress refused: CONNECT {target}: {why}"));
                return;
            }
        }
        let sent = if server_first {
            client.write_all(&head).await
        } else {
            upstream.write_all(&head).await
        };
        if sent.is_err() {
            return;
        }
        drop(head);
        {
            let mut t = run.tally();
            t.record.tunnels = t.record.tunnels.saturating_add(1);
        }
        tracing::debug!(target = %target, "egress proxy: tunnel open");
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(target = %target, error = %e, "egress proxy: tunnel ended with an error");
        }
    }
}

fn same_host(sni: &str, host: &str) -> bool {
    sni.trim_end_matches('.')
        .eq_ignore_ascii_case(host.trim_end_matches('.'))
}

/// Reads the client's ClientHello (its first bytes are in `head`, more are read into it) with
/// rustls's [`rustls::server::Acceptor`], which needs no crypto provider for that.
async fn client_hello<R: AsyncRead + Unpin>(client: &mut R, head: &mut Vec<u8>) -> Hello {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut fed = 0;
    loop {
        while fed < head.len() {
            let mut rest = &head[fed..];
            match acceptor.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(n) => fed += n,
                Err(_) => return Hello::Unreadable,
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Hello::Read(accepted.client_hello().server_name().map(str::to_owned)),
            Ok(None) => {}
            Err(_) => return Hello::Unreadable,
        }
        if head.len() >= HELLO_CAP {
            return Hello::TooLarge;
        }
        match client.read_buf(head).await {
            Ok(0) | Err(_) => return Hello::Closed,
            Ok(_) => {}
        }
    }
}
