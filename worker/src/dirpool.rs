//! A pool of clean, empty run trees (`home/`, `ws/`, `ws/outpost-artifacts/`), so that the fast
//! path neither creates nor deletes directories per run: a tree is renamed to
//! `{work_dir}/{run_id}/` when a run starts and renamed back when it ends, if, and only if, the
//! agent left it exactly as it was handed out (empty, same modes, no symlinks). Anything else is
//! removed as usual.
//!
//! Why: creating and deleting thousands of directories a second makes ext4 (without a journal)
//! scan its recently-deleted inodes on every allocation, which cost more CPU than spawning the
//! agent. Renames allocate nothing.

use crate::identity::{self, AgentUser};
use crate::workspace::{remove_run_dir, RunDirs, ARTIFACTS_DIR};
use outpost_core::domain::run_files::{DIFF_PATCH, OUTPUT_LOG, SUMMARY_JSON};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Files the worker itself may leave in a run's root (when the store copied instead of moving).
const OWN_FILES: [&str; 3] = [OUTPUT_LOG, SUMMARY_JSON, DIFF_PATCH];

/// Idle run trees of one executor.
#[derive(Debug)]
pub struct DirPool {
    /// `{work_dir}/.pool-{ulid}`: private to this executor (several workers may share a work dir).
    dir: PathBuf,
    created: AtomicBool,
    idle: Mutex<Vec<PathBuf>>,
    seq: AtomicU64,
    max_idle: usize,
    /// Permission bits of a freshly made root folder (0 until the first one).
    mode: AtomicU32,
    /// Permission bits of a freshly made `home/` (and `ws/`, `ws/outpost-artifacts/`).
    sub_mode: AtomicU32,
}

impl DirPool {
    /// A pool keeping at most `max_idle` trees under `work_dir`. Nothing is created until needed.
    pub fn new(work_dir: &Path, max_idle: usize) -> Self {
        let dir = work_dir.join(format!(".pool-{}", ulid_like()));
        Self {
            dir,
            created: AtomicBool::new(false),
            idle: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            max_idle,
            mode: AtomicU32::new(0),
            sub_mode: AtomicU32::new(0),
        }
    }

    /// Makes `dirs.root` with `home/` and, when `with_ws`, `ws/` and `ws/outpost-artifacts/`
    /// (reusing an idle tree if there is one). Without `ws` (a clone makes it) nothing is reused.
    /// With `owner` (the run's agent user, see [`crate::identity`]) `home/`, `ws/` and
    /// `ws/outpost-artifacts/` are that user's and every folder is 0711 (a reused tree is given
    /// to the new run's user: three `chown`s).
    pub fn acquire(&self, dirs: &RunDirs, with_ws: bool, owner: Option<AgentUser>) -> io::Result<()> {
        if with_ws {
            if let Some(idle) = self.pop() {
                match std::fs::rename(&idle, &dirs.root) {
                    Ok(()) => {
                        if let Some(owner) = &owner {
                            for d in [&dirs.home, &dirs.ws, &dirs.artifacts] {
                                owner.own_folder(d)?;
                            }
                        }
                        return Ok(());
                    }
                    Err(_) => remove_run_dir(&idle),
                }
            }
        }
        dirs.create_root()?;
        if let Some(owner) = &owner {
            identity::pass_through_only(&dirs.root)?;
            owner.own_folder(&dirs.home)?;
        }
        if self.mode.load(Ordering::Relaxed) == 0 {
            let mode = std::fs::symlink_metadata(&dirs.root)?.permissions().mode() & 0o7777;
            let sub = std::fs::symlink_metadata(&dirs.home)?.permissions().mode() & 0o7777;
            self.sub_mode.store(sub, Ordering::Relaxed);
            self.mode.store(mode, Ordering::Relaxed);
        }
        if with_ws {
            std::fs::create_dir(&dirs.ws)?;
            std::fs::create_dir(&dirs.artifacts)?;
            if let Some(owner) = &owner {
                owner.own_folder(&dirs.ws)?;
                owner.own_folder(&dirs.artifacts)?;
            }
        }
        Ok(())
    }

    /// Ends a run's use of its tree: back into the pool if it is clean, removed otherwise.
    pub fn release(&self, dirs: &RunDirs) {
        if self.is_clean(dirs) && self.has_room() && self.ensure_dir() {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let idle = self.dir.join(n.to_string());
            if std::fs::rename(&dirs.root, &idle).is_ok() {
                self.push(idle);
                return;
            }
        }
        remove_run_dir(&dirs.root);
    }

    fn pop(&self) -> Option<PathBuf> {
        self.idle.lock().ok()?.pop()
    }

    fn push(&self, p: PathBuf) {
        match self.idle.lock() {
            Ok(mut v) => v.push(p),
            Err(_) => remove_run_dir(&p),
        }
    }

    fn has_room(&self) -> bool {
        self.idle.lock().map(|v| v.len() < self.max_idle).unwrap_or(false)
    }

    fn ensure_dir(&self) -> bool {
        if self.created.load(Ordering::Relaxed) {
            return true;
        }
        let ok = std::fs::create_dir_all(&self.dir).is_ok();
        self.created.store(ok, Ordering::Relaxed);
        ok
    }

    /// Whether the tree is exactly as handed out: the four folders with their original mode, no
    /// symlinks, nothing in them but each other (the worker's own spool files are removed).
    fn is_clean(&self, dirs: &RunDirs) -> bool {
        let mode = self.mode.load(Ordering::Relaxed);
        let sub = self.sub_mode.load(Ordering::Relaxed);
        let folder_ok = |p: &Path, mode: u32| {
            std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o7777 == mode)
        };
        if mode == 0
            || !folder_ok(&dirs.root, mode)
            || ![&dirs.home, &dirs.ws, &dirs.artifacts]
                .into_iter()
                .all(|p| folder_ok(p, sub))
        {
            return false;
        }
        let only = |p: &Path, allowed: &[&str]| -> bool {
            let Ok(mut rd) = std::fs::read_dir(p) else { return false };
            rd.all(|e| e.is_ok_and(|e| e.file_name().to_str().is_some_and(|n| allowed.contains(&n))))
        };
        if !only(&dirs.home, &[]) || !only(&dirs.artifacts, &[]) || !only(&dirs.ws, &[ARTIFACTS_DIR]) {
            return false;
        }
        // The root may still hold the worker's own files if the store copied them.
        let Ok(rd) = std::fs::read_dir(&dirs.root) else {
            return false;
        };
        for entry in rd {
            let Ok(entry) = entry else { return false };
            let name = entry.file_name();
            match name.to_str() {
                Some("home" | "ws") => {}
                Some(n) if OWN_FILES.contains(&n) => {
                    if std::fs::remove_file(entry.path()).is_err() {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        true
    }
}

impl Drop for DirPool {
    fn drop(&mut self) {
        if self.created.load(Ordering::Relaxed) {
            remove_run_dir(&self.dir);
        }
    }
}

/// A unique-enough suffix: the process id and a nanosecond clock reading.
fn ulid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos:x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> (tempfile::TempDir, DirPool) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pool = DirPool::new(tmp.path(), 4);
        (tmp, pool)
    }

    #[test]
    fn clean_trees_are_reused_and_dirty_ones_removed() {
        let (tmp, pool) = pool();
        let a = RunDirs::new(tmp.path(), "run_a");
        pool.acquire(&a, true, None).expect("acquire");
        assert!(a.home.is_dir() && a.ws.is_dir() && a.artifacts.is_dir());
        std::fs::write(&a.spool, "log").expect("spool");
        pool.release(&a);
        assert!(!a.root.exists(), "released tree is moved away");

        let b = RunDirs::new(tmp.path(), "run_b");
        pool.acquire(&b, true, None).expect("acquire");
        assert!(b.artifacts.is_dir());
        assert!(!b.spool.exists(), "the worker's own files were removed");
        std::fs::write(b.ws.join("left-behind"), "x").expect("write");
        pool.release(&b);
        assert!(!b.root.exists());
        assert_eq!(pool.idle.lock().expect("lock").len(), 0, "a dirty tree is not pooled");

        for change in ["home-file", "chmod", "symlink-ws"] {
            let c = RunDirs::new(tmp.path(), &format!("run_{change}"));
            pool.acquire(&c, true, None).expect("acquire");
            match change {
                "home-file" => std::fs::write(c.home.join(".bashrc"), "x").expect("write"),
                "chmod" => std::fs::set_permissions(&c.home, std::fs::Permissions::from_mode(0o700)).expect("chmod"),
                _ => {
                    std::fs::remove_dir(&c.artifacts).expect("rmdir");
                    std::fs::remove_dir(&c.ws).expect("rmdir");
                    std::os::unix::fs::symlink("/tmp", &c.ws).expect("symlink");
                }
            }
            pool.release(&c);
            assert!(!c.root.exists(), "{change}");
            assert_eq!(pool.idle.lock().expect("lock").len(), 0, "{change} must not be pooled");
        }
    }

    #[test]
    fn the_pool_folder_goes_away_with_the_pool() {
        let (tmp, pool) = pool();
        let a = RunDirs::new(tmp.path(), "run_a");
        pool.acquire(&a, true, None).expect("acquire");
        pool.release(&a);
        let pool_dir = pool.dir.clone();
        assert!(pool_dir.is_dir());
        drop(pool);
        assert!(!pool_dir.exists());
    }

    #[test]
    fn repository_runs_get_no_ws() {
        let (tmp, pool) = pool();
        let a = RunDirs::new(tmp.path(), "run_a");
        pool.acquire(&a, false, None).expect("acquire");
        assert!(a.home.is_dir() && !a.ws.exists());
    }
}
