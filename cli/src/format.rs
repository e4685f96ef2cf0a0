//! Human output: tables, durations and ages.

use chrono::{DateTime, Utc};
use outpost_api::{FleetStatus, RunView};
use outpost_core::Usage;

/// Name of the artifact holding the agent's whole final answer.
const RESULT_ARTIFACT: &str = "result.md";

/// A plain-text table with left-aligned columns: a header row, no borders, two spaces between
/// columns, no trailing spaces. Columns are as wide as their widest cell's *display* width (a wide
/// CJK character or emoji takes two, a combining mark none) and cells are never wrapped or cut,
/// whatever the terminal's width, so scripts can parse the output. A cell holding a newline spans
/// several lines of its column.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(headers.iter().copied())
        .add_rows(rows.iter().map(|r| r.iter().map(String::as_str)));
    let columns = t.column_count();
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i + 1 == columns { 0 } else { 2 }));
    }
    t.trim_fmt()
}

/// `1.2s`, `3m04s`, `2h05m`.
pub fn duration_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        3600..=86_399 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86_400),
    }
}

/// The first line of a task, shortened to `max` characters.
pub fn short_task(task: &str, max: usize) -> String {
    let first = task.lines().next().unwrap_or_default();
    if first.chars().count() > max || task.lines().nth(1).is_some() {
        let cut: String = first.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        first.to_owned()
    }
}

/// `$0.0123`: US dollars to four decimals (`<$0.0001` for a cost too small to show).
pub fn cost_usd(cost: f64) -> String {
    if cost > 0.0 && cost < 0.00005 {
        "<$0.0001".to_owned()
    } else {
        format!("${cost:.4}")
    }
}

/// `1200 in (1000 cached) · 34 out · $0.0123`: the figures the agent reported (an absent one is
/// unknown, so it is left out rather than shown as 0).
pub fn usage(u: &Usage) -> String {
    let mut parts = Vec::new();
    match (u.input_tokens, u.cached_input_tokens) {
        (Some(input), Some(cached)) => parts.push(format!("{input} in ({cached} cached)")),
        (Some(input), None) => parts.push(format!("{input} in")),
        (None, Some(cached)) => parts.push(format!("{cached} cached in")),
        (None, None) => {}
    }
    if let Some(output) = u.output_tokens {
        parts.push(format!("{output} out"));
    }
    if let Some(cost) = u.cost_usd {
        parts.push(cost_usd(cost));
    }
    if parts.is_empty() {
        "not reported".to_owned()
    } else {
        parts.join(" · ")
    }
}

pub fn runs_table(runs: &[RunView], now: DateTime<Utc>) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.status.to_string(),
                r.agent.clone(),
                age(r.created_at, now),
                r.duration_ms.map(duration_ms).unwrap_or_else(|| "-".into()),
                r.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                r.usage
                    .as_ref()
                    .and_then(|u| u.cost_usd)
                    .map(cost_usd)
                    .unwrap_or_else(|| "-".into()),
                short_task(&r.task, 48),
            ]
        })
        .collect();
    table(
        &["ID", "STATUS", "AGENT", "CREATED", "DURATION", "EXIT", "COST", "TASK"],
        &rows,
    )
}

pub fn run_details(r: &RunView) -> String {
    let mut out = String::new();
    // A value of several lines continues under the first, indented.
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<14}{}\n", v.replace('\n', "\n              ")));
    kv("id", r.id.clone());
    kv("status", r.status.to_string());
    kv("agent", r.agent.clone());
    if let Some(repo) = &r.repo {
        kv(
            "repo",
            format!(
                "{}{}",
                repo.url,
                repo.branch.as_ref().map(|b| format!(" @ {b}")).unwrap_or_default()
            ),
        );
    }
    kv("attempts", r.attempts.to_string());
    if let Some(remote) = &r.remote {
        let host = remote.host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default();
        kv(
            "executor",
            format!("{} {}{host} (attempt {})", remote.executor, remote.id, remote.attempt),
        );
    }
    kv("timeout", format!("{}s", r.timeout_secs));
    if let Some(idle) = r.idle_timeout_secs {
        kv("idle timeout", format!("{idle}s"));
    }
    kv("created", r.created_at.to_rfc3339());
    if let Some(t) = r.started_at {
        kv("started", t.to_rfc3339());
    }
    if let Some(t) = r.finished_at {
        kv("finished", t.to_rfc3339());
    }
    if let Some(d) = r.duration_ms {
        kv("duration", duration_ms(d));
    }
    if let Some(c) = r.exit_code {
        kv("exit code", c.to_string());
    }
    if let Some(reason) = r.failure_reason {
        kv("reason", reason.to_string());
    }
    if let Some(error) = &r.agent_error {
        kv("agent error", error.trim_end().to_owned());
    }
    if let Some(u) = &r.usage {
        kv("usage", usage(u));
        if !u.source.is_empty() {
            kv("usage from", u.source.clone());
        }
    }
    if let Some(session) = &r.session_id {
        kv("session", session.clone());
    }
    if r.cancel_requested && !r.status.is_terminal() {
        kv("cancel", "requested".into());
    }
    kv("task", short_task(&r.task, 100));
    if !r.artifacts.is_empty() {
        out.push_str("artifacts\n");
        let rows: Vec<Vec<String>> = r
            .artifacts
            .iter()
            .map(|a| {
                vec![
                    format!("  {}", a.name),
                    a.size.to_string(),
                    a.sha256.chars().take(12).collect(),
                ]
            })
            .collect();
        out.push_str(&table(&["  NAME", "BYTES", "SHA256"], &rows));
        out.push('\n');
    }
    if let Some(result) = &r.result {
        // The whole answer, as the agent wrote it, last so it reads (and copies) on its own.
        out.push_str("\nresult\n");
        out.push_str(result.trim_end());
        out.push('\n');
        let whole = r.artifacts.iter().find(|a| a.name == RESULT_ARTIFACT);
        if whole.is_some_and(|a| a.size > result.len() as u64) {
            out.push_str(&format!(
                "\n(cut here; the whole answer: outpost runs artifact {} {RESULT_ARTIFACT})\n",
                r.id
            ));
        }
    }
    out
}

pub fn fleet(f: &FleetStatus) -> String {
    let mut out = format!(
        "queue: {} waiting, {} in flight, {} dead · running: {} · slots: {}/{} busy · workers: {}\n\n",
        f.queue.visible,
        f.queue.in_flight,
        f.queue.dead,
        f.running,
        f.slots_busy,
        f.slots_total,
        f.workers.len()
    );
    let rows: Vec<Vec<String>> = f
        .agents
        .iter()
        .map(|a| {
            vec![
                a.name.clone(),
                a.executor.to_string(),
                available_cell(a),
                a.in_flight.to_string(),
                a.key_env.clone().unwrap_or_else(|| "-".into()),
                format!("{}s", a.default_timeout_secs),
                a.idle_timeout_secs.map_or_else(|| "-".into(), |s| format!("{s}s")),
                a.verified_with.clone().unwrap_or_else(|| "-".into()),
                a.sandbox.map_or_else(|| "default".into(), |m| m.to_string()),
                network_cell(a),
                a.description.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "AGENT",
            "EXECUTOR",
            "AVAILABLE",
            "IN FLIGHT",
            "KEY ENV",
            "TIMEOUT",
            "IDLE",
            "VERIFIED WITH",
            "SANDBOX",
            "NETWORK",
            "DESCRIPTION",
        ],
        &rows,
    ));
    if !f.workers.is_empty() {
        out.push_str("\n\n");
        let rows: Vec<Vec<String>> = f
            .workers
            .iter()
            .map(|w| vec![w.id.to_string(), w.hostname.clone(), format!("{}/{}", w.busy, w.slots)])
            .collect();
        out.push_str(&table(&["WORKER", "HOST", "BUSY"], &rows));
    }
    out
}

/// The AVAILABLE cell of an agent: `yes`, `no` or `-` (no live worker reports it), with what
/// the executor said (`no (task definition INACTIVE)`).
fn available_cell(a: &outpost_api::AgentView) -> String {
    let word = match a.available {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    };
    match (&a.availability, a.available) {
        (Some(detail), Some(_)) if !detail.is_empty() => format!("{word} ({detail})"),
        _ => word.to_owned(),
    }
}

/// The NETWORK cell of an agent: its policy, the hosts `allow` adds, and whether the proxy holds
/// its key (`allow +github.com, key held`).
fn network_cell(a: &outpost_api::AgentView) -> String {
    let mut cell = a.network.as_str().to_owned();
    if !a.allow_hosts.is_empty() {
        cell.push_str(&format!(" +{}", a.allow_hosts.join(" +")));
    }
    if a.key_injection {
        cell.push_str(", key held");
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "wwww".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    wwww");
    }

    #[test]
    fn tables_align_by_display_width() {
        // `日本` is two characters but four columns wide; `é` as `e` + a combining accent is one.
        let t = table(
            &["NAME", "N"],
            &[
                vec!["日本".into(), "1".into()],
                vec!["abcd".into(), "2".into()],
                vec!["e\u{301}".into(), "3".into()],
            ],
        );
        assert_eq!(t, "NAME  N\n日本  1\nabcd  2\ne\u{301}     3");
    }

    #[test]
    fn tables_keep_indents_and_empty_tables_and_short_rows() {
        let t = table(&["  NAME", "BYTES"], &[vec!["  a.md".into(), "12".into()]]);
        assert_eq!(t, "  NAME  BYTES\n  a.md  12");
        assert_eq!(table(&["A", "BB"], &[]), "A  BB");
        // A row without its last cells: no trailing spaces.
        assert_eq!(table(&["A", "BB"], &[vec!["xxx".into()]]), "A    BB\nxxx");
    }

    #[test]
    fn the_network_cell_says_hosts_and_who_holds_the_key() {
        let mut a: outpost_api::AgentView = serde_json::from_value(serde_json::json!({
            "name": "claude", "description": "", "key_env": "ANTHROPIC_API_KEY",
            "default_timeout_secs": 60, "network": "allow", "key_injection": true
        }))
        .expect("view");
        assert_eq!(network_cell(&a), "allow, key held");
        a.allow_hosts = vec!["github.com".into(), "*.pypi.org".into()];
        a.key_injection = false;
        assert_eq!(network_cell(&a), "allow +github.com +*.pypi.org");
    }

    #[test]
    fn the_fleet_table_shows_executor_availability_and_runs_in_flight() {
        let agent = |extra: serde_json::Value| -> outpost_api::AgentView {
            let mut v =
                serde_json::json!({"name": "a", "description": "d", "key_env": null, "default_timeout_secs": 60});
            if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
                v.extend(extra.clone());
            }
            serde_json::from_value(v).expect("view")
        };
        // An older server's answer (no executor, no loads) still reads.
        let old = agent(serde_json::json!({}));
        assert_eq!(
            (old.executor, old.in_flight, available_cell(&old).as_str()),
            (outpost_core::ExecutorKind::Process, 0, "-")
        );
        let ssm = agent(serde_json::json!({
            "name": "codex-ssm", "executor": "ssm", "in_flight": 3, "available": false,
            "availability": "0 of 2 hosts online"
        }));
        assert_eq!(available_cell(&ssm), "no (0 of 2 hosts online)");
        let f = FleetStatus {
            agents: vec![ssm, agent(serde_json::json!({"name": "shell", "available": true}))],
            queue: outpost_api::QueueView {
                visible: 1,
                in_flight: 0,
                dead: 0,
            },
            running: 3,
            workers: Vec::new(),
            slots_total: 4,
            slots_busy: 3,
        };
        let out = fleet(&f);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[2].starts_with("AGENT      EXECUTOR  AVAILABLE                 IN FLIGHT  KEY ENV"),
            "{out}"
        );
        assert!(
            lines[3].starts_with("codex-ssm  ssm       no (0 of 2 hosts online)  3          -"),
            "{out}"
        );
        assert!(
            lines[4].starts_with("shell      process   yes                       0          -"),
            "{out}"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration_ms(1234), "1.2s");
        assert_eq!(duration_ms(184_000), "3m04s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
    }

    fn finished_run(report: outpost_core::AgentReport) -> RunView {
        use outpost_core::{Artifact, FailureReason, NewRun, Run, RunId, RunStatus};
        let now = Utc::now();
        let mut run = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "claude".into(),
            task: "fix the bug".into(),
            repo: None,
            timeout_secs: 600,
            idle_timeout_secs: Some(42),
            created_at: now,
        });
        run.status = RunStatus::Failed;
        run.failure_reason = Some(FailureReason::AgentError);
        run.exit_code = Some(0);
        run.started_at = Some(now);
        run.finished_at = Some(now);
        run.artifacts = vec![Artifact {
            name: RESULT_ARTIFACT.into(),
            size: 40_000,
            sha256: "ab".repeat(32),
            content_type: "text/markdown".into(),
        }];
        run.report = report;
        RunView::from(&run)
    }

    #[test]
    fn run_details_show_the_answer_error_usage_and_session() {
        let view = finished_run(outpost_core::AgentReport {
            result: Some("## Fixed\n\nThe test now waits — ünïcödé ✓\n".into()),
            error: Some("API Error: 401\ninvalid x-api-key".into()),
            usage: Some(Usage {
                input_tokens: Some(1_200),
                cached_input_tokens: Some(1_000),
                output_tokens: Some(34),
                cost_usd: Some(0.0123),
                source: "claude result.total_cost_usd".into(),
            }),
            session_id: Some("sess-1".into()),
        });
        let text = run_details(&view);
        for line in [
            "idle timeout  42s\n",
            "reason        agent_error\n",
            "agent error   API Error: 401\n              invalid x-api-key\n",
            "usage         1200 in (1000 cached) · 34 out · $0.0123\n",
            "usage from    claude result.total_cost_usd\n",
            "session       sess-1\n",
            "\nresult\n## Fixed\n\nThe test now waits — ünïcödé ✓\n",
            "(cut here; the whole answer: outpost runs artifact",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(
            text.find("artifacts").expect("artifacts") < text.find("\nresult\n").expect("result"),
            "the answer is its own last section:\n{text}"
        );

        let table = runs_table(&[view], Utc::now());
        let header = table.lines().next().unwrap_or_default();
        assert!(
            header.find("EXIT") < header.find("COST") && header.find("COST") < header.find("TASK"),
            "{table}"
        );
        assert!(table.contains("$0.0123"), "{table}");

        // Nothing reported: no empty sections.
        let quiet = run_details(&finished_run(outpost_core::AgentReport::default()));
        for absent in ["agent error", "usage", "session", "\nresult\n", "executor"] {
            assert!(!quiet.contains(absent), "{absent:?} in:\n{quiet}");
        }
        let mut remote = finished_run(Default::default());
        remote.remote = Some(outpost_api::RemoteView {
            executor: outpost_core::ExecutorKind::Ssm,
            id: "c0ffee".into(),
            host: Some("i-0abc".into()),
            attempt: 2,
        });
        assert!(
            run_details(&remote).contains("executor      ssm c0ffee on i-0abc (attempt 2)\n"),
            "{}",
            run_details(&remote)
        );
        assert!(runs_table(&[finished_run(Default::default())], Utc::now()).contains("  -  "));
    }

    #[test]
    fn usage_shows_only_reported_figures() {
        let u = |input, cached, output, cost| Usage {
            input_tokens: input,
            cached_input_tokens: cached,
            output_tokens: output,
            cost_usd: cost,
            source: String::new(),
        };
        assert_eq!(usage(&u(Some(5), None, Some(2), None)), "5 in · 2 out");
        assert_eq!(usage(&u(None, None, None, Some(1.5))), "$1.5000");
        assert_eq!(usage(&u(None, None, None, None)), "not reported");
        assert_eq!(cost_usd(0.0), "$0.0000");
        assert_eq!(cost_usd(0.00001), "<$0.0001");
        assert_eq!(cost_usd(0.01234), "$0.0123");
    }

    #[test]
    fn tasks_are_shortened_on_one_line() {
        assert_eq!(short_task("fix it", 10), "fix it");
        assert_eq!(short_task("a\nb", 10), "a…");
        assert_eq!(short_task("abcdefghijkl", 5), "abcd…");
    }
}
