//! The tools, each declared once with rmcp's `#[tool]`: its name, its description (written for a
//! model choosing a tool), its annotations, its input schema and its body. `#[tool_router]`
//! collects them into the [`ToolRouter`](rmcp::handler::server::router::tool::ToolRouter) that
//! `tools/list` and `tools/call` use (tools are listed in name order).
//!
//! The input schemas are generated from the REST API's own request types (`DispatchRequest`,
//! `ListRunsQuery`, `PromoteRequest`), flattened into the few MCP-only fields, so the API and
//! the tools cannot drift apart. Arguments are read by the [`Call`] extractor, which answers
//! arguments that do not parse with a tool error result (`validation_failed`) rather than a
//! protocol error, so a model can correct its call.

use crate::access::ApiAccess;
use crate::server::{client_error, client_supports_tasks, error_result, to_value, OutpostMcp};
use outpost_api::client::OutpostClient;
use outpost_api::{DispatchRequest, ListRunsQuery, PromoteRequest};
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input, FromContextPart};
use rmcp::handler::server::tool::{IntoCallToolResult, ToolCallContext};
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject};
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData as McpError, RoleServer};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;

/// Arguments of `dispatch`: the REST dispatch body plus `wait`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct DispatchArgs {
    #[serde(flatten)]
    pub request: DispatchRequest,
    /// Wait until the run ends (at most about 10 minutes, with progress notifications) and
    /// return it with the end of its output, instead of returning the run id at once. A client
    /// that supports MCP tasks gets a task (id = run id) to poll instead.
    #[serde(default)]
    pub wait: Option<bool>,
}

/// Arguments naming one run.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIdArgs {
    /// The run id returned by `dispatch` or `list_runs` (`run_` followed by 26 characters).
    pub run_id: String,
}

/// Arguments of `promote`: the run plus the REST promote body.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct PromoteArgs {
    /// The run whose changes to push: a finished run that was dispatched with a `repo`.
    pub run_id: String,
    #[serde(flatten)]
    pub request: PromoteRequest,
}

/// The arguments of `fleet_status`: none (any object is accepted, as its schema says).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct NoArgs {}

/// An input schema; a type without an object root is a bug caught by the tests.
fn input_schema<T: JsonSchema + 'static>() -> Arc<JsonObject> {
    match schema_for_input::<T>() {
        Ok(schema) => open_object(schema),
        Err(e) => {
            tracing::error!(error = %e, "tool input schema is not an object");
            schema_for_empty_input()
        }
    }
}

/// Drops a root `additionalProperties: false` that a flattened `deny_unknown_fields` type
/// brings in: it would forbid the tool's own fields next to the flattened ones.
fn open_object(schema: Arc<JsonObject>) -> Arc<JsonObject> {
    if schema.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
        let mut object = schema.as_ref().clone();
        object.remove("additionalProperties");
        Arc::new(object)
    } else {
        schema
    }
}

/// What a tool body answers: its result (`Ok`), or a tool error result (`isError: true`).
pub(crate) type ToolResult<T = Structured> = Result<T, ToolError>;

/// A tool's structured result: `structuredContent`, and the same JSON as text.
pub(crate) struct Structured(pub Value);

impl IntoCallToolResult for Structured {
    fn into_call_tool_result(self) -> Result<CallToolResponse, McpError> {
        Ok(CallToolResult::structured(self.0).into())
    }
}

/// A tool error result whose text is the REST error body, `{"error":{"code","message"}}`.
pub(crate) struct ToolError(pub CallToolResult);

impl From<outpost_api::client::ClientError> for ToolError {
    fn from(e: outpost_api::client::ClientError) -> Self {
        Self(client_error(&e))
    }
}

impl IntoCallToolResult for ToolError {
    fn into_call_tool_result(self) -> Result<CallToolResponse, McpError> {
        Ok(self.0.into())
    }
}

/// Extractor of a tool call: the API client for the request being served and the arguments as
/// `T`, or the tool error to answer with (the client's first, then the arguments').
pub(crate) struct Call<A: ApiAccess, T>(pub ToolResult<(OutpostClient<A::Transport>, T)>);

impl<A: ApiAccess, T: DeserializeOwned> FromContextPart<ToolCallContext<'_, OutpostMcp<A>>> for Call<A, T> {
    fn from_context_part(context: &mut ToolCallContext<'_, OutpostMcp<A>>) -> Result<Self, McpError> {
        let client = match context.service.client(context.request_context()) {
            Ok(client) => client,
            Err(e) => return Ok(Self(Err(e.into()))),
        };
        tracing::debug!(tool = %context.name(), "tool call");
        let arguments = Value::Object(context.arguments.take().unwrap_or_default());
        Ok(Self(
            serde_json::from_value(arguments)
                .map(|args| (client, args))
                .map_err(|e| {
                    ToolError(error_result(
                        "validation_failed",
                        None,
                        &format!("invalid arguments: {e}"),
                    ))
                }),
        ))
    }
}

#[tool_router(vis = "pub(crate)")]
impl<A: ApiAccess> OutpostMcp<A> {
    /// `dispatch`: with `wait: true` from a client that declared the tasks extension, the task
    /// (id = run id) at once; otherwise the accepted run, or the ended run with `wait`.
    #[tool(
        description = "Start an AI coding agent on a task in Outpost's worker fleet. Give the agent name \
             (see fleet_status for the agents available), the task prompt, and optionally a git \
             repository and branch to work in, a timeout, and an idle timeout (seconds without \
             output before the agent is stopped). Returns the new run's id at once (status \
             `queued`); poll it with get_run. With `wait: true` the call waits until the run \
             ends (up to about 10 minutes) and returns what get_run returns: its status, the \
             agent's final answer (`result`), its own error (`agent_error`), token usage and \
             cost (`usage`), and the end of its output.",
        input_schema = input_schema::<DispatchArgs>(),
        annotations(
            title = "Dispatch an agent run",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn dispatch(
        &self,
        Call(call): Call<A, DispatchArgs>,
        context: RequestContext<RoleServer>,
    ) -> ToolResult<CallToolResponse> {
        let (client, args) = call?;
        if args.wait == Some(true) && client_supports_tasks(&context) {
            return Ok(CallToolResponse::Task(self.dispatch_task(&client, args).await?));
        }
        Ok(CallToolResult::structured(self.dispatch_run(&client, args, &context).await?).into())
    }

    #[tool(
        description = "List the runs of your tenant, newest first, optionally only those in one status \
             (queued, running, succeeded, failed, timed_out, cancelled) or of one agent. Returns \
             a page of runs and, when there are more, `next_cursor` to pass as `cursor`.",
        input_schema = input_schema::<ListRunsQuery>(),
        annotations(title = "List runs", read_only_hint = true)
    )]
    async fn list_runs(&self, Call(call): Call<A, ListRunsQuery>) -> ToolResult {
        let (client, query) = call?;
        let mut value = to_value(&client.list_runs(&query).await?);
        if let Some(runs) = value.get_mut("runs").and_then(Value::as_array_mut) {
            for run in runs {
                self.absolute_links(run);
            }
        }
        Ok(Structured(value))
    }

    #[tool(
        description = "Get one run: its status, exit code, failure reason, timings, the agent's final \
             answer (`result`; the whole of it is the result.md artifact), the error the agent \
             reported (`agent_error`, reason `agent_error`), token usage and cost (`usage`), \
             the agent's `session_id`, the last 4 KB of its output log (`output_tail`), and \
             links to its stored artifacts (output.log, summary.json, diff.patch, files the \
             agent saved). Use it to follow a run started with dispatch.",
        input_schema = input_schema::<RunIdArgs>(),
        annotations(title = "Get a run", read_only_hint = true)
    )]
    async fn get_run(&self, Call(call): Call<A, RunIdArgs>) -> ToolResult {
        let (client, args) = call?;
        Ok(Structured(self.run_report(&client, &args.run_id).await?))
    }

    #[tool(
        description = "Cancel a run: a queued run becomes `cancelled` at once; a running agent is stopped \
             within seconds. A run that already ended cannot be cancelled (error `conflict`).",
        input_schema = input_schema::<RunIdArgs>(),
        annotations(
            title = "Cancel a run",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn cancel_run(&self, Call(call): Call<A, RunIdArgs>) -> ToolResult {
        let (client, args) = call?;
        Ok(Structured(self.run_value(&client.cancel_run(&args.run_id).await?)))
    }

    #[tool(
        description = "Promote a finished run's changes: push the diff the agent made to a new branch of \
             the run's git repository (default branch name `outpost/<run id>`) and return the \
             branch, commit and a compare link. Only for runs dispatched with a `repo` that \
             changed files.",
        input_schema = input_schema::<PromoteArgs>(),
        annotations(
            title = "Promote a run's changes to a branch",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn promote(&self, Call(call): Call<A, PromoteArgs>) -> ToolResult {
        let (client, args) = call?;
        Ok(Structured(to_value(
            &client.promote(&args.run_id, &args.request).await?,
        )))
    }

    /// No arguments: without an `input_schema`, `#[tool]` gives `schema_for_empty_input()`.
    #[tool(
        description = "Show the fleet: the agents you can dispatch to (name, description, default \
             timeout; executor: process, ecs or ssm; available: whether that executor can take runs \
             now, with the reason; in_flight: its runs being handled now), the queue depth, how \
             many runs are running, and the workers with their free and busy slots.",
        annotations(title = "Fleet status", read_only_hint = true)
    )]
    async fn fleet_status(&self, Call(call): Call<A, NoArgs>) -> ToolResult {
        let (client, NoArgs {}) = call?;
        Ok(Structured(to_value(&client.fleet().await?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RemoteApi;
    use rmcp::model::Tool;

    fn tools() -> Vec<Tool> {
        OutpostMcp::<RemoteApi>::tool_router().list_all()
    }

    fn tool(name: &str) -> Tool {
        tools()
            .into_iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tool {name}"))
    }

    fn properties(tool: &Tool) -> Vec<String> {
        tool.input_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn schemas_come_from_the_rest_types() {
        let tools = tools();
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        assert_eq!(
            names,
            [
                "cancel_run",
                "dispatch",
                "fleet_status",
                "get_run",
                "list_runs",
                "promote"
            ]
        );
        let dispatch = tool("dispatch");
        let props = properties(&dispatch);
        for field in [
            "agent",
            "task",
            "repo",
            "branch",
            "timeout_secs",
            "idle_timeout_secs",
            "wait",
        ] {
            assert!(props.iter().any(|p| p == field), "{field} missing: {props:?}");
        }
        assert_ne!(
            dispatch.input_schema.get("additionalProperties"),
            Some(&serde_json::Value::Bool(false))
        );
        let required = dispatch.input_schema.get("required").cloned().unwrap_or_default();
        assert_eq!(required, serde_json::json!(["agent", "task"]));
        let list = properties(&tool("list_runs"));
        assert_eq!(list.len(), 4, "{list:?}");
        let promote = properties(&tool("promote"));
        assert!(
            promote.iter().any(|p| p == "run_id") && promote.iter().any(|p| p == "branch"),
            "{promote:?}"
        );
        for tool in &tools {
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&serde_json::json!("object")),
                "{}",
                tool.name
            );
        }
    }

    #[test]
    fn flattened_arguments_parse() {
        let args: DispatchArgs =
            serde_json::from_value(serde_json::json!({"agent": "fake", "task": "x", "wait": true}))
                .expect("dispatch args");
        assert_eq!(args.request.agent, "fake");
        assert_eq!(args.wait, Some(true));
        assert_eq!(args.request.idle_timeout_secs, None);
        let args: DispatchArgs =
            serde_json::from_value(serde_json::json!({"agent": "fake", "task": "x", "idle_timeout_secs": 30}))
                .expect("dispatch args");
        assert_eq!(args.request.idle_timeout_secs, Some(30));
        let args: PromoteArgs =
            serde_json::from_value(serde_json::json!({"run_id": "run_1", "branch": "b"})).expect("promote args");
        assert_eq!(args.request.branch.as_deref(), Some("b"));
    }
}
