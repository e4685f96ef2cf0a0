//! End-to-end fault tests: a duplicate delivery of a run runs its agent once, and a run whose
//! worker process is killed (SIGKILL, so its lease simply expires) is finished by another worker,
//! which also stops the agent the dead worker left running.

use outpost_core::ports::TaskMessage;
use outpost_core::{RunId, RunStatus, TenantId};
use outpost_embedded::EmbeddedOptions;
use outpost_tests::{eventually, fake_task, AppOptions, TestApp};
use std::time::Duration;

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map(|s| s.lines().count()).unwrap_or(0)
}

#[tokio::test]
async fn duplicate_delivery_runs_the_agent_once() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev()).await?;
    let client = server.client()?;
    let counter = server.shared.join("executions.txt");
    // Long enough that the duplicate arrives while the first delivery is still running.
    let id = client
        .dispatch(&fake_task(format!("count {}; sleep 3; say done", counter.display())))
        .await?
        .id;

    // Send the same run's message twice more, as an at-least-once queue may, through the same
    // SQLite file the server uses.
    let backend = outpost_embedded::open(&server.data, EmbeddedOptions::default())?;
    let msg = TaskMessage {
        run_id: id.parse::<RunId>()?,
        tenant: "dev".parse::<TenantId>()?,
        trace_context: None,
    };
    backend.queue.send(&msg).await?;
    server
        .wait_run(&id, Duration::from_secs(30), |r| r.status == RunStatus::Running)
        .await?;
    backend.queue.send(&msg).await?;

    let run = server.wait_terminal(&id, Duration::from_secs(60)).await?;
    assert_eq!(run.status, RunStatus::Succeeded);
    assert_eq!(run.attempts, 1);
    // A duplicate that arrives after the end is dropped too.
    backend.queue.send(&msg).await?;
    let depth_clear = || async {
        backend
            .queue
            .depth()
            .await
            .map(|d| d.visible + d.in_flight == 0)
            .unwrap_or(false)
    };
    outpost_tests::eventually_async(Duration::from_secs(60), "duplicates to be dropped", depth_clear).await?;
    assert_eq!(lines(&counter), 1, "the agent ran exactly once");
    assert_eq!(client.get_run(&id).await?.attempts, 1);
    Ok(())
}

#[tokio::test]
async fn killed_worker_is_recovered_by_the_next_delivery() -> anyhow::Result<()> {
    // API only in the dev process; the work happens in separate worker processes.
    let server = TestApp::spawn(AppOptions::dev().slots(0).lease_secs(3)).await?;
    let client = server.client()?;
    let counter = server.shared.join("attempts.txt");
    let mut first = server.start_worker(1, 3)?;
    // The first attempt hangs; the second finishes at once.
    let script = format!("count {0}; sleep-first {0} 120; say finished", counter.display());
    let id = client.dispatch(&fake_task(script)).await?.id;

    server
        .wait_run(&id, Duration::from_secs(30), |r| r.status == RunStatus::Running)
        .await?;
    eventually(Duration::from_secs(30), "first attempt to start the agent", || {
        lines(&counter) == 1
    })
    .await?;
    first.kill(); // SIGKILL: no drain, no release; only the lease can tell.

    let _second = server.start_worker(1, 3)?;
    let run = server.wait_terminal(&id, Duration::from_secs(90)).await?;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(run.attempts, 2, "the second worker's claim is the second attempt");
    assert_eq!(lines(&counter), 2);
    // The first attempt's agent did not outlive its worker: bubblewrap dies with the worker and
    // takes the agent's PID namespace along (and a retry stops leftovers in the run's tree too).
    // Its pid inside that namespace is not the host's: it is found by its command line.
    let marker = format!("sleep-first {} 120", counter.display());
    eventually(Duration::from_secs(30), "the orphaned first agent to be gone", || {
        outpost_testkit::process::pids_with_cmdline(&marker).is_empty()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_run_whose_workers_keep_dying_fails_as_worker_lost() -> anyhow::Result<()> {
    let server = TestApp::spawn(AppOptions::dev().slots(0).lease_secs(3).max_attempts(2)).await?;
    let client = server.client()?;
    let counter = server.shared.join("attempts.txt");
    let id = client
        .dispatch(&fake_task(format!("count {}; sleep 20", counter.display())))
        .await?
        .id;
    for attempt in 1..=2 {
        let mut w = server.start_worker(1, 3)?;
        eventually(Duration::from_secs(60), "the agent to start", || {
            lines(&counter) == attempt
        })
        .await?;
        w.kill();
    }
    // The next worker finds the attempts exhausted.
    let _last = server.start_worker(1, 3)?;
    let run = server.wait_terminal(&id, Duration::from_secs(90)).await?;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    assert_eq!(run.failure_reason, Some(outpost_core::FailureReason::WorkerLost));
    assert_eq!(run.attempts, 2);
    Ok(())
}
