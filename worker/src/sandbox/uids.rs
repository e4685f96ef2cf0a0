//! Per-run identities of a root worker: each run's agent gets a uid/gid of its own from a
//! configured range (no passwd entry needed), held for the run and given back only once no
//! process of that uid is left, so two runs never share a uid and a uid never carries a process
//! from one run into the next. Several workers on one host share the range safely: a uid is
//! held through an exclusive `flock` on `/run/outpost-uids/{uid}` (released by the kernel if the
//! worker dies), so no two processes hand out the same uid — whatever their `TMPDIR` (a lock dir
//! under `$TMPDIR` let two workers with different ones share a uid, and one's sweep killed the
//! other's agent). Where `/run` cannot be written, `$TMPDIR/outpost-uids/` is used.

use crate::identity::AgentUser;
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// uids `first..=last` for agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    pub first: u32,
    pub last: u32,
}

impl UidRange {
    /// 256 uids from 200000 (see [`outpost_config::settings::DEFAULT_AGENT_UIDS`]).
    pub const DEFAULT: UidRange = UidRange {
        first: outpost_config::settings::DEFAULT_AGENT_UIDS.0,
        last: outpost_config::settings::DEFAULT_AGENT_UIDS.1,
    };

    /// Reads `FIRST-LAST`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (first, last) = outpost_config::settings::parse_uid_range(s)?;
        Ok(Self { first, last })
    }
}

/// The free uids of one worker.
#[derive(Debug, Clone)]
pub struct UidPool {
    free: Arc<Mutex<BTreeSet<u32>>>,
}

/// One run's hold on a uid; gives it back when dropped.
#[derive(Debug)]
pub struct UidLease {
    user: AgentUser,
    pool: Arc<Mutex<BTreeSet<u32>>>,
    lock: Option<Flock<std::fs::File>>,
}

impl UidLease {
    pub fn user(&self) -> AgentUser {
        self.user
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        // What a run left behind under its uid must not meet the next run.
        kill_uid(self.user.uid);
        drop(self.lock.take());
        if let Ok(mut free) = self.pool.lock() {
            free.insert(self.user.uid);
        }
    }
}

impl UidPool {
    pub fn new(range: UidRange) -> Self {
        Self {
            free: Arc::new(Mutex::new((range.first..=range.last).collect())),
        }
    }

    /// The lowest uid (gid = uid) free in this worker and not held by another process, or
    /// `None` when every one is held.
    pub fn acquire(&self) -> Option<UidLease> {
        let dir = lock_dir();
        let mut free = self.free.lock().ok()?;
        let candidates: Vec<u32> = free.iter().copied().collect();
        for uid in candidates {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(uid.to_string()));
            let lock = match file {
                Ok(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                    Ok(l) => Some(l),
                    // Another worker on this host has it.
                    Err(_) => continue,
                },
                // No lock folder (read-only /tmp): this worker alone then.
                Err(_) => None,
            };
            free.remove(&uid);
            return Some(UidLease {
                user: AgentUser { uid, gid: uid },
                pool: Arc::clone(&self.free),
                lock,
            });
        }
        None
    }
}

/// SIGKILLs every live process whose uid is `uid` (Linux `/proc`). Returns how many; zombies
/// (already dead, waiting for their parent) are neither signalled nor counted.
pub fn kill_uid(uid: u32) -> usize {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // The folder of a process belongs to its effective uid: a cheap first filter.
        if entry.metadata().map(|m| m.uid()).ok() != Some(uid) {
            continue;
        }
        // `pid (comm) S ...`: the state follows the last ')' (comm may hold one).
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            continue;
        }
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        killed += 1;
    }
    killed
}

/// Where uid locks live: `/run/outpost-uids` (one per host, whatever a worker's `TMPDIR`), else
/// `$TMPDIR/outpost-uids`.
fn lock_dir() -> std::path::PathBuf {
    let run = std::path::Path::new("/run/outpost-uids");
    if std::fs::create_dir_all(run).is_ok() {
        return run.to_path_buf();
    }
    let dir = std::env::temp_dir().join("outpost-uids");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_unique_and_come_back() {
        let pool = UidPool::new(UidRange::parse("300000-300001").expect("range"));
        let a = pool.acquire().expect("a");
        let b = pool.acquire().expect("b");
        assert_ne!(a.user().uid, b.user().uid);
        assert!(pool.acquire().is_none(), "two uids, two leases");
        let uid = a.user().uid;
        drop(a);
        assert_eq!(pool.acquire().expect("again").user().uid, uid);
        assert!(UidRange::parse("10-5").is_err() && UidRange::parse("x").is_err());
    }
}
