//! The one way Outpost runs the `git` CLI: [`Git`], a hardened `tokio::process` runner, and the
//! operations the worker (clone, base commit, workspace diff) and promote (init, fetch, apply,
//! commit, push) need. Every hardening rule lives here, once.
//!
//! # Why
//!
//! Agents are hostile. A run's workspace is the agent's to write: it may plant anything in
//! `.git/config`, `.git/hooks/`, `.gitattributes` or `.git/info/` before the worker (possibly
//! root) stages and diffs it, and a repository URL comes from a request. Nothing the agent or the
//! remote controls may make git run a program as the worker, ask for input, or print a token.
//!
//! # The rules (every command)
//!
//! - `-c protocol.ext.allow=never`: the `ext::` transport runs an arbitrary command named by the
//!   URL; a repository URL must never be a program.
//! - `-c core.hooksPath=/dev/null`: no hook runs (`post-index-change` fires on `git add`,
//!   `pre-push`, `post-checkout`, …); command-line config beats the repository's `core.hooksPath`.
//! - `-c core.fsmonitor=false`: `core.fsmonitor` may name a program git runs on every index
//!   refresh (`git add`, `git diff`, `git status`).
//! - `-c commit.gpgSign=false`: no `gpg.program` runs for a commit.
//! - `-c advice.detachedHead=false`, `-c diff.noprefix=false`, `-c diff.mnemonicPrefix=false`:
//!   output in the one form callers parse and `git apply` takes (`a/` and `b/` prefixes).
//! - `GIT_TERMINAL_PROMPT=0` and stdin from `/dev/null` (unless the call gives input): git never
//!   waits for a password; `GIT_SSH_COMMAND=ssh -o BatchMode=yes` unless the operator set one, so
//!   ssh does not prompt either.
//! - `GIT_OPTIONAL_LOCKS=0`: read-only commands do not take the index lock, so they never fight
//!   an agent's git (or another read) for it.
//! - `GIT_DIR`, `GIT_WORK_TREE` and `GIT_INDEX_FILE` are removed: the command works on the folder
//!   it was given, never one the process environment points at.
//! - A token ([`Git::with_token`]) reaches git only as `GIT_CONFIG_*` environment variables
//!   ([`git_auth_env`]): an HTTP `Authorization` header scoped to the remote's origin, on network
//!   calls only, never in a URL, an argument, `.git/config` or a log. The token (raw and in its
//!   Basic form) and a URL's password ([`url_password`]) are scrubbed from every message.
//! - Failures are [`GitFailure`]s: the step, the exit status and git's (scrubbed) stderr.
//!
//! # Options
//!
//! Two rules differ between the callers and are explicit [`Options`]:
//! - [`Options::isolated`] (promote): no system or global git config (`GIT_CONFIG_NOSYSTEM=1`,
//!   `GIT_CONFIG_GLOBAL=/dev/null`, `GIT_CONFIG_COUNT`/`GIT_CONFIG_PARAMETERS` removed) and
//!   `LC_ALL=C`, so git's messages can be classified. The worker keeps the operator's config (a
//!   clone may need its proxy, CA bundle, `insteadOf` or credential helper).
//! - [`Options::any_owner`] (the worker): `-c safe.directory=*`. When the worker is root, agents
//!   run as `nobody` in folders they own; git must still work there, with hooks, fsmonitor and
//!   filters off as above.
//!
//! The workspace diff ([`Git::diff_workspace`]) adds its own rules: a `.git/info/attributes` of
//! `* -filter -ident` (highest precedence: no clean/smudge filter or ident expansion of the
//! agent's choosing runs while files are staged) and `--no-ext-diff --no-textconv`.
//!
//! # Costs
//!
//! One `git` process per call; output is buffered in memory except the workspace patch, which
//! git writes straight to its file. Processes are killed when their future is dropped.

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Most bytes of git's own message quoted by [`GitFailure::quoted`].
const MAX_QUOTED: usize = 400;

/// Config given on every command line; see the module documentation.
const HARDENING: [&str; 14] = [
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
];

/// The rules that differ between callers; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// No system or global config, no config from the environment, `LC_ALL=C`.
    pub isolated: bool,
    /// `-c safe.directory=*`: work in repositories owned by another user (the agent's).
    pub any_owner: bool,
}

impl Options {
    /// Promote: a temporary repository of its own, nothing from the operator's config.
    pub const fn isolated() -> Self {
        Self {
            isolated: true,
            any_owner: false,
        }
    }

    /// The worker: the operator's config applies; the workspace may belong to the agent's user.
    pub const fn workspace() -> Self {
        Self {
            isolated: false,
            any_owner: true,
        }
    }
}

/// How one command runs, beyond its arguments.
#[derive(Default)]
pub struct Call<'a> {
    /// Talks to the remote: gets the auth environment of [`Git::with_token`].
    pub network: bool,
    /// Written to git's stdin (otherwise `/dev/null`).
    pub stdin: Option<&'a [u8]>,
    /// Extra environment (author and committer identity, dates).
    pub env: &'a [(&'a str, &'a str)],
    /// Where stdout goes instead of [`Output::stdout`] (which is then empty).
    pub stdout: Option<std::fs::File>,
    /// Name of the step in a [`GitFailure`]; `git <first argument>` when absent.
    pub label: Option<&'a str>,
}

/// A git command that failed, with its (token-free) stderr. [`Display`](std::fmt::Display):
/// `git <step> failed (<status>): <the last lines of stderr>`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} failed ({status}): {}", self.quoted())]
pub struct GitFailure {
    what: String,
    status: String,
    stderr: String,
    started: bool,
}

impl GitFailure {
    /// The step: `git clone`, `git diff --name-only`, …
    pub fn what(&self) -> &str {
        &self.what
    }

    /// git's whole stderr, scrubbed.
    pub fn stderr(&self) -> &str {
        &self.stderr
    }

    /// git's message, trimmed to its last [`MAX_QUOTED`] bytes.
    pub fn quoted(&self) -> String {
        let s = self.stderr.trim();
        if s.len() <= MAX_QUOTED {
            return s.to_owned();
        }
        let mut start = s.len() - MAX_QUOTED;
        while !s.is_char_boundary(start) {
            start += 1;
        }
        format!("…{}", &s[start..])
    }

    /// The whole message, git's stderr on its own lines (the worker's run notes):
    /// `git clone failed (exit status: 128):\nfatal: …`.
    pub fn detailed(&self) -> String {
        let stderr = self.stderr.trim();
        if !self.started {
            format!("{}: {stderr}", self.what)
        } else if stderr.is_empty() {
            format!("{} failed ({})", self.what, self.status)
        } else {
            format!("{} failed ({}):\n{stderr}", self.what, self.status)
        }
    }
}

/// Why [`Git::diff_workspace`] failed. Messages are the worker's run notes.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("preparing the diff: {0}")]
    Prepare(std::io::Error),
    #[error("creating diff.patch: {0}")]
    CreatePatch(std::io::Error),
    #[error("{}", .0.detailed())]
    Git(GitFailure),
}

/// What changed in a workspace against its base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Paths (relative to the repository root) that differ from the base commit.
    pub files: Vec<String>,
    /// Whether the patch file holds a non-empty diff.
    pub has_patch: bool,
}

/// Author and committer of a commit written by [`Git::commit_tree`].
#[derive(Debug, Clone, Copy)]
pub struct Ident<'a> {
    pub name: &'a str,
    pub email: &'a str,
    /// Git's date format, e.g. `1700000100 +0000`.
    pub date: &'a str,
}

/// Runs git in one folder (or none) under the rules of the module documentation.
#[derive(Clone)]
pub struct Git {
    dir: Option<PathBuf>,
    options: Options,
    /// `GIT_CONFIG_*` variables carrying the auth header, for network calls.
    auth: Vec<(String, String)>,
    /// Removed from every message.
    secrets: Vec<SecretString>,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git")
            .field("dir", &self.dir)
            .field("options", &self.options)
            .field("auth", &!self.auth.is_empty())
            .finish_non_exhaustive()
    }
}

impl Git {
    /// git run in the current directory (for `clone`), without a token.
    pub fn new(options: Options) -> Self {
        Self {
            dir: None,
            options,
            auth: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// git run in `dir` (`git -C dir`).
    pub fn in_dir(options: Options, dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            ..Self::new(options)
        }
    }

    /// The same runner in another folder (keeps the token).
    pub fn at(&self, dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: Some(dir.into()),
            ..self.clone()
        }
    }

    /// Authenticates network calls to `url` with `token` ([`git_auth_env`]) and scrubs it, and
    /// any password in `url`, from every message.
    pub fn with_token(mut self, url: &str, token: Option<&SecretString>) -> Self {
        if let Some(t) = token {
            self.auth = git_auth_env(url, t);
            if !t.expose_secret().is_empty() {
                self.secrets.push(t.clone());
                self.secrets.push(SecretString::from(basic_credentials(t)));
            }
        }
        if let Some(p) = url_password(url) {
            self.secrets.push(SecretString::from(p.to_owned()));
        }
        self
    }

    /// `git <args>` on the local repository; a failure is a [`GitFailure`].
    pub async fn local(&self, args: &[&str]) -> Result<Output, GitFailure> {
        self.run(args.iter().copied(), Call::default()).await
    }

    /// `git <args>` talking to a remote (with the auth environment).
    pub async fn network(&self, args: &[&str]) -> Result<Output, GitFailure> {
        self.run(
            args.iter().copied(),
            Call {
                network: true,
                ..Call::default()
            },
        )
        .await
    }

    /// `git <args>` as `call` says. Succeeds only when git exits with 0.
    pub async fn run<I, S>(&self, args: I, call: Call<'_>) -> Result<Output, GitFailure>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let what = match call.label {
            Some(l) => l.to_owned(),
            None => format!(
                "git {}",
                args.first()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
        };
        let mut cmd = self.command(call.network);
        cmd.args(args.iter().map(AsRef::as_ref));
        for (k, v) in call.env {
            cmd.env(k, v);
        }
        cmd.stdin(if call.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(call.stdout.map_or_else(Stdio::piped, Stdio::from))
        .stderr(Stdio::piped());
        let fail = |started: bool, status: String, stderr: String| GitFailure {
            what: what.clone(),
            status,
            stderr: self.scrub(stderr),
            started,
        };
        let spawned = cmd.spawn();
        // The command holds a copy of a stdout file until dropped.
        drop(cmd);
        let mut child = spawned.map_err(|e| {
            fail(
                false,
                "not started".into(),
                format!("cannot run git (is it on PATH?): {e}"),
            )
        })?;
        if let (Some(data), Some(mut pipe)) = (call.stdin, child.stdin.take()) {
            pipe.write_all(data)
                .await
                .map_err(|e| fail(true, "stdin".into(), e.to_string()))?;
            drop(pipe);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(true, "wait".into(), e.to_string()))?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(fail(
                true,
                out.status.to_string(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }

    /// The hardened command, before its arguments.
    fn command(&self, network: bool) -> Command {
        let mut cmd = Command::new("git");
        if let Some(d) = &self.dir {
            cmd.arg("-C").arg(d);
        }
        cmd.args(HARDENING);
        if self.options.any_owner {
            cmd.args(["-c", "safe.directory=*"]);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .kill_on_drop(true);
        if self.options.isolated {
            cmd.env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("LC_ALL", "C")
                .env_remove("GIT_CONFIG_COUNT")
                .env_remove("GIT_CONFIG_PARAMETERS");
        }
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        if network {
            cmd.envs(self.auth.iter().map(|(k, v)| (k, v)));
        }
        cmd
    }

    /// `s` without the token (raw or in its Basic form) or the URL's password.
    fn scrub(&self, s: String) -> String {
        self.secrets
            .iter()
            .map(ExposeSecret::expose_secret)
            .filter(|t| !t.is_empty())
            .fold(s, |s, t| s.replace(t, "[REDACTED]"))
    }

    // ---- The worker's operations ----

    /// `git clone --quiet --depth 1 --no-tags [--branch=B] -- URL dest` (network). `--branch=B`
    /// keeps a branch that starts with '-' a value, and `--` a URL that does, never an option.
    pub async fn clone_shallow(&self, url: &str, branch: Option<&str>, dest: &Path) -> Result<(), GitFailure> {
        let mut args: Vec<&OsStr> = ["clone", "--quiet", "--depth", "1", "--no-tags"]
            .map(OsStr::new)
            .to_vec();
        let branch = branch.map(|b| format!("--branch={b}"));
        if let Some(b) = &branch {
            args.push(OsStr::new(b));
        }
        args.extend([OsStr::new("--"), OsStr::new(url), dest.as_os_str()]);
        self.run(
            args,
            Call {
                network: true,
                ..Call::default()
            },
        )
        .await
        .map(drop)
    }

    /// `git rev-parse --verify --quiet HEAD`: `None` when HEAD has no commit (or git fails).
    pub async fn head_commit(&self) -> Option<String> {
        let out = self.local(&["rev-parse", "--verify", "--quiet", "HEAD"]).await.ok()?;
        let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!s.is_empty()).then_some(s)
    }

    /// Stages everything but `exclude` (literal paths) and `ignore` (globs, each also excluding
    /// what is below it), then writes `git diff --cached --binary --full-index <base>` to
    /// `patch`: binary-safe, new files included, appliable with `git apply` on a clone of the
    /// base. The same exclusions apply to the diff, so what someone else staged of them stays out
    /// too. Without a base (an unborn HEAD) the diff is against the empty tree.
    pub async fn diff_workspace(
        &self,
        base: Option<&str>,
        patch: &Path,
        exclude: &[&str],
        ignore: &[String],
    ) -> Result<Changes, DiffError> {
        let mut excludes: Vec<String> = exclude.iter().map(|p| format!(":(exclude){p}")).collect();
        for p in ignore {
            let p = p.trim_end_matches('/');
            excludes.push(format!(":(exclude,glob){p}"));
            excludes.push(format!(":(exclude,glob){p}/**"));
        }
        if let Some(ws) = &self.dir {
            // Attributes of highest precedence: no clean/smudge filter or ident expansion of the
            // agent's choosing runs while the files are staged (diff drivers are off by flags).
            let info = ws.join(".git").join("info");
            let _ = std::fs::create_dir_all(&info);
            std::fs::write(info.join("attributes"), "* -filter -ident\n").map_err(DiffError::Prepare)?;
        }

        let add = ["add", "--all", "--", "."].into_iter().map(str::to_owned);
        self.run(add.chain(excludes.iter().cloned()), Call::default())
            .await
            .map_err(DiffError::Git)?;

        let diff = ["diff", "--cached", "--no-ext-diff", "--no-textconv", "--no-color"];
        let with_base = |extra: &[&str]| -> Vec<String> {
            let mut a: Vec<String> = diff.iter().chain(extra).map(|s| (*s).to_owned()).collect();
            a.extend(base.map(str::to_owned));
            a.extend(["--".to_owned(), ".".to_owned()]);
            a.extend(excludes.iter().cloned());
            a
        };
        let file = std::fs::File::create(patch).map_err(DiffError::CreatePatch)?;
        self.run(
            with_base(&["--binary", "--full-index"]),
            Call {
                stdout: Some(file),
                ..Call::default()
            },
        )
        .await
        .map_err(DiffError::Git)?;

        let out = self
            .run(
                with_base(&["--name-only", "-z"]),
                Call {
                    label: Some("git diff --name-only"),
                    ..Call::default()
                },
            )
            .await
            .map_err(DiffError::Git)?;
        let files = out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        let has_patch = std::fs::metadata(patch).map(|m| m.len() > 0).unwrap_or(false);
        Ok(Changes { files, has_patch })
    }

    // ---- Promote's operations ----

    /// `git init --quiet --template= --initial-branch=B` (no template: no sample hooks).
    pub async fn init(&self, initial_branch: &str) -> Result<(), GitFailure> {
        let branch = format!("--initial-branch={initial_branch}");
        self.local(&["init", "--quiet", "--template=", &branch]).await.map(drop)
    }

    /// `git remote add NAME URL`.
    pub async fn add_remote(&self, name: &str, url: &str) -> Result<(), GitFailure> {
        self.local(&["remote", "add", name, url]).await.map(drop)
    }

    /// The commit `refname` points at on `remote` (`git ls-remote --quiet`), `None` when absent.
    /// This also proves the remote is reachable and takes the auth.
    pub async fn remote_ref(&self, remote: &str, refname: &str) -> Result<Option<String>, GitFailure> {
        let listed = self.network(&["ls-remote", "--quiet", remote, refname]).await?;
        Ok(String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .find(|(_, name)| *name == refname)
            .map(|(sha, _)| sha.to_owned()))
    }

    /// Exactly `commit` from `remote`: `git fetch --quiet --no-tags --depth 1 REMOTE COMMIT`.
    pub async fn fetch_commit(&self, remote: &str, commit: &str) -> Result<(), GitFailure> {
        self.network(&["fetch", "--quiet", "--no-tags", "--depth", "1", remote, commit])
            .await
            .map(drop)
    }

    /// `git read-tree TREE_ISH`: the index becomes `tree_ish` (no working tree is touched).
    pub async fn read_tree(&self, tree_ish: &str) -> Result<(), GitFailure> {
        self.local(&["read-tree", tree_ish]).await.map(drop)
    }

    /// `git apply --cached --binary --whitespace=nowarn PATCH`: the patch onto the index only,
    /// so no checkout filter runs.
    pub async fn apply_to_index(&self, patch: &Path) -> Result<(), GitFailure> {
        let args = [
            OsStr::new("apply"),
            OsStr::new("--cached"),
            OsStr::new("--binary"),
            OsStr::new("--whitespace=nowarn"),
            patch.as_os_str(),
        ];
        self.run(args, Call::default()).await.map(drop)
    }

    /// `git write-tree`: the index as a tree.
    pub async fn write_tree(&self) -> Result<String, GitFailure> {
        let out = self.local(&["write-tree"]).await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `git rev-parse REV`.
    pub async fn rev_parse(&self, rev: &str) -> Result<String, GitFailure> {
        let out = self.local(&["rev-parse", rev]).await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `git commit-tree TREE -p PARENT -F -` with `message` on stdin and `ident` as both author
    /// and committer (names, emails and dates), so the same input makes the same commit.
    pub async fn commit_tree(
        &self,
        tree: &str,
        parent: &str,
        message: &str,
        ident: Ident<'_>,
    ) -> Result<String, GitFailure> {
        let env = [
            ("GIT_AUTHOR_NAME", ident.name),
            ("GIT_AUTHOR_EMAIL", ident.email),
            ("GIT_AUTHOR_DATE", ident.date),
            ("GIT_COMMITTER_NAME", ident.name),
            ("GIT_COMMITTER_EMAIL", ident.email),
            ("GIT_COMMITTER_DATE", ident.date),
        ];
        let out = self
            .run(
                ["commit-tree", tree, "-p", parent, "-F", "-"],
                Call {
                    stdin: Some(message.as_bytes()),
                    env: &env,
                    ..Call::default()
                },
            )
            .await?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// `git push --quiet --no-verify REMOTE REFSPEC` (never forced).
    pub async fn push(&self, remote: &str, refspec: &str) -> Result<(), GitFailure> {
        self.network(&["push", "--quiet", "--no-verify", remote, refspec])
            .await
            .map(drop)
    }
}

/// Environment variables that make git send `token` to `url`'s origin as HTTP Basic auth
/// (`x-access-token:TOKEN`) with no credential helper. Empty for remotes other than `https://` (or
/// `http://` to a loopback host, which validation allows for local servers).
pub fn git_auth_env(url: &str, token: &SecretString) -> Vec<(String, String)> {
    let Some(origin) = http_origin(url) else {
        return Vec::new();
    };
    vec![
        ("GIT_CONFIG_COUNT".into(), "2".into()),
        ("GIT_CONFIG_KEY_0".into(), "credential.helper".into()),
        ("GIT_CONFIG_VALUE_0".into(), String::new()),
        ("GIT_CONFIG_KEY_1".into(), format!("http.{origin}.extraHeader")),
        (
            "GIT_CONFIG_VALUE_1".into(),
            format!("Authorization: Basic {}", basic_credentials(token)),
        ),
    ]
}

/// `base64("x-access-token:TOKEN")`, the Basic credentials git sends.
fn basic_credentials(token: &SecretString) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{}", token.expose_secret()))
}

/// `scheme://host[:port]/` of an `https://` or `http://` URL, the scope of the auth header.
fn http_origin(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if !matches!(u.scheme(), "https" | "http") {
        return None;
    }
    let host = u.host_str().filter(|h| !h.is_empty())?;
    Some(match u.port() {
        Some(p) => format!("{}://{host}:{p}/", u.scheme()),
        None => format!("{}://{host}/", u.scheme()),
    })
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
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_found() {
        assert_eq!(url_password("https://x:tok3n@github.com/a/b.git"), Some("tok3n"));
        assert_eq!(url_password("https://github.com/a/b.git"), None);
        assert_eq!(url_password("https://user@github.com/a/b.git"), None);
        assert_eq!(url_password("git@github.com:a/b.git"), None);
        assert_eq!(url_password("https://h/a?x=y:z@w"), None);
    }

    #[test]
    fn auth_env_is_scoped_to_the_origin_and_holds_no_raw_token() {
        let token = SecretString::from("s3cret");
        let env = git_auth_env("https://github.com:8443/o/r.git", &token);
        assert_eq!(env[3].1, "http.https://github.com:8443/.extraHeader");
        let expected = base64::engine::general_purpose::STANDARD.encode("x-access-token:s3cret");
        assert_eq!(env[4].1, format!("Authorization: Basic {expected}"));
        assert!(env.iter().all(|(k, v)| !k.contains("s3cret") && !v.contains("s3cret")));
        assert!(git_auth_env("git@github.com:o/r.git", &token).is_empty());
        assert!(git_auth_env("file:///tmp/r", &token).is_empty());
        assert_eq!(
            http_origin("http://127.0.0.1:9/x").as_deref(),
            Some("http://127.0.0.1:9/")
        );
    }

    #[test]
    fn messages_never_hold_the_token_the_basic_form_or_the_url_password() {
        let token = SecretString::from("s3cret");
        let git = Git::new(Options::isolated()).with_token("https://u:pa55@github.com/o/r.git", Some(&token));
        let basic = basic_credentials(&token);
        let scrubbed = git.scrub(format!("fatal: s3cret {basic} pa55 end"));
        assert_eq!(scrubbed, "fatal: [REDACTED] [REDACTED] [REDACTED] end");
        assert!(!format!("{git:?}").contains("s3cret") && !format!("{git:?}").contains(&basic));
    }

    #[test]
    fn failures_quote_the_end_of_long_messages() {
        let f = GitFailure {
            what: "git push".into(),
            status: "exit status: 1".into(),
            stderr: format!("{}tail", "é".repeat(400)),
            started: true,
        };
        let q = f.quoted();
        assert!(q.starts_with('…') && q.ends_with("tail") && q.len() <= MAX_QUOTED + '…'.len_utf8());
        assert!(f.to_string().starts_with("git push failed (exit status: 1): …"));
        assert!(f.detailed().starts_with("git push failed (exit status: 1):\né"));
    }
}
