//! An emulator of AWS Lambda behind an API Gateway HTTP API (payload format 2.0), to test a
//! Lambda function's real binary (Outpost's `ingest-lambda`, or any program built on a Lambda
//! runtime client) on a machine with no AWS and no Docker. Dev-only, behind the testkit feature
//! `lambda-gateway`.
//!
//! [`LambdaGateway::start`] does what the two services do for one function:
//!
//! - **Lambda Runtime API** (<https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html>):
//!   one loopback endpoint per instance (each sandbox has its own in AWS too), all fed from one
//!   queue of events. `GET /2018-06-01/runtime/invocation/next` long-polls for the next event and
//!   answers it with the `Lambda-Runtime-*` headers; `POST …/invocation/{id}/response`,
//!   `POST …/invocation/{id}/error` and `POST …/init/error` complete it. Several concurrent `next`
//!   callers per endpoint work (lambda_runtime's `AWS_LAMBDA_MAX_CONCURRENCY`).
//! - **The function**: `instances` child processes, each given a clean-ish environment (only
//!   `PATH`, `HOME`, `TMPDIR` and the log/backtrace variables of the test process are kept) with
//!   the variables the Lambda service sets (`AWS_LAMBDA_RUNTIME_API` pointing at its endpoint,
//!   `AWS_LAMBDA_FUNCTION_NAME`, `LAMBDA_TASK_ROOT`, …), then the function's own configuration.
//!   With one instance, invocations are serialized, as on one Lambda sandbox. A child that exits
//!   fails its in-flight invocation (502) and is not restarted.
//! - **API Gateway HTTP API** front (loopback, plain HTTP): every request becomes a payload 2.0
//!   event (`routeKey` and `stage` `$default`), and the function's answer the HTTP response, with
//!   the services' real limits and error answers:
//!
//! | Condition                                                         | Answer                                         |
//! |-------------------------------------------------------------------|------------------------------------------------|
//! | request body over 10 MB (HTTP API payload quota)                  | 413 `{"message":"Request Entity Too Large"}`   |
//! | event over 6 MB (Lambda synchronous invocation payload)           | 413 `{"message":"Request Entity Too Large"}`   |
//! | function error (`/error`), instance exited, invalid response      | 502 `{"message":"Internal Server Error"}`      |
//! | response over 6 MB (Lambda's limit: 6,291,556 bytes)              | 502 (and 413 to the function's `/response`)    |
//! | no response within the integration timeout (30 s by default)      | 503 `{"message":"Service Unavailable"}`        |
//!
//! Every front response carries `apigw-requestid` (= the event's `requestContext.requestId`), as
//! HTTP APIs do. Not emulated: authorizers, routes other than `$default`, custom domains, TLS,
//! restarting crashed instances, scaling beyond the fixed instance count, cold starts and
//! freezing between invocations, memory and CPU limits (`memory_mb` is only reported to the
//! function), CloudWatch logs (the function's output goes to the test's stderr or
//! [`GatewayConfig::function_log`]), AWS credentials.
//!
//! [`LambdaGateway::without_function`] opens the endpoints without starting any process, so a test
//! can play the function itself over the Runtime API (to provoke errors, timeouts, huge answers).
//!
//! Costs: three loopback servers (front + one Runtime API per instance) on the caller's tokio
//! runtime, one task polling the instances every 50 ms, every request and response held in memory
//! (up to the limits above). The emulator's own diagnostics (instance exits, failed, refused or
//! timed-out invocations) are `tracing` events of this module's target; bodies are never logged.

use crate::lock;
use crate::process::KillOnDrop;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::header::{HeaderName, CONTENT_TYPE, COOKIE, SET_COOKIE, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Largest event (the JSON the function receives) of a synchronous invocation: 6 MB.
pub const MAX_EVENT_BYTES: usize = 6 * 1024 * 1024;
/// Largest function response of a synchronous invocation: 6 MB (Lambda reports it as
/// "maximum allowed payload size (6291556 bytes)").
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;
/// Largest request body an HTTP API accepts: 10 MB.
pub const MAX_HTTP_BODY_BYTES: usize = 10 * 1024 * 1024;
/// Default (and maximum) integration timeout of an HTTP API: 30 s.
pub const DEFAULT_INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

const RUNTIME_PREFIX: &str = "/2018-06-01/runtime";
const ACCOUNT_ID: &str = "123456789012";
const API_ID: &str = "outpostlcl";
/// Environment variables of the test process passed on to the function.
const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "OUTPOST_LOG",
    "LLVM_PROFILE_FILE",
];

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("a Lambda function needs at least one instance")]
    NoInstances,
    #[error("cannot serve on a loopback port")]
    Listen(#[source] std::io::Error),
    #[error("cannot open the function log {}", path.display())]
    FunctionLog {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {}", program.display())]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the function failed its init: {error_type}: {message}")]
    InitFailed { error_type: String, message: String },
    #[error("instance {instance} exited during init: {status}")]
    ExitedDuringInit { instance: usize, status: String },
    #[error("the function did not poll for events within {0:?}")]
    InitTimeout(Duration),
}

/// The function: a program started as `instances` Lambda sandboxes.
#[derive(Debug, Clone)]
pub struct LambdaFunction {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Function configuration variables, added after the Lambda ones (so they may override them).
    pub env: Vec<(String, String)>,
    /// Number of processes (sandboxes), each with its own Runtime API endpoint; at least 1.
    pub instances: usize,
}

impl LambdaFunction {
    /// One instance of `program`, no arguments, no extra environment.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            instances: 1,
        }
    }
}

/// Settings of the emulated services.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// API Gateway's integration timeout (503 after it); also the function's deadline.
    pub integration_timeout: Duration,
    /// How long [`LambdaGateway::start`] waits for every instance's first `next` call.
    pub init_timeout: Duration,
    pub function_name: String,
    pub region: String,
    pub memory_mb: u32,
    /// Append the function's stdout and stderr to this file instead of the test's stderr.
    pub function_log: Option<PathBuf>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            integration_timeout: DEFAULT_INTEGRATION_TIMEOUT,
            init_timeout: Duration::from_secs(10),
            function_name: "outpost-api".to_owned(),
            region: "us-east-1".to_owned(),
            memory_mb: 512,
            function_log: None,
        }
    }
}

/// One event handed to the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Index of the instance (Runtime API endpoint) that took it.
    pub instance: usize,
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub aws_request_id: String,
    /// `requestContext.requestId`, also the front's `apigw-requestid` header.
    pub api_request_id: String,
}

/// An error the function reported through `/invocation/{id}/error` or `/init/error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    /// The invocation, or `None` for an init error.
    pub aws_request_id: Option<String>,
    pub error_type: String,
    pub message: String,
}

/// The running emulator; stops its servers and kills the function's processes when dropped.
pub struct LambdaGateway {
    url: String,
    runtime_apis: Vec<SocketAddr>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl LambdaGateway {
    /// Starts the services and `function.instances` processes, and waits until every instance
    /// polls for its first event (its init is done).
    pub async fn start(function: LambdaFunction) -> Result<Self, GatewayError> {
        Self::start_with(function, GatewayConfig::default()).await
    }

    /// [`LambdaGateway::start`] with other settings.
    pub async fn start_with(function: LambdaFunction, config: GatewayConfig) -> Result<Self, GatewayError> {
        if function.instances == 0 {
            return Err(GatewayError::NoInstances);
        }
        let init_timeout = config.init_timeout;
        let mut gateway = Self::open(function.instances, config, true).await?;
        for instance in 0..function.instances {
            let spawned_at = Instant::now();
            let child = gateway.spawn_instance(&function, instance)?;
            let mut instances = gateway.shared.lock_instances();
            instances[instance].spawned_at = Some(spawned_at);
            instances[instance].process = Some(child);
        }
        gateway
            .tasks
            .push(tokio::spawn(watch_instances(Arc::clone(&gateway.shared))));
        gateway.wait_ready(init_timeout).await?;
        Ok(gateway)
    }

    /// The services with `endpoints` Runtime API endpoints and no process: the test plays the
    /// function through [`LambdaGateway::runtime_api`].
    pub async fn without_function(endpoints: usize, config: GatewayConfig) -> Result<Self, GatewayError> {
        Self::open(endpoints, config, false).await
    }

    /// `http://127.0.0.1:PORT` of the API Gateway front.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `127.0.0.1:PORT` of instance `instance`'s Runtime API (the `AWS_LAMBDA_RUNTIME_API` value).
    pub fn runtime_api(&self, instance: usize) -> Option<String> {
        self.runtime_apis.get(instance).map(SocketAddr::to_string)
    }

    /// How many events were delivered to the function.
    pub fn invocations(&self) -> usize {
        self.shared.lock_deliveries().len()
    }

    /// Every delivered event, in delivery order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared.lock_deliveries().clone()
    }

    /// How long instance `instance` took from its start to its first `next` (its init, as
    /// Lambda reports `Init Duration`), once it has polled.
    pub fn init_duration(&self, instance: usize) -> Option<Duration> {
        let instances = self.shared.lock_instances();
        let state = instances.get(instance)?;
        Some(state.first_poll_at?.saturating_duration_since(state.spawned_at?))
    }

    /// The process id of instance `instance`, while it runs (e.g. to read its memory from
    /// `/proc/{pid}/status`).
    pub fn pid(&self, instance: usize) -> Option<u32> {
        let instances = self.shared.lock_instances();
        let state = instances.get(instance)?;
        if state.exited.is_some() {
            return None;
        }
        state.process.as_ref().map(|p| p.0.id())
    }

    /// Errors the function reported (invocation and init errors), in order.
    pub fn function_errors(&self) -> Vec<FunctionError> {
        lock(&self.shared.errors).clone()
    }

    async fn open(endpoints: usize, config: GatewayConfig, spawned: bool) -> Result<Self, GatewayError> {
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            config,
            spawned,
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            pending: Mutex::new(HashMap::new()),
            deliveries: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            instances: Mutex::new((0..endpoints).map(|_| InstanceState::default()).collect()),
        });
        let mut tasks = Vec::new();
        let mut runtime_apis = Vec::new();
        for instance in 0..endpoints {
            let app = runtime_router(Arc::clone(&shared), instance);
            let (addr, task) = serve(app).await?;
            runtime_apis.push(addr);
            tasks.push(task);
        }
        let (front_addr, task) = serve(front_router(Arc::clone(&shared))).await?;
        tasks.push(task);
        Ok(Self {
            url: format!("http://{front_addr}"),
            runtime_apis,
            shared,
            tasks,
        })
    }

    fn spawn_instance(&self, function: &LambdaFunction, instance: usize) -> Result<KillOnDrop, GatewayError> {
        let config = &self.shared.config;
        let task_root = function
            .program
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cmd = Command::new(&function.program);
        cmd.args(&function.args).env_clear().current_dir(&task_root);
        for name in KEPT_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        let runtime_api = self.runtime_apis[instance].to_string();
        let log_stream = format!(
            "{}/[$LATEST]{:032x}",
            Utc::now().format("%Y/%m/%d"),
            ulid::Ulid::new().0
        );
        cmd.env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.function_name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", config.memory_mb.to_string())
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", config.function_name),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", log_stream)
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("AWS_REGION", &config.region)
            .env("AWS_DEFAULT_REGION", &config.region)
            .env("_HANDLER", "bootstrap")
            .env("LAMBDA_TASK_ROOT", &task_root)
            .env("TZ", ":UTC")
            .envs(function.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        match &config.function_log {
            Some(path) => {
                let log_error = |source| GatewayError::FunctionLog {
                    path: path.clone(),
                    source,
                };
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(log_error)?;
                cmd.stdout(file.try_clone().map_err(log_error)?).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
        }
        let child = cmd.spawn().map_err(|source| GatewayError::Spawn {
            program: function.program.clone(),
            source,
        })?;
        Ok(KillOnDrop(child))
    }

    /// Waits until every instance has called `next` once; fails on an init error or an exit.
    async fn wait_ready(&self, timeout: Duration) -> Result<(), GatewayError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(error) = lock(&self.shared.errors).iter().find(|e| e.aws_request_id.is_none()) {
                return Err(GatewayError::InitFailed {
                    error_type: error.error_type.clone(),
                    message: error.message.clone(),
                });
            }
            {
                let instances = self.shared.lock_instances();
                if let Some((i, state)) = instances.iter().enumerate().find(|(_, s)| s.exited.is_some()) {
                    return Err(GatewayError::ExitedDuringInit {
                        instance: i,
                        status: state.exited.clone().unwrap_or_else(|| "?".to_owned()),
                    });
                }
                if instances.iter().all(|s| s.polled.load(Ordering::SeqCst)) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(GatewayError::InitTimeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for LambdaGateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Dropping the handles kills and reaps the processes.
        for state in self.shared.lock_instances().iter_mut() {
            state.process.take();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared state

/// What became of an invocation.
#[derive(Debug)]
enum Outcome {
    /// The function's response payload.
    Response(Bytes),
    /// A function error, an instance exit or a response Lambda refused.
    Failed(String),
}

/// An event waiting in the queue.
#[derive(Debug)]
struct Invocation {
    aws_request_id: String,
    api_request_id: String,
    event: Bytes,
    deadline_ms: i64,
    trace_id: String,
}

/// An invocation not completed yet: whom to tell, and which instance holds it.
struct Pending {
    reply: oneshot::Sender<Outcome>,
    instance: Option<usize>,
}

#[derive(Default)]
struct InstanceState {
    /// Called `next` at least once (init done).
    polled: AtomicBool,
    /// When the process was started, and when it first called `next`.
    spawned_at: Option<Instant>,
    first_poll_at: Option<Instant>,
    process: Option<KillOnDrop>,
    /// How the process ended, once it has.
    exited: Option<String>,
}

struct Shared {
    config: GatewayConfig,
    /// Whether the gateway runs processes (else a test plays the function).
    spawned: bool,
    queue_tx: mpsc::UnboundedSender<Invocation>,
    queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, Pending>>,
    deliveries: Mutex<Vec<Delivery>>,
    errors: Mutex<Vec<FunctionError>>,
    instances: Mutex<Vec<InstanceState>>,
}

impl Shared {
    fn lock_instances(&self) -> MutexGuard<'_, Vec<InstanceState>> {
        lock(&self.instances)
    }

    fn lock_deliveries(&self) -> MutexGuard<'_, Vec<Delivery>> {
        lock(&self.deliveries)
    }

    /// Whether every process of the function has exited.
    fn function_gone(&self) -> bool {
        self.spawned && self.lock_instances().iter().all(|s| s.exited.is_some())
    }

    /// Queues an event; the receiver yields the function's outcome.
    fn invoke(&self, event: Bytes, api_request_id: &str) -> (String, oneshot::Receiver<Outcome>) {
        let aws_request_id = uuid_like(ulid::Ulid::new().0);
        let (reply, outcome) = oneshot::channel();
        lock(&self.pending).insert(aws_request_id.clone(), Pending { reply, instance: None });
        let deadline = Utc::now() + self.config.integration_timeout;
        let invocation = Invocation {
            aws_request_id: aws_request_id.clone(),
            api_request_id: api_request_id.to_owned(),
            event,
            deadline_ms: deadline.timestamp_millis(),
            trace_id: trace_id(),
        };
        // The receiver lives as long as `self`, so sending cannot fail.
        let _ = self.queue_tx.send(invocation);
        (aws_request_id, outcome)
    }

    /// Marks `id` as taken by `instance`; false if nobody waits for it any more.
    fn claim(&self, id: &str, instance: usize) -> bool {
        match lock(&self.pending).get_mut(id) {
            Some(pending) => {
                pending.instance = Some(instance);
                true
            }
            None => false,
        }
    }

    /// Completes `id`; false if it is unknown (never queued, already completed or abandoned).
    fn complete(&self, id: &str, outcome: Outcome) -> bool {
        match lock(&self.pending).remove(id) {
            Some(pending) => {
                // The front may have stopped waiting (client gone): nothing to tell then.
                let _ = pending.reply.send(outcome);
                true
            }
            None => false,
        }
    }

    fn abandon(&self, id: &str) {
        lock(&self.pending).remove(id);
    }

    /// Fails the invocations `instance` holds.
    fn fail_instance(&self, instance: usize, why: &str) {
        let ids: Vec<String> = lock(&self.pending)
            .iter()
            .filter(|(_, p)| p.instance == Some(instance))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            self.complete(&id, Outcome::Failed(why.to_owned()));
        }
    }

    /// Fails queued events (when no instance is left to take them).
    fn fail_queued(&self, why: &str) {
        let Ok(mut queue) = self.queue_rx.try_lock() else {
            return; // A `next` call holds the queue, so an instance is alive.
        };
        while let Ok(invocation) = queue.try_recv() {
            self.complete(&invocation.aws_request_id, Outcome::Failed(why.to_owned()));
        }
    }
}

/// Removes the pending invocation if the front stops waiting (timeout or client gone).
struct PendingGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.shared.abandon(&self.id);
    }
}

/// Notices exited instances: logs, fails what they held and, once none is left, the queue.
async fn watch_instances(shared: Arc<Shared>) {
    loop {
        for (i, state) in shared.lock_instances().iter_mut().enumerate() {
            let Some(process) = state.process.as_mut() else {
                continue;
            };
            let status = match process.0.try_wait() {
                Ok(Some(status)) => status.to_string(),
                Ok(None) => continue,
                Err(e) => format!("cannot wait: {e}"),
            };
            tracing::warn!(instance = i, %status, "lambda-gateway: instance exited");
            state.exited = Some(status);
            state.process = None;
        }
        // Every round: a dead instance's `next` call may still have taken an event.
        let dead: Vec<usize> = shared
            .lock_instances()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.exited.is_some())
            .map(|(i, _)| i)
            .collect();
        for i in dead {
            shared.fail_instance(i, "Runtime.ExitError");
        }
        if shared.function_gone() {
            shared.fail_queued("Runtime.ExitError");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves `app` on a free loopback port.
async fn serve(app: Router) -> Result<(SocketAddr, JoinHandle<()>), GatewayError> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(GatewayError::Listen)?;
    let addr = listener.local_addr().map_err(GatewayError::Listen)?;
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, service).await {
            tracing::error!(%addr, error = %e, "lambda-gateway: server failed");
        }
    });
    Ok((addr, task))
}

// ---------------------------------------------------------------------------------------------
// Lambda Runtime API

#[derive(Clone)]
struct Endpoint {
    shared: Arc<Shared>,
    instance: usize,
}

fn runtime_router(shared: Arc<Shared>, instance: usize) -> Router {
    Router::new()
        .route(&format!("{RUNTIME_PREFIX}/invocation/next"), get(next_invocation))
        .route(
            &format!("{RUNTIME_PREFIX}/invocation/{{id}}/response"),
            post(invocation_response),
        )
        .route(
            &format!("{RUNTIME_PREFIX}/invocation/{{id}}/error"),
            post(invocation_error),
        )
        .route(&format!("{RUNTIME_PREFIX}/init/error"), post(init_error))
        .fallback(|| async { runtime_error(StatusCode::NOT_FOUND, "NotFound", "no such Runtime API path") })
        .with_state(Endpoint { shared, instance })
}

/// A Runtime API error body.
fn runtime_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"errorType": error_type, "errorMessage": message})),
    )
        .into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"}))).into_response()
}

/// `GET /invocation/next`: waits for an event (skipping ones nobody waits for any more).
async fn next_invocation(State(endpoint): State<Endpoint>) -> Response {
    let shared = &endpoint.shared;
    if let Some(state) = shared.lock_instances().get_mut(endpoint.instance) {
        state.polled.store(true, Ordering::SeqCst);
        state.first_poll_at.get_or_insert_with(Instant::now);
    }
    loop {
        let received = shared.queue_rx.lock().await.recv().await;
        let Some(invocation) = received else {
            return runtime_error(StatusCode::INTERNAL_SERVER_ERROR, "ServiceError", "queue closed");
        };
        if !shared.claim(&invocation.aws_request_id, endpoint.instance) {
            continue;
        }
        shared.lock_deliveries().push(Delivery {
            instance: endpoint.instance,
            aws_request_id: invocation.aws_request_id.clone(),
            api_request_id: invocation.api_request_id.clone(),
        });
        return event_response(&shared.config, invocation);
    }
}

fn event_response(config: &GatewayConfig, invocation: Invocation) -> Response {
    let arn = format!(
        "arn:aws:lambda:{}:{ACCOUNT_ID}:function:{}",
        config.region, config.function_name
    );
    (
        [
            (CONTENT_TYPE, "application/json".to_owned()),
            (
                HeaderName::from_static("lambda-runtime-aws-request-id"),
                invocation.aws_request_id,
            ),
            (
                HeaderName::from_static("lambda-runtime-deadline-ms"),
                invocation.deadline_ms.to_string(),
            ),
            (HeaderName::from_static("lambda-runtime-invoked-function-arn"), arn),
            (HeaderName::from_static("lambda-runtime-trace-id"), invocation.trace_id),
        ],
        invocation.event,
    )
        .into_response()
}

/// `POST /invocation/{id}/response`: 202, 400 for an unknown id, 413 over the response limit.
async fn invocation_response(State(endpoint): State<Endpoint>, Path(id): Path<String>, body: Body) -> Response {
    let shared = &endpoint.shared;
    let Ok(payload) = axum::body::to_bytes(body, MAX_RESPONSE_BYTES).await else {
        let message =
            format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).");
        tracing::warn!(invocation = %id, "lambda-gateway: {message}");
        shared.complete(&id, Outcome::Failed("Function.ResponseSizeTooLarge".to_owned()));
        return runtime_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestEntityTooLarge", &message);
    };
    if shared.complete(&id, Outcome::Response(payload)) {
        accepted()
    } else {
        runtime_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
    }
}

/// `POST /invocation/{id}/error`: records the error; the front answers 502.
async fn invocation_error(
    State(endpoint): State<Endpoint>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error = reported_error(Some(id.clone()), &headers, &body);
    tracing::warn!(
        invocation = %id,
        error_type = %error.error_type,
        message = %error.message,
        "lambda-gateway: the function reported an invocation error"
    );
    let error_type = error.error_type.clone();
    lock(&endpoint.shared.errors).push(error);
    if endpoint.shared.complete(&id, Outcome::Failed(error_type)) {
        accepted()
    } else {
        runtime_error(StatusCode::BAD_REQUEST, "InvalidRequestID", "Invalid request ID")
    }
}

/// `POST /init/error`: records the error ([`LambdaGateway::start`] fails with it).
async fn init_error(State(endpoint): State<Endpoint>, headers: HeaderMap, body: Bytes) -> Response {
    let error = reported_error(None, &headers, &body);
    tracing::warn!(
        instance = endpoint.instance,
        error_type = %error.error_type,
        message = %error.message,
        "lambda-gateway: the function failed its init"
    );
    lock(&endpoint.shared.errors).push(error);
    accepted()
}

/// An error body (`{"errorType","errorMessage"}`, or anything) and the
/// `Lambda-Runtime-Function-Error-Type` header.
fn reported_error(aws_request_id: Option<String>, headers: &HeaderMap, body: &[u8]) -> FunctionError {
    let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok());
    let error_type = parsed["errorType"]
        .as_str()
        .or(header_type)
        .unwrap_or("Unhandled")
        .to_owned();
    let message = parsed["errorMessage"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    FunctionError {
        aws_request_id,
        error_type,
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// API Gateway HTTP API front

fn front_router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(front).with_state(shared)
}

/// `{"message": …}` with `status`, as API Gateway answers its own errors.
fn gateway_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"message": message}))).into_response()
}

fn bad_gateway() -> Response {
    gateway_error(StatusCode::BAD_GATEWAY, "Internal Server Error")
}

fn too_large() -> Response {
    gateway_error(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large")
}

/// Any request: → event → function → response.
async fn front(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let api_request_id = api_request_id();
    let mut response = invoke_function(&shared, peer.ip(), &api_request_id, request).await;
    if let Ok(value) = HeaderValue::from_str(&api_request_id) {
        response.headers_mut().insert("apigw-requestid", value);
    }
    response
}

async fn invoke_function(shared: &Shared, source_ip: IpAddr, api_request_id: &str, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_HTTP_BODY_BYTES).await {
        Ok(body) => body,
        Err(e) if is_length_limit(&e) => return too_large(),
        Err(_) => return gateway_error(StatusCode::BAD_REQUEST, "Bad Request"),
    };
    let event = api_gateway_event(&parts, &body, source_ip, api_request_id, Utc::now());
    let Ok(event) = serde_json::to_vec(&event) else {
        return bad_gateway();
    };
    if event.len() > MAX_EVENT_BYTES {
        return too_large();
    }
    if shared.function_gone() {
        return bad_gateway();
    }
    let (id, outcome) = shared.invoke(Bytes::from(event), api_request_id);
    let _guard = PendingGuard { shared, id: id.clone() };
    match tokio::time::timeout(shared.config.integration_timeout, outcome).await {
        Ok(Ok(Outcome::Response(payload))) => api_gateway_response(&payload),
        Ok(Ok(Outcome::Failed(why))) => {
            tracing::warn!(invocation = %id, %why, "lambda-gateway: invocation failed: 502");
            bad_gateway()
        }
        Ok(Err(_)) => bad_gateway(),
        Err(_) => {
            tracing::warn!(invocation = %id, "lambda-gateway: invocation timed out: 503");
            gateway_error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The payload format 2.0 event of a request.
///
/// Headers are lowercased, repeated ones joined with commas, `Cookie` moves to `cookies`, and
/// `X-Forwarded-For/Port/Proto` and `X-Amzn-Trace-Id` are added as API Gateway does. The body is
/// base64 (`isBase64Encoded: true`) when it is not UTF-8 or its content type is not text.
pub fn api_gateway_event(
    parts: &Parts,
    body: &[u8],
    source_ip: IpAddr,
    api_request_id: &str,
    now: DateTime<Utc>,
) -> Value {
    let raw_path = parts.uri.path().to_owned();
    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let headers = event_headers(&parts.headers, source_ip);
    let user_agent = parts
        .headers
        .get(USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let domain_name = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{API_ID}.execute-api.us-east-1.amazonaws.com"));
    let domain_prefix = domain_name.split('.').next().unwrap_or_default().to_owned();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": API_ID,
            "domainName": domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": parts.method.as_str(),
                "path": raw_path,
                "protocol": format!("{:?}", parts.version),
                "sourceIp": source_ip.to_string(),
                "userAgent": user_agent,
            },
            "requestId": api_request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    let cookies = request_cookies(&parts.headers);
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !raw_query.is_empty() {
        event["queryStringParameters"] = Value::Object(query_parameters(&raw_query));
    }
    if !body.is_empty() {
        let content_type = parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        match std::str::from_utf8(body) {
            Ok(text) if content_type.is_none_or(is_text_type) => event["body"] = json!(text),
            _ => {
                event["body"] = json!(BASE64.encode(body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

fn event_headers(headers: &HeaderMap, source_ip: IpAddr) -> Map<String, Value> {
    let mut out = Map::new();
    for name in headers.keys() {
        if name == COOKIE {
            continue;
        }
        let values: Vec<String> = headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        out.insert(name.as_str().to_owned(), json!(values.join(",")));
    }
    let forwarded_for = match out.get("x-forwarded-for").and_then(Value::as_str) {
        Some(earlier) => format!("{earlier}, {source_ip}"),
        None => source_ip.to_string(),
    };
    out.insert("x-forwarded-for".to_owned(), json!(forwarded_for));
    out.insert("x-forwarded-proto".to_owned(), json!("http"));
    if let Some(port) = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, port)| port.to_owned())
    {
        out.insert("x-forwarded-port".to_owned(), json!(port));
    }
    out.entry("x-amzn-trace-id").or_insert_with(|| json!(trace_id()));
    out
}

fn request_cookies(headers: &HeaderMap) -> Vec<String> {
    let mut cookies = Vec::new();
    for value in headers.get_all(COOKIE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        cookies.extend(
            text.split(';')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        );
    }
    cookies
}

/// Decoded query parameters, repeated names joined with commas.
fn query_parameters(raw_query: &str) -> Map<String, Value> {
    let mut joined: Vec<(String, String)> = Vec::new();
    for (name, value) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        match joined.iter_mut().find(|(n, _)| *n == name) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            None => joined.push((name.into_owned(), value.into_owned())),
        }
    }
    joined.into_iter().map(|(n, v)| (n, Value::String(v))).collect()
}

/// Whether a body of this content type is passed as text (else base64).
fn is_text_type(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || ["json", "xml", "yaml", "javascript", "x-www-form-urlencoded", "graphql"]
            .iter()
            .any(|t| mime.ends_with(&format!("/{t}")) || mime.ends_with(&format!("+{t}")))
}

/// The HTTP response API Gateway makes of a function's response payload.
///
/// - over [`MAX_RESPONSE_BYTES`], not JSON, or a malformed 2.0 response (bad `statusCode`,
///   header, cookie or base64 body) → 502 `{"message":"Internal Server Error"}`;
/// - an object with `statusCode`: that status, `headers` (and `multiValueHeaders`, which the 2.0
///   format does not define; appended if present), `cookies` as `Set-Cookie`, `body` (base64
///   decoded if `isBase64Encoded`);
/// - any other JSON: 200 `application/json` with it as the body (a JSON string: its content).
pub fn api_gateway_response(payload: &[u8]) -> Response {
    if payload.len() > MAX_RESPONSE_BYTES {
        tracing::warn!(
            bytes = payload.len(),
            "lambda-gateway: function response over the limit"
        );
        return bad_gateway();
    }
    let value: Value = match serde_json::from_slice(payload) {
        Ok(value) => value,
        Err(e) => {
            tracing::warn!(error = %e, "lambda-gateway: function response is not JSON");
            return bad_gateway();
        }
    };
    let converted = match value.as_object().filter(|o| o.contains_key("statusCode")) {
        Some(object) => structured_response(object),
        None => Ok(inferred_response(&value)),
    };
    converted.unwrap_or_else(|why| {
        tracing::warn!(%why, "lambda-gateway: malformed function response");
        bad_gateway()
    })
}

/// A response without `statusCode`.
fn inferred_response(value: &Value) -> Response {
    let body = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    (StatusCode::OK, [(CONTENT_TYPE, "application/json")], body).into_response()
}

fn structured_response(object: &Map<String, Value>) -> Result<Response, String> {
    let status = object["statusCode"]
        .as_u64()
        .and_then(|code| u16::try_from(code).ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| format!("bad statusCode {}", object["statusCode"]))?;
    let mut headers = HeaderMap::new();
    if let Some(single) = object.get("headers").filter(|v| !v.is_null()) {
        let single = single.as_object().ok_or("headers is not an object")?;
        for (name, value) in single {
            append_header(&mut headers, name, value)?;
        }
    }
    if let Some(multi) = object.get("multiValueHeaders").filter(|v| !v.is_null()) {
        let multi = multi.as_object().ok_or("multiValueHeaders is not an object")?;
        for (name, values) in multi {
            let values = values.as_array().ok_or("a multiValueHeaders entry is not an array")?;
            for value in values {
                append_header(&mut headers, name, value)?;
            }
        }
    }
    if let Some(cookies) = object.get("cookies").filter(|v| !v.is_null()) {
        for cookie in cookies.as_array().ok_or("cookies is not an array")? {
            append_header(&mut headers, SET_COOKIE.as_str(), cookie)?;
        }
    }
    // The gateway frames the body itself.
    for hop in ["content-length", "transfer-encoding", "connection"] {
        headers.remove(hop);
    }
    let body = response_body(object)?;
    let mut response = (status, body).into_response();
    *response.headers_mut() = headers;
    Ok(response)
}

fn append_header(headers: &mut HeaderMap, name: &str, value: &Value) -> Result<(), String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => return Err(format!("header {name} has a non-scalar value {other}")),
    };
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
    let value = HeaderValue::from_str(&text).map_err(|_| format!("bad value of header {name}"))?;
    headers.append(name, value);
    Ok(())
}

fn response_body(object: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let base64 = match object.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("bad isBase64Encoded {other}")),
    };
    match object.get("body") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) if base64 => BASE64.decode(text).map_err(|e| format!("bad base64 body: {e}")),
        Some(Value::String(text)) => Ok(text.clone().into_bytes()),
        Some(other) => Err(format!("body is not a string but {other}")),
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers

/// A Lambda request id: a UUID-formatted 128-bit value.
fn uuid_like(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// An API Gateway request id: 16 characters of base64 ending in `=` (e.g. `JKJaXmPLvHcESHA=`).
fn api_request_id() -> String {
    let bytes = ulid::Ulid::new().0.to_be_bytes();
    BASE64.encode(&bytes[5..])
}

/// An X-Ray trace header: `Root=1-<epoch hex>-<24 hex>;Parent=<16 hex>;Sampled=0`.
fn trace_id() -> String {
    let random = ulid::Ulid::new().0;
    format!(
        "Root=1-{:08x}-{:024x};Parent={:016x};Sampled=0",
        Utc::now().timestamp(),
        random & ((1u128 << 96) - 1),
        (random >> 64) as u64
    )
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request as HttpRequest;

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body")
            .to_vec()
    }

    fn parts(builder: axum::http::request::Builder) -> Parts {
        builder.body(()).expect("request").into_parts().0
    }

    fn event_of(parts: &Parts, body: &[u8]) -> Value {
        api_gateway_event(
            parts,
            body,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            "AbCdEfGhIjKlMnO=",
            Utc::now(),
        )
    }

    #[tokio::test]
    async fn structured_response_maps_status_headers_cookies_and_body() {
        let payload = json!({
            "statusCode": 201,
            "headers": {"content-type": "text/plain", "x-n": 3},
            "multiValueHeaders": {"x-multi": ["a", "b"]},
            "cookies": ["a=1", "b=2; Path=/"],
            "body": "hello",
            "isBase64Encoded": false,
        });
        let response = api_gateway_response(payload.to_string().as_bytes());
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers().clone();
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers["x-n"], "3");
        let multi: Vec<_> = headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        let cookies: Vec<_> = headers.get_all(SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["a=1", "b=2; Path=/"]);
        assert_eq!(body_of(response).await, b"hello");
    }

    #[tokio::test]
    async fn base64_body_is_decoded() {
        let payload = json!({"statusCode": 200, "body": BASE64.encode([0u8, 159, 146, 150]), "isBase64Encoded": true});
        let response = api_gateway_response(payload.to_string().as_bytes());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response).await, [0u8, 159, 146, 150]);
    }

    #[tokio::test]
    async fn response_without_status_code_is_inferred() {
        let response = api_gateway_response(br#"{"hello":"world"}"#);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(body_of(response).await, br#"{"hello":"world"}"#);
        let response = api_gateway_response(br#""Hello from Lambda!""#);
        assert_eq!(body_of(response).await, b"Hello from Lambda!");
    }

    #[tokio::test]
    async fn invalid_responses_are_502() {
        let cases: [&[u8]; 6] = [
            b"not json",
            br#"{"statusCode": 99}"#,
            br#"{"statusCode": "200"}"#,
            br#"{"statusCode": 200, "body": "%%%", "isBase64Encoded": true}"#,
            br#"{"statusCode": 200, "headers": {"bad name": "x"}}"#,
            br#"{"statusCode": 200, "body": {"not": "a string"}}"#,
        ];
        for payload in cases {
            let response = api_gateway_response(payload);
            assert_eq!(
                response.status(),
                StatusCode::BAD_GATEWAY,
                "{}",
                String::from_utf8_lossy(payload)
            );
            let body: Value = serde_json::from_slice(&body_of(response).await).expect("json");
            assert_eq!(body, json!({"message": "Internal Server Error"}));
        }
    }

    #[tokio::test]
    async fn response_over_6_mb_is_502_and_at_the_limit_is_served() {
        let envelope = json!({"statusCode": 200, "body": ""}).to_string();
        let fill = MAX_RESPONSE_BYTES - envelope.len();
        let at_limit = json!({"statusCode": 200, "body": "x".repeat(fill)}).to_string();
        assert_eq!(at_limit.len(), MAX_RESPONSE_BYTES);
        let response = api_gateway_response(at_limit.as_bytes());
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(body_of(response).await.len(), fill);

        let over = json!({"statusCode": 200, "body": "x".repeat(fill + 1)}).to_string();
        assert_eq!(api_gateway_response(over.as_bytes()).status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn event_has_the_payload_2_0_shape() {
        let parts = parts(
            HttpRequest::post("/v1/runs?limit=5&tag=a&tag=b%20c")
                .header("host", "127.0.0.1:9999")
                .header("User-Agent", "test/1")
                .header("x-repeated", "one")
                .header("x-repeated", "two")
                .header("cookie", "a=1; b=2")
                .header("content-type", "application/json"),
        );
        let event = event_of(&parts, br#"{"x":1}"#);
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "$default");
        assert_eq!(event["rawPath"], "/v1/runs");
        assert_eq!(event["rawQueryString"], "limit=5&tag=a&tag=b%20c");
        assert_eq!(event["queryStringParameters"], json!({"limit": "5", "tag": "a,b c"}));
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(event["headers"]["x-repeated"], "one,two");
        assert_eq!(event["headers"]["user-agent"], "test/1");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["headers"]["x-forwarded-proto"], "http");
        assert_eq!(event["headers"]["x-forwarded-port"], "9999");
        assert_eq!(event["headers"]["x-forwarded-for"], "127.0.0.1");
        let context = &event["requestContext"];
        assert_eq!(context["http"]["method"], "POST");
        assert_eq!(context["http"]["path"], "/v1/runs");
        assert_eq!(context["http"]["protocol"], "HTTP/1.1");
        assert_eq!(context["http"]["sourceIp"], "127.0.0.1");
        assert_eq!(context["http"]["userAgent"], "test/1");
        assert_eq!(context["stage"], "$default");
        assert_eq!(context["requestId"], "AbCdEfGhIjKlMnO=");
        assert_eq!(context["domainName"], "127.0.0.1:9999");
        assert!(context["timeEpoch"].as_i64().is_some_and(|t| t > 0));
        assert_eq!(event["body"], r#"{"x":1}"#);
        assert_eq!(event["isBase64Encoded"], false);
    }

    #[test]
    fn bodies_are_base64_when_binary_or_not_utf8() {
        let json_parts = parts(HttpRequest::post("/").header("content-type", "application/json"));
        let event = event_of(&json_parts, &[0xff, 0xfe, b'{']);
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["body"], BASE64.encode([0xff, 0xfe, b'{']));

        let binary_parts = parts(HttpRequest::post("/").header("content-type", "application/octet-stream"));
        let event = event_of(&binary_parts, b"plain ascii");
        assert_eq!(event["isBase64Encoded"], true);

        let untyped = parts(HttpRequest::post("/"));
        assert_eq!(event_of(&untyped, b"text")["isBase64Encoded"], false);

        let empty = parts(HttpRequest::get("/"));
        let event = event_of(&empty, b"");
        assert!(event.get("body").is_none());
        assert!(event.get("queryStringParameters").is_none());
        assert!(event.get("cookies").is_none());
    }

    #[test]
    fn text_types() {
        for t in [
            "text/plain",
            "application/json; charset=utf-8",
            "application/problem+json",
            "application/xml",
        ] {
            assert!(is_text_type(t), "{t}");
        }
        for t in ["application/octet-stream", "image/png", "application/gzip"] {
            assert!(!is_text_type(t), "{t}");
        }
    }

    #[test]
    fn identifiers_look_like_aws_ones() {
        let id = api_request_id();
        assert_eq!(id.len(), 16);
        assert!(id.ends_with('='));
        assert_eq!(uuid_like(u128::MAX).len(), 36);
        assert!(trace_id().starts_with("Root=1-"));
    }
}
