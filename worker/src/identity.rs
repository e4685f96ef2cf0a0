//! Which user an agent runs as. No agent runs as root: when the worker is root (containers, EC2
//! hosts, this machine's CI), each run's agent runs as a uid/gid of its own from the agents'
//! range ([`crate::sandbox::uids`]), which owns only that run's `ws/` and `home/` (0700); the
//! worker keeps the run root, its spool and its side files (mode 0711 folders, 0600 files) and
//! does every git step itself. When the worker is not root, agents run as the worker's own user
//! inside a user namespace ([`crate::sandbox`]).
//!
//! Claude Code refuses `--dangerously-skip-permissions` as root; beyond that, an agent as root
//! could read everything the worker can. `setpriv` (util-linux) is only the fallback that starts
//! `sandbox = "none"` agents as their user when `outpost-confine` is missing.

use std::io;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

/// uid/gid of `nobody` on Debian and most distributions; no passwd entry is needed for another.
pub const NOBODY: u32 = 65534;

/// Mode of the worker's folders above a run's tree when agents run as another user: the owner
/// everything, others may only pass through (so the agent reaches its `ws/` and `home/` but
/// lists nothing above them).
pub const FOLDER_MODE: u32 = 0o711;
/// Mode of the folders an agent owns (`ws/`, `home/`): nobody else's agent may enter them.
pub const OWN_FOLDER_MODE: u32 = 0o700;

/// An unprivileged identity for agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentUser {
    pub uid: u32,
    pub gid: u32,
}

impl AgentUser {
    /// `nobody` when this process is root, else `None`: whether this process would run agents
    /// as another user (the work dir's default depends on it; the run's own uid comes from the
    /// sandbox's pool).
    pub fn default_for_this_process() -> Option<Self> {
        nix::unistd::geteuid().is_root().then_some(Self {
            uid: NOBODY,
            gid: NOBODY,
        })
    }

    /// Gives `path` and everything below it to this user (symlinks themselves, never followed).
    pub fn own_tree(&self, path: &Path) -> io::Result<()> {
        lchown(path, Some(self.uid), Some(self.gid))?;
        let meta = std::fs::symlink_metadata(path)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(path)? {
                self.own_tree(&entry?.path())?;
            }
        }
        Ok(())
    }

    /// Gives the single folder `path` to this user with [`OWN_FOLDER_MODE`].
    pub fn own_folder(&self, path: &Path) -> io::Result<()> {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(OWN_FOLDER_MODE))?;
        lchown(path, Some(self.uid), Some(self.gid))
    }
}

/// `setpriv` (util-linux) on `path` or in `/usr/bin`, `/bin`: agents are started through it as
/// their user (see `ProcessExecutor::spawn`). `None` when this machine has none (then the ids
/// are set in a forked child: slower, and without no_new_privs).
pub fn find_setpriv(path: &std::ffi::OsStr) -> Option<std::path::PathBuf> {
    find_program(path, "setpriv")
}

/// The executable `name` in the absolute folders of `path`, then in `/usr/bin` and `/bin`.
pub fn find_program(path: &std::ffi::OsStr, name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path)
        .chain([std::path::PathBuf::from("/usr/bin"), std::path::PathBuf::from("/bin")])
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `path` is a file with an execute bit.
pub fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `setpriv` arguments that run the program that follows them as `user`: real and effective
/// uid and gid, no supplementary groups, no_new_privs.
pub fn setpriv_args(user: AgentUser) -> Vec<String> {
    vec![
        format!("--reuid={}", user.uid),
        format!("--regid={}", user.gid),
        "--clear-groups".to_owned(),
        "--no-new-privs".to_owned(),
        "--".to_owned(),
    ]
}

/// Where an embedded worker over the data dir `data` puts run trees by default: `{data}/work`, or
/// `$TMPDIR/outpost-work` when agents run as another user (the worker is root): they must pass
/// through every folder above their run, and the data dir (database, artifacts, secrets) must
/// not be one of those.
pub fn default_work_dir(data: &Path) -> std::path::PathBuf {
    if AgentUser::default_for_this_process().is_some() {
        std::env::temp_dir().join("outpost-work")
    } else {
        data.join("work")
    }
}

/// Sets [`FOLDER_MODE`] on a folder the worker keeps (the work dir, a run's root).
pub fn pass_through_only(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(FOLDER_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn own_tree_gives_every_entry_and_does_not_follow_symlinks() {
        if !nix::unistd::geteuid().is_root() {
            // Only root may give files away; the non-root path is covered by the defaults below.
            assert_eq!(AgentUser::default_for_this_process(), None);
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "x").expect("write");
        let ws = tmp.path().join("ws");
        std::fs::create_dir_all(ws.join("a/b")).expect("mkdir");
        std::fs::write(ws.join("a/b/f"), "x").expect("write");
        std::os::unix::fs::symlink(&outside, ws.join("link")).expect("symlink");
        let user = AgentUser { uid: 4242, gid: 4343 };
        user.own_tree(&ws).expect("own");
        for p in [ws.clone(), ws.join("a"), ws.join("a/b/f"), ws.join("link")] {
            let m = std::fs::symlink_metadata(&p).expect("meta");
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", p.display());
        }
        let m = std::fs::metadata(&outside).expect("meta");
        assert_eq!(m.uid(), 0, "the symlink's target stays the worker's");
        assert_eq!(
            AgentUser::default_for_this_process(),
            Some(AgentUser {
                uid: NOBODY,
                gid: NOBODY
            })
        );
    }
}
