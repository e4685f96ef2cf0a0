//! The run's directory and workspace: `{work_dir}/{run_id}/` holding `ws/` (the agent's cwd: a
//! shallow git clone of the run's repository, or an empty folder), `home/` (the agent's HOME) and
//! the spool `output.log` outside `ws`. Also the git steps: clone, base commit, and the
//! binary-safe diff of everything the agent changed.

use outpost_core::domain::RepoSpec;
use secrecy::SecretString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tokio::process::Command;

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

/// A git command with prompts off and config that could run programs disabled.
fn git(dir: Option<&Path>) -> Command {
    let mut cmd = Command::new("git");
    if let Some(d) = dir {
        cmd.arg("-C").arg(d);
    }
    cmd.args([
        "-c",
        "protocol.ext.allow=never",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "diff.noprefix=false",
        "-c",
        "diff.mnemonicPrefix=false",
        // The workspace belongs to the agent's user when the worker is root (crate::identity);
        // git must still work on it, with hooks, fsmonitor and filters off as above.
        "-c",
        "safe.directory=*",
    ])
    .env("GIT_TERMINAL_PROMPT", "0")
    .env("GIT_OPTIONAL_LOCKS", "0")
    .stdin(Stdio::null())
    .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    cmd
}

fn describe_failure(what: &str, out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    if stderr.is_empty() {
        format!("{what} failed ({})", out.status)
    } else {
        format!("{what} failed ({}):\n{stderr}", out.status)
    }
}

async fn output(cmd: &mut Command, what: &str) -> Result<Output, String> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("{what}: cannot run git: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(describe_failure(what, &out))
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
    let mut cmd = git(None);
    if let Some(t) = token {
        cmd.envs(outpost_git::promote::git_auth_env(&repo.url, t));
    }
    cmd.args(["clone", "--quiet", "--depth", "1", "--no-tags"]);
    if let Some(b) = &repo.branch {
        // `--branch=B` keeps a branch that starts with '-' a value, never an option.
        cmd.arg(format!("--branch={b}"));
    }
    cmd.arg("--").arg(&repo.url).arg(ws);
    output(&mut cmd, "git clone").await?;
    Ok(base_commit(ws).await)
}

/// `git rev-parse HEAD`, or `None` when HEAD has no commit.
pub async fn base_commit(ws: &Path) -> Option<String> {
    let mut cmd = git(Some(ws));
    cmd.args(["rev-parse", "--verify", "--quiet", "HEAD"]);
    let out = output(&mut cmd, "git rev-parse").await.ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (!s.is_empty()).then_some(s)
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

/// What the agent changed in a git workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Paths (relative to the repository root) that differ from the base commit.
    pub files: Vec<String>,
    /// Whether `patch` holds a non-empty diff.
    pub has_patch: bool,
}

/// Stages everything (except `outpost-artifacts/` and the agent CLI's own files, `ignore`: see
/// `AgentSpec::ignore`) and writes `git diff --cached --binary <base>` to `patch`: binary-safe,
/// new files included, appliable with `git apply` on a clone of the base. The same exclusions
/// apply to the diff itself, so what a CLI staged of its own files stays out too.
pub async fn diff(ws: &Path, base: Option<&str>, patch: &Path, ignore: &[String]) -> Result<Changes, String> {
    let mut excludes = vec![format!(":(exclude){ARTIFACTS_DIR}")];
    for p in ignore {
        let p = p.trim_end_matches('/');
        excludes.push(format!(":(exclude,glob){p}"));
        excludes.push(format!(":(exclude,glob){p}/**"));
    }
    // Attributes of highest precedence: no clean/smudge filter or ident expansion of the agent's
    // choosing runs while the worker stages its files (diff drivers are off by flags below).
    let info = ws.join(".git").join("info");
    let _ = std::fs::create_dir_all(&info);
    std::fs::write(info.join("attributes"), "* -filter -ident\n").map_err(|e| format!("preparing the diff: {e}"))?;

    let mut add = git(Some(ws));
    add.args(["add", "--all", "--", "."]).args(&excludes);
    output(&mut add, "git add").await?;

    let diff_args = |cmd: &mut Command| {
        cmd.args(["diff", "--cached", "--no-ext-diff", "--no-textconv", "--no-color"]);
    };
    let file = std::fs::File::create(patch).map_err(|e| format!("creating diff.patch: {e}"))?;
    let mut d = git(Some(ws));
    diff_args(&mut d);
    d.args(["--binary", "--full-index"]);
    if let Some(b) = base {
        d.arg(b);
    }
    d.args(["--", "."]).args(&excludes);
    // Not `output()`: tokio's would replace the file with a pipe.
    let child = d
        .stdout(Stdio::from(file))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("git diff: cannot run git: {e}"))?;
    drop(d);
    let out = child.wait_with_output().await.map_err(|e| format!("git diff: {e}"))?;
    if !out.status.success() {
        return Err(describe_failure("git diff", &out));
    }

    let mut names = git(Some(ws));
    diff_args(&mut names);
    names.args(["--name-only", "-z"]);
    if let Some(b) = base {
        names.arg(b);
    }
    names.args(["--", "."]).args(&excludes);
    let out = output(&mut names, "git diff --name-only").await?;
    let files: Vec<String> = out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    let has_patch = std::fs::metadata(patch).map(|m| m.len() > 0).unwrap_or(false);
    Ok(Changes { files, has_patch })
}

/// The password of a `scheme://user:password@host/...` URL, to scrub from output.
pub fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let userinfo = authority.rsplit_once('@')?.0;
    let (_, pass) = userinfo.split_once(':')?;
    (!pass.is_empty()).then_some(pass)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Runs git synchronously in tests, with a fixed identity.
    pub fn git_ok(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A repository with one commit on `main` (`README.md`, `src/lib.txt`) and a branch `dev`.
    pub fn make_repo(dir: &Path) -> String {
        std::fs::create_dir_all(dir.join("src")).expect("mkdir");
        git_ok(dir, &["init", "--quiet", "--initial-branch=main"]);
        std::fs::write(dir.join("README.md"), "hello\n").expect("write");
        std::fs::write(dir.join("src/lib.txt"), "one\ntwo\nthree\n").expect("write");
        git_ok(dir, &["add", "-A"]);
        git_ok(dir, &["commit", "--quiet", "-m", "first"]);
        git_ok(dir, &["branch", "dev"]);
        format!("file://{}", dir.display())
    }

    #[test]
    fn url_passwords_are_found() {
        assert_eq!(url_password("https://x:tok3n@github.com/a/b.git"), Some("tok3n"));
        assert_eq!(url_password("https://github.com/a/b.git"), None);
        assert_eq!(url_password("https://user@github.com/a/b.git"), None);
        assert_eq!(url_password("git@github.com:a/b.git"), None);
        assert_eq!(url_password("https://h/a?x=y:z@w"), None);
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
