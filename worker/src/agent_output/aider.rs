//! Reader of aider's text output (see the module docs of [`super`]), as the built-in entry runs
//! it (aider-chat 0.86.x: `--no-pretty --no-stream --message`, `COLUMNS=4000` so that rich does
//! not wrap lines at 80 columns). Aider has no structured output mode; it prints:
//!
//! - after every model call, `Tokens: 1.2k sent[, 2.5k cache write][, 9.8k cache hit], 56
//!   received.` and, when litellm knows the model's prices, ` Cost: $0.00037 message, $0.00037
//!   session.` (on the next line when both cache figures are shown). Counts are aider's own
//!   rounding (`format_tokens`: exact below 1000, one decimal in `k` below 10 000, whole `k`
//!   above; `M` is read too); the cost is aider's computation from litellm's price table.
//! - on a failed model call the litellm exception (`litellm.AuthenticationError: …`,
//!   `litellm.InternalServerError: … Connection refused`, `litellm.Timeout: …`), then aider's
//!   hint (`The API provider is not able to authenticate you. …`), then `Retrying in N seconds...`
//!   while it still retries (aider-chat's own backoff, 0.25 s doubling to 32 s: 9 calls in about
//!   64 s); it exits 0 when it gives up.
//! - the model's reply as text (edit blocks included) before the `Tokens:` line of its call.
//!
//! Report: `usage` = the `Tokens:` figures summed over the run's calls (input = sent, cached =
//! cache hit, output = received) and `cost_usd` = the last `session` cost (aider's running
//! total); `error` = the last error aider printed after its last `Tokens:` line (a litellm
//! exception with the lines that follow it up to a blank line or `Retrying in`, `Model … has hit
//! a token limit!`, or the last line of a Python traceback) — an error followed by a later
//! successful call is not one; `result` = the text aider printed between its previous status
//! line (header, earlier `Tokens:` line, `Applied edit to …`, retry or error line) and the last
//! `Tokens:` line: the last model reply as printed, edit blocks included. No session id (aider
//! has no sessions).

use outpost_core::domain::{AgentReport, Usage};

/// Where the usage figures come from.
pub const USAGE_SOURCE: &str =
    "aider `Tokens:`/`Cost:` lines (aider's rounded figures, e.g. 1.2k; cost computed by aider from litellm's prices)";

/// The report in aider's output `text`.
pub fn read(text: &str) -> AgentReport {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    let tokens: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].trim_start().starts_with("Tokens: "))
        .collect();
    let after_last = tokens.last().map_or(0, |t| t + 1);
    AgentReport {
        result: tokens.last().and_then(|&t| reply_before(&lines, t)),
        error: last_error(&lines[after_last..]),
        usage: usage(&lines, &tokens),
        session_id: None,
    }
}

/// The figures of one `Tokens:` line (and its `Cost:`, on it or on the next line).
#[derive(Debug, Default, PartialEq)]
struct Call {
    sent: Option<u64>,
    cache_hit: Option<u64>,
    received: Option<u64>,
    session_cost: Option<f64>,
}

fn usage(lines: &[&str], tokens: &[usize]) -> Option<Usage> {
    let calls: Vec<Call> = tokens
        .iter()
        .map(|&i| {
            let next = lines.get(i + 1).copied().unwrap_or_default();
            parse_call(lines[i], next)
        })
        .collect();
    if calls.iter().all(|c| c == &Call::default()) {
        return None;
    }
    let sum = |f: fn(&Call) -> Option<u64>| {
        calls
            .iter()
            .filter_map(f)
            .fold(None, |acc: Option<u64>, n| Some(acc.unwrap_or(0).saturating_add(n)))
    };
    Some(Usage {
        input_tokens: sum(|c| c.sent),
        cached_input_tokens: sum(|c| c.cache_hit),
        output_tokens: sum(|c| c.received),
        cost_usd: calls.iter().rev().find_map(|c| c.session_cost),
        source: USAGE_SOURCE.to_owned(),
    })
}

/// `Tokens: 1.2k sent, 9.8k cache hit, 56 received. Cost: $0.00037 message, $0.00037 session.`
fn parse_call(line: &str, next: &str) -> Call {
    let mut call = Call::default();
    let rest = line.trim_start().trim_start_matches("Tokens: ");
    let (counts, tail) = match rest.find(" received") {
        Some(at) => (&rest[..at + " received".len()], &rest[at + " received".len()..]),
        None => (rest, ""),
    };
    for part in counts.split(", ") {
        let Some((num, label)) = part.trim().split_once(' ') else {
            continue;
        };
        let n = parse_count(num);
        match label.trim() {
            "sent" => call.sent = n,
            "cache hit" => call.cache_hit = n,
            "received" => call.received = n,
            _ => {}
        }
    }
    let cost_text = if tail.contains("Cost: $") {
        tail
    } else if next.trim_start().starts_with("Cost: $") {
        next
    } else {
        ""
    };
    call.session_cost = session_cost(cost_text);
    call
}

/// `1234`, `1.2k`, `12k`, `1.5M` as a count (aider's rounding kept).
fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, scale) = match s.char_indices().last() {
        Some((at, 'k' | 'K')) => (&s[..at], 1e3),
        Some((at, 'M' | 'm')) => (&s[..at], 1e6),
        _ => (s, 1.0),
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v = num.parse::<f64>().ok()? * scale;
    // `as` saturates; the check keeps NaN and infinities out.
    v.is_finite().then(|| v.round() as u64)
}

/// The `$Y` of `Cost: $X message, $Y session.`.
fn session_cost(text: &str) -> Option<f64> {
    let end = text.find(" session")?;
    let start = text[..end].rfind('$')? + 1;
    let v = text[start..end].trim().parse::<f64>().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Whether `line` starts a litellm exception as aider prints it.
fn is_litellm_error(line: &str) -> bool {
    line.starts_with("litellm.") && line.contains(':')
}

/// The last error in `lines` (the part of the output after the last `Tokens:` line).
fn last_error(lines: &[&str]) -> Option<String> {
    let mut found = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if is_litellm_error(line) {
            let mut block = vec![line];
            let mut j = i + 1;
            while j < lines.len() {
                let l = lines[j].trim();
                if l.is_empty() || l.starts_with("Retrying in ") || is_litellm_error(l) {
                    break;
                }
                block.push(l);
                j += 1;
            }
            found = Some(block.join("\n"));
            i = j;
            continue;
        }
        if line.starts_with("Model ") && line.contains(" has hit a token limit") {
            found = Some(line.to_owned());
        } else if line == "Traceback (most recent call last):" {
            let mut last = None;
            let mut j = i + 1;
            while j < lines.len() && !lines[j].trim().is_empty() {
                last = Some(lines[j].trim());
                j += 1;
            }
            if let Some(l) = last {
                found = Some(l.to_owned());
            }
            i = j;
            continue;
        }
        i += 1;
    }
    found
}

/// Whether `line` is one of aider's own status lines, which end the text before a reply.
fn is_status_line(line: &str) -> bool {
    let l = line.trim();
    l.starts_with("Tokens: ")
        || l.starts_with("Cost: $")
        || l.starts_with("Repo-map:")
        || l.starts_with("Retrying in ")
        || l.starts_with("Applied edit to ")
        || is_litellm_error(l)
}

/// The text printed between the previous status line and the `Tokens:` line at `t`.
fn reply_before(lines: &[&str], t: usize) -> Option<String> {
    let start = lines[..t].iter().rposition(|l| is_status_line(l)).map_or(0, |i| i + 1);
    let body = &lines[start..t];
    let first = body.iter().position(|l| !l.trim().is_empty())?;
    let last = body.iter().rposition(|l| !l.trim().is_empty())?;
    Some(body[first..=last].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("fixtures/aider-ok.log");
    const UNAUTHORIZED: &str = include_str!("fixtures/aider-401.log");
    const UNAUTHORIZED_80: &str = include_str!("fixtures/aider-401-80col.log");
    const REFUSED: &str = include_str!("fixtures/aider-refused.log");
    const TIMEOUT: &str = include_str!("fixtures/aider-timeout.log");

    #[test]
    fn ok_run_gives_the_reply_and_the_rounded_usage_and_cost() {
        let r = read(OK);
        assert_eq!(r.error, None);
        let result = r.result.expect("result");
        assert!(result.starts_with("standin-made.txt\n```\n<<<<<<< SEARCH"), "{result}");
        assert!(result.ends_with("Done: I wrote the file."), "{result}");
        let u = r.usage.expect("usage");
        // The stand-in sent 1234/56; aider printed "1.2k sent, 56 received".
        assert_eq!(u.input_tokens, Some(1200));
        assert_eq!(u.output_tokens, Some(56));
        assert_eq!(u.cached_input_tokens, None);
        assert_eq!(u.cost_usd, Some(0.00037));
        assert!(u.source.contains("rounded"), "{}", u.source);
        assert_eq!(r.session_id, None);
    }

    #[test]
    fn authentication_error_is_the_error_though_aider_exits_0() {
        let r = read(UNAUTHORIZED);
        let e = r.error.expect("error");
        assert!(e.starts_with("litellm.AuthenticationError: "), "{e}");
        assert!(e.contains("standin-401: invalid api key"), "{e}");
        assert!(e.ends_with("Check your API key."), "{e}");
        assert_eq!((r.result, r.usage), (None, None));
    }

    #[test]
    fn an_error_wrapped_at_80_columns_is_read_whole() {
        let e = read(UNAUTHORIZED_80).error.expect("error");
        assert!(e.contains("standin-401: invalid api key"), "{e}");
        assert!(e.contains("\"code\": \"invalid_api_key\"}}"), "{e}");
        assert!(e.ends_with("Check your API key."), "{e}");
    }

    #[test]
    fn connection_refused_after_all_retries_is_the_error() {
        let r = read(REFUSED);
        let e = r.error.expect("error");
        assert!(e.contains("Connection refused"), "{e}");
        assert!(e.contains("servers are down or overloaded"), "{e}");
        assert!(!e.contains("Retrying"), "{e}");
        assert_eq!(REFUSED.matches("Retrying in ").count(), 8);
        assert_eq!(r.result, None);
    }

    #[test]
    fn timeouts_are_errors() {
        let e = read(TIMEOUT).error.expect("error");
        assert!(e.starts_with("litellm.Timeout: "), "{e}");
    }

    #[test]
    fn errors_followed_by_a_successful_call_are_not_errors() {
        let text = "litellm.InternalServerError: InternalServerError: DeepseekException - boom\n\
                    The API provider's servers are down or overloaded.\n\
                    Retrying in 0.2 seconds...\n\nAll done.\n\n\
                    Tokens: 980 sent, 12 received. Cost: $0.00029 message, $0.00029 session.\n";
        let r = read(text);
        assert_eq!(r.error, None);
        assert_eq!(r.result.as_deref(), Some("All done."));
        assert_eq!(r.usage.and_then(|u| u.input_tokens), Some(980));
    }

    #[test]
    fn several_calls_are_summed_and_the_session_cost_is_the_last() {
        let text = "Repo-map: using 4096 tokens, auto refresh\n\nFirst reply.\n\n\
                    Tokens: 12k sent, 2.5k cache write, 9.8k cache hit, 1.1k received.\n\
                    Cost: $0.05 message, $0.05 session.\n\nsrc/a.rs\nApplied edit to src/a.rs\n\n\
                    Second reply,\nover two lines.\n\n\
                    Tokens: 1.5M sent, 3 received. Cost: $0.01 message, $0.06 session.\n";
        let r = read(text);
        let u = r.usage.expect("usage");
        assert_eq!(u.input_tokens, Some(1_512_000));
        assert_eq!(u.cached_input_tokens, Some(9_800));
        assert_eq!(u.output_tokens, Some(1_103));
        assert_eq!(u.cost_usd, Some(0.06));
        assert_eq!(r.result.as_deref(), Some("Second reply,\nover two lines."));
    }

    #[test]
    fn tokens_without_a_price_give_no_cost() {
        let u = read("Tokens: 2.3k sent, 32 received.\n").usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cost_usd),
            (Some(2300), Some(32), None)
        );
    }

    #[test]
    fn token_limit_and_tracebacks_are_errors() {
        let e = read("Tokens: 1k sent, 8.2k received.\n\nModel deepseek/deepseek-chat has hit a token limit!\nToken counts below are approximate.\n")
            .error;
        assert_eq!(
            e.as_deref(),
            Some("Model deepseek/deepseek-chat has hit a token limit!")
        );
        let e =
            read("Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nValueError: bad\nbad\n")
                .error;
        assert_eq!(e.as_deref(), Some("bad"));
    }

    #[test]
    fn empty_truncated_and_garbage_output_report_nothing() {
        assert!(read("").is_empty());
        assert!(read("Aider v0.86.2\nModel: deepseek/deepseek-chat with diff edit format\n").is_empty());
        assert!(read("\u{0}\u{fffd}garbage\n{\"role\":").is_empty());
        // A cut-off `Tokens:` line yields what it holds, never a panic.
        let r = read("Tokens: 1.2k sen");
        assert_eq!(r.error, None);
        for bad in [
            "Tokens: ",
            "Tokens: k sent, .k received. Cost: $ session",
            "Tokens: 1e999 sent, NaN received.",
        ] {
            let r = read(bad);
            assert_eq!(r.usage, None, "{bad}");
        }
    }

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("56"), Some(56));
        assert_eq!(parse_count("1.2k"), Some(1200));
        assert_eq!(parse_count("12k"), Some(12_000));
        assert_eq!(parse_count("1.5M"), Some(1_500_000));
        assert_eq!(parse_count("k"), None);
        assert_eq!(parse_count("-3"), None);
        assert_eq!(session_cost("Cost: $0.00037 message, $0.00037 session."), Some(0.00037));
        assert_eq!(session_cost("Cost: $x session."), None);
    }
}
