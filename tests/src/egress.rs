//! The fake agent's network directives, for the egress proxy's tests (docs/SECURITY.md): plain
//! HTTP/1.1 over a std `TcpStream`, no proxy settings of their own, so that what the run may reach
//! is decided by the worker (its proxy variables, its proxy, the sandbox's network) and nothing
//! else. Each prints lines the tests read.
//!
//! | directive | does | prints |
//! | --- | --- | --- |
//! | `http METHOD URL [NAME:VALUE]… [body=JSON]` | one request straight to URL (`http://` only; `$NAME` or `${NAME}` in the URL and header values from the environment); the body is the rest of the line after `body=` | `HTTP <status>` then the body's first 4 KB, each line indented by two spaces; `HTTP error: <why>` |
//! | `tunnel HOST:PORT [PATH]` | `CONNECT HOST:PORT` to the proxy of `$HTTPS_PROXY` (`http://IP:PORT`), then on 200 `GET PATH` (default `/`) through the tunnel in plain HTTP | `TUNNEL HOST:PORT: refused (<proxy's status line>)`, `…: open, HTTP <status>`, `…: open, error <why>`, `…: error (<why>)` (no answer from the proxy), `…: no proxy` |
//! | `tls-tunnel HOST:PORT SNI` | `CONNECT HOST:PORT` as `tunnel`, then a TLS handshake (rustls) naming `SNI` as the server | `TLS HOST:PORT as SNI: closed by the proxy before the server answered`, `…: the server answered (<n> bytes)`, `…: refused (<status line>)`, `…: error (<why>)`, `…: no proxy` |
//! | `proxy-get URL` | `GET URL` in absolute form (plain-HTTP proxying) to the proxy of `$HTTP_PROXY` | `PROXY-GET URL: HTTP <status>`, `…: error (<why>)`, `…: no proxy` |
//! | `key-find PART…` | looks for the parts joined with nothing between (so this agent's own command line never holds the whole string) in its environment and command line (in memory and in `/proc/self/`) and in every regular file under `$HOME` and the working directory (recursively, no symlinks followed, files over 8 MB skipped) | `KEY found in <where>` per hit, else `KEY nowhere (<n> files searched[; unreadable: …])` |

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// How much of a response body `http` prints.
const SHOWN_BODY: usize = 4096;
/// Files `key-find` skips.
const MAX_SEARCHED_FILE: u64 = 8 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one network directive; `None` when `cmd` is not one.
pub fn run(cmd: &str, rest: &str) -> Option<String> {
    Some(match cmd {
        "http" => match http(rest) {
            Ok(report) => report,
            Err(why) => format!("HTTP error: {why}"),
        },
        "tunnel" => tunnel(rest),
        "tls-tunnel" => tls_tunnel(rest),
        "proxy-get" => proxy_get(rest),
        "key-find" => key_find(rest),
        _ => return None,
    })
}

/// `$NAME` and `${NAME}` replaced by the variable's value; an unset one is an error.
fn expand(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(name).map_err(|_| format!("${name} is unset"))?);
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok(out)
}

/// `host[:port]` and the path of an `http://` URL. A doubled `/` right after the authority (a
/// base URL ending in `/` joined with `/v1/…`) counts once.
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = format!("/{}", path.trim_start_matches('/'));
    let (host, port) = host_port(authority, 80)?;
    Ok((host, port, path))
}

/// `host:port` (or `[v6]:port`), `default` when no port is named.
fn host_port(authority: &str, default: u16) -> Result<(String, u16), String> {
    if authority.is_empty() {
        return Err("no host".into());
    }
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or("unclosed [")?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            None => default,
        };
        return Ok((host.to_owned(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().map_err(|_| format!("bad port {p:?}"))?)),
        None => Ok((authority.to_owned(), default)),
    }
}

fn connect(host: &str, port: u16) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {host}: {e}"))?
        .collect();
    let mut last = format!("{host} has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                s.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
                s.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) => last = format!("connect {addr}: {e}"),
        }
    }
    Err(last)
}

/// A response's head: the status line and the headers (names lower case).
struct Head {
    status_line: String,
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn read_line(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    let n = r.read_line(&mut line).map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_head(r: &mut impl BufRead) -> Result<Head, String> {
    let status_line = read_line(r).map_err(|e| format!("{e} before a status line"))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok(Head {
        status_line,
        status,
        headers,
    })
}

/// The whole body after `head`: by Content-Length, chunked, or up to the end of the stream.
fn read_body(r: &mut impl BufRead, head: &Head) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    if chunked {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !read_line(r)?.is_empty() {}
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).map_err(|e| e.to_string())?;
            read_line(r)?;
        }
    } else if let Some(n) = head.header("content-length") {
        let n: usize = n.parse().map_err(|_| format!("bad Content-Length {n:?}"))?;
        body.resize(n, 0);
        r.read_exact(&mut body).map_err(|e| e.to_string())?;
    } else if !(100..200).contains(&head.status) && head.status != 204 && head.status != 304 {
        r.read_to_end(&mut body).map_err(|e| e.to_string())?;
    }
    Ok(body)
}

fn http(rest: &str) -> Result<String, String> {
    let (words, body) = match rest.find("body=") {
        Some(at) if at == 0 || rest[..at].ends_with(' ') => (&rest[..at], Some(&rest[at + "body=".len()..])),
        _ => (rest, None),
    };
    let mut words = words.split_whitespace();
    let usage = "usage: http METHOD URL [NAME:VALUE]... [body=JSON]";
    let method = words.next().ok_or(usage)?;
    let url = expand(words.next().ok_or(usage)?)?;
    let (host, port, path) = split_url(&url)?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n");
    for h in words {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("{h:?} is not NAME:VALUE ({usage})"))?;
        request += &format!("{name}: {}\r\n", expand(value)?);
    }
    if let Some(body) = body {
        request += &format!("Content-Length: {}\r\n", body.len());
    }
    request += "\r\n";
    let mut stream = connect(&host, port)?;
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    if let Some(body) = body {
        stream.write_all(body.as_bytes()).map_err(|e| e.to_string())?;
    }
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader)?;
    let body = read_body(&mut reader, &head)?;
    let shown = String::from_utf8_lossy(&body[..body.len().min(SHOWN_BODY)]).into_owned();
    let mut out = format!("HTTP {}", head.status);
    for l in shown.lines() {
        out += &format!("\n  {l}");
    }
    Ok(out)
}

fn tunnel(rest: &str) -> String {
    let mut words = rest.split_whitespace();
    let target = words.next().unwrap_or("");
    let path = words.next().unwrap_or("/");
    let Some(proxy) = proxy_var("HTTPS_PROXY") else {
        return format!("TUNNEL {target}: no proxy");
    };
    match open_tunnel(&proxy, target, path) {
        Ok(Tunnel::Refused(status_line)) => format!("TUNNEL {target}: refused ({status_line})"),
        Ok(Tunnel::Open(Ok(status))) => format!("TUNNEL {target}: open, HTTP {status}"),
        Ok(Tunnel::Open(Err(why))) => format!("TUNNEL {target}: open, error {why}"),
        Err(why) => format!("TUNNEL {target}: error ({why})"),
    }
}

enum Tunnel {
    /// The proxy answered the CONNECT with this non-2xx status line.
    Refused(String),
    /// The proxy opened it; the status of the GET through it.
    Open(Result<u16, String>),
}

/// A connection to the proxy named by `proxy` (`http://IP:PORT`).
fn connect_proxy(proxy: &str) -> Result<TcpStream, String> {
    let authority = proxy
        .strip_prefix("http://")
        .ok_or_else(|| format!("proxy {proxy:?} is not http://IP:PORT"))?
        .trim_end_matches('/');
    let (proxy_host, proxy_port) = host_port(authority, 80)?;
    connect(&proxy_host, proxy_port).map_err(|e| format!("proxy: {e}"))
}

/// `CONNECT target` through `proxy`: the open tunnel, or the proxy's refusing status line.
fn connect_tunnel(proxy: &str, target: &str) -> Result<Result<BufReader<TcpStream>, String>, String> {
    let mut stream = connect_proxy(proxy)?;
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream.write_all(connect.as_bytes()).map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let head = read_head(&mut reader).map_err(|e| format!("proxy: {e}"))?;
    if !(200..300).contains(&head.status) {
        return Ok(Err(head.status_line));
    }
    Ok(Ok(reader))
}

/// The proxy of `$NAME` or its lower-case twin.
fn proxy_var(name: &str) -> Option<String> {
    [name.to_owned(), name.to_ascii_lowercase()]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|p| !p.is_empty()))
}

fn open_tunnel(proxy: &str, target: &str, path: &str) -> Result<Tunnel, String> {
    let (host, _) = host_port(target, 443)?;
    let mut reader = match connect_tunnel(proxy, target)? {
        Ok(r) => r,
        Err(status_line) => return Ok(Tunnel::Refused(status_line)),
    };
    let get = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let through = reader
        .get_mut()
        .write_all(get.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|()| read_head(&mut reader))
        .and_then(|h| read_body(&mut reader, &h).map(|_| h.status));
    Ok(Tunnel::Open(through))
}

/// `tls-tunnel HOST:PORT SNI`: a TLS handshake through a tunnel, naming `SNI`. No certificate
/// is trusted (an empty root store): what matters is whether the server's first bytes arrive
/// (the tunnel carried the ClientHello) or the proxy closed the tunnel first.
fn tls_tunnel(rest: &str) -> String {
    let mut words = rest.split_whitespace();
    let target = words.next().unwrap_or("");
    let sni = words.next().unwrap_or("");
    let what = format!("TLS {target} as {sni}");
    let Some(proxy) = proxy_var("HTTPS_PROXY") else {
        return format!("{what}: no proxy");
    };
    let reader = match connect_tunnel(&proxy, target) {
        Ok(Ok(r)) => r,
        Ok(Err(status_line)) => return format!("{what}: refused ({status_line})"),
        Err(why) => return format!("{what}: error ({why})"),
    };
    match handshake(reader.into_inner(), sni) {
        Ok(0) => format!("{what}: closed by the proxy before the server answered"),
        Ok(n) => format!("{what}: the server answered ({n} bytes)"),
        Err(why) => format!("{what}: error ({why})"),
    }
}

/// Drives a TLS client handshake naming `sni` over `sock` until it fails or ends; the bytes the
/// server side sent.
fn handshake(mut sock: TcpStream, sni: &str) -> Result<usize, String> {
    use std::io::Read;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| format!("SNI {sni:?}: {e}"))?;
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut received = 0;
    let mut buf = [0u8; 16 * 1024];
    while conn.is_handshaking() {
        while conn.wants_write() {
            if conn.write_tls(&mut sock).is_err() {
                return Ok(received);
            }
        }
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(received),
            Ok(n) => n,
        };
        received += n;
        if conn.read_tls(&mut &buf[..n]).is_err() || conn.process_new_packets().is_err() {
            // Not TLS, or a certificate no one trusts: the server answered either way.
            return Ok(received);
        }
    }
    Ok(received)
}

/// `proxy-get URL`: plain-HTTP proxying (absolute form), which the proxy refuses.
fn proxy_get(url: &str) -> String {
    let url = url.trim();
    let Some(proxy) = proxy_var("HTTP_PROXY") else {
        return format!("PROXY-GET {url}: no proxy");
    };
    let host = url
        .strip_prefix("http://")
        .and_then(|r| r.split('/').next())
        .unwrap_or("");
    let asked = connect_proxy(&proxy).and_then(|mut s| {
        s.write_all(format!("GET {url} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
            .map_err(|e| e.to_string())?;
        read_head(&mut BufReader::new(s)).map_err(|e| format!("proxy: {e}"))
    });
    match asked {
        Ok(head) => format!("PROXY-GET {url}: HTTP {}", head.status),
        Err(why) => format!("PROXY-GET {url}: error ({why})"),
    }
}

fn key_find(rest: &str) -> String {
    let needle: String = rest.split_whitespace().collect();
    if needle.is_empty() {
        return "KEY nowhere (nothing to look for)".into();
    }
    let needle = needle.as_bytes();
    let holds = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let mut found = Vec::new();
    let mut unreadable = Vec::new();

    let environment: Vec<u8> = std::env::vars_os()
        .flat_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            kv.push(0);
            kv
        })
        .collect();
    if holds(&environment) {
        found.push("the environment".to_owned());
    }
    let cmdline: Vec<u8> = std::env::args_os()
        .flat_map(|a| {
            let mut a = a.into_encoded_bytes();
            a.push(0);
            a
        })
        .collect();
    if holds(&cmdline) {
        found.push("the command line".to_owned());
    }
    for p in ["/proc/self/environ", "/proc/self/cmdline"] {
        match std::fs::read(p) {
            Ok(bytes) if holds(&bytes) => found.push(p.to_owned()),
            Ok(_) => {}
            Err(e) => unreadable.push(format!("{p} ({e})")),
        }
    }

    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(home));
    }
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    let mut seen = std::collections::HashSet::new();
    let mut searched = 0usize;
    let mut stack: Vec<PathBuf> = roots;
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                unreadable.push(format!("{} ({e})", path.display()));
                continue;
            }
        };
        {
            use std::os::unix::fs::MetadataExt;
            if !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
        }
        if meta.is_dir() {
            match std::fs::read_dir(&path) {
                Ok(rd) => stack.extend(rd.flatten().map(|e| e.path())),
                Err(e) => unreadable.push(format!("{} ({e})", path.display())),
            }
        } else if meta.is_file() && meta.len() <= MAX_SEARCHED_FILE {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    searched += 1;
                    if holds(&bytes) {
                        found.push(path.display().to_string());
                    }
                }
                Err(e) => unreadable.push(format!("{} ({e})", path.display())),
            }
        }
    }
    if found.is_empty() {
        let mut line = format!("KEY nowhere ({searched} files searched");
        if !unreadable.is_empty() {
            line += &format!("; unreadable: {}", unreadable.join(", "));
        }
        line + ")"
    } else {
        found
            .iter()
            .map(|w| format!("KEY found in {w}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
