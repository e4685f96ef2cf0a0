//! End-to-end of the `ssm` executor: the real `ingest-lambda` and `outpost-worker` on moto, an
//! agent entry with `executor = "ssm"`, and each SSM Run Command run for real by
//! [`outpost_testkit::local_ssm::LocalSsm`]: the command's script under `sh` as a local process
//! (as the SSM agent runs it, as root), whose `setpriv` (to `nobody`) starts the built
//! `outpost-worker agent-run`, which reads the tenant's key from Parameter Store with the host's
//! own credentials and uploads through presigned POST policies (checked by the fault layer as S3
//! checks them) while the worker polls `GetCommandInvocation` and records the outcome from
//! `summary.json` in S3.
//!
//! Known emulator gaps (moto 5.2.5) and what the fault layer serves instead
//! (`shared/testkit/src/local_ssm.rs`):
//! - `DescribeInstanceInformation` answers HTTP 500: served with the test's hosts (`Online` /
//!   `ConnectionLost`), honoring the `InstanceIds` filter.
//! - `SendCommand` runs nothing and its invocations answer `Success` at once: moto keeps the
//!   command record, the layer runs its script and serves `GetCommandInvocation` from that process
//!   (2 × `InvocationDoesNotExist` first, as SSM answers for a second or two, then `InProgress`,
//!   then `Success` / `Failed` with its exit code, or `Cancelled`).
//! - `CancelCommand` is not implemented: served as SIGTERM to the script's process group.
//! - `ListCommands` (the worker's reconciliation sweep) ignores its `Status` filter and says
//!   `Success` of every command in the emulator: rewritten to this layer's commands and their
//!   real status.
//! - S3 accepts form POSTs without checking their policy: the layer checks them
//!   (`enforce_post_policies`).
//!
//! The SSM script's `setpriv` needs root (CI runs as root); without root only the case that
//! never sends a command runs, the others say they were skipped.

use outpost_api::RunView;
use outpost_core::{FailureReason, RunStatus};
use outpost_testkit::local_ssm::LocalSsm;
use outpost_testkit::process::{is_root, pids_with_cmdline};
use outpost_tests::aws::worker_bin;
use outpost_tests::{fake_entry, fake_output, task_for, AppOptions, TestApp};
use std::time::{Duration, Instant};

const AGENT: &str = "fake-ssm";
const HOST_A: &str = "i-0a1b2c3d4e5f60001";
const HOST_B: &str = "i-0a1b2c3d4e5f60002";
const RUN_AS: &str = "nobody";
const RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// The worker's start allowance (`OUTPOST_REMOTE_START_SLACK_SECS`): the command's
/// `executionTimeout` is the run's timeout (the entry's 60 s) plus this.
const START_SLACK_SECS: u64 = 30;

/// One deployment: the app, its SSM and the hosts' work dir (owned by `nobody`).
struct Ssm {
    app: TestApp,
    ssm: LocalSsm,
    work_dir: String,
    _work: tempfile::TempDir,
}

/// A Lambda front on fresh AWS resources whose agents file has `fake-ssm` (the fake agent on the
/// `ssm` executor), SSM with `hosts`, and a worker of 4 slots with `ssm`'s environment.
async fn spawn(hosts: &[(&str, bool)]) -> anyhow::Result<Ssm> {
    let moto = outpost_testkit::aws::emulator_endpoint();
    let ssm = LocalSsm::start(&moto, hosts, Vec::new()).await?;
    ssm.layer.enforce_post_policies("testing");
    let work = nobody_dir()?;
    let work_dir = work.path().display().to_string();
    let entry = fake_entry(
        AGENT,
        "executor = \"ssm\"\nnetwork = \"none\"\nkey_env = \"FAKE_API_KEY\"\n",
    )?;
    let mut opts = AppOptions::aws(5).agents_toml(entry);
    for (k, v) in ssm.worker_env() {
        opts = opts.worker_env(k, v);
    }
    let entrypoint = worker_bin()?.display().to_string();
    for (k, v) in [
        ("OUTPOST_SSM_ENTRYPOINT", entrypoint.as_str()),
        ("OUTPOST_SSM_RUN_AS", RUN_AS),
        ("OUTPOST_SSM_WORK_DIR", work_dir.as_str()),
        ("OUTPOST_REMOTE_START_SLACK_SECS", &START_SLACK_SECS.to_string()),
    ] {
        opts = opts.worker_env(k, v);
    }
    let app = TestApp::spawn(opts).await?;
    Ok(Ssm {
        app,
        ssm,
        work_dir,
        _work: work,
    })
}

/// A fresh folder owned by `nobody` whose parents every user may pass (the entrypoint's work dir).
fn nobody_dir() -> anyhow::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("outpost-ssm-host-")
        .tempdir_in("/tmp")?;
    if is_root() {
        std::os::unix::fs::chown(dir.path(), Some(uid_of(RUN_AS)?), None)?;
    }
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// The uid of `user` from /etc/passwd.
fn uid_of(user: &str) -> anyhow::Result<u32> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.nth(1)).flatten()
        })
        .and_then(|uid| uid.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no user {user} in /etc/passwd"))
}

fn skipped() -> bool {
    if is_root() {
        return false;
    }
    eprintln!("skipped: the SSM script's setpriv needs root (CI runs as root)");
    true
}

async fn log_of(app: &TestApp, id: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8(
        app.client()?.artifact(id, "output.log").await?.to_vec(),
    )?)
}

async fn wait_terminal(app: &TestApp, id: &str) -> anyhow::Result<RunView> {
    app.wait_terminal(id, RUN_TIMEOUT).await
}

/// Case a: a run on the one online host succeeds from its `summary.json`: its whole output is in
/// `output.log`, the tenant's key reached the agent (read on the host from Parameter Store by the
/// entrypoint, never sent in the command) and is scrubbed from the log, and the command is the
/// executor's: `AWS-RunShellScript` running the entrypoint as `nobody` with `setpriv`, its output under
/// `ssm-output/{tenant}/{run}/`, `executionTimeout` = run timeout + start allowance. The worker
/// rides out `InvocationDoesNotExist` and polls once per interval.
#[tokio::test]
async fn an_ssm_run_succeeds_with_the_tenants_key_read_on_the_host() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let Ssm { app, ssm, work_dir, .. } = spawn(&[(HOST_A, true)]).await?;
    let _worker = app.start_worker(4, 10)?;
    let client = app.client()?;
    let (head, tail) = ("sk-ssm-host-", ulid::Ulid::new().to_string().to_lowercase());
    let secret = format!("{head}{tail}");
    client.put_secret("FAKE_API_KEY", &secret).await?;

    let started = Instant::now();
    let id = client
        .dispatch(&task_for(
            AGENT,
            format!("say hi; env FAKE_API_KEY; key-find {head} {tail}; print 50000"),
        ))
        .await?
        .id;
    let run = wait_terminal(&app, &id).await?;
    let elapsed = started.elapsed();
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.exit_code, Some(0));
    let names: Vec<String> = client.artifacts(&id).await?.into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["output.log", "summary.json"], "the manifest from summary.json");

    let log = log_of(&app, &id).await?;
    assert!(log.starts_with("hi\n"), "{}", &log[..log.len().min(300)]);
    let printed = String::from_utf8(fake_output(50_000))?;
    assert!(log.contains(&printed), "the whole print: {} bytes of log", log.len());
    assert!(!log.contains(&secret), "the key is scrubbed");
    assert!(log.contains("FAKE_API_KEY=[REDACTED]"), "the agent had the key set");
    assert!(
        log.contains("KEY found in the environment"),
        "the agent's environment held the key's value: {}",
        log.lines()
            .find(|l| l.starts_with("KEY "))
            .unwrap_or("(no key-find line)")
    );

    let sent = ssm.sent_commands();
    assert_eq!(sent.len(), 1, "one command per run: {sent:?}");
    let cmd = &sent[0];
    assert_eq!(cmd.instance_ids, [HOST_A]);
    assert_eq!(cmd.document_name, "AWS-RunShellScript");
    let aws = app.aws().ok_or_else(|| anyhow::anyhow!("an AWS app"))?;
    assert_eq!(cmd.output_bucket.as_deref(), Some(aws.settings.bucket.as_str()));
    assert_eq!(
        cmd.output_key_prefix.as_deref(),
        Some(format!("ssm-output/{}/{id}/", app.tenant).as_str())
    );
    assert_eq!(
        cmd.execution_timeout.as_deref(),
        Some((60 + START_SLACK_SECS).to_string().as_str()),
        "the run's timeout plus the start allowance"
    );
    assert_eq!(cmd.comment.as_deref(), Some(format!("outpost run {id}").as_str()));
    assert_eq!(cmd.commands.first().map(String::as_str), Some("set -eu"));
    assert_eq!(cmd.commands.get(1), Some(&format!("u='{RUN_AS}'")));
    let exec = cmd.commands.get(2).map(String::as_str).unwrap_or_default();
    let entrypoint = worker_bin()?.display().to_string();
    assert!(
        exec.starts_with(&format!(
            "exec setpriv --reuid=\"$(id -u \"$u\")\" --regid=\"$(id -g \"$u\")\" --init-groups --inh-caps=-all -- '{entrypoint}' agent-run --spec-url 'http"
        )),
        "{exec}"
    );
    assert!(
        exec.ends_with(&format!(" --work-dir '{work_dir}' --secrets ssm")),
        "{exec}"
    );
    assert!(!exec.contains(&secret), "the key never travels in the command");

    // The host's process: the entrypoint exited 0 and printed its one outcome line.
    assert_eq!(ssm.exit_code(&cmd.command_id, HOST_A), Some(0));
    let stdout = ssm.stdout(&cmd.command_id, HOST_A).unwrap_or_default();
    assert!(stdout.contains(r#""status":"succeeded""#), "{stdout}");
    assert!(!stdout.contains(&secret));
    assert_eq!(ssm.running(), 0);

    // 2 × InvocationDoesNotExist, then one poll per 100 ms at most, and a few for slack.
    let polls = ssm.calls("ssm:GetCommandInvocation");
    let bound = 2 + u64::try_from(elapsed.as_millis() / 100).unwrap_or(u64::MAX) + 5;
    assert!(
        (3..=bound).contains(&polls),
        "{polls} GetCommandInvocation in {elapsed:?}"
    );
    assert_eq!(ssm.calls("ssm:SendCommand"), 1);
    assert_eq!(ssm.calls("ssm:CancelCommand"), 0);
    Ok(())
}

/// Dispatches `say started …; sleep 60` (after `prefix`), cancels it once its live log shows
/// it started, and checks what every cancelled SSM run must show: `cancelled`, one
/// `CancelCommand` of its one command, no process of the run left on the host, and the agent's
/// output kept. Returns `output.log`.
async fn cancel_a_running_ssm_run(prefix: &str) -> anyhow::Result<String> {
    let Ssm { app, ssm, .. } = spawn(&[(HOST_A, true)]).await?;
    let _worker = app.start_worker(2, 10)?;
    let client = app.client()?;
    let nonce = ulid::Ulid::new().to_string();
    let id = client
        .dispatch(&task_for(AGENT, format!("{prefix}say started {nonce}; sleep 60")))
        .await?
        .id;
    app.wait_run(&id, RUN_TIMEOUT, |r| r.status == RunStatus::Running)
        .await?;
    outpost_tests::eventually(RUN_TIMEOUT, "the command to run", || ssm.running() == 1).await?;
    outpost_tests::wait_log_contains(&client, &id, "started", RUN_TIMEOUT).await?;
    assert!(!pids_with_cmdline(&nonce).is_empty(), "the agent runs on the host");

    client.cancel_run(&id).await?;
    let run = wait_terminal(&app, &id).await?;
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    let sent = ssm.sent_commands();
    assert_eq!(sent.len(), 1);
    assert_eq!(ssm.calls("ssm:CancelCommand"), 1, "one cancel");
    assert_eq!(ssm.cancel_requests(), [sent[0].command_id.clone()]);
    assert_eq!(ssm.running(), 0, "the command's process ended");
    assert!(
        ssm.exit_code(&sent[0].command_id, HOST_A).is_some(),
        "the script's process ended"
    );
    outpost_tests::eventually(Duration::from_secs(10), "no process of the run left", || {
        pids_with_cmdline(&nonce).is_empty() && pids_with_cmdline(&id).is_empty()
    })
    .await?;
    let log = log_of(&app, &id).await?;
    assert!(log.contains(&format!("started {nonce}")), "{log}");
    Ok(log)
}

/// Case b: a cancel through the API cancels the command once (SIGTERM to its process group):
/// the run is `cancelled`, no process of it is left on the host, and `output.log` keeps what
/// the agent printed before.
#[tokio::test]
async fn a_cancelled_ssm_run_cancels_its_command_and_keeps_what_its_agent_printed() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    cancel_a_running_ssm_run("").await?;
    Ok(())
}

/// Case c: with its only host offline the run fails `executor_unavailable` with a note saying
/// so, and no command is ever sent.
#[tokio::test]
async fn an_ssm_run_without_an_online_host_fails_executor_unavailable() -> anyhow::Result<()> {
    let Ssm { app, ssm, .. } = spawn(&[(HOST_A, false)]).await?;
    let _worker = app.start_worker(2, 10)?;
    let client = app.client()?;
    let id = client.dispatch(&task_for(AGENT, "say never")).await?.id;
    let run = wait_terminal(&app, &id).await?;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.failure_reason, Some(FailureReason::ExecutorUnavailable));
    let log = log_of(&app, &id).await?;
    assert!(
        log.contains("[outpost] the ssm executor could not start the run"),
        "{log}"
    );
    assert!(log.contains("0 of 1 hosts online"), "{log}");
    assert!(!log.contains("never"), "the agent never ran: {log}");
    assert_eq!(ssm.calls("ssm:SendCommand"), 0);
    assert!(ssm.sent_commands().is_empty());
    assert!(ssm.calls("ssm:DescribeInstanceInformation") >= 1);
    Ok(())
}

/// Case d: two runs in flight at once on two online hosts land on different hosts (the least
/// loaded), and both succeed.
#[tokio::test]
async fn two_ssm_runs_in_flight_land_on_two_hosts() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let Ssm { app, ssm, .. } = spawn(&[(HOST_A, true), (HOST_B, true)]).await?;
    let _worker = app.start_worker(4, 10)?;
    let client = app.client()?;
    let mut ids = Vec::new();
    for i in 0..2 {
        ids.push(
            client
                .dispatch(&task_for(AGENT, format!("say run {i}; sleep 3; say done {i}")))
                .await?
                .id,
        );
    }
    outpost_tests::eventually(RUN_TIMEOUT, "both commands running at once", || ssm.running() == 2).await?;
    for (i, id) in ids.iter().enumerate() {
        let run = wait_terminal(&app, id).await?;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert!(log_of(&app, id).await?.contains(&format!("done {i}")));
    }
    let sent = ssm.sent_commands();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let mut hosts: Vec<&str> = sent
        .iter()
        .flat_map(|c| c.instance_ids.iter().map(String::as_str))
        .collect();
    hosts.sort_unstable();
    assert_eq!(hosts, [HOST_A, HOST_B], "one run per host");
    Ok(())
}

/// Case e: an agent that ignores SIGTERM. The cancel's SIGTERM reaches the entrypoint itself
/// (`setpriv` execs it; `runuser` would SIGKILL it 2 s later), which SIGKILLs the agent after its
/// kill grace and stores the run as `cancelled` with its own `summary.json`; nothing of the run
/// survives on the host.
#[tokio::test]
async fn a_cancelled_ssm_run_whose_agent_ignores_sigterm_leaves_nothing_behind() -> anyhow::Result<()> {
    if skipped() {
        return Ok(());
    }
    let log = cancel_a_running_ssm_run("ignore-term; ").await?;
    // The entrypoint itself finalized the run (it got the SIGTERM, not a parent that kills it).
    assert!(log.contains("cancelled on request; the agent was stopped"), "{log}");
    assert!(!log.contains("without storing summary.json"), "{log}");
    Ok(())
}

/// The worker's remote settings are checked at start, from its variables and from the settings
/// file's `[remote]` table alike: a root SSM user, or hosts named both by tag and by ids, stop
/// `outpost-worker` before it touches AWS, with one line naming the setting.
#[test]
fn bad_remote_settings_stop_the_worker_at_start_with_one_line() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("outpost.toml");
    std::fs::write(
        &file,
        "[remote]\nssm_host_tag = \"Role=agents\"\nssm_host_ids = [\"i-1\"]\n",
    )?;
    let file = file.display().to_string();
    let cases: [(&[(&str, &str)], &str); 2] = [
        (
            &[("OUTPOST_SSM_HOST_IDS", HOST_A), ("OUTPOST_SSM_RUN_AS", "root")],
            "--ssm-run-as must name an unprivileged user, not \"root\"",
        ),
        (
            &[("OUTPOST_CONFIG", file.as_str())],
            "--ssm-host-tag/--ssm-host-ids name the SSM hosts by tag or by ids, not both",
        ),
    ];
    for (env, want) in cases {
        let out = std::process::Command::new(worker_bin()?)
            .args(["--backend", "aws"])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{want}: {stderr}");
        assert!(stderr.contains(want), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
    Ok(())
}
