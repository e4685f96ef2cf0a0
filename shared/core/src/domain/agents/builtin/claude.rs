//! Claude Code (`@anthropic-ai/claude-code`), print mode with streamed JSON events.
//!
//! Sources: `claude --help` of the verified release (2.1.332) for flags; for variables the docs
//! page "Environment variables" (code.claude.com/docs/en/env-vars), each also found in the
//! release's binary and its effect checked against the vendor stand-in
//! (`tests/vendor-standin/anthropic.py`):
//! - `-p`/`--print`: "Print response and exit"; the workspace trust dialog is skipped in this
//!   mode (help text), so no trust flag is needed. The prompt is the positional argument, after
//!   `--`, so that a task starting with `-` is never read as an option.
//! - `--output-format stream-json`: "realtime streaming", one JSON event per line, ending with a
//!   `result` event (`is_error`, `subtype`, `result`, `total_cost_usd`, `usage`, `session_id`);
//!   print mode requires `--verbose` with it. Streaming keeps the live log and the idle timeout
//!   meaningful (each turn, tool result and `api_retry` notice is a line as it happens).
//! - `--dangerously-skip-permissions`: "Bypass all permission checks" (Outpost is the sandbox).
//!   The CLI refuses it as root ("cannot be used with root/sudo privileges", exit 1), so the
//!   worker runs agents as an unprivileged user when it is root; verified as uid 65534.
//! - `ANTHROPIC_API_KEY`: sent as the `x-api-key` header; in `-p` mode always used when present.
//! - `ANTHROPIC_BASE_URL`: the API endpoint (requests go to `{base}/v1/messages?beta=true`).
//! - `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC`, `DISABLE_TELEMETRY`, `DISABLE_AUTOUPDATER`,
//!   `DISABLE_ERROR_REPORTING`: no update checks, telemetry, error reports, MCP registry fetch
//!   (without them the CLI tries `api.anthropic.com` at start and exit).
//! - `CLAUDE_CODE_MAX_RETRIES=2`: API retries (default 10, about 3 minutes of back-off on a
//!   refused key or a closed port; with 2 a dead vendor fails in about 2.5 s). Setting it also
//!   turns off the CLI's longer "overloaded" waits.
//! - `CLAUDE_CODE_TMPDIR={home}/.tmp`: the CLI's temp files (`claude-<uid>/`, the `cc-socks/`
//!   messaging socket) go below HOME instead of `/tmp` (changelog 2.1.5). Its other state is
//!   `HOME/.claude.json` and `HOME/.claude/` (sessions, transcripts, memory); nothing is written
//!   into the workspace but the agent's own edits.

use super::env;
use crate::domain::agents::{AgentSpec, KeyInjection, NetworkPolicy, OutputReader};

pub(super) fn spec() -> AgentSpec {
    let mut a = AgentSpec::new(
        "claude",
        &[
            "claude",
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--dangerously-skip-permissions",
            "--",
            "{prompt}",
        ],
    );
    a.description = "Anthropic Claude Code in print mode".into();
    a.key_env = Some("ANTHROPIC_API_KEY".into());
    a.base_url_env = Some("ANTHROPIC_BASE_URL".into());
    // The key stays in the worker's proxy (network "allow": the vendor and nothing else).
    a.key_injection = Some(KeyInjection::new("https://api.anthropic.com", "x-api-key", ""));
    a.network = NetworkPolicy::Allow;
    a.env = env(&[
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
        ("DISABLE_TELEMETRY", "1"),
        ("DISABLE_AUTOUPDATER", "1"),
        ("DISABLE_ERROR_REPORTING", "1"),
        ("CLAUDE_CODE_MAX_RETRIES", "2"),
        ("CLAUDE_CODE_TMPDIR", "{home}/.tmp"),
    ]);
    a.output = OutputReader::Claude;
    a.idle_timeout_secs = Some(300);
    a.verified_with = Some("@anthropic-ai/claude-code 2.1.332 (2.1.x)".into());
    a
}
