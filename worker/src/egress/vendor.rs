//! Origin-form requests: the vendor API behind the proxy, with the real key swapped in for the
//! run's placeholder and usage metered on the way back.

use super::meter::{Figures, Meter};
use super::{clip, json_error, Body, EgressError, Injection, Run};
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, BodyStream};
use hyper::body::{Frame, Incoming, SizeHint};
use secrecy::ExposeSecret;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Headers of one hop only (RFC 9110 §7.6.1), never forwarded either way.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A run's vendor, checked when the proxy opens.
pub(super) struct Vendor {
    /// `scheme://host[:port]`, no trailing slash.
    origin: String,
    host: String,
    header: HeaderName,
    /// `prefix + real key`, marked sensitive: what the vendor gets in `header`. Built once.
    key: HeaderValue,
    /// `prefix + placeholder`: what the agent's requests must carry in `header`.
    expected: Vec<u8>,
    placeholder: Vec<u8>,
}

impl Vendor {
    pub(super) fn new(i: Injection) -> Result<Self, EgressError> {
        let bad = |m: &str| EgressError::Injection(m.to_owned());
        if !matches!(i.upstream.scheme(), "https" | "http") {
            return Err(bad("upstream must be an https:// (or http://) URL"));
        }
        let Some(host) = i.upstream.host_str() else {
            return Err(bad("upstream has no host"));
        };
        if !i.upstream.username().is_empty() || i.upstream.password().is_some() {
            return Err(bad("upstream must not carry credentials"));
        }
        let header = HeaderName::from_bytes(i.header.to_ascii_lowercase().as_bytes())
            .map_err(|_| bad("header is not a header name"))?;
        if i.placeholder.len() < Injection::MIN_PLACEHOLDER_LEN {
            return Err(bad("the placeholder is too short to be unguessable"));
        }
        let expected = format!("{}{}", i.prefix, i.placeholder).into_bytes();
        if HeaderValue::from_bytes(&expected).is_err() {
            return Err(bad("prefix and placeholder do not make a header value"));
        }
        let mut key = HeaderValue::from_str(&format!("{}{}", i.prefix, i.real_key.expose_secret()))
            .map_err(|_| bad("the key does not make a header value"))?;
        key.set_sensitive(true);
        Ok(Self {
            origin: i.upstream.origin().ascii_serialization(),
            host: host.to_owned(),
            header,
            key,
            expected,
            placeholder: i.placeholder.into_bytes(),
        })
    }

    /// Whether the request carries exactly the run's placeholder in the key header (compared in
    /// constant time for a given length).
    fn key_ok(&self, headers: &HeaderMap) -> bool {
        let mut values = headers.get_all(&self.header).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => constant_time_eq(v.as_bytes(), &self.expected),
            _ => false,
        }
    }

    /// The headers sent upstream: the agent's minus hop-by-hop ones, `host`, `accept-encoding`,
    /// `expect` (hyper answered it) and any holding the placeholder, plus the real key and
    /// `accept-encoding: identity`.
    fn upstream_headers(&self, from: &HeaderMap) -> HeaderMap {
        let listed = connection_listed(from);
        let mut out = HeaderMap::with_capacity(from.len() + 2);
        for (name, value) in from {
            let n = name.as_str();
            if HOP_BY_HOP.contains(&n)
                || listed.iter().any(|l| l == n)
                || name == header::HOST
                || name == header::ACCEPT_ENCODING
                || name == header::EXPECT
                || *name == self.header
                || contains(value.as_bytes(), &self.placeholder)
            {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        out.insert(self.header.clone(), self.key.clone());
        out.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
        out
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Header names a `Connection` header lists (hop-by-hop too), lower case.
fn connection_listed(h: &HeaderMap) -> Vec<String> {
    h.get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The response headers passed back: the vendor's minus hop-by-hop ones.
fn downstream_headers(from: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(from);
    let mut out = HeaderMap::with_capacity(from.len());
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Forwards one vendor request.
pub(super) async fn forward(run: &Arc<Run>, v: &Vendor, req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let what = format!("{} {}", parts.method, clip(parts.uri.path()));
    if !v.key_ok(&parts.headers) {
        run.refuse(format!(
            "egress refused: {what}: vendor request without the run's placeholder key"
        ));
        return json_error(
            StatusCode::UNAUTHORIZED,
            "outpost egress proxy: this request does not carry the run's key",
        );
    }
    if parts.headers.contains_key(header::UPGRADE) {
        run.refuse(format!("egress refused: {what}: protocol upgrade refused"));
        return json_error(
            StatusCode::NOT_IMPLEMENTED,
            "outpost egress proxy: protocol upgrades (WebSocket) are not forwarded",
        );
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(url) = reqwest::Url::parse(&format!("{}{}", v.origin, path_and_query)) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "outpost egress proxy: malformed request target",
        );
    };
    let headers = v.upstream_headers(&parts.headers);
    let mut upstream = run.shared.client.request(parts.method, url).headers(headers);
    if !hyper::body::Body::is_end_stream(&body) {
        let frames = BodyStream::new(body).try_filter_map(|f| std::future::ready(Ok(f.into_data().ok())));
        upstream = upstream.body(reqwest::Body::wrap_stream(frames));
    }
    {
        let mut t = run.tally();
        t.record.vendor_requests = t.record.vendor_requests.saturating_add(1);
    }
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(host = %v.host, error = %error_chain(e), "egress proxy: vendor request failed");
            return json_error(
                StatusCode::BAD_GATEWAY,
                "outpost egress proxy: the vendor could not be reached",
            );
        }
    };
    let status = resp.status();
    tracing::debug!(host = %v.host, status = status.as_u16(), "egress proxy: vendor answered");
    let headers = downstream_headers(resp.headers());
    let meter = if status.is_success() {
        Meter::for_content_type(resp.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes))
    } else {
        None
    };
    let size = resp.content_length();
    let body = MeteredBody {
        inner: Box::pin(resp.bytes_stream()),
        meter: meter.map(|m| (m, run.clone())),
        size,
    };
    let mut out = Response::new(body.boxed_unsync());
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

/// An error and its sources on one line, without the URL (whose query could hold a key).
fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

/// The vendor's response body on its way to the agent, read by a [`Meter`]; the figures go to
/// the run when the body ends or is dropped (the agent hung up, or the proxy closed).
struct MeteredBody {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    meter: Option<(Meter, Arc<Run>)>,
    size: Option<u64>,
}

impl MeteredBody {
    fn finish(&mut self) {
        if let Some((meter, run)) = self.meter.take() {
            let figures = meter.finish();
            Figures::add_to(figures, &mut run.tally().record.usage);
        }
    }
}

impl hyper::body::Body for MeteredBody {
    type Data = Bytes;
    type Error = reqwest::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, reqwest::Error>>> {
        let this = self.get_mut();
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                if let Some((meter, _)) = &mut this.meter {
                    meter.feed(&bytes);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish();
                Poll::Ready(Some(Err(e.without_url())))
            }
            Poll::Ready(None) => {
                this.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.size.map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn injection(header: &str, prefix: &str) -> Injection {
        Injection {
            upstream: "https://api.example.com/v1".parse().expect("url"),
            header: header.to_owned(),
            prefix: prefix.to_owned(),
            real_key: SecretString::from("sk-real-0123456789"),
            placeholder: "sk-outpost-00112233445566778899aabbccddeeff".to_owned(),
        }
    }

    #[test]
    fn the_key_header_is_swapped_and_hop_by_hop_headers_dropped() {
        let v = Vendor::new(injection("Authorization", "Bearer ")).expect("valid");
        assert_eq!(v.origin, "https://api.example.com");
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            HeaderValue::from_static("Bearer sk-outpost-00112233445566778899aabbccddeeff"),
        );
        h.insert("host", HeaderValue::from_static("127.0.0.1:5555"));
        h.insert("connection", HeaderValue::from_static("keep-alive, x-drop-me"));
        h.insert("x-drop-me", HeaderValue::from_static("1"));
        h.insert(
            "x-other-key",
            HeaderValue::from_static("sk-outpost-00112233445566778899aabbccddeeff"),
        );
        h.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
        h.insert("content-length", HeaderValue::from_static("12"));
        assert!(v.key_ok(&h));
        let up = v.upstream_headers(&h);
        assert_eq!(
            up.get("authorization").map(HeaderValue::as_bytes),
            Some(&b"Bearer sk-real-0123456789"[..])
        );
        assert!(up.get("authorization").is_some_and(HeaderValue::is_sensitive));
        assert_eq!(
            up.get("accept-encoding").map(HeaderValue::as_bytes),
            Some(&b"identity"[..])
        );
        assert_eq!(
            up.get("anthropic-version").map(HeaderValue::as_bytes),
            Some(&b"2023-06-01"[..])
        );
        assert_eq!(up.get("content-length").map(HeaderValue::as_bytes), Some(&b"12"[..]));
        for gone in ["host", "connection", "x-drop-me", "x-other-key"] {
            assert!(up.get(gone).is_none(), "{gone} must not be forwarded");
        }
    }

    #[test]
    fn only_the_exact_placeholder_passes() {
        let v = Vendor::new(injection("x-api-key", "")).expect("valid");
        let with = |vals: &[&'static str]| {
            let mut h = HeaderMap::new();
            for val in vals {
                h.append("x-api-key", HeaderValue::from_static(val));
            }
            v.key_ok(&h)
        };
        assert!(with(&["sk-outpost-00112233445566778899aabbccddeeff"]));
        assert!(!with(&[]));
        assert!(!with(&["sk-outpost-00112233445566778899aabbccddeefe"]));
        assert!(!with(&["sk-outpost-00112233445566778899aabbccddeeff "]));
        assert!(!with(&["Bearer sk-outpost-00112233445566778899aabbccddeeff"]));
        assert!(!with(&[
            "sk-outpost-00112233445566778899aabbccddeeff",
            "sk-outpost-00112233445566778899aabbccddeeff"
        ]));
    }

    #[test]
    fn bad_injections_are_refused_at_open() {
        let mut i = injection("x-api-key", "");
        i.placeholder = "short".to_owned();
        assert!(Vendor::new(i).is_err());
        let mut i = injection("x api key", "");
        i.header = "x api key".to_owned();
        assert!(Vendor::new(i).is_err());
        let mut i = injection("x-api-key", "");
        i.upstream = "ftp://a.example".parse().expect("url");
        assert!(Vendor::new(i).is_err());
        let mut i = injection("x-api-key", "");
        i.upstream = "https://u:p@a.example".parse().expect("url");
        assert!(Vendor::new(i).is_err());
        let mut i = injection("x-api-key", "");
        i.real_key = SecretString::from("line\nbreak");
        let e = Vendor::new(i).map(|_| ()).expect_err("a key with a newline");
        assert!(!e.to_string().contains("break"), "the error does not show the key");
        let p = Injection::new_placeholder();
        assert!(p.starts_with("sk-outpost-") && p.len() == 43 && p != Injection::new_placeholder());
    }
}
