//! Tests of the run pipeline as a whole (preparing the workspace, how the agent's end becomes
//! the outcome, the log every run stores), over the process executor with real `sh` scripts,
//! real git and a real folder ArtifactStore.

use crate::testing::*;
use crate::workspace::tests::make_repo;
use crate::workspace::RunDirs;
use outpost_core::domain::{FailureReason, Outcome, RepoSpec};
use std::path::Path;

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
        !h.pipeline.config().work_dir.join(ok.id.as_str()).exists(),
        "run dir removed"
    );

    let bad = run_of("shell", "echo failing; exit 3", None, 60);
    let (outcome, _) = h.exec(&bad).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::NonZeroExit, Some(3)));
    assert_eq!(h.summary(&bad)["failure_reason"], "non_zero_exit");
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
async fn an_entry_for_a_remote_executor_is_never_run_as_a_local_process() {
    let h = harness();
    let marker = h.path("ran-locally");
    let run = run_of("on-ecs", &format!("touch {}", marker.display()), None, 60);
    let (outcome, artifacts) = h.exec(&run).await;
    assert_eq!(outcome, Outcome::failed(FailureReason::ExecutorUnavailable, None));
    assert_eq!(names(&artifacts), ["output.log", "summary.json"]);
    assert!(h.log(&run).contains("asks for the ecs executor"), "{}", h.log(&run));
    assert_eq!(h.summary(&run)["failure_reason"], "executor_unavailable");
    assert!(!marker.exists(), "the agent must not have run");
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

#[test]
fn workspace_paths_are_under_the_run_dir() {
    let dirs = RunDirs::new(Path::new("/w"), "run_X");
    assert_eq!(dirs.ws, Path::new("/w/run_X/ws"));
    assert_eq!(dirs.artifacts, Path::new("/w/run_X/ws/outpost-artifacts"));
    assert_eq!(dirs.spool, Path::new("/w/run_X/output.log"));
}

#[test]
fn the_agent_never_gets_the_git_token_nor_a_key_the_proxy_holds() {
    use outpost_core::domain::{AgentSpec, KeyInjection};
    use secrecy::SecretString;
    let run = run_of("x", "t", None, 60);
    let dirs = RunDirs::new(Path::new("/w"), run.id.as_str());
    let tenant: Vec<(outpost_core::ports::SecretName, SecretString)> = [
        ("GIT_TOKEN", "ghp-secret"),
        ("ANTHROPIC_API_KEY", "sk-real"),
        ("OTHER", "given"),
    ]
    .iter()
    .map(|(n, v)| (n.parse().expect("name"), SecretString::from(v.to_string())))
    .collect();
    let lookup: super::EnvLookup =
        std::sync::Arc::new(|n: &str| (n == "ANTHROPIC_API_KEY").then(|| "sk-worker".into()));
    let mut spec = AgentSpec::new("x", &["x"]);
    spec.key_env = Some("ANTHROPIC_API_KEY".into());
    spec.pass_env = vec!["ANTHROPIC_API_KEY".into()];
    // The key in the environment (no injection): the given key, and still no git token.
    let real = std::ffi::OsString::from("sk-real");
    let env = super::prepare::agent_env(&spec, &run, &dirs, &lookup, &tenant, Some(&real));
    assert_eq!(env.get("ANTHROPIC_API_KEY"), Some(std::ffi::OsStr::new("sk-real")));
    assert_eq!(env.get("GIT_TOKEN"), None);
    assert_eq!(env.get("OTHER"), Some(std::ffi::OsStr::new("given")));
    // The proxy holds the key: only the placeholder, from no source the real key is in.
    spec.key_injection = Some(KeyInjection::new("https://api.anthropic.com", "x-api-key", ""));
    let env = super::prepare::agent_env(&spec, &run, &dirs, &lookup, &tenant, None);
    assert_eq!(
        env.get("ANTHROPIC_API_KEY"),
        None,
        "neither the tenant's secret nor pass_env"
    );
    let placeholder = std::ffi::OsString::from("sk-outpost-0123456789abcdef");
    let env = super::prepare::agent_env(&spec, &run, &dirs, &lookup, &tenant, Some(&placeholder));
    assert_eq!(env.get("ANTHROPIC_API_KEY"), Some(placeholder.as_os_str()));
    assert_eq!(env.get("GIT_TOKEN"), None);
}
