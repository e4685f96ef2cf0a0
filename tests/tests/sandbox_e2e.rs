//! The sandbox against a hostile agent (docs/SECURITY.md), end to end: while tenant A's run is
//! live, tenant B's agent tries every reach of the threat model — A's workspace, A's secret on
//! disk, the database, other processes' environ and cmdline, writes outside its tree, a SIGKILL
//! to A's agent, a fork bomb, a daemon left behind, TCP to the worker's API and to a stand-in of
//! the credentials endpoint — and then a memory hog, a disk filler and an output flood. Every
//! reach must fail, every run must still record its outcome, and A's run must be unharmed. The
//! same executor runs on the embedded backend (`outpost dev`) and on the AWS backend (moto).

use outpost_api::DispatchRequest;
use outpost_core::RunStatus;
use outpost_testkit::process::{is_root, pids_with_cmdline};
use outpost_tests::{fake_agent_bin, wait_run_with, AppOptions, TestApp};
use std::path::{Path, PathBuf};
use std::time::Duration;

const A_MARKER: &str = "PROMPT-OF-TENANT-A-7f3c";
const A_SECRET: &str = "sk-tenant-a-VERY-SECRET-91b2";
const WAIT: Duration = Duration::from_secs(90);

fn hostile_agents() -> anyhow::Result<String> {
    let fake = fake_agent_bin()?;
    Ok(format!(
        r#"
[agents.hostile]
command = [{fake:?}, "--prompt", "{{prompt}}"]
key_env = "FAKE_API_KEY"
network = "none"
max_processes = 64
memory_mb = 128
disk_mb = 16
output_mb = 1

[agents.hostile-std]
command = [{fake:?}, "--prompt", "{{prompt}}"]
key_env = "FAKE_API_KEY"
sandbox = "standard"
network = "none"
max_processes = 64
memory_mb = 128
disk_mb = 16
output_mb = 1
"#,
        fake = fake.display().to_string()
    ))
}

fn task(agent: &str, script: String) -> DispatchRequest {
    DispatchRequest {
        agent: agent.into(),
        task: script,
        repo: None,
        branch: None,
        timeout_secs: Some(120),
        idle_timeout_secs: None,
    }
}

/// The folder named `name` somewhere under `roots` (a run's tree in the worker's work dir).
fn find_dir(roots: &[PathBuf], name: &str) -> Option<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
        let rd = std::fs::read_dir(dir).ok()?;
        for e in rd.flatten() {
            let p = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == name {
                return Some(p);
            }
            if depth > 0 {
                if let Some(found) = walk(&p, name, depth - 1) {
                    return Some(found);
                }
            }
        }
        None
    }
    roots.iter().find_map(|r| walk(r, name, 2))
}

/// The suite with tenant B's agent `hostile` (the default, strict here) or `hostile-std`
/// (`sandbox = "standard"`: no namespaces, as on Fargate).
async fn hostile_suite(opts: AppOptions, agent: &str) -> anyhow::Result<()> {
    let server = TestApp::spawn(opts.agents_toml(hostile_agents()?)).await?;
    let a = server.client()?;
    let b = server.client_with_key(&server.create_key("tenant-b")?)?;
    a.put_secret("FAKE_API_KEY", A_SECRET).await?;
    // A stand-in of the credentials endpoint, on loopback.
    let standin = std::net::TcpListener::bind("127.0.0.1:0")?;
    let standin_addr = standin.local_addr()?;
    let api_port = server.url.rsplit(':').next().unwrap_or("0").to_owned();

    // Tenant A's run: live while B attacks.
    let a_run = a
        .dispatch(&task(
            "fake",
            format!("say {A_MARKER}; write mine.txt A-data; sleep 12; say done-A"),
        ))
        .await?
        .id;
    let roots = [server.data.clone(), std::env::temp_dir().join("outpost-work")];
    let deadline = tokio::time::Instant::now() + WAIT;
    let a_ws = loop {
        if let Some(ws) = find_dir(&roots, &a_run)
            .map(|d| d.join("ws"))
            .filter(|w| w.join("mine.txt").exists())
        {
            break ws;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "tenant A's run never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let a_pid = pids_with_cmdline(A_MARKER)
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no process of A's agent"))?;
    let secret_file = server.data.join("secrets").join(&server.tenant).join("FAKE_API_KEY");
    let work_root = a_ws.parent().and_then(Path::parent).unwrap_or(&a_ws).to_path_buf();

    let reaches = [
        format!("try-read {}", a_ws.join("mine.txt").display()),
        format!("try-list {}", a_ws.display()),
        format!("try-find {} {a_run}", work_root.display()),
        format!("try-read {}", secret_file.display()),
        format!("try-read {}", server.data.join("outpost.db").display()),
        format!("try-find {} agents.toml", server.data.display()),
        "try-environ".to_owned(),
        format!("try-cmdline {}", A_MARKER.replace('-', " ")),
        format!("try-write {}", a_ws.join("pwned").display()),
        format!("try-write {}", server.data.join("pwned").display()),
        "try-write /etc/outpost-pwned".to_owned(),
        format!("try-signal {a_pid}"),
        "fork-bomb 1000".to_owned(),
        format!("try-connect 127.0.0.1:{api_port}"),
        format!("try-connect {standin_addr}"),
    ];
    let script = reaches.join("; ") + "; daemon 1037; say hostile-done";
    let b_run = b.dispatch(&task(agent, script)).await?.id;
    let b_view = wait_run_with(&b, &b_run, WAIT, |r| r.status.is_terminal()).await?;
    let log = String::from_utf8_lossy(&b.artifact(&b_run, "output.log").await?).into_owned();
    assert_eq!(b_view.status, RunStatus::Succeeded, "{log}");
    assert!(
        log.contains("hostile-done") && log.contains("daemon sleep 1037: started"),
        "{log}"
    );
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("REACH ")).collect();
    assert_eq!(lines.len(), reaches.len(), "one report per reach: {log}");
    for l in &lines {
        // A write may land in the sandbox's own private tmpfs (the folders bubblewrap made to
        // mount the run's tree): what counts is the host, checked below.
        if l.starts_with("REACH write ") {
            continue;
        }
        assert!(l.contains(": blocked ("), "a reach succeeded: {l}\n{log}");
    }
    for host in [
        a_ws.join("pwned"),
        server.data.join("pwned"),
        PathBuf::from("/etc/outpost-pwned"),
    ] {
        assert!(!host.exists(), "the hostile agent wrote {}: {log}", host.display());
    }
    assert!(!log.contains(A_SECRET));
    let summary: serde_json::Value = serde_json::from_slice(&b.artifact(&b_run, "summary.json").await?)?;
    let layers = summary["sandbox"]["layers"].to_string();
    let strict = agent == "hostile";
    assert_eq!(
        summary["sandbox"]["mode"],
        if strict { "strict" } else { "standard" },
        "{summary}"
    );
    assert!(layers.contains("landlock"), "{summary}");
    assert_eq!(layers.contains("namespaces:"), strict, "{summary}");
    // The daemon died with the run.
    outpost_tests::eventually(Duration::from_secs(10), "the daemon to be gone", || {
        pids_with_cmdline("1037").is_empty()
    })
    .await?;

    // The limits, each its own run: the run fails with the limit's reason, its log kept.
    for (script, reason) in [
        ("say hog; mem-hog 512", "memory_limit"),
        ("say filler; disk-fill 64", "disk_limit"),
        ("say flood; print 3000000", "output_limit"),
    ] {
        let id = b.dispatch(&task(agent, script.to_owned())).await?.id;
        let view = wait_run_with(&b, &id, WAIT, |r| r.status.is_terminal()).await?;
        let summary: serde_json::Value = serde_json::from_slice(&b.artifact(&id, "summary.json").await?)?;
        let log = String::from_utf8_lossy(&b.artifact(&id, "output.log").await?).into_owned();
        let cgroup = summary["sandbox"]["layers"].to_string().contains("cgroup");
        if reason == "memory_limit" && !cgroup {
            // Without a cgroup (a worker that is not root) no memory cap holds: the record says so.
            assert!(
                summary["sandbox"]["not_enforced"].to_string().contains("memory"),
                "{summary}"
            );
            continue;
        }
        assert_eq!(view.status, RunStatus::Failed, "{script}: {log}");
        assert_eq!(summary["failure_reason"], reason, "{script}: {summary}\n{log}");
        assert!(!log.contains("REACHED"), "{log}");
    }

    // Tenant A's run is unharmed.
    let a_view = wait_run_with(&a, &a_run, WAIT, |r| r.status.is_terminal()).await?;
    let a_log = String::from_utf8_lossy(&a.artifact(&a_run, "output.log").await?).into_owned();
    assert_eq!(a_view.status, RunStatus::Succeeded, "{a_log}");
    assert!(a_log.contains("done-A"), "{a_log}");
    let a_summary: serde_json::Value = serde_json::from_slice(&a.artifact(&a_run, "summary.json").await?)?;
    assert_eq!(
        a_summary["changed_files"],
        serde_json::json!(["mine.txt"]),
        "{a_summary}"
    );
    drop(standin);
    Ok(())
}

#[tokio::test]
async fn a_hostile_agent_reaches_nothing_on_the_embedded_backend() -> anyhow::Result<()> {
    hostile_suite(AppOptions::dev(), "hostile").await
}

#[tokio::test]
async fn a_hostile_agent_reaches_nothing_on_the_aws_backend() -> anyhow::Result<()> {
    hostile_suite(AppOptions::aws(5).slots(4), "hostile").await
}

#[tokio::test]
async fn a_hostile_agent_reaches_nothing_under_a_worker_that_is_not_root() -> anyhow::Result<()> {
    if !is_root() {
        // The test already runs as a user: the embedded suite above is the non-root one.
        return hostile_suite(AppOptions::dev(), "hostile").await;
    }
    // `outpost dev` as nobody: the user-namespace identity, no cgroup, rlimits.
    hostile_suite(AppOptions::dev().run_as(65534), "hostile").await
}

/// `network = "open"`: the run reaches the network, but not the credentials endpoint (a stand-in
/// on 169.254.170.2, given to loopback) nor the worker's own API port. A root worker refuses
/// both with its firewall; a worker that is not root records that it cannot.
#[tokio::test]
async fn network_open_refuses_the_credentials_endpoint_and_the_workers_api() -> anyhow::Result<()> {
    let fake = fake_agent_bin()?;
    let entry = format!(
        "[agents.open]\ncommand = [{:?}, \"--prompt\", \"{{prompt}}\"]\nnetwork = \"open\"\n",
        fake.display().to_string()
    );
    let server = TestApp::spawn(AppOptions::dev().agents_toml(entry)).await?;
    let client = server.client()?;
    let api_port = server.url.rsplit(':').next().unwrap_or("0").to_owned();
    let control = std::net::TcpListener::bind("127.0.0.1:0")?;
    let root = is_root();
    let metadata = if root {
        // The stand-in: the ECS credentials address on loopback (only root may add it).
        let added = std::process::Command::new("ip")
            .args(["addr", "add", "169.254.170.2/32", "dev", "lo"])
            .output()?;
        // A second run of the test finds it there already.
        let shown = std::process::Command::new("ip")
            .args(["-4", "addr", "show", "dev", "lo"])
            .output()?;
        let present = String::from_utf8_lossy(&shown.stdout).contains("169.254.170.2/32");
        anyhow::ensure!(added.status.success() || present, "ip addr add: {added:?}");
        Some(std::net::TcpListener::bind("169.254.170.2:0")?)
    } else {
        None
    };
    let mut script = format!(
        "try-connect {}; try-connect 127.0.0.1:{api_port}",
        control.local_addr()?
    );
    if let Some(m) = &metadata {
        script += &format!("; try-connect {}", m.local_addr()?);
    }
    let id = client.dispatch(&task("open", script)).await?.id;
    let view = wait_run_with(&client, &id, WAIT, |r| r.status.is_terminal()).await?;
    let log = String::from_utf8_lossy(&client.artifact(&id, "output.log").await?).into_owned();
    assert_eq!(view.status, RunStatus::Succeeded, "{log}");
    let control_line = format!("REACH connect {}: REACHED (connected)", control.local_addr()?);
    assert!(log.contains(&control_line), "the open network is open: {log}");
    assert!(
        log.contains(&format!("REACH connect 127.0.0.1:{api_port}: blocked")),
        "{log}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&client.artifact(&id, "summary.json").await?)?;
    match &metadata {
        Some(m) => {
            assert!(
                log.contains(&format!("REACH connect {}: blocked", m.local_addr()?)),
                "{log}"
            );
            assert!(
                summary["sandbox"]["layers"].to_string().contains("iptables"),
                "{summary}"
            );
        }
        None => assert!(
            summary["sandbox"]["not_enforced"]
                .to_string()
                .contains("metadata endpoints not refused"),
            "{summary}"
        ),
    }
    // The fleet tells clients how each agent is confined.
    let fleet = client.fleet().await?;
    let of = |name: &str| {
        fleet
            .agents
            .iter()
            .find(|a| a.name == name)
            .map(|a| (a.sandbox, a.network))
    };
    assert_eq!(of("open"), Some((None, outpost_core::domain::NetworkPolicy::Open)));
    assert_eq!(of("shell"), Some((None, outpost_core::domain::NetworkPolicy::None)));
    Ok(())
}

/// `sandbox = "standard"` (no namespaces: what a Fargate container allows). Under a root worker
/// the run's own uid, Landlock and the cgroup hold the same line as strict; under a worker that
/// is not root, standard cannot end a process that left the session (docs/SECURITY.md), and the
/// run's record must say so.
async fn standard_suite(opts: AppOptions) -> anyhow::Result<()> {
    if is_root() {
        return hostile_suite(opts, "hostile-std").await;
    }
    let server = TestApp::spawn(opts.agents_toml(hostile_agents()?)).await?;
    let client = server.client()?;
    let id = client.dispatch(&task("hostile-std", "say hi".to_owned())).await?.id;
    wait_run_with(&client, &id, WAIT, |r| r.status.is_terminal()).await?;
    let summary: serde_json::Value = serde_json::from_slice(&client.artifact(&id, "summary.json").await?)?;
    assert_eq!(summary["sandbox"]["mode"], "standard", "{summary}");
    assert!(
        summary["sandbox"]["not_enforced"]
            .to_string()
            .contains("outlive the run"),
        "{summary}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hostile_agent_in_standard_mode_reaches_nothing() -> anyhow::Result<()> {
    standard_suite(AppOptions::dev()).await
}

#[tokio::test]
async fn a_hostile_agent_in_standard_mode_reaches_nothing_on_the_aws_backend() -> anyhow::Result<()> {
    standard_suite(AppOptions::aws(5).slots(4)).await
}
