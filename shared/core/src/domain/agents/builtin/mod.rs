//! The built-in agents, one file each. Every entry records the CLI release it was verified with
//! (`verified_with`) and, beside each flag and variable, where it is documented: the CLI's own
//! `--help` or its docs. `tests/tests/real_agents/` runs each entry against the real CLI at that
//! release (installed by `scripts/agent-clis`), pointed at a loopback stand-in of its vendor's
//! API; `registry_flags` there fails when a flag of an entry is missing from the installed CLI's
//! `--help`.
//!
//! Shared choices, because Outpost itself is the sandbox: permission prompts are bypassed, the
//! CLI's update checks, telemetry and error reports are off, its state lives in the run's private
//! HOME (never the workspace), and it is asked for structured output where it has one, so the
//! worker reads its answer, error, usage and session from it (`outpost_worker::agent_output`).

use super::AgentSpec;

mod aider;
mod claude;
mod codex;
mod gemini;
mod grok;

/// Every built-in agent CLI entry (without `shell`).
pub fn all() -> Vec<AgentSpec> {
    vec![
        claude::spec(),
        codex::spec(),
        gemini::spec(),
        aider::spec(),
        grok::spec(),
    ]
}

/// `(name, value)` pairs as an env map.
fn env(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
