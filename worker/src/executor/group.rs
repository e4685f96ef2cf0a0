//! Supervising an agent's process group: wait for its exit, or stop it on timeout or request with
//! SIGTERM to the whole group, then SIGKILL after a grace period to whatever remains.

use super::{Ended, Limit, Stop, StopSignal};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgid, getpgrp, Pid};
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

/// How often a stopping group is checked for survivors once its leader is gone.
const SURVIVOR_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the leader's exit status after SIGKILL.
const REAP_AFTER_KILL: Duration = Duration::from_secs(10);

/// The exit code of a status; a death by signal is reported as 128 + the signal, as shells do.
pub fn exit_code(status: ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|s| 128 + s))
}

/// Sends `signal` to process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid = pgid.as_raw(), %signal, error = %e, "signalling process group failed"),
    }
}

/// Kills (SIGKILL) the process groups of every process whose working directory is inside `root`,
/// except this worker's own group: the agents of an earlier attempt of a run whose worker died
/// (SIGKILL, OOM) before it could stop them. Their lease expired, so they can only burn the
/// tenant's key and write into a workspace about to be reused. Returns how many groups it killed.
/// Linux only (`/proc`); elsewhere it finds nothing.
pub fn stop_leftover_agents(root: &Path) -> usize {
    let Ok(root) = std::fs::canonicalize(root) else {
        return 0;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let own = getpgrp();
    let mut groups = BTreeSet::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let inside = std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&root));
        if inside {
            if let Ok(pgid) = getpgid(Some(Pid::from_raw(pid))) {
                if pgid != own {
                    groups.insert(pgid);
                }
            }
        }
    }
    for &pgid in &groups {
        signal_group(pgid, Signal::SIGKILL);
    }
    groups.len()
}

/// Whether any process of group `pgid` is left.
pub fn group_alive(pgid: Pid) -> bool {
    // Signal 0 only checks; EPERM means a member exists that we may not signal.
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Waits for `child` (leader of group `pgid`) to end, stopping the group at `deadline` or when
/// `stop` asks. Whatever way it ends, the whole group is SIGKILLed afterwards so that background
/// grandchildren cannot outlive the run or hold its output pipe open.
///
/// With `idle`, the group is also stopped once the agent has printed nothing for that long
/// ([`Ended::Idle`]); `activity` is touched by the output pump. The idle check costs one timer
/// that re-arms at the last output's time plus the idle span (no polling while output flows).
///
/// `limit` resolves when the run went past one of its caps (disk, output, CPU): the group is
/// stopped and the run ends as [`Ended::Limit`].
pub async fn supervise(
    child: &mut Child,
    pgid: Pid,
    deadline: Instant,
    idle: Option<(Duration, &Activity)>,
    limit: impl std::future::Future<Output = Limit>,
    stop: &mut StopSignal,
    grace: Duration,
) -> Ended {
    enum Why {
        Timeout,
        Idle,
        Limit(Limit),
        Stop(Stop),
    }
    let wait_idle = async {
        let Some((span, activity)) = idle else {
            return std::future::pending::<()>().await;
        };
        loop {
            let due = activity.last() + span;
            if Instant::now() >= due {
                return;
            }
            tokio::time::sleep_until(due).await;
        }
    };
    let why = tokio::select! {
        status = child.wait() => {
            // The leader has exited; kill stragglers at once (the agent's work is over).
            signal_group(pgid, Signal::SIGKILL);
            return Ended::Exited(status.ok().and_then(exit_code));
        }
        () = tokio::time::sleep_until(deadline) => Why::Timeout,
        () = wait_idle => Why::Idle,
        l = limit => Why::Limit(l),
        s = stop.requested() => Why::Stop(s),
    };
    let code = terminate(child, pgid, grace).await;
    match why {
        Why::Timeout => Ended::TimedOut(code),
        Why::Idle => Ended::Idle(code),
        Why::Limit(l) => Ended::Limit(l, code),
        Why::Stop(s) => Ended::Stopped(s, code),
    }
}

/// When the agent last printed something and whether its output went past the run's cap,
/// shared by the output pump and the supervisor.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last output.
    last_ms: std::sync::atomic::AtomicU64,
    /// Bytes of output kept at most.
    output_limit: u64,
    over: std::sync::atomic::AtomicBool,
    over_notify: tokio::sync::Notify,
}

impl Activity {
    /// Activity that counts the agent's start as its last output, with no output cap.
    pub fn new() -> Self {
        Self::with_output_limit(u64::MAX)
    }

    /// Like [`Activity::new`], keeping at most `limit` bytes of output.
    pub fn with_output_limit(limit: u64) -> Self {
        Self {
            start: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
            output_limit: limit,
            over: std::sync::atomic::AtomicBool::new(false),
            over_notify: tokio::sync::Notify::new(),
        }
    }

    /// Output arrived now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// When output last arrived (the start when none has).
    pub fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    pub fn output_limit(&self) -> u64 {
        self.output_limit
    }

    /// The pump reached the cap: the supervisor stops the agent.
    pub fn exceed_output_limit(&self) {
        self.over.store(true, std::sync::atomic::Ordering::Relaxed);
        self.over_notify.notify_one();
    }

    pub fn over_output_limit(&self) -> bool {
        self.over.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Resolves once the output went past the cap.
    pub async fn output_exceeded(&self) {
        while !self.over_output_limit() {
            self.over_notify.notified().await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

/// SIGTERM to the group; SIGKILL to what is left once the leader and the group are gone or
/// `grace` has passed. Returns the leader's exit code if it could be read.
pub async fn terminate(child: &mut Child, pgid: Pid, grace: Duration) -> Option<i32> {
    signal_group(pgid, Signal::SIGTERM);
    let grace_end = Instant::now() + grace;
    let mut status = tokio::time::timeout_at(grace_end, child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    if status.is_some() {
        // The leader is gone; give the rest of the group the rest of the grace period.
        while Instant::now() < grace_end && group_alive(pgid) {
            tokio::time::sleep(SURVIVOR_POLL).await;
        }
    }
    signal_group(pgid, Signal::SIGKILL);
    if status.is_none() {
        status = tokio::time::timeout(REAP_AFTER_KILL, child.wait())
            .await
            .ok()
            .and_then(Result::ok);
    }
    status.and_then(exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    fn sleeper(cwd: &Path) -> std::process::Child {
        Command::new("sh")
            .args(["-c", "sleep 60 & sleep 60"])
            .current_dir(cwd)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    }

    #[test]
    fn leftover_agents_inside_a_run_dir_are_killed_and_others_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run_root = dir.path().join("run_1");
        let other_root = dir.path().join("run_2");
        std::fs::create_dir_all(run_root.join("ws")).expect("mkdir");
        std::fs::create_dir_all(&other_root).expect("mkdir");
        let mut leftover = sleeper(&run_root.join("ws"));
        let mut bystander = sleeper(&other_root);

        assert_eq!(stop_leftover_agents(&run_root), 1);
        let status = leftover.wait().expect("wait");
        assert_eq!(exit_code(status), Some(128 + 9), "killed by SIGKILL");
        assert!(
            bystander.try_wait().expect("try_wait").is_none(),
            "a process elsewhere keeps running"
        );

        let pgid = Pid::from_raw(i32::try_from(bystander.id()).expect("pid"));
        signal_group(pgid, Signal::SIGKILL);
        let _ = bystander.wait();
        assert_eq!(stop_leftover_agents(&dir.path().join("missing")), 0);
    }
}
