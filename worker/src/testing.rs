//! Test support: a run pipeline over the process executor with real `sh` agents, a real folder
//! ArtifactStore and a fake worker environment, shared by the pipeline's, finalize's and the
//! process executor's tests.

use crate::executor::{ProcessConfig, ProcessExecutor, StopSignal};
use crate::pipeline::{run_key, Execution, PipelineConfig, RunPipeline};
use chrono::Utc;
use outpost_core::domain::run_files::{OUTPUT_LOG, SUMMARY_JSON};
use outpost_core::domain::{AgentRegistry, Artifact, NewRun, Outcome, RepoSpec, Run, RunId, RunStatus};
use outpost_embedded::LocalArtifactStore;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The key of the `keyed` agent.
pub const SECRET: &str = "sk-test-0123456789";

/// Generous bound for anything a test waits on.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct Harness {
    pub tmp: tempfile::TempDir,
    pub store: Arc<LocalArtifactStore>,
    pub agents: Arc<AgentRegistry>,
    pub pipeline: RunPipeline,
}

/// The test executor's settings: a short kill grace, and the tests' `shared/` folder (their
/// markers) writable by every sandboxed agent.
pub fn process_config(shared: &Path) -> ProcessConfig {
    ProcessConfig {
        kill_grace: Duration::from_millis(500),
        sandbox: crate::sandbox::SandboxConfig {
            extra_rw: vec![shared.to_path_buf()],
            ..Default::default()
        },
    }
}

pub use outpost_testkit::process::pids_with_arg;

pub fn harness() -> Harness {
    let tmp = tempfile::tempdir().expect("tempdir");
    // When the tests run as root, each run's agent has its own uid (crate::sandbox::uids): they pass through the
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

            [agents.on-ecs]
            command = ["sh", "-c", "{prompt}"]
            executor = "ecs"

            [agents.gemini-like]
            command = ["sh", "-c", "{prompt}"]
            output = "gemini"
            "#,
            "test",
        )
        .expect("agents");
    let agents = Arc::new(agents);
    let config = PipelineConfig::new(tmp.path().join("work"));
    std::fs::create_dir_all(&config.work_dir).expect("work dir");
    // The "worker environment" the agents' variables come from.
    let worker_env: HashMap<&str, &str> = [
        ("OUTPOST_TEST_KEY", SECRET),
        ("OUTPOST_TEST_PASSED", "passed-value"),
        ("OUTPOST_TEST_NOT_NAMED", "must-not-leak"),
    ]
    .into();
    let executor = Arc::new(ProcessExecutor::new(process_config(&tmp.path().join("shared"))));
    let pipeline = RunPipeline::new(store.clone(), Arc::clone(&agents), executor, config)
        .with_env_lookup(Arc::new(move |n: &str| worker_env.get(n).map(OsString::from)));
    Harness {
        tmp,
        store,
        agents,
        pipeline,
    }
}

pub fn run_of(agent: &str, task: &str, repo: Option<RepoSpec>, timeout_secs: u32) -> Run {
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
    pub async fn exec(&self, run: &Run) -> (Outcome, Vec<Artifact>) {
        match tokio::time::timeout(PATIENCE, self.pipeline.run(run, StopSignal::never())).await {
            Ok(Execution::Finished { outcome, artifacts }) => (outcome, artifacts),
            Ok(Execution::Abandoned) => panic!("run abandoned"),
            Err(_) => panic!("run did not end"),
        }
    }

    pub fn stored(&self, run: &Run, name: &str) -> Vec<u8> {
        let key = run_key(run);
        std::fs::read(self.store.run_dir(&key).join(name)).unwrap_or_else(|e| panic!("reading stored {name}: {e}"))
    }

    pub fn log(&self, run: &Run) -> String {
        String::from_utf8_lossy(&self.stored(run, OUTPUT_LOG)).into_owned()
    }

    pub fn summary(&self, run: &Run) -> serde_json::Value {
        serde_json::from_slice(&self.stored(run, SUMMARY_JSON)).expect("summary.json is JSON")
    }

    /// A path in the folder every agent may write to.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join("shared").join(name)
    }
}

pub fn names(artifacts: &[Artifact]) -> Vec<&str> {
    artifacts.iter().map(|a| a.name.as_str()).collect()
}
pub use outpost_testkit::sha256_hex;

/// Waits until `cond` holds, failing after [`PATIENCE`].
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
