//! Tests of the process executor with real `sh` scripts, real git and a real folder ArtifactStore.

use super::*;
use crate::executor::stop_channel;
use crate::workspace::tests::{git_ok, make_repo};
use chrono::Utc;
use outpost_core::domain::{NewRun, RepoSpec, RunId, RunStatus, TerminalStatus};
use outpost_embedded::LocalArtifactStore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The key of the `keyed` agent.
const SECRET: &str = "sk-test-0123456789";

/// Generous bound for anything a test waits on.
const PATIENCE: Duration = Duration::from_secs(60);

struct Harness {
    tmp: tempfile::TempDir,
    store: Arc<LocalArtifactStore>,
    exec: ProcessExecutor,
}

fn harness() -> Harness {
    harness_with(|_| {})
}

fn harness_with(tweak: impl FnOnce(&mut ProcessConfig)) -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    // When the tests run as root, agents run as `nobody` (crate::identity): they pass through the
    // test's folder to their run, and write the tests' markers into `shared/`.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    std::fs::create_dir(tmp.path().join("shared")).expect("shared dir");
    std::fs::set_permissions(tmp.path().join("shared"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let store = Arc::new(LocalArtifactStore::new(tmp.path().join("artifacts")).expect("store"));
    let mut agents = AgentRegistry::builtin(true);
    agents
        .apply_toml(
            r#"
            [agents.keyed]
            command = ["sh", "-c", "{prompt}"]
            key_env = "OUTPOST_TEST_KEY"
            pass_env = ["OUTPOST_TEST_PASSED", "OUTPOST_TEST_UNSET"]

            [agents.missing]
            command = ["/nonexistent/outpost-agent-binary", "{prompt}"]

            [agents.entry]
            command = ["sh", "-c", "{prompt}"]
            key_env = "ENTRY_KEY"
            key_aliases = ["OUTPOST_TEST_KEY"]
            env = { ENTRY_STATE = "{home}/state" }
            home_files = { "cfg/settings.json" = "{\"home\":\"{home}\"}" }
            ignore = [".tool/"]

            [agents.gemini-like]
            command = ["sh", "-c", "{prompt}"]
            output = "gemini"
            "#,
            "test",
        )
        .expect("agents");
    let mut config = ProcessConfig::new(tmp.path().join("work"));
    config.kill_grace = Duration::from_millis(500);
    tweak(&mut config);
    std::fs::create_dir_all(&config.work_dir).expect("work dir");
    // The "worker environment" the agents' variables come from.
    let worker_env: HashMap<&str, &str> = [
        ("OUTPOST_TEST_KEY", SECRET),
        ("OUTPOST_TEST_PASSED", "passed-value"),
        ("OUTPOST_TEST_NOT_NAMED", "must-not-leak"),
    ]
    .into();
    let exec = ProcessExecutor::new(store.clone(), Arc::new(agents), config)
        .with_env_lookup(Arc::new(move |n: &str| worker_env.get(n).map(OsString::from)));
    Harness { tmp, store, exec }
}

fn run_of(agent: &str, task: &str, repo: Option<RepoSpec>, timeout_secs: u32) -> Run {
    let mut run = Run::queued(NewRun {
        id: RunId::generate(),
        tenant: "acme".parse().expect("tenant"),
        agent: agent.into(),
        task: task.into(),
        repo,
        timeout_secs,
        idle_timeout_secs: None,
        created_at: Utc::now(),
    });
    run.status = RunStatus::Running;
    run.attempts = 1;
    run
}

impl Harness {
    async fn exec(&self, run: &Run) -> (Outcome, Vec<Artifact>) {
        match tokio::time::timeout(PATIENCE, self.exec.execute(run, StopSignal::never())).await {
            Ok(Execution::Finished { outcome, artifacts }) => (outcome, artifacts),
            Ok(Execution::Abandoned) => panic!("run abandoned"),
            Err(_) => panic!("run did not end"),
        }
    }

    fn stored(&self, run: &Run, name: &str) -> Vec<u8> {
        let key = run_key(run);
        std::fs::read(self.store.run_dir(&key).join(name)).unwrap_or_else(|e| panic!("reading stored {name}: {e}"))
    }

    fn log(&self, run: &Run) -> String {
        String::from_utf8_lossy(&self.stored(run, OUTPUT_LOG)).into_owned()
    }

    fn summary(&self, run: &Run) -> serde_json::Value {
        serde_json::from_slice(&self.stored(run, "summary.json")).expect("summary.json is JSON")
    }

    /// A path in the folder every agent may write to.
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join("shared").join(name)
    }
}

fn names(artifacts: &[Artifact]) -> Vec<&str> {
    artifacts.iter().map(|a| a.name.as_str()).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Waits until `cond` holds, failing after [`PATIENCE`].
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn process_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[tokio::test]
async fn exit_codes_map_to_outcomes_and_output_interleaves() {
    let h = harness();
    let ok = run_of("shell", "echo one; echo two >&2; echo three", None, 60);
    let (outcome, artifacts) = h.exec(&ok).await;
    assert_eq!(outcome, Outcome::succeeded());
    assert_eq!(names(&artifacts), ["output.log", "summary.json"]);
    assert_eq!(h.log(&ok), "one\ntwo\nthree\n");
    let log_artifact = &artifacts[0];
    assert_eq!(log_artifact.sha256, sha256_hex(b"one\ntwo\nthree\n"));
    assert_eq!(log_artifact.content_type, "text/plain; charset=utf-8");
    let summary = h.summary(&ok);
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["run_id"], ok.id.as_str());
    assert_eq!(summary["attempts"], 1);
    assert!(
        !h.exec.config().work_dir.join(ok.id.as_str()).exists(),
        "run dir removed"
    );

    let bad = run_of("shell", "echo failing; exit 3", None, 60);
    let (outcome, _) = h.exec(&bad).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::NonZeroExit, Some(3)));
    assert_eq!(h.summary(&bad)["failure_reason"], "non_zero_exit");
}

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
    let root = h.exec.config().work_dir.join(run.id.as_str());
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
    let script = format!(
        "trap '' TERM; sh -c 'trap \"\" TERM; sleep 1000' & echo $! > '{p}.tmp'; echo $$ >> '{p}.tmp'; mv '{p}.tmp' '{p}'; echo started; sleep 1000; echo unreachable",
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
    for pid in pids {
        wait_for(&format!("process {pid} to die"), || process_dead(pid)).await;
    }
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
        let exec = h.exec.execute(&run, signal);
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
        assert!(!h.exec.config().work_dir.join(run.id.as_str()).exists());
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
async fn spawn_failure_and_unknown_agent_are_failed_runs_with_a_log() {
    let h = harness();
    let run = run_of("missing", "x", None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::SpawnFailed, None));
    assert_eq!(names(&artifacts), ["output.log", "summary.json"]);
    let log = h.log(&run);
    assert!(
        log.contains("cannot start the agent") && log.contains("outpost-agent-binary"),
        "{log}"
    );

    let run = run_of("no-such-agent", "x", None, 60);
    let (outcome, _) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::UnknownAgent, None));
    assert!(h.log(&run).contains("unknown or disabled agent"));
    assert_eq!(h.summary(&run)["failure_reason"], "unknown_agent");
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
    let exec = h.exec.execute(&run, StopSignal::never());
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
async fn git_workspace_diff_applies_and_artifacts_are_collected() {
    let h = harness();
    let origin = h.path("origin");
    let url = make_repo(&origin);
    let base = git_ok(&origin, &["rev-parse", "HEAD"]).trim().to_owned();
    let script = r#"
        set -e
        printf 'one\nTWO\nthree\n' > src/lib.txt
        head -c 3000 /dev/urandom > image.bin
        mkdir -p "$OUTPOST_ARTIFACTS_DIR/reports"
        echo '# Report' > "$OUTPOST_ARTIFACTS_DIR/reports/summary.md"
        ln -s /etc/passwd "$OUTPOST_ARTIFACTS_DIR/passwd"
        git log --oneline | wc -l
    "#;
    let repo = RepoSpec {
        url: url.clone(),
        branch: Some("main".into()),
    };
    let run = run_of("shell", script, Some(repo.clone()), 120);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::succeeded(), "{}", h.log(&run));
    assert_eq!(
        names(&artifacts),
        ["output.log", "summary.json", "diff.patch", "files/reports/summary.md"]
    );
    for a in &artifacts {
        assert_eq!(a.sha256, sha256_hex(&h.stored(&run, &a.name)), "{}", a.name);
    }
    assert_eq!(h.stored(&run, "files/reports/summary.md"), b"# Report\n");
    assert_eq!(artifacts[3].content_type, "text/markdown; charset=utf-8");

    let summary = h.summary(&run);
    assert_eq!(summary["base_commit"], base.as_str());
    assert_eq!(
        summary["changed_files"],
        serde_json::json!(["image.bin", "src/lib.txt"])
    );

    // The patch applies onto a fresh clone and reproduces the agent's changes.
    let patch = h.path("got.patch");
    std::fs::write(&patch, h.stored(&run, "diff.patch")).expect("write patch");
    let fresh = h.path("fresh");
    git_ok(&h.path(""), &["clone", "--quiet", &url, "fresh"]);
    git_ok(&fresh, &["apply", "--index", patch.to_str().expect("utf8")]);
    assert_eq!(
        std::fs::read_to_string(fresh.join("src/lib.txt")).expect("read"),
        "one\nTWO\nthree\n"
    );
    assert_eq!(
        std::fs::metadata(fresh.join("image.bin")).expect("new file").len(),
        3000
    );
}

#[tokio::test]
async fn bad_branch_is_workspace_failed_with_gits_message() {
    let h = harness();
    let url = make_repo(&h.path("origin"));
    let marker = h.path("ran");
    let run = run_of(
        "shell",
        &format!("touch '{}'", marker.display()),
        Some(RepoSpec {
            url,
            branch: Some("nope".into()),
        }),
        120,
    );
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::WorkspaceFailed, None));
    assert_eq!(names(&artifacts), ["output.log", "summary.json"]);
    let log = h.log(&run);
    assert!(log.contains("git clone failed") && log.contains("nope"), "{log}");
    assert!(!marker.exists(), "the agent must not run without its workspace");
}

#[tokio::test]
async fn a_failing_store_makes_the_run_artifact_upload_failed() {
    // A store whose folder cannot be written: every put fails.
    let h = harness();
    let ro = h.path("ro-artifacts");
    let store = Arc::new(LocalArtifactStore::new(&ro).expect("store"));
    let exec = ProcessExecutor::new(store, Arc::clone(&h.exec.agents), h.exec.config().clone());
    let run = run_of("shell", "echo hi", None, 60);
    // Make the tenant folder a file so nothing can be created under it.
    std::fs::write(ro.join("acme"), "not a folder").expect("block tenant dir");
    let result = exec.execute(&run, StopSignal::never()).await;
    let Execution::Finished { outcome, artifacts } = result else {
        panic!("must finish")
    };
    assert_eq!(outcome, Outcome::failed(FailureReason::ArtifactUploadFailed, Some(0)));
    assert!(artifacts.is_empty());
}

#[test]
fn workspace_paths_are_under_the_run_dir() {
    let dirs = RunDirs::new(Path::new("/w"), "run_X");
    assert_eq!(dirs.ws, Path::new("/w/run_X/ws"));
    assert_eq!(dirs.artifacts, Path::new("/w/run_X/ws/outpost-artifacts"));
    assert_eq!(dirs.spool, Path::new("/w/run_X/output.log"));
}

#[tokio::test]
async fn agents_never_run_as_root_and_get_their_entrys_env_home_files_and_aliased_key() {
    let h = harness();
    let script = "echo uid=$(id -u) gid=$(id -g); echo key=$ENTRY_KEY; echo state=$ENTRY_STATE; \
                  cat \"$HOME/cfg/settings.json\"; echo; mkdir .tool; echo x > .tool/state; echo y > mine.txt; \
                  cat ../output.log 2>/dev/null && echo spool-readable; ls .. >/dev/null 2>&1 && echo root-listable; \
                  grep NoNewPrivs /proc/self/status; true";
    let run = run_of("entry", script, None, 60);
    let (outcome, _) = h.exec(&run).await;
    let log = h.log(&run);
    assert_eq!(outcome, Outcome::succeeded(), "{log}");
    let expected_uid = if nix::unistd::geteuid().is_root() {
        identity::NOBODY
    } else {
        nix::unistd::geteuid().as_raw()
    };
    assert!(log.contains(&format!("uid={expected_uid} ")), "{log}");
    // The key came from the worker's OUTPOST_TEST_KEY (an alias) as ENTRY_KEY, scrubbed.
    assert!(log.contains("key=[REDACTED]") && !log.contains(SECRET), "{log}");
    let home = RunDirs::new(&h.exec.config().work_dir, run.id.as_str()).home;
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
        if identity::find_setpriv(std::ffi::OsStr::new("/usr/bin:/bin")).is_some() {
            assert!(log.contains("NoNewPrivs:\t1"), "started through setpriv: {log}");
        }
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

#[tokio::test]
async fn an_agent_that_exits_0_after_reporting_an_error_failed_with_its_message() {
    let h = harness();
    let fixture = h.path("agent-output.log");
    std::fs::write(
        &fixture,
        concat!(
            "{\"type\":\"init\",\"session_id\":\"s-1\",\"model\":\"auto\"}\n",
            "{\"type\":\"error\",\"severity\":\"error\",\"message\":\"API error 401 UNAUTHENTICATED: standin-401: invalid api key\"}\n",
            "{\"type\":\"result\",\"status\":\"error\",\"error\":{\"type\":\"ApiError\",\"message\":\"API error 401 UNAUTHENTICATED: standin-401: invalid api key\"}}\n",
        ),
    )
    .expect("fixture");
    let run = run_of("gemini-like", &format!("cat '{}'; exit 0", fixture.display()), None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome.status, TerminalStatus::Failed, "{}", h.log(&run));
    assert_eq!(outcome.reason, Some(FailureReason::AgentError));
    assert_eq!(outcome.exit_code, Some(0));
    let error = outcome.report.error.clone().unwrap_or_default();
    assert!(error.contains("standin-401"), "{error}");
    assert_eq!(outcome.report.session_id.as_deref(), Some("s-1"));
    assert!(h.log(&run).contains("[outpost] the agent reported a failure"));
    assert_eq!(h.summary(&run)["failure_reason"], "agent_error");
    assert!(!names(&artifacts).contains(&RESULT_MD), "no answer, no result.md");

    // The same agent with an answer: succeeded, the answer stored whole as result.md.
    let answer = h.path("answer.log");
    std::fs::write(
        &answer,
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":\"All done ✓\",\"delta\":true}\n{\"type\":\"result\",\"status\":\"success\",\"stats\":{\"input_tokens\":10,\"output_tokens\":2,\"models\":{\"m\":{\"input_tokens\":10,\"output_tokens\":2,\"cached\":0}}}}\n",
    )
    .expect("fixture");
    let run = run_of("gemini-like", &format!("cat '{}'", answer.display()), None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome.status, TerminalStatus::Succeeded, "{}", h.log(&run));
    assert_eq!(outcome.report.result.as_deref(), Some("All done ✓"));
    assert_eq!(names(&artifacts)[..3], [OUTPUT_LOG, "summary.json", RESULT_MD]);
    assert_eq!(String::from_utf8_lossy(&h.stored(&run, RESULT_MD)), "All done ✓");
    assert_eq!(h.summary(&run)["agent_report"]["usage"]["input_tokens"], 10);
}
