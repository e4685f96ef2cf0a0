//! Supervising an agent's process group: wait for its exit, or stop it on timeout or request with
//! SIGTERM to the whole group, then SIGKILL after a grace period to whatever remains.

use super::{Stop, StopSignal};
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

/// How often a stopping group is checked for survivors once its leader is gone.
const SURVIVOR_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the leader's exit status after SIGKILL.
const REAP_AFTER_KILL: Duration = Duration::from_secs(10);

/// Why the agent's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself.
    Exited(Option<i32>),
    /// It ran past its deadline and was stopped.
    TimedOut(Option<i32>),
    /// It was stopped on request (`Cancel` or `Abandon`).
    Stopped(Stop, Option<i32>),
}

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

/// Whether any process of group `pgid` is left.
pub fn group_alive(pgid: Pid) -> bool {
    // Signal 0 only checks; EPERM means a member exists that we may not signal.
    !matches!(killpg(pgid, None), Err(Errno::ESRCH))
}

/// Waits for `child` (leader of group `pgid`) to end, stopping the group at `deadline` or when
/// `stop` asks. Whatever way it ends, the whole group is SIGKILLed afterwards so that background
/// grandchildren cannot outlive the run or hold its output pipe open.
pub async fn supervise(
    child: &mut Child,
    pgid: Pid,
    deadline: Instant,
    stop: &mut StopSignal,
    grace: Duration,
) -> Ended {
    enum Why {
        Timeout,
        Stop(Stop),
    }
    let why = tokio::select! {
        status = child.wait() => {
            // The leader has exited; kill stragglers at once (the agent's work is over).
            signal_group(pgid, Signal::SIGKILL);
            return Ended::Exited(status.ok().and_then(exit_code));
        }
        () = tokio::time::sleep_until(deadline) => Why::Timeout,
        s = stop.requested() => Why::Stop(s),
    };
    let code = terminate(child, pgid, grace).await;
    match why {
        Why::Timeout => Ended::TimedOut(code),
        Why::Stop(s) => Ended::Stopped(s, code),
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
