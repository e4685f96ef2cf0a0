//! What an agent said about its own run, read from its own output by the worker: its final
//! answer, the error its vendor returned, token usage and cost, and its session id.
//!
//! The worker reads the agent's output after it exits (see `outpost_worker::agent_output`), so a
//! CLI that exits 0 after an authentication failure still ends `failed` with reason
//! `agent_error`. Everything here is stored on the run record (capped, see
//! [`AgentReport::capped`]) and in `summary.json`; the whole final answer is the `result.md`
//! artifact.

use serde::{Deserialize, Serialize};

/// Most bytes of the final answer kept on the run record (the whole answer is `result.md`).
pub const RESULT_RECORD_BYTES: usize = 16 * 1024;
/// Most bytes of the agent's error message kept on the run record.
pub const ERROR_RECORD_BYTES: usize = 4 * 1024;
/// Longest session id kept.
pub const SESSION_ID_BYTES: usize = 256;

/// The agent's own account of its run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct AgentReport {
    /// The agent's final answer (its last message), when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The failure the agent reported (e.g. its vendor's error message), even when it exited 0.
    /// Present means the run failed with reason `agent_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Tokens and cost of the run, when the agent reports them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The agent's session (claude `session_id`, codex `thread_id`, gemini `session_id`), to
    /// continue the conversation later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// Token usage and cost of a run, as the agent reported them. Every figure is optional: agents
/// report different subsets, and an absent figure is unknown, not zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Usage {
    /// Input (prompt) tokens, cached ones included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Of the input tokens, those read from the vendor's prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_tokens: Option<u64>,
    /// Output (completion) tokens, reasoning included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Cost in US dollars, when the agent computes one (claude, aider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Where the figures come from, e.g. `claude result.total_cost_usd`.
    pub source: String,
}

impl AgentReport {
    /// Whether the agent reported nothing at all.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The report as stores keep it: its JSON, or `None` when the agent reported nothing.
    pub fn to_stored_json(&self) -> Result<Option<String>, serde_json::Error> {
        if self.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(self).map(Some)
    }

    /// The report as the run record keeps it: the answer and the error cut at a char boundary
    /// to [`RESULT_RECORD_BYTES`] and [`ERROR_RECORD_BYTES`], an over-long session id dropped.
    pub fn capped(&self) -> Self {
        Self {
            result: self.result.as_deref().map(|r| cut(r, RESULT_RECORD_BYTES)),
            error: self.error.as_deref().map(|e| cut(e, ERROR_RECORD_BYTES)),
            usage: self.usage.clone(),
            session_id: self.session_id.clone().filter(|s| s.len() <= SESSION_ID_BYTES),
        }
    }
}

/// `s` cut to at most `max` bytes at a char boundary, with `…` marking the cut.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_cuts_at_char_boundaries_and_drops_long_session_ids() {
        let r = AgentReport {
            result: Some("é".repeat(RESULT_RECORD_BYTES)),
            error: Some("short".into()),
            usage: None,
            session_id: Some("x".repeat(SESSION_ID_BYTES + 1)),
        };
        let c = r.capped();
        let result = c.result.expect("kept");
        assert!(result.len() <= RESULT_RECORD_BYTES, "{}", result.len());
        assert!(result.ends_with('…'));
        assert_eq!(c.error.as_deref(), Some("short"));
        assert_eq!(c.session_id, None);
        assert!(AgentReport::default().is_empty());
    }
}
