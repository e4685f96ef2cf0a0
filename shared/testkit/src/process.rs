//! Child processes of tests: [`KillOnDrop`] owns a started program and kills it when dropped, so
//! a failing test (an early `?`, a panic) never leaves a server, worker or agent behind.
//!
//! Costs: [`KillOnDrop::terminate`] polls the child every 50 ms for up to its grace period; the
//! other calls return at once (kill and reap).

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::process::Child;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// SIGKILL now and reap.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then wait up to `grace` before SIGKILL. Returns whether it exited by itself.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // An already reaped child has no pid to signal: the wait below then sees it gone.
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
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

/// Whether process `pid` exists and is not a zombie (Linux `/proc`).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
    })
}

/// Host pids of live processes whose command line (the NUL-separated bytes of
/// `/proc/PID/cmdline`) satisfies `matches`. The tests find sandboxed agents this way: the pids
/// those print are their PID namespace's, not the host's.
pub fn pids_where(matches: impl Fn(&[u8]) -> bool) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| matches(&c)))
        .filter(|pid| alive(*pid))
        .collect()
}

/// [`pids_where`] one argument is `arg`.
pub fn pids_with_arg(arg: &str) -> Vec<i32> {
    pids_where(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
}

/// [`pids_where`] the command line contains `needle` anywhere.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    pids_where(|c| c.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Whether the tests run as root (then agents run as other users).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
