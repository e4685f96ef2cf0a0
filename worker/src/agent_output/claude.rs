//! Reader of Claude Code's `--output-format stream-json --verbose` output (one JSON event per
//! line; see the module docs of [`super`]).
//!
//! Semantics, from the last `{"type":"result"}` event (Claude Code prints one per prompt, at the
//! end of the run):
//! - `error`: when `is_error` is true or `subtype` is not `success` (`error_max_turns`,
//!   `error_during_execution`, `error_max_budget_usd`, …): the event's `result` text (Claude
//!   Code puts the vendor's message there, e.g. `Failed to authenticate. API Error: 401 …` or
//!   `API Error: Connection refused …`), else its `errors` strings, else the subtype. Claude Code
//!   reports a failed API call as `is_error: true` with `subtype: "success"`.
//! - `result`: the `result` text of a run without error (the agent's final message).
//! - `usage`: `usage` {`input_tokens` + `cache_creation_input_tokens` +
//!   `cache_read_input_tokens` as input, `cache_read_input_tokens` as cached, `output_tokens`}
//!   and `total_cost_usd` (Claude Code's own estimate at list prices).
//! - `session_id`: the result's, else the first event's that carries one (`system`/`init`).
//!
//! Without a result event (the CLI was killed or refused to start) only the session id is read:
//! the exit code or the timeout tells what happened. The single object of
//! `--output-format json`, or a JSON array of events (older releases with `--verbose`), is read
//! the same way.

use super::{json_lines, str_field};
use outpost_core::domain::{AgentReport, Usage};
use serde_json::Value;

/// Where the usage figures come from.
const USAGE_SOURCE: &str = "claude result.usage/total_cost_usd";

/// The report in claude's output `text`.
pub fn read(text: &str) -> AgentReport {
    let mut session_id: Option<String> = None;
    let mut last_result: Option<Value> = None;
    for event in events(text) {
        if session_id.is_none() {
            session_id = str_field(&event, "session_id");
        }
        if event.get("type").and_then(Value::as_str) == Some("result") {
            last_result = Some(event);
        }
    }
    let Some(result) = last_result else {
        return AgentReport {
            session_id,
            ..AgentReport::default()
        };
    };
    let error = error_of(&result);
    AgentReport {
        result: if error.is_none() {
            str_field(&result, "result")
        } else {
            None
        },
        error,
        usage: usage_of(&result),
        session_id: str_field(&result, "session_id").or(session_id),
    }
}

/// Every JSON object of the output in order: object lines (see [`json_lines`]), and the objects
/// of array lines.
fn events(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.lines().flat_map(|line| {
        let line = line.trim();
        let found: Vec<Value> = if line.starts_with('[') {
            serde_json::from_str::<Vec<Value>>(line)
                .map(|events| events.into_iter().filter(Value::is_object).collect())
                .unwrap_or_default()
        } else {
            json_lines(line).collect()
        };
        found
    })
}

/// The failure a result event reports, if any.
fn error_of(result: &Value) -> Option<String> {
    let is_error = result.get("is_error").and_then(Value::as_bool).unwrap_or(false);
    let subtype = result.get("subtype").and_then(Value::as_str);
    let failed = is_error || subtype.is_some_and(|s| s != "success");
    if !failed {
        return None;
    }
    if let Some(text) = str_field(result, "result") {
        return Some(text);
    }
    let errors: Vec<&str> = result
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .collect()
        })
        .unwrap_or_default();
    if !errors.is_empty() {
        return Some(errors.join("; "));
    }
    Some(match subtype {
        Some(s) if s != "success" => format!("claude reported {s}"),
        _ => "claude reported an error without a message".to_owned(),
    })
}

/// Tokens and cost of a result event, when it carries any.
fn usage_of(result: &Value) -> Option<Usage> {
    let usage = result.get("usage").filter(|u| u.is_object());
    let cost_usd = result
        .get("total_cost_usd")
        .and_then(Value::as_f64)
        .filter(|c| c.is_finite() && *c >= 0.0);
    if usage.is_none() && cost_usd.is_none() {
        return None;
    }
    let count = |key: &str| usage.and_then(|u| u.get(key)).and_then(Value::as_u64);
    let fresh = count("input_tokens");
    let created = count("cache_creation_input_tokens");
    let read = count("cache_read_input_tokens");
    let input_tokens = match (fresh, created, read) {
        (None, None, None) => None,
        (a, b, c) => Some(
            a.unwrap_or(0)
                .saturating_add(b.unwrap_or(0))
                .saturating_add(c.unwrap_or(0)),
        ),
    };
    Some(Usage {
        input_tokens,
        cached_input_tokens: read,
        output_tokens: count("output_tokens"),
        cost_usd,
        source: USAGE_SOURCE.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/claude-ok.log");
    const AUTH_401: &str = include_str!("fixtures/claude-401.log");
    const REFUSED: &str = include_str!("fixtures/claude-refused.log");

    #[test]
    fn ok_run_gives_answer_usage_cost_and_session() {
        let r = read(OK);
        assert_eq!(r.error, None);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        let u = r.usage.expect("usage");
        assert_eq!(u.input_tokens, Some(1234));
        assert_eq!(u.cached_input_tokens, Some(0));
        assert_eq!(u.output_tokens, Some(56));
        let cost = u.cost_usd.expect("cost");
        assert!((cost - 0.006056).abs() < 1e-9, "{cost}");
        assert_eq!(u.source, USAGE_SOURCE);
        let sid = r.session_id.expect("session id");
        assert_eq!(sid.len(), 36, "a UUID: {sid}");
        assert!(OK.contains(&format!("\"session_id\":\"{sid}\"")));
    }

    #[test]
    fn auth_failure_is_an_error_with_the_vendor_message_even_though_subtype_is_success() {
        assert!(
            AUTH_401.contains("\"subtype\":\"success\""),
            "the fixture is the real shape"
        );
        let r = read(AUTH_401);
        let e = r.error.expect("error");
        assert!(e.contains("standin-401: invalid api key"), "{e}");
        assert!(e.starts_with("Failed to authenticate. API Error: 401"), "{e}");
        assert_eq!(r.result, None, "an error is not an answer");
        let u = r.usage.expect("usage is reported (zero)");
        assert_eq!((u.input_tokens, u.output_tokens), (Some(0), Some(0)));
        assert_eq!(u.cost_usd, Some(0.0));
        assert!(r.session_id.is_some());
    }

    #[test]
    fn connection_refused_is_an_error() {
        let e = read(REFUSED).error.expect("error");
        assert!(e.contains("Connection refused"), "{e}");
        assert!(e.contains("ECONNREFUSED"), "{e}");
    }

    #[test]
    fn without_a_result_event_only_the_session_id_is_read() {
        // The run killed before its result: the init event and a retry notice remain.
        let cut: String = AUTH_401
            .lines()
            .filter(|l| !l.contains("\"type\":\"result\""))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = read(&cut);
        assert_eq!(r.error, None);
        assert_eq!(r.result, None);
        assert_eq!(r.usage, None);
        assert_eq!(r.session_id, read(AUTH_401).session_id);
    }

    #[test]
    fn empty_garbage_and_truncated_output_read_as_nothing() {
        assert!(read("").is_empty());
        assert!(read("\n\n   \n").is_empty());
        assert!(
            read("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons\n")
                .is_empty()
        );
        assert!(read("{\"type\":\"result\",\"is_error\":false,\"result\":\"Do").is_empty());
        assert!(read("{not json}\n[1,2\n\u{0}\u{fffd}{{{{\n").is_empty());
        assert!(read("[1, \"a\", null]\n{\"type\":\"result\"\n").is_empty());
        // The last line cut mid-way: the earlier lines are still read.
        let mut end = OK.trim_end().len() - 40;
        while !OK.is_char_boundary(end) {
            end -= 1;
        }
        let truncated = &OK[..end];
        let r = read(truncated);
        assert_eq!(r.result, None, "the result line is cut");
        assert!(r.session_id.is_some());
    }

    #[test]
    fn error_subtypes_and_odd_fields() {
        let r = read(r#"{"type":"result","subtype":"error_max_turns","is_error":false,"session_id":"s1"}"#);
        assert_eq!(r.error.as_deref(), Some("claude reported error_max_turns"));
        assert_eq!(r.session_id.as_deref(), Some("s1"));
        assert_eq!(r.usage, None);
        let r =
            read(r#"{"type":"result","subtype":"error_during_execution","is_error":true,"errors":["boom",7,"bang"]}"#);
        assert_eq!(r.error.as_deref(), Some("boom; bang"));
        let r = read(r#"{"type":"result","is_error":true,"result":"  "}"#);
        assert_eq!(r.error.as_deref(), Some("claude reported an error without a message"));
        // Wrong types, negative and huge numbers never panic and are not believed.
        let r = read(
            r#"{"type":"result","subtype":"success","is_error":"yes","result":42,"total_cost_usd":-1,"usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":5,"output_tokens":"x"}}"#,
        );
        assert_eq!(r.error, None);
        assert_eq!(r.result, None);
        let u = r.usage.expect("usage");
        assert_eq!(u.input_tokens, Some(u64::MAX), "saturates");
        assert_eq!(u.cached_input_tokens, Some(5));
        assert_eq!(u.output_tokens, None);
        assert_eq!(u.cost_usd, None);
    }

    #[test]
    fn last_result_wins_and_cache_tokens_count_as_input() {
        let text = concat!(
            "{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"first\"}\n",
            "stderr noise\n",
            "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"one\"}\n",
            "{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"two\",",
            "\"total_cost_usd\":0.5,\"usage\":{\"input_tokens\":10,",
            "\"cache_creation_input_tokens\":20,\"cache_read_input_tokens\":30,\"output_tokens\":4}}\n",
        );
        let r = read(text);
        assert_eq!(r.result.as_deref(), Some("two"));
        assert_eq!(
            r.session_id.as_deref(),
            Some("first"),
            "from init when the result has none"
        );
        let u = r.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.cached_input_tokens, u.output_tokens, u.cost_usd),
            (Some(60), Some(30), Some(4), Some(0.5))
        );
    }

    #[test]
    fn json_output_format_array_is_read() {
        let text = r#"[{"type":"system","subtype":"init","session_id":"a1"},{"type":"result","subtype":"success","is_error":false,"result":"hi","session_id":"a1"}]"#;
        let r = read(text);
        assert_eq!(r.result.as_deref(), Some("hi"));
        assert_eq!(r.session_id.as_deref(), Some("a1"));
    }
}
