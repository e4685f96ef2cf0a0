//! Reader of Gemini CLI output (see the module docs of [`super`]), in either structured mode of
//! `gemini --output-format` (0.61.x):
//!
//! - `stream-json` (what the built-in entry asks for): JSONL events among stderr text. `init`
//!   carries `session_id`; `message` events with `role: "assistant"` are the model's text, in
//!   `delta` chunks; `tool_use`/`tool_result` separate turns; `error` events are warnings
//!   (`severity: "warning"`) or failures (`"error"`); the last `result` event has `status`
//!   (`success` or `error`), `error: {type, message}` and `stats`.
//! - `json`: one pretty-printed object `{session_id, response, stats, error}` at the end.
//!
//! Report: `result` = the assistant text after the last tool call (stream-json) or `response`
//! (json); `error` = the `result` event's error when its status is not `success` (else the last
//! `error` event of severity `error`; with no `result` event, that event alone), or the json
//! object's `error`. Vendor errors, `[API Error: {"error":{"code":401,"message":…}}]`, become
//! `API error 401 UNAUTHENTICATED: …`. `usage` = the per-model token figures summed over models
//! (the model router's calls are a model of their own); the CLI reports no cost.
//! `session_id` = `init.session_id` or the json `session_id`.

use outpost_core::domain::{AgentReport, Usage};
use serde_json::Value;

use super::{json_lines, TokenSum};

/// Most lines tried as the start of a `--output-format json` object, from the end.
const JSON_STARTS_TRIED: usize = 64;

/// The report in gemini's output `text`.
pub fn read(text: &str) -> AgentReport {
    let events: Vec<Value> = json_lines(text)
        .filter(|v| v.get("type").and_then(Value::as_str).is_some())
        .collect();
    if events.is_empty() {
        read_json_object(text)
    } else {
        read_stream(&events)
    }
}

/// `--output-format stream-json` events.
fn read_stream(events: &[Value]) -> AgentReport {
    let mut session_id = None;
    let mut text = String::new();
    let mut last_error: Option<String> = None;
    let mut result: Option<&Value> = None;
    for ev in events {
        match str_at(ev, "type") {
            Some("init") if session_id.is_none() => {
                session_id = str_at(ev, "session_id").map(str::to_owned);
            }
            Some("message") if str_at(ev, "role") == Some("assistant") => {
                if ev.get("delta").and_then(Value::as_bool) != Some(true) {
                    text.clear();
                }
                text.push_str(str_at(ev, "content").unwrap_or_default());
            }
            Some("tool_use" | "tool_result") => text.clear(),
            Some("error") if str_at(ev, "severity") == Some("error") => {
                last_error = str_at(ev, "message").map(str::to_owned);
            }
            Some("result") => result = Some(ev),
            _ => {}
        }
    }
    let error = match result {
        Some(r) => match str_at(r, "status") {
            Some("success") => None,
            status => r
                .get("error")
                .and_then(|e| str_at(e, "message"))
                .map(vendor_message)
                .or(last_error)
                .or_else(|| Some(format!("gemini ended with status {}", status.unwrap_or("unknown")))),
        },
        None => last_error,
    };
    AgentReport {
        result: non_empty(&text),
        error,
        usage: result.and_then(|r| r.get("stats")).and_then(stream_usage),
        session_id: session_id.filter(|s| !s.is_empty()),
    }
}

/// `result.stats` of stream-json: per model `input_tokens` (prompt, cached included), `cached`,
/// `output_tokens` (candidates only) and `total_tokens`; thinking tokens are in the total only,
/// so output is `total_tokens - input_tokens` when that is more than `output_tokens`.
fn stream_usage(stats: &Value) -> Option<Usage> {
    let per_model: Vec<&Value> = match stats.get("models").and_then(Value::as_object) {
        Some(models) => models.values().collect(),
        None => vec![stats],
    };
    let mut sum = TokenSum::default();
    for m in per_model {
        let input = u64_at(m, "input_tokens");
        let candidates = u64_at(m, "output_tokens");
        let total = u64_at(m, "total_tokens");
        let output = match (candidates, total, input) {
            (c, Some(t), i) => Some(c.unwrap_or(0).max(t.saturating_sub(i.unwrap_or(0)))),
            (c, None, _) => c,
        };
        sum.add(input, u64_at(m, "cached"), output);
    }
    sum.any().then(|| {
        sum.usage(
            "gemini result.stats.models.*: input_tokens, cached, output = total_tokens - input_tokens \
             (thinking included); the CLI reports no cost",
        )
    })
}

/// The `--output-format json` object: the last line that is `{` alone and starts a JSON object
/// with any of its keys.
fn read_json_object(text: &str) -> AgentReport {
    let starts = text
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(0))
        .filter(|&i| text[i..].split('\n').next().map(str::trim_end) == Some("{"));
    let mut starts: Vec<usize> = starts.collect();
    starts.sort_unstable();
    let found = starts.iter().rev().take(JSON_STARTS_TRIED).find_map(|&i| {
        let mut values = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(v))
                if ["session_id", "response", "stats", "error"]
                    .iter()
                    .any(|k| v.get(k).is_some()) =>
            {
                Some(v)
            }
            _ => None,
        }
    });
    let Some(doc) = found else {
        return AgentReport::default();
    };
    AgentReport {
        result: str_at(&doc, "response").and_then(non_empty),
        error: doc.get("error").map(|e| match str_at(e, "message") {
            Some(m) => vendor_message(m),
            None => format!("gemini reported an error: {e}"),
        }),
        usage: doc.get("stats").and_then(json_usage),
        session_id: str_at(&doc, "session_id").filter(|s| !s.is_empty()).map(str::to_owned),
    }
}

/// `stats` of `--output-format json`: `models.*.tokens` with `prompt` (cached included),
/// `cached`, `candidates` and `thoughts`.
fn json_usage(stats: &Value) -> Option<Usage> {
    let models = stats.get("models").and_then(Value::as_object)?;
    let mut sum = TokenSum::default();
    for m in models.values() {
        let Some(t) = m.get("tokens") else { continue };
        let output = match (u64_at(t, "candidates"), u64_at(t, "thoughts")) {
            (None, None) => None,
            (c, th) => Some(c.unwrap_or(0) + th.unwrap_or(0)),
        };
        sum.add(u64_at(t, "prompt"), u64_at(t, "cached"), output);
    }
    sum.any().then(|| {
        sum.usage("gemini stats.models.*.tokens: prompt, cached, candidates + thoughts; the CLI reports no cost")
    })
}

/// The CLI's `[API Error: …]` text (stream-json) or bare vendor JSON error (json) unpacked:
/// `API error {code} {status}: {message}`, anything after the bracket kept on the next line;
/// any other message as it is.
fn vendor_message(msg: &str) -> String {
    let (wrapped, body) = match msg.strip_prefix("[API Error: ") {
        Some(body) => (true, body),
        None => (false, msg.trim()),
    };
    let mut values = serde_json::Deserializer::from_str(body).into_iter::<Value>();
    if let Some(Ok(v)) = values.next() {
        if let Some(e) = v.get("error").filter(|e| e.is_object()) {
            let rest = body[values.byte_offset()..].trim_start();
            let rest = rest.strip_prefix(']').unwrap_or(rest).trim();
            let inner = str_at(e, "message").unwrap_or_default();
            // The message may itself be an API error object.
            let inner = serde_json::from_str::<Value>(inner)
                .ok()
                .and_then(|n| n.get("error").and_then(|e| str_at(e, "message")).map(str::to_owned))
                .unwrap_or_else(|| inner.to_owned());
            let code = e.get("code").map(|c| format!(" {c}")).unwrap_or_default();
            let status = str_at(e, "status").map(|s| format!(" {s}")).unwrap_or_default();
            let head = format!("API error{code}{status}: {inner}");
            return if rest.is_empty() {
                head
            } else {
                format!("{head}\n{rest}")
            };
        }
    }
    if !wrapped {
        return msg.to_owned();
    }
    // Plain text: `[API Error: text]` possibly followed by more lines.
    let (first, rest) = body.split_once('\n').unwrap_or((body, ""));
    let first = first.trim_end();
    let first = first.strip_suffix(']').unwrap_or(first);
    let head = format!("API error: {first}");
    if rest.trim().is_empty() {
        head
    } else {
        format!("{head}\n{}", rest.trim())
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn u64_at(v: &Value, key: &str) -> Option<u64> {
    v.get(key).and_then(Value::as_u64)
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/gemini-ok.log");
    const E401: &str = include_str!("fixtures/gemini-401.log");
    const REFUSED: &str = include_str!("fixtures/gemini-refused.log");
    const JSON_OK: &str = include_str!("fixtures/gemini-json-ok.log");
    const JSON_401: &str = include_str!("fixtures/gemini-json-401.log");

    #[test]
    fn ok_run_gives_answer_usage_and_session() {
        let r = read(OK);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert_eq!(r.error, None);
        let u = r.usage.expect("usage");
        assert_eq!(u.input_tokens, Some(1234));
        assert_eq!(u.output_tokens, Some(56));
        assert_eq!(u.cached_input_tokens, Some(0));
        assert_eq!(u.cost_usd, None);
        assert!(u.source.contains("no cost"), "{}", u.source);
        let sid = r.session_id.expect("session id");
        assert_eq!(sid.len(), 36, "a UUID: {sid}");
    }

    #[test]
    fn vendor_401_is_the_error_with_the_vendors_message() {
        let r = read(E401);
        let e = r.error.expect("error");
        assert!(e.contains("standin-401: invalid api key"), "{e}");
        assert!(e.starts_with("API error 401 UNAUTHENTICATED: "), "{e}");
        assert_eq!(r.result, None);
        assert!(r.session_id.is_some());
        assert_eq!(r.usage.and_then(|u| u.input_tokens), Some(0));
    }

    #[test]
    fn refused_connection_is_an_error() {
        let e = read(REFUSED).error.expect("error");
        assert_eq!(e, "API error: exception TypeError: fetch failed sending request");
    }

    #[test]
    fn json_mode_is_read_too() {
        let r = read(JSON_OK);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert_eq!(r.error, None);
        let u = r.usage.expect("usage");
        assert_eq!((u.input_tokens, u.output_tokens), (Some(1234), Some(56)));
        assert!(r.session_id.is_some());
        let r = read(JSON_401);
        assert_eq!(
            r.error.as_deref(),
            Some("API error 401 UNAUTHENTICATED: standin-401: invalid api key")
        );
        assert!(r.session_id.is_some());
    }

    #[test]
    fn thinking_tokens_count_as_output_and_models_are_summed() {
        let text = concat!(
            r#"{"type":"init","session_id":"s-1","model":"auto"}"#,
            "\n",
            r#"{"type":"result","status":"success","stats":{"models":{"#,
            r#""a":{"total_tokens":150,"input_tokens":100,"output_tokens":20,"cached":40},"#,
            r#""b":{"total_tokens":12,"input_tokens":10,"output_tokens":2,"cached":0}}}}"#,
        );
        let u = read(text).usage.expect("usage");
        assert_eq!(u.input_tokens, Some(110));
        assert_eq!(u.cached_input_tokens, Some(40));
        assert_eq!(u.output_tokens, Some(52), "30 thinking tokens of model a included");
    }

    #[test]
    fn last_turn_text_is_the_answer_and_error_events_fill_a_bare_status() {
        let text = concat!(
            r#"{"type":"message","role":"assistant","content":"Let me ","delta":true}"#,
            "\n",
            r#"{"type":"message","role":"assistant","content":"look.","delta":true}"#,
            "\n",
            r#"{"type":"tool_use","tool_name":"read_file","tool_id":"t1","parameters":{}}"#,
            "\n",
            r#"{"type":"message","role":"assistant","content":"All ","delta":true}"#,
            "\n",
            r#"{"type":"message","role":"assistant","content":"good.","delta":true}"#,
            "\n",
            r#"{"type":"error","severity":"warning","message":"Loop detected"}"#,
            "\n",
            r#"{"type":"error","severity":"error","message":"empty response"}"#,
            "\n",
            r#"{"type":"result","status":"error","stats":{}}"#,
        );
        let r = read(text);
        assert_eq!(r.result.as_deref(), Some("All good."));
        assert_eq!(r.error.as_deref(), Some("empty response"));
        assert_eq!(r.usage, None, "no figures, no usage");
    }

    #[test]
    fn api_error_texts_are_unpacked() {
        assert_eq!(
            vendor_message(
                r#"[API Error: {"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]
Please wait and try again later."#
            ),
            "API error 429 RESOURCE_EXHAUSTED: quota\nPlease wait and try again later."
        );
        assert_eq!(
            vendor_message(
                r#"[API Error: {"error":{"code":400,"message":"{\"error\":{\"message\":\"API key not valid\"}}"}}]"#
            ),
            "API error 400: API key not valid"
        );
        assert_eq!(
            vendor_message("[API Error: boom (Status: INTERNAL)]"),
            "API error: boom (Status: INTERNAL)"
        );
        assert_eq!(vendor_message("Reached max session turns"), "Reached max session turns");
        assert_eq!(
            vendor_message(r#"{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}"#),
            "API error 403 PERMISSION_DENIED: denied"
        );
        assert_eq!(vendor_message(r#"{"not":"an api error"}"#), r#"{"not":"an api error"}"#);
        assert_eq!(vendor_message("[API Error: "), "API error: ");
    }

    #[test]
    fn empty_truncated_and_garbage_output_report_nothing_and_never_panic() {
        assert!(read("").is_empty());
        assert!(read("Error: settings.json is broken\nexit").is_empty());
        let cut = &OK[..OK.rfind(r#"{"type":"result""#).expect("result line") + 40];
        let r = read(cut);
        assert_eq!(r.error, None, "a cut-off result line is no result");
        assert_eq!(r.usage, None);
        assert_eq!(r.result.as_deref(), Some("Done: I wrote the file."));
        assert!(read("{\n  \"response\": \"half").is_empty());
        assert!(read("{\n\u{0}\u{7f}{{{\n{\n[API Error: {").is_empty());
        let odd = r#"{"type":"result","status":7,"error":{"message":["x"]},"stats":{"models":[1]}}"#;
        assert_eq!(read(odd).error.as_deref(), Some("gemini ended with status unknown"));
        for cut in (0..JSON_OK.len()).step_by(97) {
            if JSON_OK.is_char_boundary(cut) {
                let _ = read(&JSON_OK[..cut]);
            }
        }
    }
}
