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
