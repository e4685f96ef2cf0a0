//! Tests of the process executor (spawning, environment, identity, supervision, the output pump)
//! through the run pipeline, with real `sh` scripts and a real folder ArtifactStore.

use super::*;
use crate::executor::{stop_channel, Stop};
use crate::pipeline::{run_key, Execution};
use crate::testing::*;
use crate::workspace::RunDirs;
use outpost_core::domain::run_files::OUTPUT_LOG;
use outpost_core::domain::{FailureReason, Outcome, TerminalStatus};
use outpost_core::ports::ArtifactStore;
use tokio::time::Instant;

#[tokio::test]
async fn environment_is_clean_and_secrets_are_scrubbed() {
    let h = harness();
    let script = r#"
        echo "home=$HOME"
        echo "pwd=$(pwd)"
        echo "lang=$LANG term=$TERM"
        echo "run=$OUTPOST_RUN_ID"
        echo "artifacts=$OUTPOST_ARTIFACTS_DIR"
        echo "passed=${OUTPOST_TEST_PASSED:-absent}"
        echo "unset=${OUTPOST_TEST_UNSET:-absent}"
        echo "not_named=${OUTPOST_TEST_NOT_NAMED:-absent}"
        echo "key=$OUTPOST_TEST_KEY"
        env | cut -d= -f1 | sort | tr '\n' ' '
    "#;
    let run = run_of("keyed", script, None, 60);
    let (outcome, _) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::succeeded());
    let log = h.log(&run);
    let root = h.pipeline.config().work_dir.join(run.id.as_str());
    assert!(
        log.contains(&format!("home={}\n", root.join("home").display())),
        "{log}"
    );
    assert!(log.contains(&format!("pwd={}\n", root.join("ws").display())), "{log}");
    assert!(log.contains("lang=C.UTF-8 term=dumb\n"), "{log}");
    assert!(log.contains(&format!("run={}\n", run.id)), "{log}");
    assert!(
        log.contains(&format!("artifacts={}\n", root.join("ws/outpost-artifacts").display())),
        "{log}"
    );
    assert!(log.contains("passed=passed-value\n"), "{log}");
    assert!(log.contains("unset=absent\n"), "{log}");
    assert!(log.contains("not_named=absent\n"), "{log}");
    assert!(log.contains("key=[REDACTED]\n"), "{log}");
    assert!(!log.contains(SECRET), "the key's value leaked: {log}");
    let names_line = log.lines().last().expect("env names");
    let mut env_names: Vec<&str> = names_line.split_whitespace().collect();
    env_names.retain(|n| !["PWD", "SHLVL", "_", "OLDPWD"].contains(n)); // set by sh itself
    assert_eq!(
        env_names,
        [
            "HOME",
            "LANG",
            "OUTPOST_ARTIFACTS_DIR",
            "OUTPOST_RUN_ID",
            "OUTPOST_TEST_KEY",
            "OUTPOST_TEST_PASSED",
            "PATH",
            "TERM"
        ]
    );
    assert_eq!(h.summary(&run)["redactions"], 1);
}

#[tokio::test]
async fn secrets_split_across_reads_are_scrubbed_in_large_output() {
    let h = harness();
    // ~1.2 MB where the key appears every 4,103 bytes at shifting offsets of the 64 KiB reads; a
    // file written as an artifact is scrubbed too.
    let script = r#"
        i=0; pad=$(head -c 4085 /dev/zero | tr '\0' 'x')
        while [ $i -lt 300 ]; do printf '%s%s' "$pad" "$OUTPOST_TEST_KEY"; i=$((i+1)); done
        printf 'token %s\n' "$OUTPOST_TEST_KEY" > "$OUTPOST_ARTIFACTS_DIR/notes.txt"
    "#;
    let run = run_of("keyed", script, None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::succeeded());
    let log = h.stored(&run, OUTPUT_LOG);
    let secret = SECRET.as_bytes();
    assert!(!log.windows(secret.len()).any(|w| w == secret), "secret leaked");
    assert_eq!(log.len(), 300 * (4085 + "[REDACTED]".len()));
    assert_eq!(h.summary(&run)["redactions"], 300);
    assert_eq!(h.stored(&run, "files/notes.txt"), b"token [REDACTED]\n");
    assert!(names(&artifacts).contains(&"files/notes.txt"));
}

#[tokio::test]
async fn five_megabytes_of_binary_output_arrive_intact() {
    let h = harness();
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = h.path("blob.bin");
    std::fs::write(&src, &data).expect("write blob");
    let run = run_of("shell", &format!("cat '{}'", src.display()), None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::succeeded());
    let stored = h.stored(&run, OUTPUT_LOG);
    assert_eq!(stored.len(), data.len());
    assert_eq!(sha256_hex(&stored), sha256_hex(&data));
    assert_eq!(artifacts[0].sha256, sha256_hex(&data));
    assert_eq!(artifacts[0].size, 5_000_000);
}

#[tokio::test]
async fn timeout_kills_an_agent_that_ignores_sigterm_and_its_grandchild() {
    let h = harness();
    let pids = h.path("pids");
    // `sleep 1017` marks the agent's processes: their pids inside its PID namespace are not the
    // host's, so the test finds them by command line.
    let script = format!(
        "trap '' TERM; sh -c 'trap \"\" TERM; sleep 1017' & echo $! > '{p}.tmp'; echo $$ >> '{p}.tmp'; mv '{p}.tmp' '{p}'; echo started; sleep 1017; echo unreachable",
        p = pids.display()
    );
    // 5 s leaves the script ample time to set its traps before the deadline, even on a loaded box.
    let run = run_of("shell", &script, None, 5);
    let started = Instant::now();
    let (outcome, _) = h.exec(&run).await;
    assert_eq!(outcome.status, TerminalStatus::TimedOut);
    assert_eq!(outcome.reason, Some(FailureReason::Timeout));
    assert_eq!(outcome.exit_code, Some(128 + 9), "SIGKILLed after ignoring SIGTERM");
    assert!(started.elapsed() < PATIENCE);
    let pids: Vec<i32> = std::fs::read_to_string(&pids)
        .expect("pids written")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect();
    assert_eq!(pids.len(), 2);
    wait_for("the agent's processes to die", || pids_with_arg("1017").is_empty()).await;
    let log = h.log(&run);
    assert!(log.starts_with("started\n"), "{log}");
    assert!(log.contains("[outpost] timed out after 5 s"), "{log}");
    assert_eq!(h.summary(&run)["status"], "timed_out");
}

#[tokio::test]
async fn cancel_stops_the_agent_and_abandon_reports_nothing() {
    let h = harness();
    for stop in [Stop::Cancel, Stop::Abandon] {
        let marker = h.path(&format!("started-{stop:?}"));
        let script = format!("touch '{}'; exec sleep 1000", marker.display());
        let run = run_of("shell", &script, None, 600);
        let (handle, signal) = stop_channel();
        let exec = h.pipeline.run(&run, signal);
        tokio::pin!(exec);
        let end = Instant::now() + PATIENCE;
        while !marker.exists() {
            assert!(Instant::now() < end, "agent never started");
            tokio::select! {
                r = &mut exec => panic!("ended early: {r:?}"),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
        handle.request(stop);
        let result = tokio::time::timeout(PATIENCE, exec).await.expect("stops in time");
        match stop {
            Stop::Cancel => {
                let Execution::Finished { outcome, artifacts } = result else {
                    panic!("cancel must finish the run")
                };
                assert_eq!(outcome.status, TerminalStatus::Cancelled);
                assert_eq!(outcome.reason, Some(FailureReason::Cancelled));
                assert_eq!(outcome.exit_code, Some(128 + 15), "sleep dies of SIGTERM");
                assert_eq!(names(&artifacts), ["output.log", "summary.json"]);
            }
            _ => assert_eq!(result, Execution::Abandoned),
        }
        assert!(!h.pipeline.config().work_dir.join(run.id.as_str()).exists());
    }
}

#[tokio::test]
async fn background_grandchild_cannot_hang_the_run() {
    let h = harness();
    // The agent exits at once but leaves a child holding the output pipe.
    let run = run_of("shell", "sleep 1000 & echo done", None, 600);
    let started = Instant::now();
    let (outcome, _) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::succeeded());
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(h.log(&run), "done\n");
}

#[tokio::test]
async fn live_log_is_appended_while_the_agent_runs() {
    let h = harness();
    let go = h.path("go");
    let script = format!(
        "echo hello live; while [ ! -e '{}' ]; do sleep 0.05; done; echo bye",
        go.display()
    );
    let run = run_of("shell", &script, None, 600);
    let key = run_key(&run);
    let exec = h.pipeline.run(&run, StopSignal::never());
    tokio::pin!(exec);
    let end = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < end, "live log never appeared");
        let chunk = h.store.read_range(&key, OUTPUT_LOG, 0, 1 << 20).await.expect("read");
        if chunk.is_some_and(|c| c.data.as_ref() == b"hello live\n") {
            break;
        }
        tokio::select! {
            r = &mut exec => panic!("ended early: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    std::fs::write(&go, "").expect("go");
    let result = tokio::time::timeout(PATIENCE, exec).await.expect("ends");
    assert!(matches!(result, Execution::Finished { ref outcome, .. } if outcome.status == TerminalStatus::Succeeded));
    assert_eq!(h.log(&run), "hello live\nbye\n");
}

#[tokio::test]
async fn agents_never_run_as_root_and_get_their_entrys_env_home_files_and_aliased_key() {
    let h = harness();
    let script = "echo uid=$(id -u) gid=$(id -g); echo key=$ENTRY_KEY; echo state=$ENTRY_STATE; \
                  cat \"$HOME/cfg/settings.json\"; echo; mkdir .tool; echo x > .tool/state; echo y > mine.txt; \
                  cat ../output.log 2>/dev/null && echo spool-readable; ls -a .. 2>/dev/null | grep -q output.log && echo root-listable; \
                  grep NoNewPrivs /proc/self/status; true";
    let run = run_of("entry", script, None, 60);
    let (outcome, _) = h.exec(&run).await;
    let log = h.log(&run);
    assert_eq!(outcome, Outcome::succeeded(), "{log}");
    if nix::unistd::geteuid().is_root() {
        // A uid of the run's own from the agents' range.
        let range = crate::sandbox::uids::UidRange::DEFAULT;
        let uid: u32 = log
            .split("uid=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no uid in {log}"));
        assert!((range.first..=range.last).contains(&uid), "{log}");
        assert!(log.contains(&format!("gid={uid}")), "{log}");
    } else {
        assert!(log.contains(&format!("uid={} ", nix::unistd::geteuid())), "{log}");
    }
    // The key came from the worker's OUTPOST_TEST_KEY (an alias) as ENTRY_KEY, scrubbed.
    assert!(log.contains("key=[REDACTED]") && !log.contains(SECRET), "{log}");
    let home = RunDirs::new(&h.pipeline.config().work_dir, run.id.as_str()).home;
    assert!(log.contains(&format!("state={}/state", home.display())), "{log}");
    assert!(log.contains(&format!("{{\"home\":\"{}\"}}", home.display())), "{log}");
    if nix::unistd::geteuid().is_root() {
        assert!(
            !log.contains("spool-readable"),
            "the agent cannot read the worker's spool: {log}"
        );
        assert!(
            !log.contains("root-listable"),
            "the agent cannot list its run's root: {log}"
        );
        assert!(log.contains("NoNewPrivs:\t1"), "started through outpost-confine: {log}");
    }
    // The CLI's own folder is not the agent's change.
    assert_eq!(h.summary(&run)["changed_files"], serde_json::json!(["mine.txt"]));
    assert!(!home.exists(), "HOME is removed after the run");
}

#[tokio::test]
async fn a_silent_agent_is_stopped_by_its_idle_timeout_and_a_chatty_one_is_not() {
    let h = harness();
    let mut silent = run_of("shell", "echo started; exec sleep 1000", None, 600);
    silent.idle_timeout_secs = Some(1);
    let mut chatty = run_of(
        "shell",
        "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 0.3; done",
        None,
        600,
    );
    chatty.idle_timeout_secs = Some(1);
    let started = Instant::now();
    let ((s, _), (c, _)) = tokio::join!(h.exec(&silent), h.exec(&chatty));
    assert_eq!(
        (s.status, s.reason),
        (TerminalStatus::TimedOut, Some(FailureReason::Idle))
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    let log = h.log(&silent);
    assert!(log.starts_with("started\n") && log.contains("idle timeout"), "{log}");
    assert_eq!(h.summary(&silent)["failure_reason"], "idle");
    assert_eq!(c, Outcome::succeeded(), "{}", h.log(&chatty));
}
