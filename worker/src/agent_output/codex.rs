//! Reader of Codex CLI's `codex exec --json` output: one JSON event per line on stdout, mixed
//! with codex's plain-text stderr (a `WARNING:` line, `Reading additional input from stdin...`,
//! tracing lines); see the module docs of [`super`].
//!
//! Semantics:
//! - `session_id`: the first `thread.started` event's `thread_id` (`codex exec resume <id>`).
//! - `error`: the last `turn.failed` event's `error.message` (or its `error` when that is a
//!   string). Codex prints one when a turn ends in failure: a refused key `unexpected status 401
//!   Unauthorized: <vendor message>, url: …`, `Connection failed: …`, `Missing environment
//!   variable: …`. Without one: the last top-level `error` event that is not a retry notice
//!   (`Reconnecting... 1/2 (…)`) and that no `turn.completed` follows. When the output holds no
//!   codex event at all (codex refused its command line or config before starting): the first
//!   plain line that starts with `Error` or `error:` (`error: unexpected argument …`, `Error
//!   loading config.toml: …`). Retry notices and `item.completed` items of type `error`
//!   (`Falling back from WebSockets to HTTPS transport. …`, model-metadata warnings) are
//!   notices, never the run's error.
//! - `result`: the `text` of the last `item.completed` item of type `agent_message` (the
//!   agent's final answer), when the run has no error.
//! - `usage`: the sum over every `turn.completed` event's `usage` (`input_tokens`, cached ones
//!   included; `cached_input_tokens`; `output_tokens`, reasoning included). Codex reports no
//!   cost, so `cost_usd` stays unknown.
//!
//! A run killed mid-way (timeout, idle) leaves only the session id: the timeout tells what
//! happened.

use super::{json_lines, str_field, TokenSum};
use outpost_core::domain::AgentReport;
use serde_json::Value;

/// Where the usage figures come from.
const USAGE_SOURCE: &str = "codex turn.completed.usage (tokens only: codex reports no cost)";

/// The report in codex's output `text`.
pub fn read(text: &str) -> AgentReport {
    let mut session_id: Option<String> = None;
    let mut saw_event = false;
    let mut turn_failed: Option<String> = None;
    // The last non-retry `error` event not yet followed by a completed turn.
    let mut open_error: Option<String> = None;
    let mut answer: Option<String> = None;
    let mut usage = TokenSum::default();
    for event in json_lines(text) {
        let Some(kind) = event.get("type").and_then(Value::as_str) else {
            continue;
        };
        saw_event = true;
        match kind {
            "thread.started" if session_id.is_none() => {
                session_id = str_field(&event, "thread_id");
            }
            "turn.failed" => {
                let error = event.get("error");
                let message = error.and_then(|e| str_field(e, "message")).or_else(|| {
                    error
                        .and_then(Value::as_str)
                        .map(str::trim)
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                });
                turn_failed = Some(message.unwrap_or_else(|| "codex reported a failed turn without a message".into()));
            }
            "error" => {
                if let Some(m) = str_field(&event, "message").filter(|m| !is_retry_notice(m)) {
                    open_error = Some(m);
                }
            }
            "turn.completed" => {
                open_error = None;
                if let Some(u) = event.get("usage").filter(|u| u.is_object()) {
                    add_turn(&mut usage, u);
                }
            }
            "item.completed" => {
                let item = event.get("item");
                if item.and_then(|i| i.get("type")).and_then(Value::as_str) == Some("agent_message") {
                    if let Some(t) = item.and_then(|i| str_field(i, "text")) {
                        answer = Some(t);
                    }
                }
            }
            _ => {}
        }
    }
    let error = turn_failed
        .or(open_error)
        .or_else(|| if saw_event { None } else { startup_error(text) });
    AgentReport {
        result: if error.is_none() { answer } else { None },
        error,
        // A completed turn reports usage, even when its figures are empty.
        usage: (usage.calls > 0).then(|| usage.usage(USAGE_SOURCE)),
        session_id,
    }
}

/// Codex's notice that it retries a request or stream (`Reconnecting... 2/5 (…)`, `Reconnecting...
/// waiting for network (…)`): not a failure by itself.
fn is_retry_notice(message: &str) -> bool {
    message.starts_with("Reconnecting")
}

/// The plain-text error codex prints when it refuses to start (command line or config).
fn startup_error(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("Error") || l.starts_with("error:"))
        .map(str::to_owned)
}

/// Adds one `turn.completed.usage` object to `sum`.
fn add_turn(sum: &mut TokenSum, usage: &Value) {
    let count = |key: &str| usage.get(key).and_then(Value::as_u64);
    sum.add(
        count("input_tokens"),
        count("cached_input_tokens"),
        count("output_tokens"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/codex-ok.log");
    const OK_GIT: &str = include_str!("fixtures/codex-ok-git.log");
    const AUTH_401: &str = include_str!("fixtures/codex-401.log");
    const REFUSED: &str = include_str!("fixtures/codex-refused.log");
    const NO_KEY: &str = include_str!("fixtures/codex-no-key.log");
    const SILENT_KILLED: &str = include_str!("fixtures/codex-silent-killed.log");
    const WS_FALLBACK: &str = include_str!("fixtures/codex-ws-fallback.log");
    const OLD_FLAGS: &str = include_str!("fixtures/codex-old-flags.log");
    const BAD_CONFIG: &str = include_str!("fixtures/codex-bad-config.log");

    /// The thread id of the fixture's `thread.started` line.
    fn thread_id(text: &str) -> String {
        let line = text
            .lines()
            .find(|l| l.contains("\"thread.started\""))
            .expect("fixture has thread.started");
        let v: Value = serde_json::from_str(line).expect("json");
        v["thread_id"].as_str().expect("thread_id").to_owned()
    }

    #[test]
    fn ok_runs_give_answer_usage_and_session() {
        for text in [OK, OK_GIT] {
            let r = read(text);
            assert_eq!(r.error, None);
            assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
            let u = r.usage.expect("usage");
            assert_eq!(u.input_tokens, Some(1234));
            assert_eq!(u.cached_input_tokens, Some(0));
            assert_eq!(u.output_tokens, Some(56));
            assert_eq!(u.cost_usd, None, "codex reports no cost");
            assert_eq!(u.source, USAGE_SOURCE);
            let sid = r.session_id.expect("session id");
            assert_eq!(sid.len(), 36, "a UUID: {sid}");
            assert_eq!(sid, thread_id(text));
        }
    }

    #[test]
    fn refused_key_is_an_error_with_the_vendor_message() {
        let r = read(AUTH_401);
        let e = r.error.expect("error");
        assert!(
            e.starts_with("unexpected status 401 Unauthorized: standin-401: invalid api key"),
            "{e}"
        );
        assert!(
            !e.starts_with("Reconnecting"),
            "the final message, not a retry notice: {e}"
        );
        assert_eq!(r.result, None);
        assert_eq!(r.usage, None, "no turn completed");
        assert_eq!(r.session_id, Some(thread_id(AUTH_401)));
    }

    #[test]
    fn connection_refused_and_missing_key_are_errors() {
        let e = read(REFUSED).error.expect("error");
        assert_eq!(e, "Connection failed: error sending request");
        let e = read(NO_KEY).error.expect("error");
        assert_eq!(e, "Missing environment variable: `CODEX_API_KEY`.");
    }

    #[test]
    fn retry_notices_and_error_items_before_a_completed_turn_are_not_errors() {
        assert!(WS_FALLBACK.contains("\"type\":\"error\",\"message\":\"Reconnecting..."));
        assert!(WS_FALLBACK.contains("Falling back from WebSockets"));
        let r = read(WS_FALLBACK);
        assert_eq!(r.error, None);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert_eq!(r.usage.and_then(|u| u.input_tokens), Some(1234));
    }

    #[test]
    fn a_killed_run_leaves_only_the_session_id() {
        let r = read(SILENT_KILLED);
        assert_eq!(r.error, None);
        assert_eq!(r.result, None);
        assert_eq!(r.usage, None);
        assert_eq!(r.session_id, Some(thread_id(SILENT_KILLED)));
    }

    #[test]
    fn refusals_before_start_are_read_from_plain_text() {
        let e = read(OLD_FLAGS).error.expect("error");
        assert_eq!(e, "error: unexpected argument '--full-auto' found");
        let e = read(BAD_CONFIG).error.expect("error");
        assert!(
            e.starts_with("Error loading config.toml: unknown configuration field"),
            "{e}"
        );
        assert_eq!(read(BAD_CONFIG).session_id, None);
        // Once codex has started, plain text is never taken for its error.
        let r = read(&format!("Error: something on stderr\n{OK}"));
        assert_eq!(r.error, None);
    }

    #[test]
    fn usage_sums_over_turns_and_the_last_answer_wins() {
        let text = concat!(
            "{\"type\":\"thread.started\",\"thread_id\":\"t-1\"}\n",
            "{\"type\":\"thread.started\",\"thread_id\":\"t-2\"}\n",
            "{\"type\":\"item.completed\",\"item\":{\"id\":\"i0\",\"type\":\"agent_message\",\"text\":\"first\"}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":10,\"cached_input_tokens\":4,\"output_tokens\":2}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"id\":\"i1\",\"type\":\"reasoning\",\"text\":\"hmm\"}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"id\":\"i2\",\"type\":\"agent_message\",\"text\":\"  second\\nline é  \"}}\n",
            "{\"type\":\"item.completed\",\"item\":{\"id\":\"i3\",\"type\":\"agent_message\",\"text\":\"   \"}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}\n",
        );
        let r = read(text);
        assert_eq!(r.session_id.as_deref(), Some("t-1"), "the first thread");
        assert_eq!(
            r.result.as_deref(),
            Some("second\nline é"),
            "blank messages are skipped"
        );
        let u = r.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens),
            (Some(15), Some(4), Some(3))
        );
    }

    #[test]
    fn an_error_event_without_turn_failed_counts_unless_a_turn_completes_after_it() {
        let r = read("{\"type\":\"error\",\"message\":\"stream disconnected\"}\n");
        assert_eq!(r.error.as_deref(), Some("stream disconnected"));
        let r = read(concat!(
            "{\"type\":\"error\",\"message\":\"transient\"}\n",
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"ok\"}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{}}\n",
        ));
        assert_eq!(r.error, None);
        assert_eq!(r.result.as_deref(), Some("ok"));
        let u = r.usage.expect("a completed turn reports usage, even empty");
        assert_eq!((u.input_tokens, u.output_tokens), (None, None), "unknown, not zero");
        // turn.failed wins over a later completed turn and has a fallback message.
        let r = read(concat!(
            "{\"type\":\"item.completed\",\"item\":{\"type\":\"agent_message\",\"text\":\"partial\"}}\n",
            "{\"type\":\"turn.failed\",\"error\":{}}\n",
        ));
        assert_eq!(
            r.error.as_deref(),
            Some("codex reported a failed turn without a message")
        );
        assert_eq!(r.result, None, "an error is not an answer");
    }

    #[test]
    fn empty_garbage_and_truncated_output_read_as_nothing() {
        assert!(read("").is_empty());
        assert!(read("\n \n\t\n").is_empty());
        assert!(read("{not json}\n[1,2\n\u{0}\u{fffd}{{{{\n{\"type\":42}\n{}\n").is_empty());
        assert!(read("{\"type\":\"thread.started\",\"thread_id\":\"abc").is_empty());
        // Wrong types and huge numbers never panic and are not believed.
        let r = read(concat!(
            "{\"type\":\"thread.started\",\"thread_id\":7}\n",
            "{\"type\":\"turn.failed\",\"error\":\"boom\"}\n",
            "{\"type\":\"item.completed\",\"item\":[1]}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":18446744073709551615,\"output_tokens\":-3}}\n",
            "{\"type\":\"turn.completed\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1.5}}\n",
        ));
        assert_eq!(r.session_id, None);
        assert_eq!(r.error.as_deref(), Some("boom"), "an error given as a bare string");
        let u = r.usage.expect("usage");
        assert_eq!(u.input_tokens, Some(u64::MAX), "saturates");
        assert_eq!(u.output_tokens, None);
        // The last line cut mid-way: the earlier lines are still read.
        let end = OK.trim_end().rfind('\n').expect("lines") + 30;
        let r = read(&OK[..end]);
        assert_eq!(r.usage, None, "the turn.completed line is cut");
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert!(r.session_id.is_some());
    }
}
