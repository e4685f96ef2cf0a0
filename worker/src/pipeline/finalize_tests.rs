//! Tests of finalize: the diff, collected files, `result.md`, the manifest order, failed uploads
//! and the shape of `summary.json`; end to end over the process executor with real `sh` scripts,
//! real git and a real folder ArtifactStore, and as units.

use super::*;
use crate::executor::ProcessExecutor;
use crate::executor::StopSignal;
use crate::pipeline::{PipelineConfig, RunPipeline};
use crate::testing::*;
use crate::workspace::tests::{git_ok, make_repo};
use outpost_core::domain::{AgentReport, RepoSpec, TerminalStatus};
use outpost_embedded::LocalArtifactStore;
use std::sync::Arc;

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
async fn a_failing_store_makes_the_run_artifact_upload_failed() {
    // A store whose folder cannot be written: every put fails.
    let h = harness();
    let ro = h.path("ro-artifacts");
    let store = Arc::new(LocalArtifactStore::new(&ro).expect("store"));
    let exec = RunPipeline::new(
        store,
        Arc::clone(&h.agents),
        Arc::new(ProcessExecutor::new(process_config(&h.path("")))),
        PipelineConfig::new(h.pipeline.config().work_dir.clone()),
    );
    let run = run_of("shell", "echo hi", None, 60);
    // Make the tenant folder a file so nothing can be created under it.
    std::fs::write(ro.join("acme"), "not a folder").expect("block tenant dir");
    let result = exec.run(&run, StopSignal::never()).await;
    let Execution::Finished { outcome, artifacts } = result else {
        panic!("must finish")
    };
    assert_eq!(outcome, Outcome::failed(FailureReason::ArtifactUploadFailed, Some(0)));
    assert!(artifacts.is_empty());
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

#[test]
fn summary_json_keeps_its_shape() {
    // The shape summary.json had when the worker wrote its own struct: same fields in the same
    // order, `base_commit` and an empty `agent_report` left out.
    let summary = Summary {
        run_id: "run_X".into(),
        agent: "shell".into(),
        status: TerminalStatus::Failed,
        exit_code: Some(3),
        failure_reason: Some(FailureReason::NonZeroExit),
        duration_ms: 12,
        attempts: 1,
        changed_files: vec!["a.txt".into()],
        base_commit: None,
        output_bytes: 5,
        redactions: 0,
        notes: vec!["a note".into()],
        agent_report: AgentReport::default(),
        sandbox: None,
        egress: None,
        artifacts: vec![],
    };
    let json = String::from_utf8(serde_json::to_vec_pretty(&summary).expect("json")).expect("utf8");
    assert_eq!(
        json,
        r#"{
  "run_id": "run_X",
  "agent": "shell",
  "status": "failed",
  "exit_code": 3,
  "failure_reason": "non_zero_exit",
  "duration_ms": 12,
  "attempts": 1,
  "changed_files": [
    "a.txt"
  ],
  "output_bytes": 5,
  "redactions": 0,
  "notes": [
    "a note"
  ]
}"#
    );
    let with_base = Summary {
        base_commit: Some("abc".into()),
        ..summary
    };
    let value = serde_json::to_value(&with_base).expect("json");
    assert_eq!(value["base_commit"], "abc");
}

#[test]
fn the_manifest_lists_the_log_first_and_files_in_upload_order() {
    let artifact = |name: &str| Artifact {
        name: name.into(),
        size: 0,
        sha256: String::new(),
        content_type: String::new(),
    };
    let stored = ["files/b", "files/a", DIFF_PATCH, RESULT_MD, OUTPUT_LOG, SUMMARY_JSON].map(artifact);
    let got = manifest_order(stored.to_vec());
    assert_eq!(
        names(&got),
        [OUTPUT_LOG, SUMMARY_JSON, RESULT_MD, DIFF_PATCH, "files/b", "files/a"]
    );
}

#[test]
fn notes_follow_the_output_after_a_blank_line() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("spool");
    let mut spool = File::create(&path).expect("spool");
    spool.write_all(b"agent output\n").expect("write");
    write_notes(&mut spool, &["one".into(), "two\nlines".into()], true);
    write_notes(&mut spool, &[], true);
    drop(spool);
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        "agent output\n\n[outpost] one\n[outpost] two\n[outpost] lines\n"
    );
}
