//! The artifact contract between the worker (which writes a run's artifacts) and everything that
//! reads them (the API, promote, clients): the names of the files every run may store and the
//! shape of `summary.json`.
//!
//! Every run stores [`OUTPUT_LOG`] and [`SUMMARY_JSON`]; [`RESULT_MD`] when the agent gave an
//! answer; [`DIFF_PATCH`] when the run had a repository and changed it; the files the agent
//! created under [`FILES_PREFIX`]. The manifest lists them in [`manifest_rank`] order.

use super::agents::{NetworkPolicy, SandboxMode};
use super::report::AgentReport;
use super::run::{FailureReason, TerminalStatus};
use serde::{Deserialize, Serialize};

/// Everything the agent printed (stdout and stderr, in order), secrets scrubbed, then the
/// worker's notes. Grows while the run is live (tailing) and is replaced by the final file.
pub const OUTPUT_LOG: &str = "output.log";
/// [`Summary`] as pretty JSON.
pub const SUMMARY_JSON: &str = "summary.json";
/// The agent's final answer, when its output reader found one.
pub const RESULT_MD: &str = "result.md";
/// `git diff --binary` of the workspace against the commit the agent started from (new files
/// included); what promote applies.
pub const DIFF_PATCH: &str = "diff.patch";
/// Prefix of the files the agent created in its workspace.
pub const FILES_PREFIX: &str = "files/";

/// Content type of [`OUTPUT_LOG`].
pub const OUTPUT_LOG_TYPE: &str = "text/plain; charset=utf-8";
/// Content type of [`SUMMARY_JSON`].
pub const SUMMARY_JSON_TYPE: &str = "application/json";
/// Content type of [`RESULT_MD`].
pub const RESULT_MD_TYPE: &str = "text/markdown; charset=utf-8";
/// Content type of [`DIFF_PATCH`].
pub const DIFF_PATCH_TYPE: &str = "text/x-diff; charset=utf-8";

/// Where an artifact goes in a run's manifest: the log, the summary, the answer, the diff, then
/// the agent's files.
pub fn manifest_rank(name: &str) -> u8 {
    match name {
        OUTPUT_LOG => 0,
        SUMMARY_JSON => 1,
        RESULT_MD => 2,
        DIFF_PATCH => 3,
        _ => 4,
    }
}

/// `summary.json`: what happened, for people and tools that fetch only artifacts. Readers take
/// missing fields as their defaults, so an older summary still reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub agent: String,
    pub status: TerminalStatus,
    pub exit_code: Option<i32>,
    pub failure_reason: Option<FailureReason>,
    pub duration_ms: u64,
    pub attempts: u32,
    /// Paths the agent changed, created or deleted (repository runs), or created (others).
    #[serde(default)]
    pub changed_files: Vec<String>,
    /// The commit the agent started from (repository runs with at least one commit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_commit: Option<String>,
    pub output_bytes: u64,
    pub redactions: u64,
    /// The worker's notes about the run (denied requests, incomplete output, failed uploads).
    #[serde(default)]
    pub notes: Vec<String>,
    /// The agent's own report (answer, error, usage, session), capped as on the run record.
    #[serde(default, skip_serializing_if = "AgentReport::is_empty")]
    pub agent_report: AgentReport,
    /// How the agent was confined (absent when it never started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxRecord>,
    /// What went through the run's egress proxy (runs with `network = "allow"`, or whose key the
    /// proxy held); `None` when the run had none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressRecord>,
    /// The manifest of every artifact stored before `summary.json` (in manifest order), so that a
    /// worker that reads only `summary.json` (the agent ran remotely) records the whole manifest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<super::Artifact>,
}

/// The sandbox one run's agent had, as `summary.json` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub mode: SandboxMode,
    pub network: NetworkPolicy,
    /// The layers that were on, e.g. `identity: uid 100003`, `namespaces: mount, pid, ipc, uts,
    /// net`, `landlock`, `limits: cgroup v2 (memory, pids)`.
    pub layers: Vec<String>,
    /// What the mode asks for but this machine could not enforce, each with why.
    #[serde(default)]
    pub not_enforced: Vec<String>,
}

/// One run's traffic through its egress proxy, as `summary.json` records it. Refusals are also
/// notes of the run, one line each (the first [`EgressRecord::NOTED_REFUSALS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRecord {
    /// Whether the proxy held the vendor key (the agent saw only a placeholder).
    pub key_injected: bool,
    /// Requests forwarded to the agent's vendor with the key swapped in.
    pub vendor_requests: u64,
    /// `CONNECT` tunnels opened to allowed hosts.
    pub tunnels: u64,
    /// Connections and requests refused.
    pub refused: u64,
    /// Tokens the vendor's responses reported, counted by the proxy (not by the agent).
    pub usage: MeteredUsage,
}

impl EgressRecord {
    /// Refusals written as notes; the rest are only counted.
    pub const NOTED_REFUSALS: usize = 50;
}

/// Token counts read by the proxy from the vendor's responses (JSON bodies and server-sent
/// events: Anthropic `usage`, OpenAI `usage`/`response.usage`, chat completions `usage`, Gemini
/// `usageMetadata`), summed over the run's responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeteredUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Of the input tokens, those the vendor read from its prompt cache, where it says so.
    pub cached_input_tokens: u64,
    /// Successful vendor responses whose usage was read.
    pub responses: u64,
    /// Successful vendor responses with no usage the proxy could read (another shape, or a body
    /// too large to hold).
    pub unmetered_responses: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_round_trips_and_an_older_one_still_reads() {
        let s = Summary {
            run_id: "run_X".into(),
            agent: "fake".into(),
            status: TerminalStatus::Succeeded,
            exit_code: Some(0),
            failure_reason: None,
            duration_ms: 12,
            attempts: 1,
            changed_files: vec!["a.txt".into()],
            base_commit: Some("0".repeat(40)),
            output_bytes: 5,
            redactions: 0,
            notes: vec![],
            agent_report: AgentReport::default(),
            sandbox: None,
            egress: None,
            artifacts: vec![],
        };
        let json = serde_json::to_value(&s).expect("json");
        assert!(json.get("agent_report").is_none(), "an empty report is left out");
        assert_eq!(serde_json::from_value::<Summary>(json).expect("back"), s);
        let old: Summary = serde_json::from_str(
            r#"{"run_id":"run_Y","agent":"a","status":"failed","exit_code":1,"failure_reason":"non_zero_exit",
                "duration_ms":1,"attempts":1,"output_bytes":0,"redactions":0}"#,
        )
        .expect("an older summary reads");
        assert_eq!(old.base_commit, None);
        assert!(old.changed_files.is_empty());
    }

    #[test]
    fn the_manifest_puts_the_log_first_and_files_last() {
        let mut names = ["files/a", DIFF_PATCH, RESULT_MD, SUMMARY_JSON, OUTPUT_LOG];
        names.sort_by_key(|n| manifest_rank(n));
        assert_eq!(names, [OUTPUT_LOG, SUMMARY_JSON, RESULT_MD, DIFF_PATCH, "files/a"]);
    }
}
