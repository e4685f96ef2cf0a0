//! Commands that are clients of a running API: dispatch (with `--wait`), runs, promote, fleet.

use crate::format;
use crate::ApiArgs;
use anyhow::Context;
use outpost_api::client::OutpostClient;
use outpost_api::{DispatchRequest, ListRunsQuery, PromoteRequest, RunView};
use outpost_core::{FailureReason, RunStatus};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

fn client(api: &ApiArgs) -> anyhow::Result<OutpostClient> {
    if api.api_key.is_none() {
        anyhow::bail!("no API key: pass --api-key or set OUTPOST_API_KEY (outpost dev prints one at first start)");
    }
    Ok(OutpostClient::new(&api.url, api.api_key.clone())?)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// The process exit code that mirrors a finished run: the agent's own code when it failed with
/// one, 124 for a timeout (as `timeout(1)`), 130 for a cancel, 1 for other failures.
pub fn exit_code_for(run: &RunView) -> u8 {
    match run.status {
        RunStatus::Succeeded => 0,
        RunStatus::TimedOut => 124,
        RunStatus::Cancelled => 130,
        RunStatus::Failed => match (run.failure_reason, run.exit_code) {
            (Some(FailureReason::NonZeroExit), Some(c)) if (1..=255).contains(&c) => c as u8,
            _ => 1,
        },
        RunStatus::Queued | RunStatus::Running => 0,
    }
}

/// The time limits a dispatch asks for (the agent's defaults when `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Timeouts {
    pub timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
}

pub async fn dispatch(
    api: &ApiArgs,
    agent: String,
    repo: Option<String>,
    branch: Option<String>,
    timeouts: Timeouts,
    wait: bool,
    task: String,
) -> anyhow::Result<ExitCode> {
    let task = if task == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the task from stdin")?;
        s
    } else {
        task
    };
    let client = client(api)?;
    let accepted = client
        .dispatch(&DispatchRequest {
            agent,
            task,
            repo,
            branch,
            timeout_secs: timeouts.timeout_secs,
            idle_timeout_secs: timeouts.idle_timeout_secs,
        })
        .await?;
    if !wait {
        if api.json {
            print_json(&accepted)?;
        } else {
            println!("{} {}", accepted.id, accepted.status);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !api.json {
        eprintln!("dispatched {}", accepted.id);
    }
    let run = follow(&client, &accepted.id, !api.json).await?;
    if api.json {
        print_json(&run)?;
    } else {
        eprintln!("{}", final_line(&run));
        if let Some(error) = &run.agent_error {
            eprintln!("agent error: {error}");
        }
    }
    Ok(ExitCode::from(exit_code_for(&run)))
}

fn final_line(run: &RunView) -> String {
    let mut s = format!("{} {}", run.id, run.status);
    if let Some(d) = run.duration_ms {
        s.push_str(&format!(" in {}", format::duration_ms(d)));
    }
    if let Some(c) = run.exit_code {
        s.push_str(&format!(" (exit {c})"));
    }
    if let Some(r) = run.failure_reason {
        s.push_str(&format!(" reason: {r}"));
    }
    if let Some(cost) = run.usage.as_ref().and_then(|u| u.cost_usd) {
        s.push_str(&format!(" · {}", format::cost_usd(cost)));
    }
    if !run.artifacts.is_empty() {
        s.push_str(&format!(" · {} artifacts", run.artifacts.len()));
    }
    s
}

/// Streams the run's log to stdout (when `print_log`) until the run is terminal and the log fully
/// read; shows a spinner on a terminal stderr. Returns the final run.
async fn follow(client: &OutpostClient, id: &str, print_log: bool) -> anyhow::Result<RunView> {
    let spinner = spinner(print_log && std::io::stderr().is_terminal());
    let mut shown_status = None;
    let mut offset = 0u64;
    let mut stdout = std::io::stdout();
    loop {
        let chunk = client.logs(id, offset).await?;
        if !chunk.data.is_empty() {
            if print_log {
                // The spinner is cleared while the log is written, then drawn again below it.
                spinner.suspend(|| {
                    stdout.write_all(&chunk.data)?;
                    stdout.flush()
                })?;
            }
            offset = chunk.next_offset;
            if offset < chunk.size {
                continue; // more is already there
            }
        }
        if chunk.status.is_terminal() && offset >= chunk.size {
            spinner.finish_and_clear();
            return Ok(client.get_run(id).await?);
        }
        // One frame per poll: a new status redraws the line, otherwise the spinner moves on.
        if shown_status != Some(chunk.status) {
            spinner.set_message(format!("{id} {}", chunk.status));
            shown_status = Some(chunk.status);
        } else {
            spinner.tick();
        }
        tokio::time::sleep(Duration::from_millis(if chunk.status == RunStatus::Queued {
            200
        } else {
            300
        }))
        .await;
    }
}

/// The `--wait` spinner on stderr, `⠋ <id> <status> <seconds since the start>s` (`shown` false:
/// a hidden bar that draws nothing). It clears itself when dropped, so an error is not printed
/// after it on its line.
fn spinner(shown: bool) -> indicatif::ProgressBar {
    if !shown {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg} {secs}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner())
        .with_key(
            "secs",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0}s", state.elapsed().as_secs_f64());
            },
        )
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", ""]);
    indicatif::ProgressBar::new_spinner()
        .with_style(style)
        .with_finish(indicatif::ProgressFinish::AndClear)
}

pub async fn list(
    api: &ApiArgs,
    status: Option<String>,
    agent: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
) -> anyhow::Result<ExitCode> {
    let status = status
        .map(|s| s.parse::<RunStatus>())
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let page = client(api)?
        .list_runs(&ListRunsQuery {
            status,
            agent,
            limit,
            cursor,
        })
        .await?;
    if api.json {
        print_json(&page)?;
    } else {
        println!("{}", format::runs_table(&page.runs, chrono::Utc::now()));
        if let Some(c) = page.next_cursor {
            println!("\nmore: outpost runs list --cursor {c}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn get(api: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
    let run = client(api)?.get_run(id).await?;
    if api.json {
        print_json(&run)?;
    } else {
        print!("{}", format::run_details(&run));
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(api: &ApiArgs, id: &str, follow_log: bool) -> anyhow::Result<ExitCode> {
    let client = client(api)?;
    if follow_log {
        let run = follow(&client, id, true).await?;
        eprintln!("{}", final_line(&run));
        return Ok(ExitCode::SUCCESS);
    }
    let mut offset = 0;
    let mut stdout = std::io::stdout();
    loop {
        let chunk = client.logs(id, offset).await?;
        stdout.write_all(&chunk.data)?;
        if chunk.data.is_empty() || chunk.next_offset >= chunk.size {
            break;
        }
        offset = chunk.next_offset;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(api: &ApiArgs, id: &str) -> anyhow::Result<ExitCode> {
    let run = client(api)?.cancel_run(id).await?;
    if api.json {
        print_json(&run)?;
    } else if run.status == RunStatus::Cancelled {
        println!("{} cancelled", run.id);
    } else {
        println!(
            "{} cancel requested (status {}); the worker stops it at its next heartbeat",
            run.id, run.status
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn artifact(api: &ApiArgs, id: &str, name: &str, output: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let bytes = client(api)?.artifact(id, name).await?;
    match output {
        Some(path) => std::fs::write(&path, &bytes).with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = std::io::stdout();
            out.write_all(&bytes)?;
            out.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn promote(api: &ApiArgs, id: &str, branch: Option<String>) -> anyhow::Result<ExitCode> {
    let r = client(api)?.promote(id, &PromoteRequest { branch }).await?;
    if api.json {
        print_json(&r)?;
    } else {
        let state = if r.pushed { "pushed" } else { "already up to date" };
        println!("branch   {} ({state})", r.branch);
        println!("commit   {}", r.commit);
        println!("base     {}", r.base_commit);
        if let Some(url) = &r.compare_url {
            println!("compare  {url}");
        }
        if let Some(url) = &r.pull_request_url {
            println!("pull     {url}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn fleet(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let f = client(api)?.fleet().await?;
    if api.json {
        print_json(&f)?;
    } else {
        println!("{}", format::fleet(&f));
    }
    Ok(ExitCode::SUCCESS)
}

/// `outpost secrets set NAME`: the value comes from stdin (one trailing newline is dropped).
pub async fn secret_set(api: &ApiArgs, name: &str) -> anyhow::Result<ExitCode> {
    let client = client(api)?;
    if std::io::stdin().is_terminal() {
        eprintln!("Enter the value of {name}, then Ctrl-D:");
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("cannot read the secret value from stdin")?;
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let value = value.strip_suffix('\r').unwrap_or(value);
    let info = client.put_secret(name, value).await?;
    if api.json {
        print_json(&info)?;
    } else {
        println!("Set secret {} ({} bytes).", info.name, value.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// `outpost secrets list`.
pub async fn secret_list(api: &ApiArgs) -> anyhow::Result<ExitCode> {
    let list = client(api)?.list_secrets().await?;
    if api.json {
        print_json(&list)?;
    } else if list.secrets.is_empty() {
        println!("No secrets set.");
    } else {
        println!("{:<40} UPDATED", "NAME");
        for s in &list.secrets {
            println!("{:<40} {}", s.name, s.updated_at.format("%Y-%m-%d %H:%M:%S UTC"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `outpost secrets delete NAME`.
pub async fn secret_delete(api: &ApiArgs, name: &str) -> anyhow::Result<ExitCode> {
    client(api)?.delete_secret(name).await?;
    if !api.json {
        println!("Deleted secret {name}.");
    }
    Ok(ExitCode::SUCCESS)
}
