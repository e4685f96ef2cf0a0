//! Claude Code (`@anthropic-ai/claude-code`), print mode with streamed JSON events.
//!
//! Sources (`claude --help` of the verified release unless said otherwise):
//! - `-p`/`--print`: non-interactive, print and exit.
//! - `--output-format stream-json` (with `--verbose`, which stream-json requires in print mode):
//!   one JSON event per line, ending with a `result` event (`is_error`, `subtype`, `result`,
//!   `total_cost_usd`, `usage`, `session_id`); streaming keeps the live log and the idle timeout
//!   meaningful.
//! - `--dangerously-skip-permissions`: no permission prompts. Claude Code refuses it as root, so
//!   the worker runs agents as an unprivileged user when it is root.
//! - `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`, `DISABLE_TELEMETRY`, `DISABLE_AUTOUPDATER`,
//!   `DISABLE_ERROR_REPORTING`, `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`: docs, "Settings →
//!   Environment variables".

use super::env;
use crate::domain::agents::{AgentSpec, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "claude",
        &[
            "claude",
            "-p",
            "{prompt}",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
        ],
    );
    a.description = "Anthropic Claude Code in print mode".into();
    a.key_env = Some("ANTHROPIC_API_KEY".into());
    a.base_url_env = Some("ANTHROPIC_BASE_URL".into());
    a.env = env(&[
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ]);
    a.output = OutputReader::Claude;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@anthropic-ai/claude-code 2.1.332 (2.1.x)".into());
    a
}
