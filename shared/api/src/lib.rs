//! Wire types of the REST API (`/v1`), shared by the server (which derives its OpenAPI document
//! from them) and the typed client (feature `client`).
//!
//! These types are the public API. Port types of `outpost-core` never appear here directly: each
//! has a view (`WorkerView`, `SecretView`, `QueueView`) so a change to a port cannot silently
//! change the API. Domain values (statuses, failure reasons, artifacts, usage) are shared on
//! purpose: they are the API's vocabulary.

#[cfg(feature = "client")]
pub mod client;

use chrono::{DateTime, Utc};
use outpost_core::domain::{
    Artifact, ExecutorKind, FailureReason, NetworkPolicy, RepoSpec, Run, RunStatus, SandboxMode, Usage,
};
use outpost_core::ports::workers::AgentLoad;
use outpost_core::ports::{QueueDepth, SecretInfo, WorkerInfo};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Header carrying the next offset of a log read.
pub const HEADER_NEXT_OFFSET: &str = "outpost-next-offset";
/// Header carrying the log's size so far.
pub const HEADER_LOG_SIZE: &str = "outpost-log-size";
/// Header carrying the run's status at the time of a log read.
pub const HEADER_RUN_STATUS: &str = "outpost-run-status";

/// `POST /v1/runs` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DispatchRequest {
    /// Agent name, as listed by `GET /v1/fleet`.
    pub agent: String,
    /// The task prompt, 1..=50,000 characters.
    pub task: String,
    /// Git repository to clone into the workspace (`https://`, `ssh://`, `git@host:path`, `file://`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// Branch of `repo` to check out (requires `repo`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Seconds before the agent is stopped, 10..=86,400; the agent's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Seconds the agent may go without printing anything before it is stopped (the run ends
    /// `timed_out` with reason `idle`), 1..=86,400 and not above `timeout_secs`; the agent's
    /// default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_secs: Option<u64>,
}

/// Links of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub logs: String,
    pub cancel: String,
    pub artifacts: String,
}

impl RunLinks {
    pub fn for_run(id: &str) -> Self {
        Self {
            self_: format!("/v1/runs/{id}"),
            logs: format!("/v1/runs/{id}/logs"),
            cancel: format!("/v1/runs/{id}/cancel"),
            artifacts: format!("/v1/runs/{id}/artifacts"),
        }
    }
}

/// `202` answer of a dispatch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DispatchAccepted {
    pub id: String,
    pub status: RunStatus,
    pub created_at: DateTime<Utc>,
    pub links: RunLinks,
}

/// A stored file of a run, with where to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArtifactView {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub content_type: String,
    /// Path (embedded) or presigned URL (AWS) to GET the content.
    pub url: String,
}

impl ArtifactView {
    pub fn from_artifact(run_id: &str, a: &Artifact) -> Self {
        Self {
            name: a.name.clone(),
            size: a.size,
            sha256: a.sha256.clone(),
            content_type: a.content_type.clone(),
            url: format!("/v1/runs/{run_id}/artifacts/{}", encode_artifact_path(&a.name)),
        }
    }
}

/// An artifact name as a URL path: each `/`-separated part percent-encoded (RFC 3986 unreserved
/// characters kept), so names with spaces, `?`, `#` or `%` still make a working link.
pub fn encode_artifact_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A run as clients see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunView {
    pub id: String,
    pub tenant: String,
    pub agent: String,
    pub task: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoSpec>,
    pub timeout_secs: u32,
    /// Seconds without output before the agent is stopped, as dispatched; `null`: the agent's
    /// default.
    #[serde(default)]
    pub idle_timeout_secs: Option<u32>,
    pub status: RunStatus,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub cancel_requested: bool,
    pub worker_id: Option<String>,
    /// Where the agent runs, for an entry with `executor = "ecs" | "ssm"`: the ECS task or SSM
    /// command the run records (absent for process runs and before the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteView>,
    /// The agent's final answer, read from its own output once the run ended (up to 16 KiB; the
    /// whole answer is the `result.md` artifact).
    #[serde(default)]
    pub result: Option<String>,
    /// The error the agent itself reported (e.g. its vendor refusing the key), up to 4 KiB; set
    /// when the run failed with reason `agent_error`, even if the agent exited 0.
    #[serde(default)]
    pub agent_error: Option<String>,
    /// Tokens and cost of the run, when the agent reports them.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The agent's own session id (claude `session_id`, codex `thread_id`, gemini `session_id`).
    #[serde(default)]
    pub session_id: Option<String>,
    pub artifacts: Vec<ArtifactView>,
    pub links: RunLinks,
}

impl From<&Run> for RunView {
    fn from(r: &Run) -> Self {
        let id = r.id.as_str();
        Self {
            id: id.to_owned(),
            tenant: r.tenant.to_string(),
            agent: r.agent.clone(),
            task: r.task.clone(),
            repo: r.repo.clone(),
            timeout_secs: r.timeout_secs,
            idle_timeout_secs: r.idle_timeout_secs,
            status: r.status,
            attempts: r.attempts,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms(),
            exit_code: r.exit_code,
            failure_reason: r.failure_reason,
            cancel_requested: r.cancel_requested,
            worker_id: r.worker_id.as_ref().map(|w| w.to_string()),
            remote: r.remote.as_ref().map(RemoteView::from),
            result: r.report.result.clone(),
            agent_error: r.report.error.clone(),
            usage: r.report.usage.clone(),
            session_id: r.report.session_id.clone(),
            artifacts: r.artifacts.iter().map(|a| ArtifactView::from_artifact(id, a)).collect(),
            links: RunLinks::for_run(id),
        }
    }
}

/// A run's remote execution as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RemoteView {
    pub executor: ExecutorKind,
    /// The ECS task ARN or the SSM command id.
    pub id: String,
    /// The EC2 instance of an SSM command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The attempt of the run that started it.
    pub attempt: u32,
}

impl From<&outpost_core::RemoteTask> for RemoteView {
    fn from(t: &outpost_core::RemoteTask) -> Self {
        Self {
            executor: t.executor,
            id: t.id.clone(),
            host: t.host.clone(),
            attempt: t.attempt,
        }
    }
}

/// `GET /v1/runs` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An agent as listed in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub name: String,
    pub description: String,
    /// Env var that carries the vendor API key, if the agent needs one: the name of the tenant
    /// secret (`PUT /v1/secrets/{name}`) that reaches the agent.
    pub key_env: Option<String>,
    /// Other secret names the key is also taken from (e.g. `OPENAI_API_KEY` for codex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_aliases: Vec<String>,
    pub default_timeout_secs: u32,
    /// Seconds without output before a run of this agent is stopped, unless the dispatch says.
    #[serde(default)]
    pub idle_timeout_secs: Option<u32>,
    /// The CLI release the entry was verified with.
    #[serde(default)]
    pub verified_with: Option<String>,
    /// The entry's sandbox mode; absent: the worker's default (the strongest its machine
    /// supports; each run's `summary.json` says which it had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxMode>,
    /// What a run of this agent may reach on the network.
    #[serde(default = "default_network")]
    pub network: NetworkPolicy,
    /// With `network = "allow"`: the hosts its runs may reach besides its vendor.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// Whether the worker's proxy holds the vendor key (the agent sees only a placeholder).
    #[serde(default)]
    pub key_injection: bool,
    /// Where its runs run: `process` (in the worker), `ecs` (a task per run) or `ssm` (on an EC2
    /// host).
    #[serde(default)]
    pub executor: ExecutorKind,
    /// Its runs the live workers are handling now (the sum of their reports).
    #[serde(default)]
    pub in_flight: u32,
    /// Whether its executor can take runs now: `true` if a live worker says so, `false` if live
    /// workers report it and none says so, absent when no live worker reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    /// What the executor said of it (e.g. `2 of 3 hosts online`, `task definition … INACTIVE`):
    /// the first available report's, else the first unavailable one's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability: Option<String>,
}

fn default_network() -> NetworkPolicy {
    NetworkPolicy::Open
}

/// Queue counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    pub visible: u64,
    pub in_flight: u64,
    pub dead: u64,
}

impl From<QueueDepth> for QueueView {
    fn from(d: QueueDepth) -> Self {
        Self {
            visible: d.visible,
            in_flight: d.in_flight,
            dead: d.dead,
        }
    }
}

/// One worker process as it last reported itself (the wire form of the registry's `WorkerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub hostname: String,
    pub slots: u32,
    pub busy: u32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Per agent it serves: executor, runs in flight and availability, as it last reported.
    #[serde(default)]
    pub agents: Vec<WorkerAgentView>,
}

impl From<WorkerInfo> for WorkerView {
    fn from(w: WorkerInfo) -> Self {
        Self {
            id: w.id.0,
            hostname: w.hostname,
            slots: w.slots,
            busy: w.busy,
            started_at: w.started_at,
            last_seen: w.last_seen,
            agents: w.agents.into_iter().map(Into::into).collect(),
        }
    }
}

/// One agent as one worker reported it (the wire form of the registry's `AgentLoad`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkerAgentView {
    pub agent: String,
    pub executor: ExecutorKind,
    /// Its runs this worker is handling now.
    pub in_flight: u32,
    /// Whether the executor can take its runs, as this worker last saw; absent: not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    /// What the executor said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl From<AgentLoad> for WorkerAgentView {
    fn from(l: AgentLoad) -> Self {
        Self {
            agent: l.agent,
            executor: l.executor,
            in_flight: l.in_flight,
            available: l.available,
            detail: l.detail,
        }
    }
}

/// `GET /v1/fleet` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FleetStatus {
    pub agents: Vec<AgentView>,
    pub queue: QueueView,
    /// Runs in `running` state (all tenants).
    pub running: u64,
    pub workers: Vec<WorkerView>,
    pub slots_total: u32,
    pub slots_busy: u32,
}

/// `POST /v1/runs/{id}/promote` body (may be empty `{}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Branch to create and push (default `outpost/{run-id}`), checked with git's branch rules.
    #[serde(default)]
    pub branch: Option<String>,
}

/// `POST /v1/runs/{id}/promote` answer: where the run's changes now are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PromoteResult {
    pub run_id: String,
    /// The branch pushed to the run's repository.
    pub branch: String,
    /// The commit on `branch` holding the run's changes.
    pub commit: String,
    /// The commit the agent started from (the branch's parent commit).
    pub base_commit: String,
    /// A web page comparing the base with the branch, when the remote's host is known (GitHub,
    /// GitLab, Bitbucket).
    pub compare_url: Option<String>,
    /// `false` when the branch already held this very commit (a repeated promote changes nothing).
    pub pushed: bool,
    /// The pull request opened for the branch, when asked for and possible.
    pub pull_request_url: Option<String>,
}

/// `PUT /v1/secrets/{name}` body: the value of one of the tenant's secrets (BYOK). Handed to the
/// tenant's agents as the environment variable `name`; never returned by the API.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretRequest {
    /// 1 to 4096 bytes.
    pub value: String,
}

impl std::fmt::Debug for PutSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutSecretRequest")
            .field("value", &"[redacted]")
            .finish()
    }
}

/// What the API shows of a stored secret: its name and when it was set, never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    pub name: String,
    pub updated_at: DateTime<Utc>,
}

impl From<SecretInfo> for SecretView {
    fn from(s: SecretInfo) -> Self {
        Self {
            name: s.name.to_string(),
            updated_at: s.updated_at,
        }
    }
}

/// `GET /v1/secrets` answer: names and times only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecretList {
    pub secrets: Vec<SecretView>,
}

/// `GET /health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// The one error shape: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `validation_failed`, `not_found`, `unauthorized`.
    pub code: String,
    /// What went wrong, for a person.
    pub message: String,
    /// The request field at fault, for validation errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// `GET /v1/runs` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, utoipa::IntoParams)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[into_params(parameter_in = Query)]
pub struct ListRunsQuery {
    /// Only runs in this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    /// Only runs of this agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Page size, 1..=100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// What a client got from `GET /v1/runs/{id}/logs?offset=`: raw bytes plus the headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRead {
    pub data: bytes::Bytes,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// Bytes stored so far.
    pub size: u64,
    /// The run's status when the bytes were read; once terminal, `size` is final.
    pub status: RunStatus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::domain::{AgentReport, NewRun, RunId};

    #[test]
    fn run_views_carry_the_agent_report_and_the_idle_timeout() {
        let mut run = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "claude".into(),
            task: "t".into(),
            repo: None,
            timeout_secs: 600,
            idle_timeout_secs: Some(42),
            created_at: Utc::now(),
        });
        let usage = Usage {
            input_tokens: Some(10),
            cached_input_tokens: Some(4),
            output_tokens: Some(2),
            cost_usd: Some(0.0123),
            source: "claude result.total_cost_usd".into(),
        };
        run.report = AgentReport {
            result: Some("the answer".into()),
            error: Some("401 bad key".into()),
            usage: Some(usage.clone()),
            session_id: Some("sess-1".into()),
        };
        let view = RunView::from(&run);
        assert_eq!(view.idle_timeout_secs, Some(42));
        assert_eq!(view.result.as_deref(), Some("the answer"));
        assert_eq!(view.agent_error.as_deref(), Some("401 bad key"));
        assert_eq!(view.usage, Some(usage));
        assert_eq!(view.session_id.as_deref(), Some("sess-1"));
        let json = serde_json::to_value(&view).expect("json");
        assert_eq!(json["usage"]["cost_usd"], serde_json::json!(0.0123));
        assert_eq!(json["agent_error"], "401 bad key");
        let back: RunView = serde_json::from_value(json.clone()).expect("parses");
        assert_eq!(back, view);

        // An answer of a server without these fields still reads, as "none".
        let mut old = json;
        let object = old.as_object_mut().expect("object");
        for field in ["idle_timeout_secs", "result", "agent_error", "usage", "session_id"] {
            object.remove(field);
        }
        let old: RunView = serde_json::from_value(old).expect("old answer parses");
        assert_eq!((old.result, old.usage, old.idle_timeout_secs), (None, None, None));
    }
}
