//! End-to-end of the `ecs` executor: the real `ingest-lambda` and `outpost-worker` on moto, an
//! agent entry with `executor = "ecs"`, and each per-run task run for real by
//! [`outpost_testkit::local_ecs::LocalEcs`]: `outpost-worker agent-run` as a local process with the
//! task's one override, uploading through presigned POST policies (checked by the fault layer as
//! S3 checks them) while the worker watches with batched `DescribeTasks` and records the outcome
//! from `summary.json` in S3.
//!
//! Known emulator gaps (moto 5.2.5) and what covers them here:
//! - `RunTask` with `awsvpcConfiguration` answers HTTP 500 unless the VPC has DNS hostnames and
//!   every container definition has `memory`: [`LocalEcs::start`] makes such a VPC and
//!   definitions.
//! - Tasks never run (`RUNNING` until `StopTask`, then `STOPPED` with no exit code): the fault
//!   layer rewrites `DescribeTasks` with the local process's state and turns `StopTask` into
//!   SIGTERM to it (see `shared/testkit/src/local_ecs.rs`).
//! - S3 accepts form POSTs without checking their policy: the fault layer checks them
//!   (`enforce_post_policies`).

use outpost_api::RunView;
use outpost_core::domain::ExecutorKind;
use outpost_core::{FailureReason, RunStatus};
use outpost_testkit::local_ecs::LocalEcs;
use outpost_tests::aws::worker_bin;
use outpost_tests::{fake_entry, task_for, AppOptions, TestApp};
use std::time::{Duration, Instant};

const PREFIX: &str = "outpost-agent-";
const AGENT: &str = "fake-ecs";
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// A Lambda front on fresh AWS resources whose agents file has `fake-ecs` (the fake agent on the
/// `ecs` executor), workers started with `ecs`'s environment, and that ECS.
async fn spawn(lease_secs: u64) -> anyhow::Result<(TestApp, LocalEcs)> {
    spawn_with(lease_secs, &[]).await
}

/// [`spawn`] with more worker environment.
async fn spawn_with(lease_secs: u64, env: &[(&str, &str)]) -> anyhow::Result<(TestApp, LocalEcs)> {
    let moto = outpost_testkit::aws::emulator_endpoint();
    let ecs = LocalEcs::start(&moto, PREFIX, &[AGENT], worker_bin()?).await?;
    ecs.layer.enforce_post_policies("testing");
    let entry = fake_entry(AGENT, "executor = \"ecs\"\n")?;
    let mut opts = AppOptions::aws(5).lease_secs(lease_secs).agents_toml(entry);
    for (k, v) in ecs.worker_env(PREFIX) {
        opts = opts.worker_env(k, v);
    }
    for (k, v) in env {
        opts = opts.worker_env(*k, *v);
    }
    Ok((TestApp::spawn(opts).await?, ecs))
}

async fn log_of(app: &TestApp, id: &str) -> anyhow::Result<String> {
    Ok(String::from_utf8(
        app.client()?.artifact(id, "output.log").await?.to_vec(),
    )?)
}

async fn wait_terminal(app: &TestApp, id: &str) -> anyhow::Result<RunView> {
    app.wait_terminal(id, RUN_TIMEOUT).await
}

#[tokio::test]
async fn ecs_runs_are_recorded_from_their_summary_in_s3_with_one_batched_describe_per_poll() -> anyhow::Result<()> {
    let (app, ecs) = spawn(10).await?;
    let _worker = app.start_worker(4, 10)?;
    let client = app.client()?;
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..3 {
        let run = client
            .dispatch(&task_for(AGENT, format!("say run {i} here; print 300000; sleep 1")))
            .await?;
        ids.push(run.id);
    }
    let failing = client.dispatch(&task_for(AGENT, "say about to fail; exit 3")).await?.id;
    for id in &ids {
        let run = wait_terminal(&app, id).await?;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert_eq!(run.exit_code, Some(0));
        let names: Vec<String> = client.artifacts(id).await?.into_iter().map(|a| a.name).collect();
        assert_eq!(
            names,
            ["output.log", "summary.json"],
            "the manifest from summary.json, with it"
        );
        let log = log_of(&app, id).await?;
        assert!(log.contains(" here\n"), "{}", &log[..log.len().min(300)]);
        assert!(log.len() > 300_000, "the whole output: {} bytes", log.len());
    }
    let run = wait_terminal(&app, &failing).await?;
    assert_eq!(run.status, RunStatus::Failed);
    assert_eq!(run.exit_code, Some(3), "the agent's exit code, read from summary.json");
    assert_eq!(run.failure_reason, Some(FailureReason::NonZeroExit));
    assert!(log_of(&app, &failing).await?.contains("about to fail"));
    let elapsed = started.elapsed();

    assert_eq!(ecs.layer.calls("ecs:RunTask"), 4, "one task per run");
    assert_eq!(ecs.started(), 4);
    assert_eq!(ecs.layer.calls("ecs:StopTask"), 0);
    // One DescribeTasks per poll (100 ms) for every watched task, not one per task.
    let polls = u64::try_from(elapsed.as_millis() / 100).unwrap_or(u64::MAX) + 5;
    let describes = ecs.layer.calls("ecs:DescribeTasks");
    assert!(
        describes >= 1 && describes <= polls,
        "{describes} DescribeTasks in {elapsed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cancelled_ecs_run_is_stopped_and_keeps_what_its_agent_printed() -> anyhow::Result<()> {
    let (app, ecs) = spawn(10).await?;
    let _worker = app.start_worker(2, 10)?;
    let client = app.client()?;
    let id = client.dispatch(&task_for(AGENT, "say started; sleep 60")).await?.id;
    app.wait_run(&id, RUN_TIMEOUT, |r| r.status == RunStatus::Running)
        .await?;
    outpost_tests::eventually(RUN_TIMEOUT, "the task to run", || ecs.running() == 1).await?;
    // The live log shows the agent started before the cancel.
    outpost_tests::wait_log_contains(&client, &id, "started", RUN_TIMEOUT).await?;
    // The fleet shows the entry's executor, its task definition active, and the run in flight.
    let deadline = Instant::now() + RUN_TIMEOUT;
    let view = loop {
        let fleet = client.fleet().await?;
        let view = fleet.agents.into_iter().find(|a| a.name == AGENT);
        if let Some(v) = view.filter(|v| v.in_flight == 1 && v.available.is_some()) {
            break v;
        }
        anyhow::ensure!(Instant::now() < deadline, "the fleet never showed the run");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(view.executor, ExecutorKind::Ecs);
    assert_eq!(view.available, Some(true), "{view:?}");
    assert!(
        view.availability
            .as_deref()
            .is_some_and(|d| d.contains(&format!("{PREFIX}{AGENT}"))),
        "{view:?}"
    );
    client.cancel_run(&id).await?;
    let run = wait_terminal(&app, &id).await?;
    assert_eq!(run.status, RunStatus::Cancelled, "{run:?}");
    assert!(ecs.layer.calls("ecs:StopTask") >= 1, "the task was stopped");
    assert_eq!(ecs.running(), 0);
    let log = log_of(&app, &id).await?;
    assert!(log.contains("started"), "{log}");
    Ok(())
}

#[tokio::test]
async fn a_sigkilled_worker_s_ecs_runs_are_adopted_by_the_next_one_and_none_starts_twice() -> anyhow::Result<()> {
    let (app, ecs) = spawn(3).await?;
    let mut first = app.start_worker(4, 3)?;
    let client = app.client()?;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            client
                .dispatch(&task_for(AGENT, format!("say run {i}; sleep 4; say done {i}")))
                .await?
                .id,
        );
    }
    outpost_tests::eventually(RUN_TIMEOUT, "three tasks running", || ecs.running() == 3).await?;
    first.kill();
    let _second = app.start_worker(4, 3)?;
    for (i, id) in ids.iter().enumerate() {
        let run = wait_terminal(&app, id).await?;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
        assert!(run.attempts >= 2, "the second worker's attempt recorded it: {run:?}");
        let remote = run.remote.as_ref().expect("the run shows its task");
        assert_eq!(remote.executor, ExecutorKind::Ecs);
        assert!(remote.id.starts_with("arn:aws:ecs:"), "{remote:?}");
        assert!(log_of(&app, id).await?.contains(&format!("done {i}")));
    }
    assert_eq!(ecs.layer.calls("ecs:RunTask"), 3, "no run started a second task");
    assert_eq!(ecs.started(), 3);
    Ok(())
}

#[tokio::test]
async fn the_sweep_stops_tasks_whose_run_is_over_or_unknown_and_leaves_the_rest() -> anyhow::Result<()> {
    let (app, ecs) = spawn_with(10, &[("OUTPOST_REMOTE_SWEEP_SECS", "1")]).await?;
    let _worker = app.start_worker(2, 10)?;
    let client = app.client()?;
    let done = client.dispatch(&task_for(AGENT, "say quick")).await?.id;
    assert_eq!(wait_terminal(&app, &done).await?.status, RunStatus::Succeeded);
    let family = format!("{PREFIX}{AGENT}");
    // Tasks no worker watches: one of a finished run, one of a run that never existed, one that
    // is not Outpost's at all.
    let of_finished = ecs
        .run_untracked(&family, &[("outpost:run", &done), ("outpost:attempt", "1")])
        .await?;
    let unknown_run = outpost_core::RunId::generate().to_string();
    let of_unknown = ecs.run_untracked(&family, &[("outpost:run", &unknown_run)]).await?;
    let foreign = ecs.run_untracked(&family, &[("team", "other")]).await?;
    // A live run's own task stays.
    let live = client.dispatch(&task_for(AGENT, "say live; sleep 30")).await?.id;
    outpost_tests::eventually(RUN_TIMEOUT, "the live run's task", || ecs.running() == 1).await?;
    outpost_tests::eventually(RUN_TIMEOUT, "the sweep to stop both orphans", || {
        let stops = ecs.stop_requests();
        stops.contains(&of_finished) && stops.contains(&of_unknown)
    })
    .await?;
    let stops = ecs.stop_requests();
    assert!(
        !stops.contains(&foreign),
        "a task without the outpost:run tag is never touched"
    );
    assert_eq!(ecs.running(), 1, "the live run's task was not stopped: {stops:?}");
    let run = client.get_run(&live).await?;
    assert_eq!(run.status, RunStatus::Running);
    client.cancel_run(&live).await?;
    assert_eq!(wait_terminal(&app, &live).await?.status, RunStatus::Cancelled);
    Ok(())
}

#[tokio::test]
async fn a_task_that_dies_without_its_summary_fails_executor_lost_with_its_live_log_and_a_note() -> anyhow::Result<()> {
    let (app, ecs) = spawn(10).await?;
    let _worker = app.start_worker(2, 10)?;
    let client = app.client()?;
    let id = client
        .dispatch(&task_for(AGENT, "say before the crash; sleep 60"))
        .await?
        .id;
    outpost_tests::wait_log_contains(&client, &id, "before the crash", RUN_TIMEOUT).await?;
    assert_eq!(ecs.kill_running(), 1);
    let run = wait_terminal(&app, &id).await?;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.failure_reason, Some(FailureReason::ExecutorLost));
    let names: Vec<String> = client.artifacts(&id).await?.into_iter().map(|a| a.name).collect();
    assert_eq!(names, ["output.log", "summary.json"], "the worker stored what it knew");
    let log = log_of(&app, &id).await?;
    assert!(log.contains("before the crash"), "the live log is kept: {log}");
    assert!(log.contains("[outpost] the ecs execution arn:aws:ecs:"), "{log}");
    assert!(log.contains("ended without storing summary.json"), "{log}");
    let summary: serde_json::Value = serde_json::from_slice(&client.artifact(&id, "summary.json").await?)?;
    assert_eq!(summary["failure_reason"], "executor_lost");
    assert_eq!(ecs.layer.calls("ecs:RunTask"), 1, "a lost run is not started again");
    Ok(())
}
