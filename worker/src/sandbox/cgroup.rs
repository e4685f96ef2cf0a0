//! Per-run cgroups: the memory and process caps of one run, its CPU seconds, its OOM kills and a
//! kill of everything in it. cgroup v2 where the worker may create groups under its own (a
//! root container, a delegated systemd slice); else the v1 `memory` and `pids` hierarchies (as
//! on this project's CI machine); else none, and the executor falls back to rlimits.
//!
//! Cost per run: one `mkdir` and two or three small writes per hierarchy, reads of two files
//! after the run and a `rmdir`.

use std::io;
use std::path::{Path, PathBuf};

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_MEMORY: &str = "/sys/fs/cgroup/memory";
const V1_PIDS: &str = "/sys/fs/cgroup/pids";
const V1_CPUACCT: &str = "/sys/fs/cgroup/cpuacct";

/// Where this worker makes its runs' cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// One v2 folder (its `memory` and `pids` controllers enabled for its children).
    V2(PathBuf),
    /// v1: a folder in each of `memory` and `pids` (and `cpuacct` when writable).
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpuacct: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// Finds where runs' cgroups can be made and makes this worker's parent folder `outpost-{tag}`
    /// there; `None` when this process may not (not root and nothing delegated, or no
    /// controllers). v2 is tried under the group this process is in.
    pub fn detect(tag: &str) -> Option<Self> {
        let name = format!("outpost-{tag}");
        if let Some(h) = detect_v2(&name) {
            return Some(h);
        }
        let memory = Path::new(V1_MEMORY).join(&name);
        let pids = Path::new(V1_PIDS).join(&name);
        if std::fs::create_dir_all(&memory).is_ok() && std::fs::create_dir_all(&pids).is_ok() {
            let cpuacct = Path::new(V1_CPUACCT).join(&name);
            let cpuacct = std::fs::create_dir_all(&cpuacct).is_ok().then_some(cpuacct);
            return Some(Self::V1 { memory, pids, cpuacct });
        }
        let _ = std::fs::remove_dir(&memory);
        None
    }

    /// "cgroup v2" or "cgroup v1", for the run's record.
    pub fn describe(&self) -> &'static str {
        match self {
            Hierarchy::V2(_) => "cgroup v2 (memory, pids, cpu)",
            Hierarchy::V1 { cpuacct: Some(_), .. } => "cgroup v1 (memory, pids, cpuacct)",
            Hierarchy::V1 { .. } => "cgroup v1 (memory, pids)",
        }
    }

    /// Makes the cgroup of run `name` with its caps.
    pub fn create(&self, name: &str, memory_bytes: u64, max_pids: u32) -> io::Result<RunCgroup> {
        let dirs: Vec<PathBuf> = match self {
            Hierarchy::V2(p) => vec![p.join(name)],
            Hierarchy::V1 { memory, pids, cpuacct } => {
                let mut v = vec![memory.join(name), pids.join(name)];
                v.extend(cpuacct.as_ref().map(|c| c.join(name)));
                v
            }
        };
        for d in &dirs {
            match std::fs::create_dir(d) {
                Ok(()) => {}
                // Left by a worker that died: reuse it (its processes are killed below).
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let cg = RunCgroup {
            v2: matches!(self, Hierarchy::V2(_)),
            dirs,
        };
        cg.kill_all();
        if cg.v2 {
            std::fs::write(cg.dirs[0].join("memory.max"), memory_bytes.to_string())?;
            // No swap: the cap is the cap.
            let _ = std::fs::write(cg.dirs[0].join("memory.swap.max"), "0");
            std::fs::write(cg.dirs[0].join("pids.max"), max_pids.to_string())?;
        } else {
            std::fs::write(cg.dirs[0].join("memory.limit_in_bytes"), memory_bytes.to_string())?;
            let _ = std::fs::write(cg.dirs[0].join("memory.memsw.limit_in_bytes"), memory_bytes.to_string());
            std::fs::write(cg.dirs[1].join("pids.max"), max_pids.to_string())?;
        }
        Ok(cg)
    }
}

fn detect_v2(name: &str) -> Option<Hierarchy> {
    let root = Path::new(V2_ROOT);
    if !root.join("cgroup.controllers").exists() {
        return None;
    }
    // The group this process is in ("0::/path").
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim_start_matches('/');
    let base = root.join(rel);
    let parent = base.join(name);
    std::fs::create_dir_all(&parent).ok()?;
    let controllers = std::fs::read_to_string(parent.join("cgroup.controllers")).ok()?;
    if !(controllers.contains("memory") && controllers.contains("pids")) {
        let _ = std::fs::remove_dir(&parent);
        return None;
    }
    // Children of `parent` get memory, pids (and cpu) caps. A folder with processes cannot
    // enable controllers for its children ("no internal processes"); `parent` has none.
    let want = if controllers.contains("cpu") {
        "+memory +pids +cpu"
    } else {
        "+memory +pids"
    };
    std::fs::write(parent.join("cgroup.subtree_control"), want).ok()?;
    Some(Hierarchy::V2(parent))
}

/// One run's cgroup(s).
#[derive(Debug)]
pub struct RunCgroup {
    v2: bool,
    /// v2: `[dir]`; v1: `[memory, pids, cpuacct?]`.
    dirs: Vec<PathBuf>,
}

impl RunCgroup {
    /// The files a process writes its pid into to join (see `outpost-confine --cgroup`).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Whether the kernel killed a process of the run for want of memory.
    pub fn oom_killed(&self) -> bool {
        let (file, key) = if self.v2 {
            (self.dirs[0].join("memory.events"), "oom_kill")
        } else {
            (self.dirs[0].join("memory.oom_control"), "oom_kill")
        };
        let oom = std::fs::read_to_string(file).ok().and_then(|s| {
            // `oom_kill N`, not `oom_kill_disable N`.
            s.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.strip_prefix(' '))
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
        });
        let failcnt = (!self.v2)
            .then(|| std::fs::read_to_string(self.dirs[0].join("memory.failcnt")).ok())
            .flatten()
            .and_then(|s| s.trim().parse::<u64>().ok());
        oom.unwrap_or(0) > 0 || (oom.is_none() && failcnt.unwrap_or(0) > 0)
    }

    /// CPU time used by the run so far, in microseconds (`None` without CPU accounting).
    pub fn cpu_usec(&self) -> Option<u64> {
        if self.v2 {
            let stat = std::fs::read_to_string(self.dirs[0].join("cpu.stat")).ok()?;
            return stat
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok());
        }
        let cpuacct = self.dirs.get(2)?;
        let ns: u64 = std::fs::read_to_string(cpuacct.join("cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(ns / 1000)
    }

    /// Whether any process is left in the run's cgroup.
    pub fn is_empty(&self) -> bool {
        std::fs::read_to_string(&self.procs_files()[0]).map_or(true, |s| s.trim().is_empty())
    }

    /// SIGKILLs every process in the run's cgroup (v2 `cgroup.kill`; v1 one by one, repeated
    /// while new ones appear, since a fork may race the kill).
    pub fn kill_all(&self) {
        if self.v2 && std::fs::write(self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for _ in 0..50 {
            let Ok(list) = std::fs::read_to_string(&self.procs_files()[0]) else {
                return;
            };
            let pids: Vec<i32> = list.lines().filter_map(|l| l.trim().parse().ok()).collect();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// Kills what is left and removes the cgroup (retried briefly while the kernel reaps).
    pub fn remove(self) {
        self.kill_all();
        for d in &self.dirs {
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        }
    }
}
