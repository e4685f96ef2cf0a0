//! [`OutpostMcp`]: the MCP server handler. Each tool (declared in `tools.rs`) is one or two calls
//! of the typed REST client; API failures become tool error results carrying the REST error body,
//! so a model sees the same `code` (`not_found`, `validation_failed`, `unauthorized`, …) as any
//! REST client. The handler itself only adds what the tool router does not do: `tasks/get` and
//! `tasks/cancel`, the `unknown tool` error, and `tools/list` without cache hints.
//!
//! `dispatch` as a task (tasks extension, SEP-2663): a `dispatch` with `wait: true` from a client
//! that declared the tasks capability answers at once with a task whose id is the run id, instead
//! of holding the request open. `tasks/get` reads the run
//! (queued/running → `working`; ended → `completed` with the same result `get_run` gives;
//! cancelled → `cancelled`) and `tasks/cancel` cancels the run. The run is the task's only state,
//! so any instance can answer for any task.

use crate::access::ApiAccess;
use crate::tools::DispatchArgs;
use outpost_api::client::{ApiTransport, ClientError, OutpostClient};
use outpost_api::RunView;
use outpost_core::RunStatus;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CreateTaskResult, DetailedTask,
    GetTaskParams, GetTaskResult, Implementation, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Task, TaskPayload, TaskStatus,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes of `output.log` returned as `output_tail`.
pub const OUTPUT_TAIL_BYTES: u64 = 4096;

/// Settings of the tools.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// Longest a `dispatch` with `wait: true` waits for the run to end.
    pub max_wait: Duration,
    /// Pause between two reads of a run while waiting.
    pub poll_interval: Duration,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            max_wait: Duration::from_secs(600),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// The MCP server of Outpost over one way of reaching the API.
///
/// Cloning is cheap (the tool router is shared), so one value can be cloned for each request.
#[derive(Clone)]
pub struct OutpostMcp<A> {
    api: A,
    options: McpOptions,
    tools: Arc<ToolRouter<Self>>,
}

impl<A: ApiAccess> OutpostMcp<A> {
    pub fn new(api: A, options: McpOptions) -> Self {
        Self {
            api,
            options,
            tools: Arc::new(Self::tool_router()),
        }
    }

    /// The API client for the request being served.
    pub(crate) fn client(
        &self,
        context: &RequestContext<RoleServer>,
    ) -> Result<OutpostClient<A::Transport>, ClientError> {
        self.api.client(context)
    }

    /// `dispatch` without a task: the accepted run at once, or the ended run with `wait`.
    pub(crate) async fn dispatch_run<T: ApiTransport>(
        &self,
        client: &OutpostClient<T>,
        args: DispatchArgs,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, ClientError> {
        let accepted = client.dispatch(&args.request).await?;
        tracing::info!(run = %accepted.id, agent = %args.request.agent, "run dispatched over MCP");
        if args.wait != Some(true) {
            let mut value = to_value(&accepted);
            self.absolute_links(&mut value);
            return Ok(value);
        }
        let ended = self.wait_for_end(client, &accepted.id, context).await?;
        let mut report = self.run_report(client, &accepted.id).await?;
        if !ended {
            report["note"] = json!(format!(
                "the run had not ended after {} s of waiting; follow it with get_run",
                self.options.max_wait.as_secs()
            ));
        }
        Ok(report)
    }

    /// Polls the run until it ends, the wait is over (`false`), or the client cancels the request.
    async fn wait_for_end<T: ApiTransport>(
        &self,
        client: &OutpostClient<T>,
        id: &str,
        context: &RequestContext<RoleServer>,
    ) -> Result<bool, ClientError> {
        let started = Instant::now();
        let token = context.meta.get_progress_token();
        let mut step = 0u32;
        loop {
            let run = client.get_run(id).await?;
            if run.status.is_terminal() {
                return Ok(true);
            }
            if started.elapsed() >= self.options.max_wait {
                return Ok(false);
            }
            if let Some(token) = &token {
                step += 1;
                let message = format!("run {id} is {} ({} s)", run.status, started.elapsed().as_secs());
                let progress = ProgressNotificationParam::new(token.clone(), f64::from(step)).with_message(message);
                if let Err(e) = context.peer.notify_progress(progress).await {
                    tracing::debug!(error = %e, "progress notification not delivered");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = context.ct.cancelled() => return Ok(false),
            }
        }
    }

    /// The run, made absolute, with the last [`OUTPUT_TAIL_BYTES`] of its output log.
    pub(crate) async fn run_report<T: ApiTransport>(
        &self,
        client: &OutpostClient<T>,
        id: &str,
    ) -> Result<Value, ClientError> {
        let run = client.get_run(id).await?;
        let mut value = self.run_value(&run);
        let mut page = client.logs_page(id, 0, OUTPUT_TAIL_BYTES).await?;
        if page.size > OUTPUT_TAIL_BYTES {
            page = client
                .logs_page(id, page.size - OUTPUT_TAIL_BYTES, OUTPUT_TAIL_BYTES)
                .await?;
        }
        value["output_size"] = json!(page.size);
        value["output_tail"] = json!(String::from_utf8_lossy(&page.data));
        Ok(value)
    }

    pub(crate) fn run_value(&self, run: &RunView) -> Value {
        let mut value = to_value(run);
        self.absolute_links(&mut value);
        value
    }

    /// Rewrites the `links` and artifact `url`s of a run as absolute URLs where possible.
    pub(crate) fn absolute_links(&self, run: &mut Value) {
        if let Some(links) = run.get_mut("links").and_then(Value::as_object_mut) {
            for link in links.values_mut() {
                if let Some(path) = link.as_str() {
                    *link = json!(self.api.absolute(path));
                }
            }
        }
        if let Some(artifacts) = run.get_mut("artifacts").and_then(Value::as_array_mut) {
            for artifact in artifacts {
                if let Some(url) = artifact.get_mut("url") {
                    if let Some(path) = url.as_str() {
                        *url = json!(self.api.absolute(path));
                    }
                }
            }
        }
    }

    /// `dispatch` as a task: the run is created and the task (id = run id) returned at once.
    pub(crate) async fn dispatch_task<T: ApiTransport>(
        &self,
        client: &OutpostClient<T>,
        args: DispatchArgs,
    ) -> Result<CreateTaskResult, ClientError> {
        let accepted = client.dispatch(&args.request).await?;
        tracing::info!(run = %accepted.id, agent = %args.request.agent, "run dispatched as an MCP task");
        let created = accepted.created_at.to_rfc3339();
        let task = Task::new(accepted.id, TaskStatus::Working, created.clone(), created)
            .with_status_message("queued")
            .with_poll_interval_ms(poll_ms(self.options.poll_interval));
        Ok(CreateTaskResult::new(task))
    }

    async fn task_state(&self, task_id: &str, context: &RequestContext<RoleServer>) -> Result<DetailedTask, McpError> {
        let client = self.api.client(context).map_err(|e| task_error(task_id, &e))?;
        let run = client.get_run(task_id).await.map_err(|e| task_error(task_id, &e))?;
        let created = run.created_at.to_rfc3339();
        let updated = run
            .finished_at
            .or(run.started_at)
            .unwrap_or(run.created_at)
            .to_rfc3339();
        let task = Task::new(run.id.clone(), TaskStatus::Working, created, updated)
            .with_status_message(run.status.as_str())
            .with_poll_interval_ms(poll_ms(self.options.poll_interval));
        let payload = match run.status {
            RunStatus::Queued | RunStatus::Running => TaskPayload::Working,
            RunStatus::Cancelled => TaskPayload::Cancelled,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::TimedOut => {
                let result = match self.run_report(&client, task_id).await {
                    Ok(value) => CallToolResult::structured(value),
                    Err(e) => client_error(&e),
                };
                match serde_json::to_value(&result) {
                    Ok(Value::Object(result)) => TaskPayload::Completed { result },
                    _ => return Err(McpError::internal_error("cannot encode the task result", None)),
                }
            }
        };
        Ok(DetailedTask::new(task, payload))
    }
}

impl<A: ApiAccess> ServerHandler for OutpostMcp<A> {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_tasks().build())
            .with_server_info(Implementation::new("outpost", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Outpost runs AI coding agents (Claude Code, Codex, Gemini CLI, Aider, …) on a \
                 worker fleet. Call fleet_status to see the agents, dispatch to start a run \
                 (wait: true to block until it ends), get_run to follow it (status, the agent's \
                 answer and error, usage and cost, end of output, artifacts), list_runs to find runs, cancel_run to stop one, and \
                 promote to push a finished run's changes to a git branch.",
            )
    }

    /// The router's tools, without the cache hints (`ttlMs`, `cacheScope`) that `#[tool_handler]`
    /// would add for 2026-07-28 clients.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.tools.list_all()))
    }

    /// Used by the streamable HTTP transport to check `Mcp-Param-*` headers (SEP-2243).
    fn get_tool(&self, name: &str) -> Option<rmcp::model::Tool> {
        self.tools.get(name).cloned()
    }

    /// The router's call, with this server's own error for a tool it does not have.
    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        if !self.tools.has_route(&request.name) {
            return Err(McpError::invalid_params(
                format!("unknown tool: {}", request.name),
                None,
            ));
        }
        self.tools.call(ToolCallContext::new(self, request, context)).await
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        Ok(GetTaskResult::new(self.task_state(&request.task_id, &context).await?))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let client = self
            .api
            .client(&context)
            .map_err(|e| task_error(&request.task_id, &e))?;
        client
            .cancel_run(&request.task_id)
            .await
            .map(|_| ())
            .map_err(|e| task_error(&request.task_id, &e))
    }
}

pub(crate) fn client_supports_tasks(context: &RequestContext<RoleServer>) -> bool {
    context.client_capabilities().is_some_and(|caps| caps.supports_tasks())
}

fn poll_ms(interval: Duration) -> u64 {
    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX).max(100)
}

pub(crate) fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| json!({ "error": e.to_string() }))
}

/// A tool error result whose text is the REST error body, `{"error":{"code","message"}}`.
pub(crate) fn error_result(code: &str, status: Option<u16>, message: &str) -> CallToolResult {
    let mut error = json!({ "code": code, "message": message });
    if let Some(status) = status {
        error["status"] = json!(status);
    }
    CallToolResult::structured_error(json!({ "error": error }))
}

/// The tool error of a failed API call: the API's own code, or `unavailable` when it did not answer.
pub(crate) fn client_error(e: &ClientError) -> CallToolResult {
    match e {
        ClientError::Api { status, code, message } => error_result(code, Some(*status), message),
        ClientError::Transport(message) => error_result("unavailable", None, message),
        ClientError::Decode(message) => error_result("bad_response", None, message),
        ClientError::InvalidUrl(message) => error_result("invalid_configuration", None, message),
    }
}

/// A failed `tasks/*` request: an unknown task is invalid params, anything else internal.
fn task_error(task_id: &str, e: &ClientError) -> McpError {
    let data = Some(json!({ "error": { "code": e.code().unwrap_or("unavailable"), "message": e.to_string() } }));
    match e.status() {
        Some(404) => McpError::invalid_params(format!("no such task: {task_id}"), data),
        Some(409) => McpError::invalid_params(format!("task {task_id} has already ended"), data),
        Some(401) => McpError::invalid_request("an API key is required", data),
        _ => McpError::internal_error(format!("cannot reach the run of task {task_id}"), data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use outpost_api::{HEADER_LOG_SIZE, HEADER_NEXT_OFFSET, HEADER_RUN_STATUS};
    use outpost_core::{AgentReport, FailureReason, NewRun, Run, RunId, Usage};

    const BASE: &str = "http://outpost.test";

    /// An API that knows one run and its five-byte log.
    #[derive(Clone)]
    struct OneRun(RunView);

    impl ApiTransport for OneRun {
        async fn send(&self, request: http::Request<Bytes>) -> Result<http::Response<Bytes>, ClientError> {
            let response = if request.uri().path().ends_with("/logs") {
                http::Response::builder()
                    .header(HEADER_NEXT_OFFSET, "5")
                    .header(HEADER_LOG_SIZE, "5")
                    .header(HEADER_RUN_STATUS, "failed")
                    .body(Bytes::from_static(b"bye\n\n"))
            } else {
                let body = serde_json::to_vec(&self.0).map_err(|e| ClientError::Decode(e.to_string()))?;
                http::Response::builder().body(Bytes::from(body))
            };
            response.map_err(|e| ClientError::Decode(e.to_string()))
        }
    }

    impl ApiAccess for OneRun {
        type Transport = OneRun;

        fn client(&self, _context: &RequestContext<RoleServer>) -> Result<OutpostClient<OneRun>, ClientError> {
            OutpostClient::with_transport(self.clone(), BASE, None)
        }

        fn absolute(&self, path: &str) -> String {
            format!("{BASE}{path}")
        }
    }

    #[tokio::test]
    async fn a_run_report_carries_the_agents_answer_error_usage_and_session() {
        let mut run = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "claude".into(),
            task: "t".into(),
            repo: None,
            timeout_secs: 600,
            idle_timeout_secs: Some(42),
            created_at: chrono::Utc::now(),
        });
        run.status = RunStatus::Failed;
        run.failure_reason = Some(FailureReason::AgentError);
        run.report = AgentReport {
            result: Some("the answer ✓".into()),
            error: Some("401 invalid x-api-key".into()),
            usage: Some(Usage {
                input_tokens: Some(10),
                cached_input_tokens: Some(4),
                output_tokens: Some(2),
                cost_usd: Some(0.0123),
                source: "claude result.total_cost_usd".into(),
            }),
            session_id: Some("sess-1".into()),
        };
        let api = OneRun(RunView::from(&run));
        let mcp = OutpostMcp::new(api.clone(), McpOptions::default());
        let client = OutpostClient::with_transport(api, BASE, None).expect("client");
        // What get_run returns, and a waited dispatch (which ends with the same report).
        let report = mcp.run_report(&client, run.id.as_str()).await.expect("report");
        assert_eq!(report["result"], "the answer ✓");
        assert_eq!(report["agent_error"], "401 invalid x-api-key");
        assert_eq!(report["failure_reason"], "agent_error");
        assert_eq!(
            report["usage"],
            json!({"input_tokens": 10, "cached_input_tokens": 4, "output_tokens": 2, "cost_usd": 0.0123,
                   "source": "claude result.total_cost_usd"})
        );
        assert_eq!(report["session_id"], "sess-1");
        assert_eq!(report["idle_timeout_secs"], 42);
        assert_eq!(report["output_tail"], "bye\n\n");
        assert!(report["links"]["self"].as_str().is_some_and(|l| l.starts_with(BASE)));
    }
}
