//! Test harness for Outpost's end-to-end tests: starts the real `outpost` binary (`outpost dev`
//! or `outpost worker`) on a free loopback port with a temporary data dir, registers the fake
//! agent, and offers a typed client and a way to run the CLI.
//!
//! The binaries are found next to the test executable (`target/debug/`); `scripts/test` builds
//! them first (`cargo build --workspace --bins`). `OUTPOST_BIN` / `FAKE_AGENT_BIN` override.

pub mod aws;
pub mod git_http;
pub mod lambda_gateway;
pub mod real_agents;

use anyhow::{bail, Context};
use outpost_api::client::OutpostClient;
use outpost_api::{DispatchRequest, RunView};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
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
            "{} not found: run `cargo build --workspace --bins` first (scripts/test does)",
            p.display()
        );
    }
    Ok(p)
}

/// Path of the `outpost` binary.
pub fn outpost_bin() -> anyhow::Result<PathBuf> {
    reachable(find_bin("OUTPOST_BIN", "outpost")?)
}

/// Path of the fake agent binary.
pub fn fake_agent_bin() -> anyhow::Result<PathBuf> {
    reachable(find_bin("FAKE_AGENT_BIN", "fake-agent")?)
}

/// `bin` itself when every user may run it; else a copy in a world-readable folder under the
/// system temp dir. Agents run as `nobody` when the tests run as root, and a checkout under a
/// private folder (a home dir) would hide the fake agent from them.
fn reachable(bin: PathBuf) -> anyhow::Result<PathBuf> {
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

/// Options of a test server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Worker slots in the dev process (0: API only).
    pub slots: usize,
    pub lease_secs: u64,
    pub max_attempts: u32,
    /// Extra environment for the server process (reaches agents only if their entry names it).
    pub env: Vec<(String, String)>,
    /// More of `agents.toml` (after the fake agent's entry), e.g. overrides of built-in agents.
    pub agents_toml: String,
    /// Run `outpost dev` as this uid (and gid) instead of the test's own user (root only).
    pub run_as: Option<u32>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            slots: 4,
            lease_secs: 3,
            max_attempts: 3,
            env: Vec::new(),
            agents_toml: String::new(),
            run_as: None,
        }
    }
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

/// A child process killed when dropped.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns whether it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
        false
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running `outpost dev` with its own data dir.
pub struct DevServer {
    pub url: String,
    pub api_key: String,
    pub data: PathBuf,
    /// A folder every user may write to, for files the tests' agents write outside their
    /// workspace (agents run as `nobody` when the tests run as root).
    pub shared: PathBuf,
    pub process: KillOnDrop,
    opts: ServerOptions,
    _dir: tempfile::TempDir,
}

impl DevServer {
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(ServerOptions::default())
    }

    pub fn start_with(opts: ServerOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("data");
        let shared = shared_dir(dir.path())?;
        write_agents_file(&data)?;
        if !opts.agents_toml.is_empty() {
            let path = data.join("agents.toml");
            let text = std::fs::read_to_string(&path)? + "\n" + &opts.agents_toml;
            std::fs::write(&path, text)?;
        }
        let mut cmd = Command::new(outpost_bin()?);
        if let Some(uid) = opts.run_as {
            use std::os::unix::process::CommandExt;
            for p in [&data, &data.join("agents.toml")] {
                std::os::unix::fs::chown(p, Some(uid), Some(uid))?;
            }
            cmd.uid(uid).gid(uid).env("TMPDIR", &data);
        }
        cmd.args(["dev", "--listen", "127.0.0.1:0", "--data"])
            .arg(&data)
            .args(["--slots", &opts.slots.to_string()])
            .args(["--lease-secs", &opts.lease_secs.to_string()])
            .args(["--max-attempts", &opts.max_attempts.to_string()])
            .args(["--kill-grace-secs", "1"])
            .env_remove("OUTPOST_URL")
            .env_remove("OUTPOST_API_KEY")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in &opts.env {
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
        Ok(Self {
            url,
            api_key,
            data,
            shared,
            process,
            opts,
            _dir: dir,
        })
    }

    pub fn client(&self) -> anyhow::Result<OutpostClient> {
        Ok(OutpostClient::new(&self.url, Some(self.api_key.clone()))?)
    }

    /// A client with another key.
    pub fn client_with_key(&self, key: &str) -> anyhow::Result<OutpostClient> {
        Ok(OutpostClient::new(&self.url, Some(key.to_owned()))?)
    }

    /// Runs `outpost ARGS` against this server (URL and key in the environment).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(Command::new(outpost_bin()?)
            .args(args)
            .env("OUTPOST_URL", &self.url)
            .env("OUTPOST_API_KEY", &self.api_key)
            .stdin(Stdio::null())
            .output()?)
    }

    /// `outpost keys create --tenant T --data DIR`; returns the key (last line of stdout).
    pub fn create_key(&self, tenant: &str) -> anyhow::Result<String> {
        let out = Command::new(outpost_bin()?)
            .args(["keys", "create", "--tenant", tenant, "--data"])
            .arg(&self.data)
            .output()?;
        key_from_output(out)
    }

    /// Starts `outpost worker` over this server's data dir (same max attempts as the server).
    pub fn start_worker(&self, slots: usize, lease_secs: u64) -> anyhow::Result<KillOnDrop> {
        let child = Command::new(outpost_bin()?)
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
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        Ok(KillOnDrop(child))
    }

    /// Polls the run until `done` holds (or `timeout` passes).
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

/// Runs git and returns its stdout; panics with git's message on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A repository with `main` (README.md, src/lib.txt) and a branch `dev` one commit ahead.
pub fn make_origin(dir: &Path) -> String {
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    git(dir, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(dir.join("README.md"), "hello\n").expect("write");
    std::fs::write(dir.join("src/lib.txt"), "one\ntwo\nthree\n").expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "first"]);
    git(dir, &["checkout", "--quiet", "-b", "dev"]);
    std::fs::write(dir.join("NOTES.md"), "dev notes\n").expect("write");
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "--quiet", "-m", "dev work"]);
    git(dir, &["checkout", "--quiet", "main"]);
    format!("file://{}", dir.display())
}

/// A dispatch of the fake agent with the script `task` (see `src/bin/fake_agent.rs`).
pub fn fake_task(task: impl Into<String>) -> DispatchRequest {
    DispatchRequest {
        agent: "fake".into(),
        task: task.into(),
        repo: None,
        branch: None,
        timeout_secs: None,
        idle_timeout_secs: None,
    }
}

/// Hex SHA-256, as artifact manifests carry it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
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
