//! Typed REST client of the Outpost API (`/v1`), used by the CLI and the stdio MCP server.
//!
//! Every call maps to one endpoint and returns the wire types of [`crate::api`]. Errors are one
//! readable line ([`ClientError`]); the API key is sent as a sensitive header and never appears
//! in an error or a log line.

use crate::api::{
    ArtifactView, DispatchAccepted, DispatchRequest, ErrorBody, FleetStatus, Health, ListRunsQuery, LogRead,
    PromoteRequest, PromoteResult, PutSecretRequest, RunList, RunView, SecretList, HEADER_LOG_SIZE, HEADER_NEXT_OFFSET,
    HEADER_RUN_STATUS,
};
use crate::domain::RunStatus;
use crate::ports::SecretInfo;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
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

/// A client of one Outpost API, cheap to clone.
#[derive(Clone)]
pub struct OutpostClient {
    http: reqwest::Client,
    base: Url,
    /// `Bearer <key>`, marked sensitive so it is never printed.
    auth: Option<HeaderValue>,
}

impl std::fmt::Debug for OutpostClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutpostClient")
            .field("base", &self.base.as_str())
            .field("api_key", &self.auth.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl OutpostClient {
    /// A client of the API at `base_url` (e.g. `http://127.0.0.1:8080`, or with a path prefix such
    /// as `https://api.example.com/prod`), authenticating with `api_key` when given.
    pub fn new(base_url: &str, api_key: Option<String>) -> Result<Self, ClientError> {
        let base = parse_base_url(base_url)?;
        let auth = match api_key {
            Some(key) => {
                let key = key.trim();
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    ClientError::InvalidUrl(
                        "invalid API key: it contains characters that cannot be sent in an HTTP header".to_owned(),
                    )
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("outpost-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Transport(format!("cannot set up the HTTP client: {}", root_cause(&e))))?;
        Ok(Self { http, base, auth })
    }

    /// The base URL this client talks to.
    pub fn base_url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `GET /health` (no key needed).
    pub async fn health(&self) -> Result<Health, ClientError> {
        let url = self.url(&["health"]);
        self.json(self.request(Method::GET, url.clone()), &url).await
    }

    /// `POST /v1/runs`.
    pub async fn dispatch(&self, req: &DispatchRequest) -> Result<DispatchAccepted, ClientError> {
        let url = self.url(&["v1", "runs"]);
        self.json(self.request(Method::POST, url.clone()).json(req), &url).await
    }

    /// `GET /v1/runs/{id}`.
    pub async fn get_run(&self, id: &str) -> Result<RunView, ClientError> {
        let url = self.url(&["v1", "runs", id]);
        self.json(self.request(Method::GET, url.clone()), &url).await
    }

    /// `GET /v1/runs?status=&agent=&limit=&cursor=`.
    pub async fn list_runs(&self, q: &ListRunsQuery) -> Result<RunList, ClientError> {
        let url = self.url(&["v1", "runs"]);
        self.json(self.request(Method::GET, url.clone()).query(q), &url).await
    }

    /// `POST /v1/runs/{id}/cancel`.
    pub async fn cancel_run(&self, id: &str) -> Result<RunView, ClientError> {
        let url = self.url(&["v1", "runs", id, "cancel"]);
        self.json(self.request(Method::POST, url.clone()), &url).await
    }

    /// `GET /v1/runs/{id}/logs?offset=`: the bytes of `output.log` from `offset` (up to the
    /// server's default page), with the offset to ask for next.
    pub async fn logs(&self, id: &str, offset: u64) -> Result<LogRead, ClientError> {
        let url = self.url(&["v1", "runs", id, "logs"]);
        let resp = self
            .send(
                self.request(Method::GET, url.clone()).query(&[("offset", offset)]),
                &url,
            )
            .await?;
        let headers = resp.headers().clone();
        let data = resp.bytes().await.map_err(|e| transport(&url, &e))?;
        let next_offset = header_parse::<u64>(&headers, HEADER_NEXT_OFFSET, &url)?;
        let size = header_parse::<u64>(&headers, HEADER_LOG_SIZE, &url)?;
        let status = header_parse::<RunStatus>(&headers, HEADER_RUN_STATUS, &url)?;
        Ok(LogRead {
            data,
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
        let resp = self.send(self.request(Method::GET, url.clone()), &url).await?;
        resp.bytes().await.map_err(|e| transport(&url, &e))
    }

    /// `GET /v1/runs/{id}/artifacts`: the run's manifest.
    pub async fn artifacts(&self, id: &str) -> Result<Vec<ArtifactView>, ClientError> {
        let url = self.url(&["v1", "runs", id, "artifacts"]);
        self.json(self.request(Method::GET, url.clone()), &url).await
    }

    /// `GET /v1/fleet`.
    pub async fn fleet(&self) -> Result<FleetStatus, ClientError> {
        let url = self.url(&["v1", "fleet"]);
        self.json(self.request(Method::GET, url.clone()), &url).await
    }

    /// `POST /v1/runs/{id}/promote`: pushes the run's changes to a new branch of its repository.
    pub async fn promote(&self, id: &str, req: &PromoteRequest) -> Result<PromoteResult, ClientError> {
        let url = self.url(&["v1", "runs", id, "promote"]);
        self.json(self.request(Method::POST, url.clone()).json(req), &url).await
    }

    /// `PUT /v1/secrets/{name}`: sets one of the tenant's secrets.
    pub async fn put_secret(&self, name: &str, value: &str) -> Result<SecretInfo, ClientError> {
        let url = self.url(&["v1", "secrets", name]);
        let body = PutSecretRequest {
            value: value.to_owned(),
        };
        self.json(self.request(Method::PUT, url.clone()).json(&body), &url)
            .await
    }

    /// `GET /v1/secrets`: the tenant's secret names and times.
    pub async fn list_secrets(&self) -> Result<SecretList, ClientError> {
        let url = self.url(&["v1", "secrets"]);
        self.json(self.request(Method::GET, url.clone()), &url).await
    }

    /// `DELETE /v1/secrets/{name}`.
    pub async fn delete_secret(&self, name: &str) -> Result<(), ClientError> {
        let url = self.url(&["v1", "secrets", name]);
        self.send(self.request(Method::DELETE, url.clone()), &url).await?;
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

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut headers = HeaderMap::new();
        if let Some(auth) = &self.auth {
            headers.insert(AUTHORIZATION, auth.clone());
        }
        self.http.request(method, url).headers(headers)
    }

    /// Sends a request; a non-success answer becomes [`ClientError::Api`].
    async fn send(&self, req: RequestBuilder, url: &Url) -> Result<Response, ClientError> {
        let resp = req.send().await.map_err(|e| transport(url, &e))?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(api_error(resp).await)
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder, url: &Url) -> Result<T, ClientError> {
        let resp = self.send(req, url).await?;
        let body = resp.bytes().await.map_err(|e| transport(url, &e))?;
        serde_json::from_slice(&body)
            .map_err(|e| ClientError::Decode(format!("unexpected answer from {}: {e}", display_url(url))))
    }
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

/// Reads an error answer: the API's `ErrorBody` if it is one, else the status and a short quote.
async fn api_error(resp: Response) -> ClientError {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    error_from_body(status, &body)
}

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
