//! Typed REST client of the Outpost API (`/v1`), used by the CLI and the MCP server.
//!
//! Every call maps to one endpoint and returns the wire types of [this crate](crate). Errors are one
//! readable line ([`ClientError`]); the API key is sent as a sensitive header and never appears
//! in an error or a log line.
//!
//! How a request reaches the API is an [`ApiTransport`]: [`HttpTransport`] (reqwest, the default)
//! sends it over the network; the MCP server's in-process transport hands it to the API's own
//! router, so both share this client's paths, queries, bodies and error mapping.

use crate::{
    ArtifactView, DispatchAccepted, DispatchRequest, ErrorBody, FleetStatus, Health, ListRunsQuery, LogRead,
    PromoteRequest, PromoteResult, PutSecretRequest, RunList, RunView, SecretList, SecretView, HEADER_LOG_SIZE,
    HEADER_NEXT_OFFSET, HEADER_RUN_STATUS,
};
use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use http::{Method, StatusCode};
use outpost_core::domain::RunStatus;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::time::Duration;
use url::Url;

/// Longest server text quoted in an error that did not come in the API's error shape.
const MAX_QUOTED_BODY: usize = 200;

/// What went wrong calling the API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The API answered with an error (`ErrorBody`), or with a non-success status.
    #[error("{code} ({status}): {message}")]
    Api { status: u16, code: String, message: String },
    /// The request did not get an answer (connection refused, DNS, TLS, timeout).
    #[error("{0}")]
    Transport(String),
    /// The answer could not be read as the expected type.
    #[error("{0}")]
    Decode(String),
    /// The base URL is not a usable `http(s)://` URL (or the key cannot be sent in a header).
    #[error("{0}")]
    InvalidUrl(String),
}

impl ClientError {
    /// The HTTP status of an API error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The machine-readable code of an API error (`not_found`, `validation_failed`, ...).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Carries one fully built request to the API and brings back the whole answer, whatever its
/// status. Failing to get an answer at all is [`ClientError::Transport`].
pub trait ApiTransport: Send + Sync {
    fn send(
        &self,
        request: http::Request<Bytes>,
    ) -> impl Future<Output = Result<http::Response<Bytes>, ClientError>> + Send;
}

/// The network transport: reqwest, rustls, connect timeout 10 s, read timeout 120 s.
#[derive(Debug, Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
}

impl HttpTransport {
    pub fn new() -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("outpost-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(format!("cannot set up the HTTP client: {}", root_cause(&e))))?;
        Ok(Self { http })
    }
}

impl ApiTransport for HttpTransport {
    async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, ClientError> {
        let url = Url::parse(&request.uri().to_string())
            .map_err(|e| ClientError::InvalidUrl(format!("invalid request URL: {e}")))?;
        let request = reqwest::Request::try_from(request).map_err(|e| transport(&url, &e))?;
        let resp = self.http.execute(request).await.map_err(|e| transport(&url, &e))?;
        let mut builder = http::Response::builder().status(resp.status()).version(resp.version());
        if let Some(headers) = builder.headers_mut() {
            *headers = resp.headers().clone();
        }
        let body = resp.bytes().await.map_err(|e| transport(&url, &e))?;
        builder
            .body(body)
            .map_err(|e| ClientError::Decode(format!("unexpected answer from {}: {e}", display_url(&url))))
    }
}

/// A client of one Outpost API, cheap to clone.
#[derive(Clone)]
pub struct OutpostClient<T = HttpTransport> {
    transport: T,
    base: Url,
    /// `Authorization` value (`Bearer <key>`), marked sensitive so it is never printed.
    auth: Option<HeaderValue>,
}

impl<T> std::fmt::Debug for OutpostClient<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutpostClient")
            .field("base", &self.base.as_str())
            .field("api_key", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The `Authorization: Bearer <key>` value of `api_key`, marked sensitive.
pub fn bearer_header(api_key: &str) -> Result<HeaderValue, ClientError> {
    let key = api_key.trim();
    let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
        ClientError::InvalidUrl(
            "invalid API key: it contains characters that cannot be sent in an HTTP header".to_owned(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

impl OutpostClient<HttpTransport> {
    /// A client of the API at `base_url` (e.g. `http://127.0.0.1:8080`, or with a path prefix such
    /// as `https://api.example.com/prod`), authenticating with `api_key` when given.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        let base = parse_base_url(base_url)?;
        let auth = api_key.as_deref().map(bearer_header).transpose()?;
        Ok(Self {
            transport: HttpTransport::new()?,
            base,
            auth,
        })
    }
}

impl<T: ApiTransport> OutpostClient<T> {
    /// A client sending through `transport` to `base_url` with this `Authorization` value (sent
    /// as is and marked sensitive; e.g. the header of a request being served, forwarded).
    pub fn with_transport(
        transport: T,
        base_url: &str,
        authorization: Option<HeaderValue>,
    ) -> Result<Self, ClientError> {
        let base = parse_base_url(base_url)?;
        let auth = authorization.map(|mut v| {
            v.set_sensitive(true);
            v
        });
        Ok(Self { transport, base, auth })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /health` (no key needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, self.url(&["health"]), None).await
    }

    /// `POST /v1/runs`.
    pub async fn dispatch(&self, req: &DispatchRequest) -> Result<DispatchAccepted, ClientError> {
        self.json(Method::POST, self.url(&["v1", "runs"]), Some(body(req)?))
            .await
    }

    /// `GET /v1/runs/{id}`.
    pub async fn get_run(&self, id: &str) -> Result<RunView, ClientError> {
        self.json(Method::GET, self.url(&["v1", "runs", id]), None).await
    }

    /// `GET /v1/runs?status=&agent=&limit=&cursor=`.
    pub async fn list_runs(&self, q: &ListRunsQuery) -> Result<RunList, ClientError> {
        let mut url = self.url(&["v1", "runs"]);
        let query =
            serde_urlencoded::to_string(q).map_err(|e| ClientError::Decode(format!("cannot encode the query: {e}")))?;
        if !query.is_empty() {
            url.set_query(Some(&query));
        }
        self.json(Method::GET, url, None).await
    }

    /// `POST /v1/runs/{id}/cancel`.
    pub async fn cancel_run(&self, id: &str) -> Result<RunView, ClientError> {
        self.json(Method::POST, self.url(&["v1", "runs", id, "cancel"]), None)
            .await
    }

    /// `GET /v1/runs/{id}/logs?offset=`: the bytes of `output.log` from `offset` (up to the
    /// server's default page), with the offset to ask for next.
    pub async fn logs(&self, id: &str, offset: u64) -> Result<LogRead, ClientError> {
        self.read_logs(id, offset, None).await
    }

    /// `GET /v1/runs/{id}/logs?offset=&limit=`: at most `limit` bytes of `output.log` from `offset`.
    pub async fn logs_page(&self, id: &str, offset: u64, limit: u64) -> Result<LogRead, ClientError> {
        self.read_logs(id, offset, Some(limit)).await
    }

    async fn read_logs(&self, id: &str, offset: u64, limit: Option<u64>) -> Result<LogRead, ClientError> {
        let mut url = self.url(&["v1", "runs", id, "logs"]);
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("offset", &offset.to_string());
            if let Some(limit) = limit {
                query.append_pair("limit", &limit.to_string());
            }
        }
        let resp = self.send(Method::GET, &url, None).await?;
        let headers = resp.headers();
        let next_offset = header_parse::<u64>(headers, HEADER_NEXT_OFFSET, &url)?;
        let size = header_parse::<u64>(headers, HEADER_LOG_SIZE, &url)?;
        let status = header_parse::<RunStatus>(headers, HEADER_RUN_STATUS, &url)?;
        Ok(LogRead {
            data: resp.into_body(),
            next_offset,
            size,
            status,
        })
    }

    /// `GET /v1/runs/{id}/artifacts/{name}`: a stored file's content (`name` may contain `/`).
    pub async fn artifact(&self, id: &str, name: &str) -> Result<Bytes, ClientError> {
        let mut parts = vec!["v1", "runs", id, "artifacts"];
        parts.extend(name.split('/'));
        let url = self.url(&parts);
        Ok(self.send(Method::GET, &url, None).await?.into_body())
    }

    /// `GET /v1/runs/{id}/artifacts`: the run's manifest.
    pub async fn artifacts(&self, id: &str) -> Result<Vec<ArtifactView>, ClientError> {
        self.json(Method::GET, self.url(&["v1", "runs", id, "artifacts"]), None)
            .await
    }

    /// `GET /v1/fleet`.
    pub async fn fleet(&self) -> Result<FleetStatus, ClientError> {
        self.json(Method::GET, self.url(&["v1", "fleet"]), None).await
    }

    /// `POST /v1/runs/{id}/promote`: pushes the run's changes to a new branch of its repository.
    pub async fn promote(&self, id: &str, req: &PromoteRequest) -> Result<PromoteResult, ClientError> {
        self.json(Method::POST, self.url(&["v1", "runs", id, "promote"]), Some(body(req)?))
            .await
    }

    /// `PUT /v1/secrets/{name}`: sets one of the tenant's secrets.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<SecretView, ClientError> {
        let req = PutSecretRequest {
            value: value.to_owned(),
        };
        self.json(Method::PUT, self.url(&["v1", "secrets", name]), Some(body(&req)?))
            .await
    }

    /// `GET /v1/secrets`: the tenant's secret names and times.
    pub async fn list_secrets(&self) -> Result<SecretList, ClientError> {
        self.json(Method::GET, self.url(&["v1", "secrets"]), None).await
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        self.send(Method::DELETE, &self.url(&["v1", "secrets", name]), None)
            .await?;
        Ok(())
    }

    /// The base URL with `parts` appended as percent-encoded path segments.
    fn url(&self, parts: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(parts);
        }
        url
    }

    /// Sends a request (a JSON body when given); a non-success answer becomes [`ClientError::Api`].
    async fn send(
        &self,
        method: Method,
        url: &Url,
        json: Option<Vec<u8>>,
    ) -> Result<http::Response<Bytes>, ClientError> {
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        if let Some(auth) = &self.auth {
            builder = builder.header(AUTHORIZATION, auth.clone());
        }
        let body = match json {
            Some(bytes) => {
                builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                Bytes::from(bytes)
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(body)
            .map_err(|e| ClientError::InvalidUrl(format!("invalid request to {}: {e}", display_url(url))))?;
        let resp = self.transport.send(request).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(error_from_body(resp.status(), resp.body()))
        }
    }

    async fn json<R: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        json: Option<Vec<u8>>,
    ) -> Result<R, ClientError> {
        let resp = self.send(method, &url, json).await?;
        serde_json::from_slice(resp.body())
            .map_err(|e| ClientError::Decode(format!("unexpected answer from {}: {e}", display_url(&url))))
    }
}

/// A request body as JSON.
fn body<B: Serialize>(value: &B) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(value).map_err(|e| ClientError::Decode(format!("cannot encode the request: {e}")))
}

fn parse_base_url(raw: &str) -> Result<Url, ClientError> {
    let raw = raw.trim();
    let url = Url::parse(raw).map_err(|e| ClientError::InvalidUrl(format!("invalid API URL {raw:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::InvalidUrl(format!(
            "{raw:?}: the scheme must be http or https"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ClientError::InvalidUrl(format!(
            "invalid API URL {raw:?}: a host is needed"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::InvalidUrl(
            "invalid API URL: it must not carry credentials; pass the API key separately".to_owned(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::InvalidUrl(format!(
            "invalid API URL {raw:?}: it must not have a query or fragment"
        )));
    }
    Ok(url)
}

/// The URL without query, for messages.
fn display_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// The innermost cause of an error, lower-cased at its first letter, e.g. `connection refused`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    let text = cur.to_string();
    let text = match text.find(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_owned(),
        _ => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn transport(url: &Url, e: &reqwest::Error) -> ClientError {
    let mut origin = url.clone();
    origin.set_path("");
    origin.set_query(None);
    let origin = origin.as_str().trim_end_matches('/').to_owned();
    if e.is_timeout() {
        ClientError::Transport(format!("request to {origin} timed out"))
    } else if e.is_connect() {
        ClientError::Transport(format!("cannot reach {origin}: {}", root_cause(e)))
    } else {
        ClientError::Transport(format!("request to {origin} failed: {}", root_cause(e)))
    }
}

/// An error answer: the API's `ErrorBody` if it is one, else the status and a short quote.
fn error_from_body(status: StatusCode, body: &[u8]) -> ClientError {
    if let Ok(e) = serde_json::from_slice::<ErrorBody>(body) {
        return ClientError::Api {
            status: status.as_u16(),
            code: e.error.code,
            message: e.error.message,
        };
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        let mut quoted: String = text.chars().take(MAX_QUOTED_BODY).collect();
        if quoted.len() < text.len() {
            quoted.push('…');
        }
        quoted
    };
    ClientError::Api {
        status: status.as_u16(),
        code: format!("http_{}", status.as_u16()),
        message,
    }
}

fn header_parse<T: std::str::FromStr>(headers: &HeaderMap, name: &str, url: &Url) -> Result<T, ClientError> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            ClientError::Decode(format!(
                "unexpected answer from {}: missing or invalid {name} header",
                display_url(url)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert!(OutpostClient::new("http://127.0.0.1:8080", None).is_ok());
        assert!(OutpostClient::new("https://api.example.com/prod/", None).is_ok());
        for bad in [
            "",
            "127.0.0.1:8080",
            "ftp://x",
            "http://u:p@host",
            "http://host/?a=b",
            "not a url",
        ] {
            assert!(
                matches!(OutpostClient::new(bad, None), Err(ClientError::InvalidUrl(_))),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn paths_are_encoded_segments_under_the_base() {
        let c = OutpostClient::new("https://api.example.com/prod/", None).expect("client");
        assert_eq!(
            c.url(&["v1", "runs", "a/b?c", "logs"]).as_str(),
            "https://api.example.com/prod/v1/runs/a%2Fb%3Fc/logs"
        );
        let c = OutpostClient::new("http://127.0.0.1:8080", None).expect("client");
        assert_eq!(c.url(&["health"]).as_str(), "http://127.0.0.1:8080/health");
        assert_eq!(c.base_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn api_key_is_never_printed() {
        let c = OutpostClient::new("http://127.0.0.1:1", Some("op_test_secretvalue".to_owned())).expect("client");
        assert!(!format!("{c:?}").contains("secretvalue"));
        let bad = OutpostClient::new("http://127.0.0.1:1", Some("op\ntest_secretvalue".to_owned()))
            .expect_err("newline in key");
        assert!(!bad.to_string().contains("secretvalue"), "{bad}");
    }

    #[test]
    fn error_bodies_become_one_line() {
        let body = br#"{"error":{"code":"validation_failed","message":"task: must not be empty","field":"task"}}"#;
        let e = error_from_body(StatusCode::UNPROCESSABLE_ENTITY, body);
        assert_eq!(e.to_string(), "validation_failed (422): task: must not be empty");
        assert_eq!((e.status(), e.code()), (Some(422), Some("validation_failed")));
        let e = error_from_body(StatusCode::BAD_GATEWAY, b"<html>upstream down</html>");
        assert_eq!(e.to_string(), "http_502 (502): <html>upstream down</html>");
        let e = error_from_body(StatusCode::SERVICE_UNAVAILABLE, b"");
        assert_eq!(e.to_string(), "http_503 (503): Service Unavailable");
        let long = "x".repeat(1000);
        let e = error_from_body(StatusCode::BAD_GATEWAY, long.as_bytes());
        assert!(e.to_string().len() < 260, "{e}");
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error_naming_the_origin() {
        // Bind then drop a listener so the port is (almost certainly) closed.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let c = OutpostClient::new(&format!("http://{addr}"), Some("op_test_k".to_owned())).expect("client");
        let e = c.health().await.expect_err("nothing listens");
        let text = e.to_string();
        assert!(matches!(e, ClientError::Transport(_)), "{e:?}");
        assert!(text.starts_with(&format!("cannot reach http://{addr}: ")), "{text}");
        assert!(text.contains("refused"), "{text}");
        assert!(!text.contains("op_test_k"));
    }
}
