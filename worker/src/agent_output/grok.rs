//! Reader of Grok CLI's output (see the module docs of [`super`]), as `grok --prompt` prints it
//! (@vibe-kit/grok-cli 0.0.34, `dist/index.js` `processPromptHeadless`): nothing while it works,
//! then, when it is done, one JSON object per line for each message of the conversation
//! (OpenAI chat shape: `{"role":"user"|"assistant"|"tool","content":…,"tool_calls":[…]}`).
//!
//! How it fails: a failed model call ends the agent loop with one assistant message
//! `Sorry, I encountered an error: Grok API error: 401 …` (or `…: Connection error.`, `…: Request
//! timed out.`) and exit 0; a failure outside the loop prints `{"role":"assistant","content":
//! "Error: …"}` and exits 1; a missing key prints `❌ Error: API key required…` on stderr and
//! exits 1; hitting `--max-tool-rounds` adds the message `Maximum tool execution rounds reached.
//! Stopping to prevent infinite loops.`.
//!
//! Report: the last assistant message without `tool_calls` decides: one of the failure messages
//! above is `error` (without the `Sorry, I encountered an error: ` prefix), any other is
//! `result`. With no such message, the last `❌ Error…`, `Uncaught exception:` or `Unhandled
//! rejection` line is `error`. `usage` is always `None`: grok-cli prints no token counts or cost
//! (it never shows the API's `usage`). No session id (headless runs have none).

use outpost_core::domain::AgentReport;
use serde_json::Value;

use super::json_lines;

/// The prefix grok-cli gives a failed agent loop's message.
const LOOP_ERROR: &str = "Sorry, I encountered an error: ";
/// The message grok-cli adds when `--max-tool-rounds` is reached.
const MAX_ROUNDS: &str = "Maximum tool execution rounds reached.";

/// The report in grok's output `text`.
pub fn read(text: &str) -> AgentReport {
    let mut result = None;
    let mut error = None;
    let mut decided = false;
    for msg in json_lines(text) {
        if msg.get("role").and_then(Value::as_str) != Some("assistant") {
            continue;
        }
        let has_calls = msg
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty());
        if has_calls {
            continue;
        }
        let content = msg.get("content").and_then(Value::as_str).unwrap_or_default();
        decided = true;
        (result, error) = if let Some(rest) = content.strip_prefix(LOOP_ERROR) {
            (None, Some(rest.to_owned()))
        } else if content.starts_with("Error: ") || content.starts_with(MAX_ROUNDS) {
            (None, Some(content.to_owned()))
        } else {
            (Some(content.to_owned()).filter(|c| !c.trim().is_empty()), None)
        };
    }
    if !decided || result.is_some() {
        // An exit-1 failure on stderr (a stray one beside an answer still failed the process).
        if let Some(line) = text.lines().rev().map(str::trim).find(|l| is_stderr_error(l)) {
            error = Some(line.to_owned());
        }
    }
    AgentReport {
        result,
        error,
        usage: None,
        session_id: None,
    }
}

/// grok-cli's own failure lines outside the JSON messages (all exit 1).
fn is_stderr_error(line: &str) -> bool {
    line.starts_with("❌ Error")
        || line.starts_with("Uncaught exception:")
        || line.starts_with("Unhandled rejection")
        || line.starts_with("Error changing directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/grok-ok.log");
    const UNAUTHORIZED: &str = include_str!("fixtures/grok-401.log");
    const REFUSED: &str = include_str!("fixtures/grok-refused.log");
    const NO_KEY: &str = include_str!("fixtures/grok-no-key.log");

    #[test]
    fn ok_run_gives_the_final_answer_and_no_usage() {
        let r = read(OK);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert_eq!(r.error, None);
        assert_eq!(r.usage, None, "grok-cli reports no usage");
        assert_eq!(r.session_id, None);
    }

    #[test]
    fn vendor_401_is_the_error_though_grok_exits_0() {
        let r = read(UNAUTHORIZED);
        assert_eq!(
            r.error.as_deref(),
            Some("Grok API error: 401 standin-401: invalid api key")
        );
        assert_eq!(r.result, None);
    }

    #[test]
    fn connection_refused_is_the_error() {
        let r = read(REFUSED);
        assert_eq!(r.error.as_deref(), Some("Grok API error: Connection error."));
        assert_eq!(r.result, None);
    }

    #[test]
    fn a_missing_key_is_the_error() {
        let e = read(NO_KEY).error.expect("error");
        assert!(e.starts_with("❌ Error: API key required. Set GROK_API_KEY"), "{e}");
    }

    #[test]
    fn max_rounds_and_headless_errors_are_errors() {
        let text = "{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{\"id\":\"c\"}]}\n\
                    {\"role\":\"assistant\",\"content\":\"Maximum tool execution rounds reached. Stopping to prevent infinite loops.\"}\n";
        let e = read(text).error.expect("error");
        assert!(e.starts_with(MAX_ROUNDS), "{e}");
        let r = read("{\"role\":\"assistant\",\"content\":\"Error: boom\"}\n");
        assert_eq!(r.error.as_deref(), Some("Error: boom"));
    }

    #[test]
    fn the_last_answer_wins_and_keeps_its_newlines() {
        let text = "{\"role\":\"user\",\"content\":\"Sorry, I encountered an error: not mine\"}\n\
                    {\"role\":\"assistant\",\"content\":\"first\"}\n\
                    {\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"ok\"}\n\
                    {\"role\":\"assistant\",\"content\":\"line 1\\nline 2\"}\n";
        let r = read(text);
        assert_eq!(r.result.as_deref(), Some("line 1\nline 2"));
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_stray_stderr_failure_beside_an_answer_is_an_error() {
        let text = "{\"role\":\"assistant\",\"content\":\"done\"}\nUnhandled rejection at: Promise {}\n";
        let r = read(text);
        assert_eq!(r.result.as_deref(), Some("done"));
        assert_eq!(r.error.as_deref(), Some("Unhandled rejection at: Promise {}"));
    }

    #[test]
    fn empty_truncated_and_garbage_output_report_nothing() {
        assert!(read("").is_empty());
        assert!(read("\nGracefully shutting down...\n").is_empty());
        assert!(read("{\"role\":\"assistant\",\"content\":\"Done: I wr").is_empty());
        assert!(read("{\"role\":\"assistant\",\"content\":42}\n\u{0}\u{fffd}{[}").is_empty());
        assert!(read("[1,2]\n{\"role\":7}\nnull\n").is_empty());
    }
}
