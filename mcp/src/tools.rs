//! The tools' names, descriptions (written for a model choosing a tool) and argument types. The
//! input schemas are generated from the REST API's own request types (`DispatchRequest`,
//! `ListRunsQuery`, `PromoteRequest`), flattened into the few MCP-only fields, so the API and
//! the tools cannot drift apart.

use outpost_api::{DispatchRequest, ListRunsQuery, PromoteRequest};
use rmcp::handler::server::common::{schema_for_empty_input, schema_for_input};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::JsonSchema;
use serde::Deserialize;
use std::sync::Arc;

pub const DISPATCH: &str = "dispatch";
pub const LIST_RUNS: &str = "list_runs";
pub const GET_RUN: &str = "get_run";
pub const CANCEL_RUN: &str = "cancel_run";
pub const PROMOTE: &str = "promote";
pub const FLEET_STATUS: &str = "fleet_status";

/// Every tool name, in listing order.
pub fn tool_names() -> [&'static str; 6] {
    [DISPATCH, LIST_RUNS, GET_RUN, CANCEL_RUN, PROMOTE, FLEET_STATUS]
}

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

/// The tool list of `tools/list`.
pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            DISPATCH,
            "Start an AI coding agent on a task in Outpost's worker fleet. Give the agent name \
             (see fleet_status for the agents available), the task prompt, and optionally a git \
             repository and branch to work in, a timeout, and an idle timeout (seconds without \
             output before the agent is stopped). Returns the new run's id at once (status \
             `queued`); poll it with get_run. With `wait: true` the call waits until the run \
             ends (up to about 10 minutes) and returns what get_run returns: its status, the \
             agent's final answer (`result`), its own error (`agent_error`), token usage and \
             cost (`usage`), and the end of its output.",
            input_schema::<DispatchArgs>(),
        )
        .with_annotations(
            ToolAnnotations::with_title("Dispatch an agent run")
                .read_only(false)
                .destructive(false)
                .idempotent(false)
                .open_world(true),
        ),
        Tool::new(
            LIST_RUNS,
            "List the runs of your tenant, newest first, optionally only those in one status \
             (queued, running, succeeded, failed, timed_out, cancelled) or of one agent. Returns \
             a page of runs and, when there are more, `next_cursor` to pass as `cursor`.",
            input_schema::<ListRunsQuery>(),
        )
        .with_annotations(ToolAnnotations::with_title("List runs").read_only(true)),
        Tool::new(
            GET_RUN,
            "Get one run: its status, exit code, failure reason, timings, the agent's final \
             answer (`result`; the whole of it is the result.md artifact), the error the agent \
             reported (`agent_error`, reason `agent_error`), token usage and cost (`usage`), \
             the agent's `session_id`, the last 4 KB of its output log (`output_tail`), and \
             links to its stored artifacts (output.log, summary.json, diff.patch, files the \
             agent saved). Use it to follow a run started with dispatch.",
            input_schema::<RunIdArgs>(),
        )
        .with_annotations(ToolAnnotations::with_title("Get a run").read_only(true)),
        Tool::new(
            CANCEL_RUN,
            "Cancel a run: a queued run becomes `cancelled` at once; a running agent is stopped \
             within seconds. A run that already ended cannot be cancelled (error `conflict`).",
            input_schema::<RunIdArgs>(),
        )
        .with_annotations(
            ToolAnnotations::with_title("Cancel a run")
                .read_only(false)
                .destructive(true)
                .idempotent(true)
                .open_world(false),
        ),
        Tool::new(
            PROMOTE,
            "Promote a finished run's changes: push the diff the agent made to a new branch of \
             the run's git repository (default branch name `outpost/<run id>`) and return the \
             branch, commit and a compare link. Only for runs dispatched with a `repo` that \
             changed files.",
            input_schema::<PromoteArgs>(),
        )
        .with_annotations(
            ToolAnnotations::with_title("Promote a run's changes to a branch")
                .read_only(false)
                .destructive(false)
                .idempotent(true)
                .open_world(true),
        ),
        Tool::new(
            FLEET_STATUS,
            "Show the fleet: the agents you can dispatch to (name, description, default \
             timeout), the queue depth, how many runs are running, and the workers with their \
             free and busy slots.",
            schema_for_empty_input(),
        )
        .with_annotations(ToolAnnotations::with_title("Fleet status").read_only(true)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(names, tool_names());
        let dispatch = &tools[0];
        let props = properties(dispatch);
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
        let list = properties(&tools[1]);
        assert_eq!(list.len(), 4, "{list:?}");
        let promote = properties(&tools[4]);
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
