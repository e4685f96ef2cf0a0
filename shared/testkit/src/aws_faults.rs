//! A fault-injecting layer in front of the AWS emulator: a loopback HTTP/1.1 proxy the SDK talks
//! to instead of moto (point the SDK's endpoint at [`FaultLayer::endpoint`]), which forwards
//! every request to moto unless a test told it otherwise.
//!
//! What it can do, per operation (named as [`op_name`] names them, e.g. `ssm:PutParameter`):
//!
//! - count the calls that reached it ([`FaultLayer::calls`]), whatever happened to them;
//! - fail them ([`FaultLayer::inject`]): answer an error in the service's own shape (AWS JSON
//!   protocol, or S3's XML) without reaching moto, or forward them and then close the connection
//!   without an answer (a lost response: the effect happened, the caller cannot know);
//! - answer them itself ([`FaultLayer::serve`]) where moto lacks or breaks an API, or change what
//!   moto answers ([`FaultLayer::rewrite`]);
//! - check S3 form POSTs as S3 does ([`FaultLayer::enforce_post_policies`]: SigV4 POST policy
//!   signature, expiration and conditions; moto accepts any form POST) and refuse S3 requests
//!   without a signature ([`FaultLayer::deny_anonymous_s3`]; moto 5.2.5 refuses an anonymous
//!   GetObject, but lists a bucket and takes a PutObject anonymously).
//!
//! What it cannot simulate: latency or slow bodies (answers are whole, nothing is delayed), a
//! connection reset in the middle of a body, partial writes, TLS, HTTP/2, virtual-hosted S3
//! addressing (only path style `/{bucket}/{key}`), or SigV4 checks of ordinary requests (they are
//! forwarded with their `Authorization` untouched and moto does not verify them; only the
//! presence of a signature is checked, and only with [`FaultLayer::deny_anonymous_s3`]).
//!
//! Bodies are read whole into memory, both ways, up to [`MAX_BODY`] (64 MiB; a larger request is
//! answered 413): fine for a test layer, several-MB streamed uploads pass. Requests are forwarded
//! byte for byte (method, path and query, headers including `Authorization`, body) except the
//! hop-by-hop headers and `Host`, which becomes moto's (moto checks no signature, so the SDK's
//! signature over the old `Host` does not matter). Answers come back the same way.
//!
//! The order for each request: it is counted; the op's rules are asked (an `Error` fault answers
//! here); the S3 checks run (a refusal answers here); a server may answer; otherwise it goes to
//! moto and the rewriters see the answer; a `Drop` fault then throws the answer away and closes
//! the connection. Each call is logged at `debug` (op and status only: no bodies, no headers).
//!
//! Policy refusals answer 403 `AccessDenied` ("Invalid according to Policy: …") for every failed
//! check, as this layer's contract says. Real S3 answers a wrong signature with 403
//! `SignatureDoesNotMatch` and a body over `content-length-range` with 400 `EntityTooLarge`, so
//! code under test should treat any 4xx as a refusal rather than match the code. The access key
//! in `x-amz-credential` is not checked (only the secret is known here), nor `${filename}` keys.

use crate::lock;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

/// The largest request or answer body the layer holds in memory.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// The content type of JSON answers when the request named no `x-amz-json` version.
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// When a rule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The first `n` calls (counted from when the rule was added) get `fault`.
    First { n: u64, fault: Fault },
    /// Every `nth` call (the nth, 2nth, ..., counted from when the rule was added) gets `fault`.
    Every { nth: u64, fault: Fault },
}

/// What a firing rule does to a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// An AWS JSON-protocol error: `status` with body `{"__type": code, "message": message}` and
    /// header `x-amzn-ErrorType: code` (as ECS, SSM, DynamoDB and SQS answer); for S3 ops, S3's
    /// XML error (`<Error><Code>…</Code><Message>…</Message></Error>`). Moto never sees the call.
    Error { status: u16, code: String, message: String },
    /// The call is forwarded (so its effect happens), then the connection is closed without any
    /// answer: a lost response.
    Drop,
}

impl Fault {
    /// An error fault.
    pub fn error(status: u16, code: &str, message: &str) -> Fault {
        Fault::Error {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }
    }

    /// 400 `ThrottlingException` "Rate exceeded" (the SDK retries it as throttling).
    pub fn throttling() -> Fault {
        Fault::error(400, "ThrottlingException", "Rate exceeded")
    }

    /// 500 `InternalServerError` (the SDK retries it as transient).
    pub fn server_error() -> Fault {
        Fault::error(
            500,
            "InternalServerError",
            "We encountered an internal error. Please try again.",
        )
    }
}

/// An answer of a [`FaultLayer::serve`] handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// HTTP 200 with `body`.
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, body }
    }

    /// An AWS JSON-protocol error (`x-amzn-ErrorType` is set from `code`).
    pub fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply {
            status,
            body: serde_json::json!({ "__type": code, "message": message }),
        }
    }
}

type Handler = dyn Fn(&Value) -> Option<Reply> + Send + Sync;
type Rewriter = dyn Fn(&Value, Value) -> Value + Send + Sync;

/// A rule and the calls of its op it has seen since it was added.
struct Armed {
    rule: Rule,
    seen: u64,
}

impl Armed {
    /// Counts one call; the fault if the rule fires on it.
    fn fire(&mut self) -> Option<Fault> {
        self.seen += 1;
        match &self.rule {
            Rule::First { n, fault } if self.seen <= *n => Some(fault.clone()),
            // `checked_rem`: an `nth` of 0 never fires (and `is_multiple_of` is newer than the MSRV).
            Rule::Every { nth, fault } if self.seen.checked_rem(*nth) == Some(0) => Some(fault.clone()),
            _ => None,
        }
    }
}

/// What tests set up for one op.
#[derive(Default)]
struct Hooks {
    rules: Vec<Armed>,
    servers: Vec<Arc<Handler>>,
    rewriters: Vec<Arc<Rewriter>>,
}

struct State {
    upstream: String,
    client: reqwest::Client,
    calls: Mutex<HashMap<String, u64>>,
    hooks: Mutex<HashMap<String, Hooks>>,
    post_secret: RwLock<Option<String>>,
    deny_anonymous: AtomicBool,
}

/// Stops the accept loop (and with it every connection) when the last handle goes.
struct Inner {
    state: Arc<State>,
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a stand-in built on the layer (`local_ecs`, `local_ssm`) could not be set up: the layer
/// did not start or an emulator call failed.
#[derive(Debug, thiserror::Error)]
#[error("AWS stand-in: {0}")]
pub struct StandInError(pub(crate) String);

impl StandInError {
    pub(crate) fn of(e: impl std::fmt::Display) -> Self {
        Self(e.to_string())
    }
}

/// The fault-injecting proxy (see the module docs). Cheap to clone; it stops when the last clone
/// is dropped.
#[derive(Clone)]
pub struct FaultLayer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FaultLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultLayer")
            .field("endpoint", &self.endpoint())
            .field("upstream", &self.inner.state.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultLayer {
    /// Starts the proxy on 127.0.0.1:0 in front of `upstream` (e.g. moto's "http://127.0.0.1:PORT").
    pub async fn start(upstream: &str) -> std::io::Result<FaultLayer> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client,
            calls: Mutex::default(),
            hooks: Mutex::default(),
            post_secret: RwLock::new(None),
            deny_anonymous: AtomicBool::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, state.clone())).abort_handle();
        Ok(FaultLayer {
            inner: Arc::new(Inner { state, addr, task }),
        })
    }

    /// "http://127.0.0.1:PORT"
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// Calls seen so far of `op` (counted whether forwarded, faulted or served), e.g. "ecs:RunTask".
    pub fn calls(&self, op: &str) -> u64 {
        lock(&self.inner.state.calls).get(op).copied().unwrap_or(0)
    }

    /// Calls seen so far of every op (see [`calls`](Self::calls)), by op name.
    pub fn all_calls(&self) -> std::collections::BTreeMap<String, u64> {
        lock(&self.inner.state.calls)
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// Adds a fault rule for `op`. Every rule of an op counts every call of it from when it was
    /// added; they are asked in the order added, and the first that fires wins.
    pub fn inject(&self, op: &str, rule: Rule) {
        lock(&self.inner.state.hooks)
            .entry(op.to_owned())
            .or_default()
            .rules
            .push(Armed { rule, seen: 0 });
    }

    /// Removes every rule, server and rewriter of `op` (its call count stays).
    pub fn clear(&self, op: &str) {
        lock(&self.inner.state.hooks).remove(op);
    }

    /// Answers `op` ourselves: the handler gets the request's JSON body (`null` when it is not
    /// JSON) and returns `Some(reply)` (its status and JSON body, content type
    /// `application/x-amz-json-1.1` or the request's own `x-amz-json` version) or `None` to
    /// forward as usual. Handlers of one op are asked in the order added.
    pub fn serve(&self, op: &str, handler: impl Fn(&Value) -> Option<Reply> + Send + Sync + 'static) {
        lock(&self.inner.state.hooks)
            .entry(op.to_owned())
            .or_default()
            .servers
            .push(Arc::new(handler));
    }

    /// Forwards `op`, then passes (request JSON, upstream response JSON) through `f` and answers
    /// with what it returns (only for 2xx JSON answers; others pass unchanged). Rewriters of one
    /// op apply in the order added, each to the previous one's output.
    pub fn rewrite(&self, op: &str, f: impl Fn(&Value, Value) -> Value + Send + Sync + 'static) {
        lock(&self.inner.state.hooks)
            .entry(op.to_owned())
            .or_default()
            .rewriters
            .push(Arc::new(f));
    }

    /// From now on S3 form POST uploads ("s3:PostObject") are checked as S3 checks them: the
    /// SigV4 POST policy's signature (with `secret_key`, via
    /// [`outpost_aws::s3::post::post_signature`]), its expiration, and every condition (eq,
    /// starts-with, content-length-range on the file part's length); every form field except
    /// `file`, `policy`, `x-amz-signature` and `x-ignore-*` must be covered by a condition, as S3
    /// requires. A failed check answers 403 with S3's XML error `AccessDenied` "Invalid according
    /// to Policy: ..." and does not reach moto; a passing one is forwarded unchanged. A form that
    /// is not one (not well-formed multipart, no file part, no `key`) gets S3's 400 instead.
    /// Cost: the form is parsed in memory once more per POST (multer), on top of holding it.
    pub fn enforce_post_policies(&self, secret_key: &str) {
        *self
            .inner
            .state
            .post_secret
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(secret_key.to_owned());
    }

    /// Every S3 request (other than a form POST) that carries no SigV4 signature (no
    /// `Authorization` header and no `X-Amz-Signature` query parameter) is answered 403
    /// `AccessDenied` without reaching moto (real S3 does this for a private bucket).
    pub fn deny_anonymous_s3(&self) {
        self.inner.state.deny_anonymous.store(true, Ordering::SeqCst);
    }
}

/// The name of a request's operation:
///
/// - a JSON-protocol request names it in `X-Amz-Target`:
///   `AmazonEC2ContainerServiceV20141113.RunTask` → `ecs:RunTask`, `AmazonSSM.X` → `ssm:X`,
///   `DynamoDB_20120810.X` → `dynamodb:X`, `AmazonSQS.X` → `sqs:X`, any other prefix `json:X`;
/// - anything else is S3, path style `/{bucket}/{key}`: a `multipart/form-data` POST to the
///   bucket → `s3:PostObject`; on a key, GET → `s3:GetObject`, PUT → `s3:PutObject` (with
///   `partNumber` and `uploadId` → `s3:UploadPart`), HEAD → `s3:HeadObject`, DELETE →
///   `s3:DeleteObject`; a GET of the bucket with `list-type=2` → `s3:ListObjectsV2`; a request
///   with a bare sub-resource (`?tagging`, `?uploads`, …) and anything else → `s3:{METHOD}`.
pub fn op_name(headers: &HeaderMap, method: &Method, path_and_query: &str) -> String {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, op) = target.rsplit_once('.').unwrap_or(("", target));
        let service = if prefix.starts_with("AmazonEC2ContainerService") {
            "ecs"
        } else if prefix == "AmazonSSM" {
            "ssm"
        } else if prefix.starts_with("DynamoDB_") {
            "dynamodb"
        } else if prefix == "AmazonSQS" {
            "sqs"
        } else {
            "json"
        };
        return format!("{service}:{op}");
    }
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let params: Vec<(&str, Option<&str>)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
        .collect();
    let has = |name: &str| params.iter().any(|(k, _)| *k == name);
    let bare_subresource = params.iter().any(|(_, v)| v.is_none());
    let (_bucket, key) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    let on_key = !key.is_empty();
    let is_form = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let op = match *method {
        Method::POST if !on_key && is_form => "PostObject",
        _ if bare_subresource => "",
        Method::GET if on_key => "GetObject",
        Method::PUT if on_key && has("partNumber") && has("uploadId") => "UploadPart",
        Method::PUT if on_key => "PutObject",
        Method::HEAD if on_key => "HeadObject",
        Method::DELETE if on_key => "DeleteObject",
        Method::GET if params.iter().any(|(k, v)| *k == "list-type" && *v == Some("2")) => "ListObjectsV2",
        _ => "",
    };
    if op.is_empty() {
        format!("s3:{}", method.as_str())
    } else {
        format!("s3:{op}")
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<State>) {
    // Connections live in the set, so aborting this task ends them too.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                        if let Err(e) = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await
                        {
                            tracing::debug!(error = %e, "aws fault layer: connection ended");
                        }
                    });
                }
                Err(e) => tracing::debug!(error = %e, "aws fault layer: accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A [`Fault::Drop`]: the service fails the connection, so hyper closes it without answering.
#[derive(Debug, thiserror::Error)]
#[error("response dropped by a fault rule")]
struct Dropped;

type Answer = Response<Full<Bytes>>;

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Answer, Dropped> {
    let (parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let op = op_name(&parts.headers, &parts.method, &path_and_query);
    *lock(&state.calls).entry(op.clone()).or_default() += 1;
    let mut fault = None;
    if let Some(hooks) = lock(&state.hooks).get_mut(&op) {
        // Every rule counts the call; the first that fires wins.
        for rule in &mut hooks.rules {
            let fired = rule.fire();
            if fault.is_none() {
                fault = fired;
            }
        }
    }
    let is_s3 = op.starts_with("s3:");
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let answer = error_answer(
                is_s3,
                &parts.headers,
                413,
                "RequestEntityTooLarge",
                &format!("the fault layer holds at most {MAX_BODY} bytes: {e}"),
            );
            tracing::debug!(op, status = 413, "aws fault layer");
            return Ok(answer);
        }
    };
    let answer = match &fault {
        Some(Fault::Error { status, code, message }) => error_answer(is_s3, &parts.headers, *status, code, message),
        _ => answer(&state, &op, &parts, &path_and_query, body).await,
    };
    if fault == Some(Fault::Drop) {
        tracing::debug!(
            op,
            status = "dropped",
            upstream_status = answer.status().as_u16(),
            "aws fault layer"
        );
        return Err(Dropped);
    }
    tracing::debug!(op, status = answer.status().as_u16(), "aws fault layer");
    Ok(answer)
}

/// The answer to a call no error fault took: S3 checks, servers, moto and rewriters.
async fn answer(state: &State, op: &str, parts: &http::request::Parts, path_and_query: &str, body: Bytes) -> Answer {
    if op == "s3:PostObject" {
        let secret = state.post_secret.read().unwrap_or_else(PoisonError::into_inner).clone();
        if let Some(secret) = secret {
            let bucket = path_and_query
                .split('?')
                .next()
                .unwrap_or("")
                .trim_matches('/')
                .to_owned();
            if let Err(refusal) = check_form_post(&secret, &bucket, &parts.headers, body.clone(), Utc::now()).await {
                return s3_error(refusal.status, refusal.code, &refusal.message);
            }
        }
    } else if op.starts_with("s3:") && state.deny_anonymous.load(Ordering::SeqCst) && !is_signed(parts, path_and_query)
    {
        return s3_error(403, "AccessDenied", "Access Denied");
    }

    let (servers, rewriters) = match lock(&state.hooks).get(op) {
        Some(h) => (h.servers.clone(), h.rewriters.clone()),
        None => (Vec::new(), Vec::new()),
    };
    let request_json = if servers.is_empty() && rewriters.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or(Value::Null)
    };
    for server in &servers {
        if let Some(reply) = server(&request_json) {
            return json_answer(&parts.headers, reply.status, &reply.body);
        }
    }

    let (status, headers, upstream_body) = match forward(state, parts, path_and_query, body).await {
        Ok(forwarded) => forwarded,
        Err(e) => {
            let message = format!("the fault layer could not reach the upstream: {e}");
            return error_answer(op.starts_with("s3:"), &parts.headers, 502, "BadGateway", &message);
        }
    };
    if !rewriters.is_empty() && status.is_success() {
        if let Ok(mut json) = serde_json::from_slice::<Value>(&upstream_body) {
            for rewriter in &rewriters {
                json = rewriter(&request_json, json);
            }
            let mut answer = Response::new(Full::new(Bytes::from(json.to_string())));
            *answer.status_mut() = status;
            for (name, value) in &headers {
                // The body changed: its length and checksums are hyper's and no one's.
                if name != CONTENT_LENGTH && name.as_str() != "x-amz-crc32" && name.as_str() != "content-md5" {
                    answer.headers_mut().append(name.clone(), value.clone());
                }
            }
            return answer;
        }
    }
    let mut answer = Response::new(Full::new(upstream_body));
    *answer.status_mut() = status;
    *answer.headers_mut() = headers;
    answer
}

/// Headers that belong to one connection, not to the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "transfer-encoding" | "te" | "trailer" | "upgrade"
    )
}

/// Sends the request to the upstream; its status, headers (hop-by-hop ones removed) and body.
async fn forward(
    state: &State,
    parts: &http::request::Parts,
    path_and_query: &str,
    body: Bytes,
) -> Result<(StatusCode, HeaderMap, Bytes), reqwest::Error> {
    let url = format!("{}{}", state.upstream, path_and_query);
    let mut request = state.client.request(parts.method.clone(), url);
    let mut headers = HeaderMap::new();
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) && name != HOST && name != CONTENT_LENGTH {
            headers.append(name.clone(), value.clone());
        }
    }
    request = request.headers(headers);
    if !body.is_empty() || parts.headers.contains_key(CONTENT_LENGTH) {
        request = request.body(body);
    }
    let response = request.send().await?;
    let status = response.status();
    let mut headers = HeaderMap::new();
    for (name, value) in response.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = response.bytes().await?;
    if parts.method != Method::HEAD {
        // The body is whole now: hyper sets its length (a HEAD keeps the object's).
        headers.remove(CONTENT_LENGTH);
    }
    Ok((status, headers, body))
}

/// Whether an S3 request carries a SigV4 signature (header or query).
fn is_signed(parts: &http::request::Parts, path_and_query: &str) -> bool {
    parts.headers.contains_key(http::header::AUTHORIZATION)
        || path_and_query.split_once('?').is_some_and(|(_, q)| {
            q.split('&')
                .any(|p| p.to_ascii_lowercase().starts_with("x-amz-signature="))
        })
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// S3's XML error.
fn s3_error(status: u16, code: &str, message: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>\
         <RequestId>outpost-fault-layer</RequestId></Error>",
        xml_escape(code),
        xml_escape(message)
    );
    let mut answer = Response::new(Full::new(Bytes::from(body)));
    *answer.status_mut() = status_code(status);
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
    answer
}

/// A JSON-protocol answer in the request's `x-amz-json` version; an error one (`__type` in the
/// body, status ≥ 300) also names its code in `x-amzn-ErrorType`.
fn json_answer(request_headers: &HeaderMap, status: u16, body: &Value) -> Answer {
    let content_type = request_headers
        .get(CONTENT_TYPE)
        .filter(|v| v.to_str().is_ok_and(|s| s.starts_with("application/x-amz-json")))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(JSON_1_1));
    let mut answer = Response::new(Full::new(Bytes::from(body.to_string())));
    *answer.status_mut() = status_code(status);
    answer.headers_mut().insert(CONTENT_TYPE, content_type);
    if status >= 300 {
        if let Some(code) = body
            .get("__type")
            .and_then(Value::as_str)
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            answer.headers_mut().insert("x-amzn-errortype", code);
        }
    }
    answer
}

/// An error in the service's own shape.
fn error_answer(is_s3: bool, request_headers: &HeaderMap, status: u16, code: &str, message: &str) -> Answer {
    if is_s3 {
        s3_error(status, code, message)
    } else {
        json_answer(
            request_headers,
            status,
            &serde_json::json!({ "__type": code, "message": message }),
        )
    }
}

/// Why a form POST is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: u16,
    code: &'static str,
    message: String,
}

fn denied(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 403,
        code: "AccessDenied",
        message: message.into(),
    }
}

fn malformed(message: impl Into<String>) -> Refusal {
    Refusal {
        status: 400,
        code: "MalformedPOSTRequest",
        message: message.into(),
    }
}

/// Reads a form POST (fields up to the file, which S3 requires last, and the file's length) and
/// checks it against its policy.
async fn check_form_post(
    secret: &str,
    bucket: &str,
    headers: &HeaderMap,
    body: Bytes,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|e| malformed(e.to_string()))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut form = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    let mut file_len = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => {
                return Err(malformed(format!(
                    "The body of your POST request is not well-formed multipart/form-data: {e}"
                )))
            }
        };
        let name = field.name().unwrap_or("").to_owned();
        let data = field.bytes().await.map_err(|e| malformed(e.to_string()))?;
        if name.eq_ignore_ascii_case("file") {
            // S3 ignores any field after the file.
            file_len = Some(data.len() as u64);
            break;
        }
        fields.push((name, String::from_utf8_lossy(&data).into_owned()));
    }
    let file_len = file_len.ok_or_else(|| malformed("POST requires exactly one file upload per request."))?;
    check_policy(secret, bucket, &fields, file_len, now)
}

/// Checks the non-file fields of a form POST (and its file's length) as S3 does.
fn check_policy(
    secret: &str,
    bucket: &str,
    fields: &[(String, String)],
    file_len: u64,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    let get = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let policy_b64 = get("policy").ok_or_else(|| denied("Access Denied (an anonymous POST: no policy)"))?;
    if get("key").is_none() {
        return Err(Refusal {
            status: 400,
            code: "InvalidArgument",
            message: "Bucket POST must contain a field named 'key'.".to_owned(),
        });
    }

    // The signature, over the policy exactly as sent.
    if get("x-amz-algorithm") != Some(outpost_aws::s3::post::ALGORITHM) {
        return Err(denied(
            "Invalid according to Policy: x-amz-algorithm must be AWS4-HMAC-SHA256",
        ));
    }
    let credential = get("x-amz-credential").unwrap_or("");
    let scope: Vec<&str> = credential.split('/').collect();
    let [_access_key, date, region, "s3", "aws4_request"] = scope.as_slice() else {
        return Err(denied(format!(
            "Invalid according to Policy: bad x-amz-credential {credential:?}"
        )));
    };
    if !get("x-amz-date").is_some_and(|d| d.starts_with(date)) {
        return Err(denied(
            "Invalid according to Policy: x-amz-date is not the credential's date",
        ));
    }
    let Some(expected) = outpost_aws::s3::post::post_signature(secret, date, region, policy_b64) else {
        return Err(denied(format!(
            "Invalid according to Policy: bad date in x-amz-credential {credential:?}"
        )));
    };
    if get("x-amz-signature").map(str::to_ascii_lowercase) != Some(expected) {
        return Err(denied("Invalid according to Policy: Policy Signature does not match"));
    }

    // The policy itself.
    use base64::Engine;
    let policy: Value = base64::engine::general_purpose::STANDARD
        .decode(policy_b64)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .ok_or_else(|| denied("Invalid Policy: Invalid JSON."))?;
    let expiration = policy
        .get("expiration")
        .and_then(Value::as_str)
        .ok_or_else(|| denied("Invalid Policy: Policy missing expiration."))?;
    let expiration =
        DateTime::parse_from_rfc3339(expiration).map_err(|_| denied("Invalid Policy: Invalid 'expiration' value."))?;
    if now >= expiration {
        return Err(denied("Invalid according to Policy: Policy expired."));
    }
    let conditions = policy
        .get("conditions")
        .and_then(Value::as_array)
        .ok_or_else(|| denied("Invalid Policy: Policy missing conditions."))?;

    let value_of = |name: &str| -> String {
        if name.eq_ignore_ascii_case("bucket") {
            bucket.to_owned()
        } else {
            get(name).unwrap_or("").to_owned()
        }
    };
    let failed = |c: &Value| denied(format!("Invalid according to Policy: Policy Condition failed: {c}"));
    let invalid = |c: &Value| denied(format!("Invalid Policy: Invalid Condition: {c}"));
    let mut covered: Vec<String> = Vec::new();
    for condition in conditions {
        match condition {
            Value::Object(pairs) => {
                for (name, want) in pairs {
                    let want = want.as_str().ok_or_else(|| invalid(condition))?;
                    if value_of(name) != want {
                        return Err(failed(condition));
                    }
                    covered.push(name.to_ascii_lowercase());
                }
            }
            Value::Array(items) => {
                let op = items.first().and_then(Value::as_str).unwrap_or("").to_ascii_lowercase();
                if op == "content-length-range" {
                    let (Some(min), Some(max)) = (
                        items.get(1).and_then(Value::as_u64),
                        items.get(2).and_then(Value::as_u64),
                    ) else {
                        return Err(invalid(condition));
                    };
                    if file_len < min || file_len > max {
                        return Err(failed(condition));
                    }
                    continue;
                }
                let (Some(field), Some(want), 3) = (
                    items.get(1).and_then(Value::as_str).and_then(|f| f.strip_prefix('$')),
                    items.get(2).and_then(Value::as_str),
                    items.len(),
                ) else {
                    return Err(invalid(condition));
                };
                let have = value_of(field);
                let ok = match op.as_str() {
                    "eq" => have == want,
                    "starts-with" => have.starts_with(want),
                    _ => return Err(invalid(condition)),
                };
                if !ok {
                    return Err(failed(condition));
                }
                covered.push(field.to_ascii_lowercase());
            }
            _ => return Err(invalid(condition)),
        }
    }

    let extra: Vec<&str> = fields
        .iter()
        .map(|(name, _)| name.as_str())
        .filter(|name| {
            let lower = name.to_ascii_lowercase();
            !matches!(lower.as_str(), "file" | "policy" | "x-amz-signature")
                && !lower.starts_with("x-ignore-")
                && !covered.contains(&lower)
        })
        .collect();
    if !extra.is_empty() {
        return Err(denied(format!(
            "Invalid according to Policy: Extra input fields: {}",
            extra.join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_aws::s3::post::{sign_post, PresignedPost};
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn json_ops_are_named_by_their_target() {
        let op = |target: &'static str| op_name(&headers(&[("x-amz-target", target)]), &Method::POST, "/");
        assert_eq!(op("AmazonEC2ContainerServiceV20141113.RunTask"), "ecs:RunTask");
        assert_eq!(op("AmazonSSM.GetCommandInvocation"), "ssm:GetCommandInvocation");
        assert_eq!(op("DynamoDB_20120810.UpdateItem"), "dynamodb:UpdateItem");
        assert_eq!(op("AmazonSQS.ReceiveMessage"), "sqs:ReceiveMessage");
        assert_eq!(op("Logs_20140328.PutLogEvents"), "json:PutLogEvents");
    }

    #[test]
    fn s3_ops_are_named_by_method_and_path() {
        let none = HeaderMap::new();
        let form = headers(&[("content-type", "multipart/form-data; boundary=x")]);
        let op = |h: &HeaderMap, m: Method, p: &str| op_name(h, &m, p);
        assert_eq!(op(&form, Method::POST, "/b"), "s3:PostObject");
        assert_eq!(op(&form, Method::POST, "/b/"), "s3:PostObject");
        assert_eq!(
            op(&none, Method::GET, "/b/runs/t/r/out.log?x-id=GetObject"),
            "s3:GetObject"
        );
        assert_eq!(op(&none, Method::PUT, "/b/k?x-id=PutObject"), "s3:PutObject");
        assert_eq!(
            op(&none, Method::PUT, "/b/k?partNumber=1&uploadId=u&x-id=UploadPart"),
            "s3:UploadPart"
        );
        assert_eq!(op(&none, Method::HEAD, "/b/k"), "s3:HeadObject");
        assert_eq!(op(&none, Method::DELETE, "/b/k?x-id=DeleteObject"), "s3:DeleteObject");
        assert_eq!(
            op(&none, Method::GET, "/b?list-type=2&prefix=live%2F"),
            "s3:ListObjectsV2"
        );
        assert_eq!(op(&none, Method::GET, "/b?encryption"), "s3:GET");
        assert_eq!(op(&none, Method::POST, "/b/k?uploads"), "s3:POST");
        assert_eq!(op(&none, Method::PUT, "/b"), "s3:PUT");
        assert_eq!(op(&none, Method::POST, "/b"), "s3:POST", "not a form");
    }

    fn signed(now: DateTime<Utc>, max_bytes: u64) -> PresignedPost {
        sign_post(
            "testing",
            "testing",
            Some("tok"),
            "us-east-1",
            "http://x/b",
            "b",
            "runs/t/r/",
            Duration::from_secs(600),
            max_bytes,
            now,
        )
        .expect("signed")
    }

    fn form(post: &PresignedPost, key: &str) -> Vec<(String, String)> {
        let mut fields = post.fields.clone();
        fields.push(("key".into(), key.into()));
        fields.push(("Content-Type".into(), "text/plain".into()));
        fields
    }

    fn refused(result: Result<(), Refusal>) -> String {
        match result {
            Err(r) => {
                assert_eq!((r.status, r.code), (403, "AccessDenied"), "{}", r.message);
                r.message
            }
            Ok(()) => panic!("the POST passed"),
        }
    }

    #[test]
    fn a_signed_post_passes_and_every_break_is_refused() {
        let now = Utc::now();
        let post = signed(now, 10);
        assert_eq!(
            check_policy("testing", "b", &form(&post, "runs/t/r/a"), 10, now),
            Ok(())
        );
        let mut ignored = form(&post, "runs/t/r/a");
        ignored.push(("x-ignore-note".into(), "anything".into()));
        assert_eq!(check_policy("testing", "b", &ignored, 0, now), Ok(()));

        let msg = refused(check_policy("testing", "b", &form(&post, "runs/t/other/a"), 1, now));
        assert!(msg.contains("Policy Condition failed") && msg.contains("$key"), "{msg}");
        let msg = refused(check_policy("testing", "other", &form(&post, "runs/t/r/a"), 1, now));
        assert!(msg.contains("bucket"), "{msg}");
        let msg = refused(check_policy("testing", "b", &form(&post, "runs/t/r/a"), 11, now));
        assert!(msg.contains("content-length-range"), "{msg}");
        let msg = refused(check_policy("wrong", "b", &form(&post, "runs/t/r/a"), 1, now));
        assert!(msg.contains("Signature"), "{msg}");
        let later = now + chrono::Duration::seconds(601);
        let msg = refused(check_policy("testing", "b", &form(&post, "runs/t/r/a"), 1, later));
        assert!(msg.contains("expired"), "{msg}");

        let mut extra = form(&post, "runs/t/r/a");
        extra.push(("x-amz-meta-owner".into(), "me".into()));
        let msg = refused(check_policy("testing", "b", &extra, 1, now));
        assert!(msg.contains("Extra input fields: x-amz-meta-owner"), "{msg}");

        let mut no_sse = form(&post, "runs/t/r/a");
        no_sse.retain(|(k, _)| k != "x-amz-server-side-encryption");
        let msg = refused(check_policy("testing", "b", &no_sse, 1, now));
        assert!(msg.contains("x-amz-server-side-encryption"), "{msg}");

        let mut no_token = form(&post, "runs/t/r/a");
        no_token.retain(|(k, _)| k != "x-amz-security-token");
        refused(check_policy("testing", "b", &no_token, 1, now));
    }

    #[test]
    fn errors_have_the_services_shape() {
        let json = error_answer(
            false,
            &headers(&[("content-type", "application/x-amz-json-1.0")]),
            400,
            "ThrottlingException",
            "Rate exceeded",
        );
        assert_eq!(json.status(), 400);
        assert_eq!(json.headers()["x-amzn-errortype"], "ThrottlingException");
        assert_eq!(json.headers()[CONTENT_TYPE], "application/x-amz-json-1.0");
        let xml = s3_error(
            403,
            "AccessDenied",
            "Invalid according to Policy: [\"eq\", \"$key\", \"a<b\"]",
        );
        assert_eq!(xml.headers()[CONTENT_TYPE], "application/xml");
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
