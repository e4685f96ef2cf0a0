//! The agent entrypoint (`outpost-worker agent-run`) end to end: the real binary as a process,
//! its run spec staged in the emulator's S3 (moto) behind the fault layer, which checks every
//! form POST's SigV4 policy as S3 does and refuses unsigned requests (moto does neither). The
//! specs are built as the dispatching worker builds them: the run record, the agent entry, two
//! POST policies signed by the real `S3ArtifactStore::presign_post` for the run's prefixes, and
//! a presigned GET of the spec object. What each case proves is in its comment.
//!
//! Needs `OUTPOST_TEST_AWS_ENDPOINT` (see `outpost_testkit::aws`) and the built binaries
//! (`outpost-worker`, `fake-agent`).

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use outpost_aws::s3::post::{live_prefix, run_prefix, sdk_credentials, PresignedPost};
use outpost_aws::s3::{create_bucket, object_key, S3ArtifactStore};
use outpost_aws::AwsClients;
use outpost_core::domain::{
    AgentSpec, ExecutorKind, FailureReason, NetworkPolicy, NewRun, Run, RunId, RunStatus, Summary, TenantId,
    TerminalStatus,
};
use outpost_core::ports::{ArtifactStore, RunKey};
use outpost_testkit::aws::{emulator_endpoint, emulator_sdk_config};
use outpost_testkit::aws_faults::FaultLayer;
use outpost_testkit::process::{is_root, pids_with_cmdline};
use outpost_testkit::sha256_hex;
use outpost_tests::aws::worker_bin;
use outpost_tests::fake_agent_bin;
use outpost_worker::remote::spec::{ssm_script, RunSpec, ScriptSpec, SecretsFrom, SPEC_URL_ENV, SPEC_VERSION};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Longest one entrypoint may take here.
const RUN_LIMIT: Duration = Duration::from_secs(40);
/// What one object of a run may weigh (the fault layer holds bodies in memory, up to 64 MiB).
const MAX_BYTES: u64 = 32 * 1024 * 1024;

/// A fresh bucket on moto behind a fault layer that enforces POST policies and refuses unsigned
/// requests, with SDK clients and an S3 store that talk through the layer.
struct Bucket {
    layer: FaultLayer,
    clients: AwsClients,
    store: S3ArtifactStore,
}

impl Bucket {
    async fn new() -> Bucket {
        let layer = FaultLayer::start(&emulator_endpoint()).await.expect("fault layer");
        layer.enforce_post_policies("testing");
        layer.deny_anonymous_s3();
        let clients = AwsClients::new(&emulator_sdk_config(&layer.endpoint()).await, None);
        let bucket = format!("t{}-agent-run", ulid::Ulid::new().to_string().to_lowercase());
        create_bucket(&clients.s3, &bucket).await.expect("create bucket");
        let store = S3ArtifactStore::new(clients.s3.clone(), bucket, Duration::from_secs(900));
        Bucket { layer, clients, store }
    }

    fn name(&self) -> &str {
        self.store.bucket()
    }

    async fn presign(&self, prefix: &str) -> PresignedPost {
        let creds = sdk_credentials(&emulator_sdk_config(&self.layer.endpoint()).await)
            .await
            .expect("credentials");
        self.store
            .presign_post(&creds, prefix, Duration::from_secs(600), MAX_BYTES)
            .await
            .expect("presign")
    }

    /// The spec of attempt 1 of a new run of `agent` in `tenant` with `task`, as a dispatching
    /// worker makes it.
    async fn spec(&self, tenant: &str, agent: AgentSpec, task: &str, secrets: SecretsFrom) -> RunSpec {
        let mut run = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: tenant.parse::<TenantId>().expect("tenant"),
            agent: agent.name.clone(),
            task: task.to_owned(),
            repo: None,
            timeout_secs: 60,
            idle_timeout_secs: None,
            created_at: chrono::Utc::now(),
        });
        run.status = RunStatus::Running;
        run.attempts = 1;
        let key = key_of(&run);
        RunSpec {
            version: SPEC_VERSION,
            artifacts: self.presign(&run_prefix(&key)).await,
            live: self.presign(&live_prefix(&key)).await,
            run,
            agent,
            secrets,
        }
    }

    /// Puts `body` at `key` with the SDK and returns a presigned GET of it.
    async fn stage(&self, key: &str, body: Vec<u8>) -> String {
        self.clients
            .s3
            .put_object()
            .bucket(self.name())
            .key(key)
            .body(ByteStream::from(body))
            .send()
            .await
            .expect("put the spec");
        self.presigned_get(key).await
    }

    async fn presigned_get(&self, key: &str) -> String {
        let config = PresigningConfig::expires_in(Duration::from_secs(900)).expect("presigning config");
        self.clients
            .s3
            .get_object()
            .bucket(self.name())
            .key(key)
            .presigned(config)
            .await
            .expect("presign GET")
            .uri()
            .to_owned()
    }

    /// Stages `spec` at its `specs/{tenant}/{run}/1.json` key.
    async fn stage_spec(&self, spec: &RunSpec) -> String {
        let body = serde_json::to_vec(spec).expect("spec json");
        self.stage(&spec_key(&key_of(&spec.run)), body).await
    }

    /// The whole object `key`, if it exists.
    async fn object(&self, key: &str) -> Option<Vec<u8>> {
        match self.clients.s3.get_object().bucket(self.name()).key(key).send().await {
            Ok(res) => Some(res.body.collect().await.expect("body").into_bytes().to_vec()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("GetObject {key}: {e:?}"),
        }
    }

    async fn summary(&self, key: &RunKey) -> Summary {
        let bytes = self
            .object(&object_key(key, "summary.json"))
            .await
            .expect("summary.json is stored");
        serde_json::from_slice(&bytes).expect("summary.json parses")
    }

    async fn output_log(&self, key: &RunKey) -> String {
        let bytes = self
            .object(&object_key(key, "output.log"))
            .await
            .expect("output.log is stored");
        String::from_utf8(bytes).expect("output.log is text")
    }

    /// Every key in the bucket.
    async fn keys(&self) -> Vec<String> {
        let res = self
            .clients
            .s3
            .list_objects_v2()
            .bucket(self.name())
            .send()
            .await
            .expect("list");
        res.contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect()
    }
}

fn key_of(run: &Run) -> RunKey {
    RunKey {
        tenant: run.tenant.clone(),
        run: run.id.clone(),
    }
}

fn spec_key(key: &RunKey) -> String {
    format!("specs/{}/{}/1.json", key.tenant.as_str(), key.run.as_str())
}

/// The fake agent as entry `fake` (its prompt is a script of directives).
fn fake_agent() -> AgentSpec {
    let bin = fake_agent_bin().expect("fake-agent binary");
    let bin = bin.to_string_lossy();
    AgentSpec::new("fake", &[&bin, "--prompt", "{prompt}"])
}

/// An entry whose prompt is a `sh -c` script.
fn sh_agent() -> AgentSpec {
    AgentSpec::new("sh", &["sh", "-c", "{prompt}"])
}

/// How one entrypoint process ended.
#[derive(Debug)]
struct Ended {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ended {
    /// The one stdout line, parsed.
    fn line(&self) -> serde_json::Value {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(
            lines.len(),
            1,
            "one line on stdout: {:?}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        assert!(lines[0].len() < 512, "{}", lines[0]);
        serde_json::from_str(lines[0]).expect("the stdout line is JSON")
    }
}

/// `outpost-worker agent-run ARGS` with only PATH (and `env`) in its environment.
fn entrypoint(work_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(worker_bin().expect("outpost-worker binary"));
    cmd.arg("agent-run")
        .arg("--work-dir")
        .arg(work_dir)
        .args(["--kill-grace-secs", "2", "--log-format", "text"])
        .args(args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn wait(child: tokio::process::Child) -> Ended {
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .expect("the entrypoint ends in time")
        .expect("the entrypoint's output");
    Ended {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn run(mut cmd: tokio::process::Command) -> Ended {
    wait(cmd.spawn().expect("start the entrypoint")).await
}

fn names(summary: &Summary) -> Vec<&str> {
    summary.artifacts.iter().map(|a| a.name.as_str()).collect()
}

/// Case 1: a run from its spec to its artifacts. Exit 0, one JSON line on stdout, `output.log`
/// and `summary.json` under `runs/{t}/{r}/` (written only through the spec's POST policies,
/// each checked by the layer), the summary `succeeded` with `output.log` in its manifest.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_from_its_spec_stores_its_log_and_summary() {
    let b = Bucket::new().await;
    let spec = b
        .spec(
            "acme",
            fake_agent(),
            "say hello from agent-run; print 5000; exit 0",
            SecretsFrom::None,
        )
        .await;
    let key = key_of(&spec.run);
    let url = b.stage_spec(&spec).await;
    let work = tempfile::tempdir().expect("work dir");

    let ended = run(entrypoint(work.path(), &["--spec-url", &url], &[])).await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    let line = ended.line();
    assert_eq!(line["run_id"], spec.run.id.as_str());
    assert_eq!(line["status"], "succeeded");
    assert_eq!(line["exit_code"], 0);
    assert!(line["failure_reason"].is_null(), "{line}");
    assert!(
        !ended.stderr.contains("X-Amz-Signature"),
        "the URL's query is never logged"
    );

    let log = b.output_log(&key).await;
    assert!(log.starts_with("hello from agent-run\n"), "{log:.200}");
    assert!(log.contains("line 000000001 the quick brown fox"), "{log:.200}");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Succeeded, "{summary:?}");
    assert_eq!(summary.run_id, spec.run.id.as_str());
    assert_eq!(summary.exit_code, Some(0));
    assert!(names(&summary).contains(&"output.log"), "{:?}", names(&summary));
    // Every write was a form POST the layer checked against its policy.
    assert!(b.layer.calls("s3:PostObject") >= 2);
    assert_eq!(
        b.layer.calls("s3:PutObject"),
        1,
        "only the test's own PutObject of the spec"
    );
    // The run's folders are given back.
    assert!(!work.path().join(spec.run.id.as_str()).exists());
}

/// Case 2: a long output arrives whole: 100,000 lines, every one of them in `output.log`.
#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_thousand_lines_all_reach_output_log() {
    let b = Bucket::new().await;
    let spec = b.spec("acme", sh_agent(), "seq 1 100000", SecretsFrom::None).await;
    let key = key_of(&spec.run);
    let url = b.stage_spec(&spec).await;
    let work = tempfile::tempdir().expect("work dir");

    let ended = run(entrypoint(work.path(), &["--spec-url", &url], &[])).await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    let log = b.output_log(&key).await;
    let numbers: Vec<u64> = log.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(numbers.len(), 100_000, "lines in output.log");
    assert!(numbers.iter().copied().eq(1..=100_000), "every line, in order");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Succeeded);
    let stored = summary
        .artifacts
        .iter()
        .find(|a| a.name == "output.log")
        .expect("output.log in the manifest");
    assert_eq!(stored.size, log.len() as u64);
}

/// Case 3: what the execution holds is its own run and nothing more. The run's POST policy
/// cannot write outside `runs/{t}/{r}/` (another run, another tenant, the spec itself: 403 from
/// the policy check), unsigned reads of the bucket are refused, and the agent's environment has
/// no spec URL, no `OUTPOST_SECRET_*` and no `AWS_*`, while the tenant's key given to the
/// entrypoint as `OUTPOST_SECRET_FAKE_API_KEY` reaches the agent as its `key_env` and is
/// scrubbed from `output.log`.
#[tokio::test(flavor = "multi_thread")]
async fn the_execution_is_contained_to_its_own_run() {
    let b = Bucket::new().await;
    let key_value = format!("sk-tenant-{}", ulid::Ulid::new());
    let mut agent = sh_agent();
    agent.key_env = Some("FAKE_API_KEY".into());
    agent.pass_env = vec![
        "HARMLESS_VAR".into(),
        "AWS_SECRET_ACCESS_KEY".into(),
        "aws_session_token".into(),
        SPEC_URL_ENV.into(),
        "OUTPOST_SECRET_FAKE_API_KEY".into(),
    ];
    let script =
        "env | sort; printf 'key sha256 %s\\n' \"$(printf %s \"$FAKE_API_KEY\" | sha256sum | cut -d' ' -f1)\"; \
                  echo \"the key is $FAKE_API_KEY\"";
    let spec = b.spec("acme", agent, script, SecretsFrom::Env).await;
    let key = key_of(&spec.run);
    let url = b.stage_spec(&spec).await;
    let work = tempfile::tempdir().expect("work dir");

    // The spec URL comes from the environment here, as on ECS.
    let ended = run(entrypoint(
        work.path(),
        &["--secrets", "env"],
        &[
            (SPEC_URL_ENV, &url),
            ("OUTPOST_SECRET_FAKE_API_KEY", &key_value),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "not-for-the-agent"),
            ("aws_session_token", "not-for-the-agent-either"),
            ("HARMLESS_VAR", "visible"),
        ],
    ))
    .await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert!(!ended.stderr.contains(&key_value), "the key is never logged");

    let log = b.output_log(&key).await;
    let env: Vec<&str> = log.lines().take_while(|l| !l.starts_with("key sha256")).collect();
    assert!(env.contains(&"HARMLESS_VAR=visible"), "{env:?}");
    assert!(env.iter().any(|l| l.starts_with("FAKE_API_KEY=")), "{env:?}");
    for line in &env {
        let upper = line.to_ascii_uppercase();
        assert!(!upper.starts_with("AWS_"), "{line}");
        assert!(!upper.starts_with("OUTPOST_SECRET_"), "{line}");
        assert!(!upper.starts_with(SPEC_URL_ENV), "{line}");
        assert!(!line.contains("X-Amz-"), "{line}");
    }
    assert!(
        log.contains(&format!("key sha256 {}", sha256_hex(key_value.as_bytes()))),
        "the tenant's key reached the agent as FAKE_API_KEY: {log}"
    );
    assert!(!log.contains(&key_value), "the key is scrubbed from output.log");
    assert!(log.contains("the key is "), "{log}");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Succeeded);
    assert!(summary.redactions >= 1, "{summary:?}");

    // The run's upload policy: its own prefix only.
    let post = |object: String| {
        let post = spec.artifacts.clone();
        async move {
            let mut form = reqwest::multipart::Form::new();
            for (name, value) in &post.fields {
                form = form.text(name.clone(), value.clone());
            }
            let form = form.text("key", object).text("Content-Type", "text/plain").part(
                "file",
                reqwest::multipart::Part::bytes(b"x".to_vec()).file_name("upload"),
            );
            let res = reqwest::Client::new()
                .post(&post.url)
                .multipart(form)
                .send()
                .await
                .expect("POST");
            (res.status().as_u16(), res.text().await.unwrap_or_default())
        }
    };
    let other_run = RunId::generate();
    for outside in [
        format!("runs/acme/{}/output.log", other_run.as_str()),
        format!("runs/{}x/output.log", spec.run.id.as_str()),
        format!("runs/globex/{}/output.log", spec.run.id.as_str()),
        spec_key(&key),
        format!("live/acme/{}/output.log/0", spec.run.id.as_str()),
    ] {
        let (status, body) = post(outside.clone()).await;
        assert_eq!(status, 403, "{outside}: {body}");
        assert!(body.contains("Invalid according to Policy"), "{outside}: {body}");
    }
    let (status, body) = post(object_key(&key, "extra.txt")).await;
    assert!(
        (200..300).contains(&status),
        "its own prefix is writable: {status} {body}"
    );
    // Reads need a signature the execution does not have.
    for object in [spec_key(&key), object_key(&key, "summary.json")] {
        let res = reqwest::get(format!("{}/{}/{object}", b.layer.endpoint(), b.name()))
            .await
            .expect("GET");
        assert_eq!(res.status().as_u16(), 403, "unsigned GET of {object}");
    }
}

/// Case 4: SIGTERM to the entrypoint while the agent sleeps stops the agent and finalizes the
/// run as cancelled: exit 12, `summary.json` says `cancelled`.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cancels_the_run_and_finalizes_it() {
    let b = Bucket::new().await;
    let spec = b
        .spec(
            "acme",
            fake_agent(),
            "say started; sleep 30; say never",
            SecretsFrom::None,
        )
        .await;
    let key = key_of(&spec.run);
    let url = b.stage_spec(&spec).await;
    let work = tempfile::tempdir().expect("work dir");

    let started = Instant::now();
    let child = entrypoint(work.path(), &["--spec-url", &url], &[])
        .spawn()
        .expect("start the entrypoint");
    let pid = child.id().expect("pid");
    // The agent is running once its first line is in the live log.
    outpost_tests::eventually_async(
        Duration::from_secs(20),
        "the agent's first line in the live log",
        || async {
            b.store
                .read_range(&key, "output.log", 0, 4096)
                .await
                .ok()
                .flatten()
                .is_some_and(|c| String::from_utf8_lossy(&c.data).contains("started"))
        },
    )
    .await
    .expect("the agent started");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let ended = wait(child).await;
    assert_eq!(ended.code, Some(12), "{ended:?}");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "stopped long before the agent's sleep ended"
    );
    assert_eq!(ended.line()["status"], "cancelled");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Cancelled, "{summary:?}");
    let log = b.output_log(&key).await;
    assert!(log.contains("started") && !log.contains("never"), "{log}");
}

/// Case 5: a spec that cannot be read, parsed or trusted ends with exit 20 and one readable line
/// on stderr before anything runs: nothing is written to the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn bad_specs_exit_20_and_write_nothing() {
    let b = Bucket::new().await;
    let work = tempfile::tempdir().expect("work dir");
    let missing = b.presigned_get("specs/acme/nothing/1.json").await;
    let not_json = b
        .stage("specs/acme/bad/1.json", b"{\"version\": 1, oops".to_vec())
        .await;
    let mut v2 = serde_json::to_value(b.spec("acme", fake_agent(), "say hi", SecretsFrom::None).await).expect("json");
    v2["version"] = 2.into();
    let future = b
        .stage("specs/acme/v2/1.json", serde_json::to_vec(&v2).expect("json"))
        .await;
    let env_spec = b.spec("acme", fake_agent(), "say hi", SecretsFrom::Env).await;
    let env_url = b.stage_spec(&env_spec).await;
    let mut mismatched = b.spec("acme", fake_agent(), "say hi", SecretsFrom::None).await;
    mismatched.artifacts = b.presign("runs/acme/someone-else/").await;
    let mismatched_url = b.stage_spec(&mismatched).await;

    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        ("a spec that is not there", vec!["--spec-url", &missing], "HTTP 404"),
        (
            "nothing listening",
            vec!["--spec-url", "http://127.0.0.1:9/spec.json?X-Amz-Signature=s3cr3t"],
            "could not be fetched",
        ),
        ("no URL at all", vec![], "no run spec URL"),
        ("not a URL", vec!["--spec-url", "not a url"], "not an http(s) URL"),
        ("not JSON", vec!["--spec-url", &not_json], "not a valid spec"),
        ("another version", vec!["--spec-url", &future], "version 2"),
        (
            "the flag disagrees",
            vec!["--spec-url", &env_url, "--secrets", "ssm"],
            "--secrets ssm disagrees",
        ),
        (
            "a policy for another prefix",
            vec!["--spec-url", &mismatched_url],
            "upload policy",
        ),
    ];
    let before = b.keys().await;
    for (why, args, says) in cases {
        let ended = run(entrypoint(work.path(), &args, &[])).await;
        assert_eq!(ended.code, Some(20), "{why}: {ended:?}");
        assert_eq!(ended.line()["status"], "bad_spec", "{why}");
        let said: Vec<&str> = ended
            .stderr
            .lines()
            .filter(|l| l.starts_with("outpost-worker agent-run: "))
            .collect();
        assert_eq!(said.len(), 1, "{why}: one readable line: {}", ended.stderr);
        assert!(said[0].contains(says), "{why}: {}", said[0]);
        assert!(!ended.stderr.contains("X-Amz-Signature"), "{why}: {}", ended.stderr);
        assert!(!ended.stderr.contains("s3cr3t"), "{why}: {}", ended.stderr);
    }
    assert_eq!(b.keys().await, before, "nothing was written");
    assert!(before.iter().all(|k| k.starts_with("specs/")), "{before:?}");
    assert_eq!(b.layer.calls("s3:PostObject"), 0);
}

/// `sh -c` of the SSM executor's script for `spec` (staged in `b`), as root as SSM runs it, its
/// entrypoint as `nobody` in a fresh work dir that user owns; `watch` runs while it does.
async fn run_ssm_script<F: std::future::Future<Output = ()>>(
    b: &Bucket,
    spec: &RunSpec,
    watch: impl FnOnce(u32) -> F,
) -> Ended {
    let url = b.stage_spec(spec).await;
    let work = tempfile::tempdir().expect("work dir");
    let nobody = nix_user("nobody");
    std::os::unix::fs::chown(work.path(), Some(nobody), None).expect("chown the work dir");
    let bin = worker_bin().expect("outpost-worker binary");
    let bin = bin.to_string_lossy();
    let work_dir = work.path().to_string_lossy();
    let script = ssm_script(&ScriptSpec {
        entrypoint: &bin,
        run_as: "nobody",
        spec_url: &url,
        work_dir: &work_dir,
    })
    .join("\n");

    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("start the script");
    watch(nobody).await;
    wait(child).await
}

/// Case 6: the SSM executor's script, run by `sh` as root as SSM runs it: `setpriv` starts the
/// entrypoint as an unprivileged user (`nobody`), whose agent then runs as a non-root uid too,
/// and the run's summary is in S3 (`--secrets ssm` agrees with a spec that asks for none).
#[tokio::test(flavor = "multi_thread")]
async fn the_ssm_script_runs_the_entrypoint_as_an_unprivileged_user() {
    if !is_root() {
        eprintln!("skipped: the SSM script's setpriv needs root (CI runs as root)");
        return;
    }
    let b = Bucket::new().await;
    let mut agent = sh_agent();
    agent.network = NetworkPolicy::None;
    let spec = b
        .spec("acme", agent, "echo \"uid $(id -u)\"; sleep 2", SecretsFrom::None)
        .await;
    let key = key_of(&spec.run);
    // While the agent sleeps: the entrypoint runs as `nobody` and is not dumpable, so its
    // `/proc/{pid}/environ` belongs to root and a same-uid agent cannot read it.
    let run_id = spec.run.id.to_string();
    let ended = run_ssm_script(&b, &spec, |nobody| async move {
        let entrypoint_pid = || {
            pids_with_cmdline("agent-run").into_iter().find(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                status
                    .lines()
                    .any(|l| l.starts_with("Uid:") && l.contains(&nobody.to_string()))
                    && String::from_utf8_lossy(&cmdline).contains(&run_id)
            })
        };
        outpost_tests::eventually(Duration::from_secs(20), "the entrypoint as nobody", || {
            entrypoint_pid().is_some()
        })
        .await
        .expect("the entrypoint runs as nobody");
        if let Some(pid) = entrypoint_pid() {
            use std::os::unix::fs::MetadataExt;
            let environ = std::fs::metadata(format!("/proc/{pid}/environ")).expect("environ");
            assert_eq!(environ.uid(), 0, "a non-dumpable process's /proc files are root's");
        }
    })
    .await;
    assert_eq!(ended.code, Some(0), "{ended:?}");
    assert_eq!(ended.line()["status"], "succeeded");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Succeeded, "{summary:?}");
    let log = b.output_log(&key).await;
    let uid: u32 = log
        .lines()
        .find_map(|l| l.strip_prefix("uid "))
        .and_then(|u| u.trim().parse().ok())
        .unwrap_or_else(|| panic!("the agent printed its uid: {log}"));
    assert_ne!(uid, 0, "the agent did not run as root");
}

/// Case 7: on an SSM host the unprivileged entrypoint cannot firewall the metadata endpoint, whose
/// instance credentials read every tenant's keys: a spec whose entry has `network = "open"` (the
/// registry refuses such an SSM entry; this one is crafted) fails `sandbox_unavailable` with the
/// reason in `output.log`, and its agent never starts.
#[tokio::test(flavor = "multi_thread")]
async fn on_an_ssm_host_open_network_is_refused_and_the_agent_never_starts() {
    if !is_root() {
        eprintln!("skipped: the SSM script's setpriv needs root (CI runs as root)");
        return;
    }
    let b = Bucket::new().await;
    let mut agent = sh_agent();
    agent.network = NetworkPolicy::Open;
    agent.executor = ExecutorKind::Ssm;
    let spec = b.spec("acme", agent, "echo agent-started", SecretsFrom::None).await;
    let key = key_of(&spec.run);
    let ended = run_ssm_script(&b, &spec, |_| async {}).await;
    assert_eq!(ended.code, Some(10), "failed: {ended:?}");
    assert_eq!(ended.line()["failure_reason"], "sandbox_unavailable");
    let summary = b.summary(&key).await;
    assert_eq!(summary.status, TerminalStatus::Failed, "{summary:?}");
    assert_eq!(summary.failure_reason, Some(FailureReason::SandboxUnavailable));
    let log = b.output_log(&key).await;
    assert!(
        log.contains("network = \"open\" is refused here: the metadata endpoints cannot be refused"),
        "{log}"
    );
    assert!(!log.contains("agent-started"), "the agent never ran: {log}");
}

/// The uid (= gid here) of `user` from /etc/passwd.
fn nix_user(user: &str) -> u32 {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(user)).then(|| f.nth(1)).flatten()
        })
        .and_then(|uid| uid.parse().ok())
        .unwrap_or_else(|| panic!("no user {user}"))
}
