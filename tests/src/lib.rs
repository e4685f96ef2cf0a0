//! Test harness for Outpost's end-to-end tests. [`TestApp::spawn`] is the one way they start a
//! server: a whole deployment of the real binaries on free loopback ports with temporary folders
//! and the fake agent registered, chosen by [`AppOptions`]:
//!
//! - [`AppOptions::dev`]: `outpost dev` (API and worker slots in one process, embedded backend);
//! - [`AppOptions::lambda`]: `ingest-lambda` as a Lambda function behind the API Gateway emulator
//!   ([`outpost_testkit::lambda_gateway`]) over the embedded backend;
//! - [`AppOptions::aws`]: the same front on fresh AWS resources on moto server, with
//!   `outpost-worker --backend aws` workers ([`aws`]);
//! - [`real_agents::options`]: `outpost dev` running the five real agent CLIs.
//!
//! A [`TestApp`] offers typed clients, the CLI, more keys and workers, and run polling. Starting
//! one costs a few processes (and on AWS a set of emulator resources); it stops them when dropped.
//! [`tls::TestCa`] is a throwaway CA for tests that need real TLS (the HTTPS vendor stand-in of
//! [`real_agents::StandIn::start_tls`], trusted by the worker's egress proxy through
//! [`AppOptions::worker_env`] `OUTPOST_EGRESS_CA`).
//!
//! The binaries are found next to the test executable (`target/debug/`); `scripts/test` builds
//! them first (`cargo build --workspace --bins --all-features`: the AWS tests need `outpost`'s
//! `aws` feature). `OUTPOST_BIN`, `OUTPOST_WORKER_BIN`,
//! `INGEST_LAMBDA_BIN` and `FAKE_AGENT_BIN` override.

pub mod aws;
pub mod git_http;
pub mod real_agents;
pub use outpost_testkit::tls;

pub use outpost_testkit::KillOnDrop;

use anyhow::{bail, Context};
use aws::AwsDeployment;
use outpost_api::client::OutpostClient;
use outpost_api::{DispatchRequest, RunView};
use outpost_testkit::lambda_gateway::{LambdaFunction, LambdaGateway};
use outpost_testkit::{git_ok, seed_repo, sha256_hex};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/debug` (or wherever the test binary's profile dir is).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let deps = exe.parent().context("test exe has no parent")?;
    let dir = if deps.ends_with("deps") {
        deps.parent().context("deps has no parent")?
    } else {
        deps
    };
    Ok(dir.to_path_buf())
}

pub(crate) fn find_bin(env: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(env) {
        return Ok(PathBuf::from(p));
    }
    let p = profile_dir()?.join(name);
    if !p.exists() {
        bail!(
            "{} not found: run `cargo build --workspace --bins --all-features` first (scripts/test does)",
            p.display()
        );
    }
    Ok(p)
}

/// Path of the `outpost` binary.
pub fn outpost_bin() -> anyhow::Result<PathBuf> {
    reachable(find_bin("OUTPOST_BIN", "outpost")?)
}

/// Path of the `ingest-lambda` binary, the API as a Lambda function.
pub fn ingest_lambda_bin() -> anyhow::Result<PathBuf> {
    find_bin("INGEST_LAMBDA_BIN", "ingest-lambda")
}

/// Path of the fake agent binary.
pub fn fake_agent_bin() -> anyhow::Result<PathBuf> {
    reachable(find_bin("FAKE_AGENT_BIN", "fake-agent")?)
}

/// `bin` itself when every user may run it; else a copy in a world-readable folder under the
/// system temp dir. Agents run as other users when the tests run as root, and a checkout under a
/// private folder (a home dir) would hide the fake agent from them.
pub(crate) fn reachable(bin: PathBuf) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let others_pass = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if bin
        .ancestors()
        .skip(1)
        .all(|a| a.as_os_str().is_empty() || others_pass(a))
    {
        return Ok(bin);
    }
    let meta = std::fs::metadata(&bin)?;
    let stamp = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let name = bin.file_name().context("binary has no name")?;
    let dir = std::env::temp_dir().join(format!(
        "outpost-test-bin-{}",
        sha256_hex(bin.to_string_lossy().as_bytes()).get(..12).unwrap_or("x")
    ));
    let copy = dir.join(format!("{}-{stamp:x}", name.to_string_lossy()));
    if !copy.exists() {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        let tmp = dir.join(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
        std::fs::copy(&bin, &tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &copy)?;
    }
    Ok(copy)
}

/// An agents-file entry `name` running the fake agent with the prompt as its argument, with the
/// further `key = value` lines `extra` (e.g. `executor = "ecs"`), a 60 s default timeout.
pub fn fake_entry(name: &str, extra: &str) -> anyhow::Result<String> {
    Ok(format!(
        "[agents.{name}]\ncommand = [{:?}, \"--prompt\", \"{{prompt}}\"]\n{extra}default_timeout_secs = 60\n",
        fake_agent_bin()?.display().to_string()
    ))
}

/// Writes `{data}/agents.toml` registering the fake agent as `fake` (key env `FAKE_API_KEY`).
pub fn write_agents_file(data: &Path) -> anyhow::Result<()> {
    let fake = fake_agent_bin()?;
    let text = format!(
        "[agents.fake]\ncommand = [{:?}, \"--prompt\", \"{{prompt}}\"]\nkey_env = \"FAKE_API_KEY\"\npass_env = [\"FAKE_MODE\"]\ndefault_timeout_secs = 60\ndescription = \"test agent\"\n",
        fake.display().to_string()
    );
    std::fs::create_dir_all(data)?;
    std::fs::write(data.join("agents.toml"), text)?;
    Ok(())
}

/// `{parent}/shared`, writable by every user, with `parent` made passable (0711) to reach it.
pub fn shared_dir(parent: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
    let shared = parent.join("shared");
    std::fs::create_dir_all(&shared)?;
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))?;
    Ok(shared)
}

/// The tenant of [`TestApp::api_key`] on a Lambda front (`outpost dev` makes its own, `dev`).
pub const LAMBDA_TENANT: &str = "acme";

/// Where a [`TestApp`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// `outpost dev` over a fresh embedded data dir: the API and the app's worker slots in one
    /// process; more workers are `outpost worker --data` processes.
    Dev,
    /// The real `ingest-lambda` binary as a Lambda function (`instances` sandboxes) behind the
    /// API Gateway emulator ([`outpost_testkit::lambda_gateway`]), over a fresh embedded data dir;
    /// workers are `outpost worker --data` processes.
    Lambda,
    /// The AWS backend on moto server (fresh table, queues, bucket, SSM prefix: [`AwsDeployment`]):
    /// `ingest-lambda` behind the API Gateway emulator, workers `outpost-worker --backend aws`.
    /// `max_receive_count` is the queue's redrive limit (deliveries before the DLQ).
    Aws { max_receive_count: u32 },
}

/// What [`TestApp::spawn`] starts: the deployment and its settings, built from
/// [`AppOptions::dev`], [`AppOptions::lambda`] or [`AppOptions::aws`] (the real-agent variant is
/// [`real_agents::options`]).
#[derive(Debug, Clone)]
pub struct AppOptions {
    deployment: Deployment,
    slots: usize,
    lease_secs: u64,
    max_attempts: u32,
    env: Vec<(String, String)>,
    worker_env: Vec<(String, String)>,
    agents_toml: String,
    instances: usize,
    function_args: Vec<String>,
    run_as: Option<u32>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self::dev()
    }
}

impl AppOptions {
    /// `outpost dev` with 4 worker slots, 3 s leases, 3 attempts.
    pub fn dev() -> Self {
        Self {
            deployment: Deployment::Dev,
            slots: 4,
            lease_secs: 3,
            max_attempts: 3,
            env: Vec::new(),
            worker_env: Vec::new(),
            agents_toml: String::new(),
            instances: 1,
            function_args: Vec::new(),
            run_as: None,
        }
    }

    /// One Lambda instance over the embedded backend, no worker.
    pub fn lambda() -> Self {
        Self {
            deployment: Deployment::Lambda,
            slots: 0,
            ..Self::dev()
        }
    }

    /// One Lambda instance on fresh AWS resources (redrive after `max_receive_count` deliveries),
    /// no worker; workers of this deployment take 10 s leases.
    pub fn aws(max_receive_count: u32) -> Self {
        Self {
            deployment: Deployment::Aws { max_receive_count },
            slots: 0,
            lease_secs: 10,
            ..Self::dev()
        }
    }

    /// Worker slots started with the app (0: API only): `outpost dev`'s own slots, or on a Lambda
    /// front one worker process of that many slots.
    pub fn slots(mut self, slots: usize) -> Self {
        self.slots = slots;
        self
    }

    /// Lease of the app's own worker slots.
    pub fn lease_secs(mut self, secs: u64) -> Self {
        self.lease_secs = secs;
        self
    }

    /// Attempts of a run before it fails (embedded backend: `outpost dev` and its workers).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Extra environment of the API process (`outpost dev`, whose slots start the agents, or the
    /// Lambda function); reaches agents only if their entry names it.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Extra environment of every process that runs agents: `outpost dev` (its slots) and the
    /// worker processes ([`TestApp::start_worker`]), e.g. the worker's `OUTPOST_EGRESS_*`
    /// settings; like [`AppOptions::env`] it reaches agents only if their entry names it.
    pub fn worker_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.worker_env.push((name.into(), value.into()));
        self
    }

    /// More of `agents.toml` (after the fake agent's entry), e.g. overrides of built-in agents.
    pub fn agents_toml(mut self, text: impl Into<String>) -> Self {
        self.agents_toml = text.into();
        self
    }

    /// Lambda sandboxes (processes) of the function (Lambda front only; default 1).
    pub fn instances(mut self, instances: usize) -> Self {
        self.instances = instances;
        self
    }

    /// An argument of `ingest-lambda` after `--agents FILE` (Lambda front only), e.g. `--allow-shell`.
    pub fn function_arg(mut self, arg: impl Into<String>) -> Self {
        self.function_args.push(arg.into());
        self
    }

    /// Run `outpost dev` as this uid (and gid) instead of the test's own user (root and
    /// [`Deployment::Dev`] only).
    pub fn run_as(mut self, uid: u32) -> Self {
        self.run_as = Some(uid);
        self
    }

    fn check(&self) -> anyhow::Result<()> {
        let lambda = self.deployment != Deployment::Dev;
        if !lambda && (self.instances != 1 || !self.function_args.is_empty()) {
            bail!("Lambda instances and function arguments need a Lambda front, not outpost dev");
        }
        if lambda && self.run_as.is_some() {
            bail!("run_as starts outpost dev as another user: Deployment::Dev only");
        }
        Ok(())
    }
}

/// The API front of a [`TestApp`].
enum Front {
    Dev(KillOnDrop),
    Lambda(LambdaGateway),
}

/// A whole deployment of the real binaries on loopback, with the fake agent registered (as
/// `fake`, key variable `FAKE_API_KEY`) and its own temporary folders; everything it started is
/// stopped when it is dropped. The one way the end-to-end tests start a server:
/// [`TestApp::spawn`].
pub struct TestApp {
    /// `http://127.0.0.1:PORT` of the API.
    pub url: String,
    /// A key of [`TestApp::tenant`].
    pub api_key: String,
    /// `dev` (`outpost dev`'s own key) or [`LAMBDA_TENANT`] (a key made at spawn).
    pub tenant: String,
    /// The embedded data dir (holding `agents.toml`); on AWS only the agents file and the
    /// workers' work dirs are in it.
    pub data: PathBuf,
    /// A folder every user may write to, for files the tests' agents write outside their
    /// workspace (agents run as other users when the tests run as root).
    pub shared: PathBuf,
    opts: AppOptions,
    // Dropped in this order: workers, the API, the AWS resources' handles, the folders.
    workers: Vec<KillOnDrop>,
    front: Front,
    aws: Option<AwsDeployment>,
    _dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts the deployment `opts` describes and returns once its API serves: a fresh data dir
    /// with the fake agent's `agents.toml`, the API front (`outpost dev`, or `ingest-lambda`
    /// behind the API Gateway emulator with a key of [`LAMBDA_TENANT`]), then the app's worker
    /// slots. On AWS it first provisions fresh resources on moto (`OUTPOST_TEST_AWS_ENDPOINT`).
    pub async fn spawn(opts: AppOptions) -> anyhow::Result<Self> {
        opts.check()?;
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let shared = shared_dir(dir.path())?;
        write_agents_file(&data)?;
        if !opts.agents_toml.is_empty() {
            let path = data.join("agents.toml");
            let text = std::fs::read_to_string(&path)? + "\n" + &opts.agents_toml;
            std::fs::write(&path, text)?;
        }
        let aws = match opts.deployment {
            Deployment::Aws { max_receive_count } => Some(AwsDeployment::provision(max_receive_count).await?),
            Deployment::Dev | Deployment::Lambda => None,
        };
        let mut app = match opts.deployment {
            Deployment::Dev => {
                let (process, url, api_key) = tokio::task::spawn_blocking({
                    let (data, opts) = (data.clone(), opts.clone());
                    move || start_dev(&data, &opts)
                })
                .await
                .context("outpost dev start")??;
                Self {
                    url,
                    api_key,
                    tenant: "dev".to_owned(),
                    data,
                    shared,
                    opts,
                    workers: Vec::new(),
                    front: Front::Dev(process),
                    aws,
                    _dir: dir,
                }
            }
            Deployment::Lambda | Deployment::Aws { .. } => {
                let api_key = create_key(&data, aws.as_ref(), LAMBDA_TENANT)?;
                let env = match &aws {
                    Some(aws) => aws.env(),
                    None => vec![
                        ("OUTPOST_BACKEND".to_owned(), "embedded".to_owned()),
                        ("OUTPOST_DATA".to_owned(), data.display().to_string()),
                    ],
                };
                let mut args = vec!["--agents".to_owned(), data.join("agents.toml").display().to_string()];
                args.extend(opts.function_args.iter().cloned());
                let gateway = LambdaGateway::start(LambdaFunction {
                    program: ingest_lambda_bin()?,
                    args,
                    env: env.into_iter().chain(opts.env.iter().cloned()).collect(),
                    instances: opts.instances,
                })
                .await?;
                Self {
                    url: gateway.url().to_owned(),
                    api_key,
                    tenant: LAMBDA_TENANT.to_owned(),
                    data,
                    shared,
                    opts,
                    workers: Vec::new(),
                    front: Front::Lambda(gateway),
                    aws,
                    _dir: dir,
                }
            }
        };
        if app.opts.deployment != Deployment::Dev && app.opts.slots > 0 {
            let worker = app.start_worker(app.opts.slots, app.opts.lease_secs)?;
            app.workers.push(worker);
        }
        Ok(app)
    }

    /// The `outpost dev` process (`None` on a Lambda front).
    pub fn process(&mut self) -> Option<&mut KillOnDrop> {
        match &mut self.front {
            Front::Dev(process) => Some(process),
            Front::Lambda(_) => None,
        }
    }

    /// The API Gateway emulator in front of the Lambda function (`None` for `outpost dev`).
    pub fn gateway(&self) -> Option<&LambdaGateway> {
        match &self.front {
            Front::Dev(_) => None,
            Front::Lambda(gateway) => Some(gateway),
        }
    }

    /// The AWS resources ([`Deployment::Aws`] only).
    pub fn aws(&self) -> Option<&AwsDeployment> {
        self.aws.as_ref()
    }

    pub fn client(&self) -> anyhow::Result<OutpostClient> {
        self.client_with_key(&self.api_key)
    }

    /// A client with another key.
    pub fn client_with_key(&self, key: &str) -> anyhow::Result<OutpostClient> {
        Ok(OutpostClient::new(&self.url, Some(key.to_owned()))?)
    }

    /// Runs `outpost ARGS` against this app (URL and key in the environment).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(outpost_bin()?)
            .args(args)
            .env("OUTPOST_URL", &self.url)
            .env("OUTPOST_API_KEY", &self.api_key)
            .stdin(Stdio::null())
            .output()?)
    }

    /// A new key of `tenant` (`outpost keys create`, on this app's backend).
    pub fn create_key(&self, tenant: &str) -> anyhow::Result<String> {
        create_key(&self.data, self.aws.as_ref(), tenant)
    }

    /// Starts one more worker process: `outpost worker --data` on the embedded backend (same max
    /// attempts as the app), `outpost-worker --backend aws` on AWS.
    pub fn start_worker(&self, slots: usize, lease_secs: u64) -> anyhow::Result<KillOnDrop> {
        let child = match &self.aws {
            Some(aws) => aws
                .command(aws::worker_bin()?)
                .arg("--agents")
                .arg(self.data.join("agents.toml"))
                .arg("--work-dir")
                .arg(self.data.join(format!("work-{}", ulid::Ulid::new())))
                .args(["--slots", &slots.to_string(), "--lease-secs", &lease_secs.to_string()])
                .args(["--drain-secs", "20", "--log-format", "text"])
                .env("OUTPOST_SANDBOX_RW", &self.shared)
                .envs(self.opts.worker_env.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start outpost-worker")?,
            None => Command::new(outpost_bin()?)
                .args(["worker", "--data"])
                .arg(&self.data)
                .args([
                    "--slots",
                    &slots.to_string(),
                    "--lease-secs",
                    &lease_secs.to_string(),
                    "--kill-grace-secs",
                    "1",
                ])
                .args(["--max-attempts", &self.opts.max_attempts.to_string()])
                .env("OUTPOST_SANDBOX_RW", &self.shared)
                .envs(self.opts.worker_env.iter().cloned())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start outpost worker")?,
        };
        Ok(KillOnDrop(child))
    }

    /// Polls the run (as [`TestApp::tenant`]) until `done` holds (or `timeout` passes).
    pub async fn wait_run(
        &self,
        id: &str,
        timeout: Duration,
        done: impl Fn(&RunView) -> bool,
    ) -> anyhow::Result<RunView> {
        wait_run_with(&self.client()?, id, timeout, done).await
    }

    /// Waits until the run is terminal.
    pub async fn wait_terminal(&self, id: &str, timeout: Duration) -> anyhow::Result<RunView> {
        self.wait_run(id, timeout, |r| r.status.is_terminal()).await
    }
}

/// Starts `outpost dev` over `data` and reads the URL and key it prints (blocking).
fn start_dev(data: &Path, opts: &AppOptions) -> anyhow::Result<(KillOnDrop, String, String)> {
    let mut cmd = Command::new(outpost_bin()?);
    if let Some(uid) = opts.run_as {
        use std::os::unix::process::CommandExt;
        for p in [data, &data.join("agents.toml")] {
            std::os::unix::fs::chown(p, Some(uid), Some(uid))?;
        }
        cmd.uid(uid).gid(uid).env("TMPDIR", data);
    }
    cmd.args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(["--slots", &opts.slots.to_string()])
        .args(["--lease-secs", &opts.lease_secs.to_string()])
        .args(["--max-attempts", &opts.max_attempts.to_string()])
        .args(["--kill-grace-secs", "1"])
        .env_remove("OUTPOST_URL")
        .env_remove("OUTPOST_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The tests' agents write their markers into the shared folder: the sandbox lets them.
    if let Some(parent) = data.parent() {
        cmd.env("OUTPOST_SANDBOX_RW", parent.join("shared"));
    }
    for (k, v) in opts.env.iter().chain(&opts.worker_env) {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().context("cannot start outpost dev")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let process = KillOnDrop(child);
    let mut lines = BufReader::new(stdout).lines();
    let (mut url, mut key) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.trim().strip_prefix("export ") {
            for part in rest.split_whitespace() {
                if let Some(u) = part.strip_prefix("OUTPOST_URL=") {
                    url = Some(u.to_owned());
                }
                if let Some(k) = part.strip_prefix("OUTPOST_API_KEY=") {
                    key = Some(k.to_owned());
                }
            }
            break;
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let (Some(url), Some(api_key)) = (url, key) else {
        bail!("outpost dev did not print its URL and key");
    };
    Ok((process, url, api_key))
}

/// `outpost keys create --tenant T`: over the data dir `data`, or on the AWS deployment; returns
/// the key (last line of stdout).
fn create_key(data: &Path, aws: Option<&AwsDeployment>, tenant: &str) -> anyhow::Result<String> {
    let mut cmd = match aws {
        Some(aws) => aws.command(outpost_bin()?),
        None => Command::new(outpost_bin()?),
    };
    cmd.args(["keys", "create", "--tenant", tenant]);
    if aws.is_none() {
        cmd.arg("--data").arg(data);
    }
    key_from_output(cmd.stdin(Stdio::null()).output()?)
}

/// Polls the run through `client` (its tenant's) until `done` holds (or `timeout` passes).
pub async fn wait_run_with(
    client: &OutpostClient,
    id: &str,
    timeout: Duration,
    done: impl Fn(&RunView) -> bool,
) -> anyhow::Result<RunView> {
    let deadline = Instant::now() + timeout;
    loop {
        let run = client.get_run(id).await?;
        if done(&run) {
            return Ok(run);
        }
        if Instant::now() > deadline {
            bail!("run {id} did not reach the expected state in {timeout:?}; last: {run:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A repository with `main` (the testkit's seed: README.md, src/lib.txt) and a branch `dev` one
/// commit ahead.
pub fn make_origin(dir: &Path) -> String {
    let url = seed_repo(dir);
    git_ok(dir, &["checkout", "--quiet", "-b", "dev"]);
    std::fs::write(dir.join("NOTES.md"), "dev notes\n").expect("write");
    git_ok(dir, &["add", "-A"]);
    git_ok(dir, &["commit", "--quiet", "-m", "dev work"]);
    git_ok(dir, &["checkout", "--quiet", "main"]);
    url
}

/// A dispatch of the fake agent with the script `task` (see `src/bin/fake_agent.rs`).
pub fn fake_task(task: impl Into<String>) -> DispatchRequest {
    task_for("fake", task)
}

/// A dispatch of the agent entry `agent` (one running the fake agent, e.g. [`fake_entry`]).
pub fn task_for(agent: &str, task: impl Into<String>) -> DispatchRequest {
    DispatchRequest {
        agent: agent.into(),
        task: task.into(),
        repo: None,
        branch: None,
        timeout_secs: None,
        idle_timeout_secs: None,
    }
}

/// The key printed by `outpost keys create` (the last line of its stdout).
pub fn key_from_output(out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!("keys create failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8(out.stdout)?;
    stdout.lines().last().map(str::to_owned).context("no key printed")
}

/// Polls a condition with a deadline (no fixed sleeps in tests).
pub async fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    eventually_async(timeout, what, || std::future::ready(cond())).await
}

/// Writes the fake agent's `print n` output: `n` bytes of numbered lines, so content is checkable.
pub fn write_fake_output(out: &mut impl std::io::Write, n: usize) -> std::io::Result<()> {
    let mut written = 0usize;
    let mut i = 0u64;
    let mut buf = Vec::with_capacity(64 * 1024);
    while written < n {
        i += 1;
        let line = format!("line {i:09} the quick brown fox jumps over the lazy dog\n");
        let take = line.len().min(n - written);
        buf.extend_from_slice(&line.as_bytes()[..take]);
        written += take;
        if buf.len() >= 60 * 1024 {
            out.write_all(&buf)?;
            buf.clear();
        }
    }
    out.write_all(&buf)
}

/// The fake agent's `binary PATH n` content: `n` bytes cycling through every byte value.
pub fn binary_bytes(n: usize) -> Vec<u8> {
    (0..=255u8).cycle().take(n).collect()
}

/// The fake agent's `print n` output, in memory.
pub fn fake_output(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    // Writing to a Vec cannot fail.
    let _ = write_fake_output(&mut v, n);
    v
}

/// Polls run `id`'s live log (from offset 0) until it holds `needle`.
pub async fn wait_log_contains(
    client: &OutpostClient,
    id: &str,
    needle: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !String::from_utf8_lossy(&client.logs(id, 0).await?.data).contains(needle) {
        if Instant::now() > deadline {
            bail!("run {id}'s log never showed {needle:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Polls an async condition with a deadline.
pub async fn eventually_async<F, Fut>(timeout: Duration, what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
