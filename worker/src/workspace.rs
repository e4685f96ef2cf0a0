//! The run's directory and workspace: `{work_dir}/{run_id}/` holding `ws/` (the agent's cwd: a
//! shallow git clone of the run's repository, or an empty folder), `home/` (the agent's HOME) and
//! the spool `output.log` outside `ws`. Also the git steps: clone, base commit, and the
//! binary-safe diff of everything the agent changed, all through the hardened
//! [`outpost_git::runner::Git`] with [`Options::workspace`] (hooks, fsmonitor, filters and `ext::`
//! off; `safe.directory=*` because the workspace may belong to the agent's user).

use outpost_core::domain::RepoSpec;
use outpost_git::runner::{Git, Options};
use secrecy::SecretString;
use std::io;
use std::path::{Path, PathBuf};

pub use outpost_git::runner::{url_password, Changes};

/// Folder (inside `ws`) whose files are stored as `files/...` artifacts.
pub const ARTIFACTS_DIR: &str = "outpost-artifacts";

/// The paths of one run.
#[derive(Debug, Clone)]
pub struct RunDirs {
    pub root: PathBuf,
    pub ws: PathBuf,
    pub home: PathBuf,
    pub spool: PathBuf,
    pub artifacts: PathBuf,
}

impl RunDirs {
    pub fn new(work_dir: &Path, run_id: &str) -> Self {
        let root = work_dir.join(run_id);
        let ws = root.join("ws");
        Self {
            home: root.join("home"),
            spool: root.join("output.log"),
            artifacts: ws.join(ARTIFACTS_DIR),
            ws,
            root,
        }
    }

    /// Creates a fresh root and `home/` (removing what an earlier attempt may have left). `ws/` is
    /// not created here (a clone makes it; see also [`crate::dirpool`]).
    pub fn create_root(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                std::fs::remove_dir_all(&self.root)?;
                std::fs::create_dir(&self.root)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir_all(&self.root)?,
            Err(e) => return Err(e),
        }
        std::fs::create_dir(&self.home)
    }

    /// Creates `ws/outpost-artifacts/` for the agent to write into.
    pub fn create_artifacts_dir(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.artifacts)
    }

    /// Path of a file the worker writes next to the spool (e.g. `diff.patch`, `summary.json`).
    pub fn side_file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// Removes a run directory; errors are logged, never fatal.
pub fn remove_run_dir(root: &Path) {
    if let Err(e) = std::fs::remove_dir_all(root) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %root.display(), error = %e, "removing run directory failed");
        }
    }
}

/// `git clone --depth 1 [--branch B] -- URL ws`. Returns the base commit (`None` for an empty
/// repository), or git's message.
pub async fn clone(repo: &RepoSpec, ws: &Path) -> Result<Option<String>, String> {
    clone_with_token(repo, ws, None).await
}

/// [`clone`], authenticating an `https://` remote with `token` (the tenant's `GIT_TOKEN`) as an
/// HTTP header passed to git through `GIT_CONFIG_*` environment variables: never in the URL, the
/// arguments or the clone's `.git/config`.
pub async fn clone_with_token(
    repo: &RepoSpec,
    ws: &Path,
    token: Option<&SecretString>,
) -> Result<Option<String>, String> {
    Git::new(Options::workspace())
        .with_token(&repo.url, token)
        .clone_shallow(&repo.url, repo.branch.as_deref(), ws)
        .await
        .map_err(|f| f.detailed())?;
    Ok(base_commit(ws).await)
}

/// `git rev-parse HEAD`, or `None` when HEAD has no commit.
pub async fn base_commit(ws: &Path) -> Option<String> {
    Git::in_dir(Options::workspace(), ws).head_commit().await
}

/// Most files listed as changed in a workspace that is not a git repository.
pub const MAX_LISTED_FILES: usize = 1000;

/// The files the agent left in a workspace that started empty (no repository), relative to `ws`,
/// sorted, without `outpost-artifacts/` and at most [`MAX_LISTED_FILES`]. Symlinks are listed
/// but not followed.
pub fn list_created_files(ws: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(ws.join(&rel)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = rel.join(entry.file_name());
            if name.as_os_str() == ARTIFACTS_DIR {
                continue;
            }
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(name),
                Ok(_) => found.push(name.to_string_lossy().into_owned()),
                Err(_) => {}
            }
            if found.len() >= MAX_LISTED_FILES {
                found.sort();
                return found;
            }
        }
    }
    found.sort();
    found
}

/// Stages everything (except `outpost-artifacts/` and the agent CLI's own files, `ignore`: see
/// `AgentSpec::ignore`) and writes `git diff --cached --binary <base>` to `patch`: binary-safe,
/// new files included, appliable with `git apply` on a clone of the base. The same exclusions
/// apply to the diff itself, so what a CLI staged of its own files stays out too.
pub async fn diff(ws: &Path, base: Option<&str>, patch: &Path, ignore: &[String]) -> Result<Changes, String> {
    Git::in_dir(Options::workspace(), ws)
        .diff_workspace(base, patch, &[ARTIFACTS_DIR], ignore)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub use outpost_testkit::git_ok;

    /// A repository with one commit on `main` (`README.md`, `src/lib.txt`) and a branch `dev`.
    pub fn make_repo(dir: &Path) -> String {
        let url = outpost_testkit::seed_repo(dir);
        git_ok(dir, &["branch", "dev"]);
        url
    }

    #[tokio::test]
    async fn clone_records_base_and_diff_applies_to_a_fresh_clone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = tmp.path().join("origin");
        let url = make_repo(&origin);
        let head = git_ok(&origin, &["rev-parse", "HEAD"]).trim().to_owned();

        let ws = tmp.path().join("ws");
        let repo = RepoSpec {
            url: url.clone(),
            branch: Some("dev".into()),
        };
        let base = clone(&repo, &ws).await.expect("clone");
        assert_eq!(base.as_deref(), Some(head.as_str()));

        // The agent edits a file, adds a binary file, and writes an artifact (not part of the diff).
        std::fs::write(ws.join("src/lib.txt"), "one\nTWO\nthree\n").expect("edit");
        let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
        std::fs::write(ws.join("logo.bin"), &binary).expect("binary");
        std::fs::create_dir_all(ws.join(ARTIFACTS_DIR)).expect("mkdir");
        std::fs::write(ws.join(ARTIFACTS_DIR).join("report.md"), "# r\n").expect("artifact");

        // The agent CLI's own files, one of them staged by the CLI itself, stay out of the change.
        std::fs::write(ws.join(".aider.chat.history.md"), "# chat\n").expect("tool file");
        std::fs::create_dir_all(ws.join(".grok")).expect("mkdir");
        std::fs::write(ws.join(".grok/settings.json"), "{}").expect("tool file");
        git_ok(&ws, &["add", ".aider.chat.history.md"]);

        let patch = tmp.path().join("diff.patch");
        let ignore = [".aider*".to_owned(), ".grok/".to_owned()];
        let changes = diff(&ws, base.as_deref(), &patch, &ignore).await.expect("diff");
        assert!(changes.has_patch);
        let text = String::from_utf8_lossy(&std::fs::read(&patch).expect("patch")).into_owned();
        assert!(!text.contains(".aider") && !text.contains(".grok"), "{text}");
        let mut files = changes.files.clone();
        files.sort();
        assert_eq!(files, ["logo.bin", "src/lib.txt"]);

        let fresh = tmp.path().join("fresh");
        clone(&repo, &fresh).await.expect("clone again");
        git_ok(&fresh, &["apply", "--index", patch.to_str().expect("utf8 path")]);
        assert_eq!(
            std::fs::read_to_string(fresh.join("src/lib.txt")).expect("read"),
            "one\nTWO\nthree\n"
        );
        assert_eq!(std::fs::read(fresh.join("logo.bin")).expect("read"), binary);
        assert!(!fresh.join(ARTIFACTS_DIR).exists());
    }

    /// Plants what a hostile agent could in a clone: an fsmonitor program, a hook directory with
    /// `post-index-change`, a clean filter, an external diff and a textconv driver, each touching
    /// a marker in `markers` when run. Also edits a file and adds one, so there is work to do.
    fn plant_hostile_config(ws: &Path, markers: &Path) {
        use std::os::unix::fs::PermissionsExt;
        let script = |name: &str| {
            let path = markers.join(format!("{name}.sh"));
            let body = format!("#!/bin/sh\ntouch '{}'\ncat\n", markers.join(name).display());
            std::fs::write(&path, body).expect("script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            path.display().to_string()
        };
        let hooks = ws.join(".git/evil-hooks");
        std::fs::create_dir_all(&hooks).expect("mkdir");
        let hook = script("hook");
        std::fs::copy(&hook, hooks.join("post-index-change")).expect("hook");
        let config = format!(
            "[core]\n\tfsmonitor = {}\n\thooksPath = {}\n[filter \"evil\"]\n\tclean = {}\n\tsmudge = {}\n\
             [diff]\n\texternal = {}\n[diff \"evil\"]\n\ttextconv = {}\n",
            script("fsmonitor"),
            hooks.display(),
            script("filter"),
            script("smudge"),
            script("external"),
            script("textconv"),
        );
        let mut existing = std::fs::read_to_string(ws.join(".git/config")).expect("config");
        existing.push_str(&config);
        std::fs::write(ws.join(".git/config"), existing).expect("config");
        std::fs::write(ws.join(".gitattributes"), "* filter=evil diff=evil\n").expect("attributes");
        std::fs::write(ws.join("src/lib.txt"), "one\nTWO\nthree\n").expect("edit");
        std::fs::write(ws.join("new.txt"), "new\n").expect("new file");
    }

    fn markers_in(dir: &Path) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(dir)
            .expect("markers")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".sh"))
            .collect();
        found.sort();
        found
    }

    #[tokio::test]
    async fn a_hostile_workspace_config_runs_nothing_during_the_diff() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = make_repo(&tmp.path().join("origin"));
        let repo = RepoSpec { url, branch: None };

        // Control: the planted config is live for a plain git (the test would catch a regression).
        let control = tmp.path().join("control");
        let control_markers = tmp.path().join("control-markers");
        std::fs::create_dir(&control_markers).expect("mkdir");
        clone(&repo, &control).await.expect("clone");
        plant_hostile_config(&control, &control_markers);
        git_ok(&control, &["add", "-A"]);
        git_ok(&control, &["diff", "--cached", "HEAD"]);
        assert_eq!(
            markers_in(&control_markers),
            ["external", "filter", "fsmonitor", "hook", "smudge"]
        );

        let ws = tmp.path().join("ws");
        let markers = tmp.path().join("markers");
        std::fs::create_dir(&markers).expect("mkdir");
        let base = clone(&repo, &ws).await.expect("clone");
        plant_hostile_config(&ws, &markers);
        let patch = tmp.path().join("diff.patch");
        let changes = diff(&ws, base.as_deref(), &patch, &[]).await.expect("diff");
        assert!(markers_in(&markers).is_empty(), "ran: {:?}", markers_in(&markers));
        let mut files = changes.files;
        files.sort();
        assert_eq!(files, [".gitattributes", "new.txt", "src/lib.txt"]);
        // The patch holds the files as they are (no filter in between), in `git apply` form.
        let text = String::from_utf8_lossy(&std::fs::read(&patch).expect("patch")).into_owned();
        assert!(
            text.contains("diff --git a/src/lib.txt b/src/lib.txt") && text.contains("+TWO"),
            "{text}"
        );
        assert!(text.contains("+new"), "{text}");
    }

    #[test]
    fn created_files_are_listed_without_the_artifacts_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ws = dir.path();
        std::fs::create_dir_all(ws.join("src/deep")).expect("mkdir");
        std::fs::create_dir_all(ws.join(ARTIFACTS_DIR)).expect("mkdir");
        std::fs::write(ws.join("a.txt"), "a").expect("write");
        std::fs::write(ws.join("src/deep/b.rs"), "b").expect("write");
        std::fs::write(ws.join(ARTIFACTS_DIR).join("report.md"), "r").expect("write");
        assert_eq!(list_created_files(ws), ["a.txt", "src/deep/b.rs"]);
        assert!(list_created_files(&ws.join("missing")).is_empty());
    }

    #[tokio::test]
    async fn unchanged_workspace_has_no_patch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = make_repo(&tmp.path().join("origin"));
        let ws = tmp.path().join("ws");
        let base = clone(&RepoSpec { url, branch: None }, &ws).await.expect("clone");
        let patch = tmp.path().join("diff.patch");
        let changes = diff(&ws, base.as_deref(), &patch, &[]).await.expect("diff");
        assert_eq!(
            changes,
            Changes {
                files: vec![],
                has_patch: false
            }
        );
    }

    #[tokio::test]
    async fn bad_branch_and_option_like_input_fail_cleanly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let url = make_repo(&tmp.path().join("origin"));
        let err = clone(
            &RepoSpec {
                url: url.clone(),
                branch: Some("no-such-branch".into()),
            },
            &tmp.path().join("ws1"),
        )
        .await
        .expect_err("bad branch");
        assert!(err.contains("no-such-branch"), "{err}");

        let marker = tmp.path().join("pwned");
        let err = clone(
            &RepoSpec {
                url: format!("--upload-pack=touch {}", marker.display()),
                branch: None,
            },
            &tmp.path().join("ws2"),
        )
        .await
        .expect_err("option as url");
        assert!(err.contains("git clone failed"), "{err}");
        assert!(!marker.exists(), "a URL must never be taken as an option");
    }
}
