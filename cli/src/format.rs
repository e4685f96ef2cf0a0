//! Human output: tables, durations and ages.

use chrono::{DateTime, Utc};
use outpost_shared::api::{FleetStatus, RunView};

/// A plain-text table with left-aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count());
                s.push_str(c);
                s.push_str(&" ".repeat(pad + 2));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
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
                short_task(&r.task, 48),
            ]
        })
        .collect();
    table(&["ID", "STATUS", "AGENT", "CREATED", "DURATION", "EXIT", "TASK"], &rows)
}

pub fn run_details(r: &RunView) -> String {
    let mut out = String::new();
    let mut kv = |k: &str, v: String| out.push_str(&format!("{k:<14}{v}\n"));
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
    kv("timeout", format!("{}s", r.timeout_secs));
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
                a.key_env.clone().unwrap_or_else(|| "-".into()),
                format!("{}s", a.default_timeout_secs),
                a.description.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["AGENT", "KEY ENV", "TIMEOUT", "DESCRIPTION"], &rows));
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
    fn durations_read_well() {
        assert_eq!(duration_ms(1234), "1.2s");
        assert_eq!(duration_ms(184_000), "3m04s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
    }

    #[test]
    fn tasks_are_shortened_on_one_line() {
        assert_eq!(short_task("fix it", 10), "fix it");
        assert_eq!(short_task("a\nb", 10), "a…");
        assert_eq!(short_task("abcdefghijkl", 5), "abcd…");
    }
}
