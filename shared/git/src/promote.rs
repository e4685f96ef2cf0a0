//! Promote: turns a finished run's `diff.patch` into a commit on a new branch of the run's
//! repository, pushed, and optionally a GitHub pull request.
//!
//! Everything goes through the `git` CLI (`tokio::process`) in a temporary repository: fetch
//! exactly the base commit the agent started from, apply the patch to the index (no working tree,
//! so no checkout filters or hooks run), write a commit whose author, committer and dates are
//! fixed (the run's `finished_at`), so the same run always makes the same commit sha, then push
//! it to `refs/heads/<branch>` unless the branch already holds it. Nothing is ever force-pushed.
//!
//! The tenant's `GIT_TOKEN` secret authenticates `https://` remotes (and `http://` to a loopback
//! host) as an HTTP `Authorization: Basic` header handed to git through `GIT_CONFIG_*`
//! environment variables, scoped to the remote's origin: never in a URL, an argument or a log.
//! Every git command runs through [`crate::runner::Git`] with [`Options::isolated`]: hooks,
//! fsmonitor, `ext::` and the operator's git config off, messages scrubbed of the token.

use crate::runner::{Git, GitFailure, Ident, Options};
use outpost_core::domain::run_files::Summary;
use outpost_core::domain::validation::check_branch;
use outpost_core::domain::{RepoSpec, Run, RunStatus, ValidationError};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

pub use crate::runner::git_auth_env;

/// Name of the tenant secret holding a git token for `https://` remotes.
pub const GIT_TOKEN_SECRET: &str = "GIT_TOKEN";
/// Author and committer of promoted commits.
pub const COMMIT_NAME: &str = "Outpost";
pub const COMMIT_EMAIL: &str = "outpost@noreply.invalid";
/// The GitHub REST API used for pull requests unless the settings name another
/// (`--github-api-url`, for GitHub Enterprise and tests).
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com";
/// Longest subject line of a promoted commit, in characters.
const MAX_SUBJECT_CHARS: usize = 72;

/// Why a run could not be promoted. Messages never hold a token.
#[derive(Debug, thiserror::Error)]
pub enum PromoteError {
    /// Not succeeded, no repository, no changes, or artifacts that do not allow it.
    #[error("the run cannot be promoted: {0}")]
    NotPromotable(String),
    /// The requested branch name breaks git's rules.
    #[error(transparent)]
    BadBranch(ValidationError),
    /// The patch does not apply to the base, or the branch exists with another commit.
    #[error("{0}")]
    Conflict(String),
    /// The base commit can no longer be fetched from the remote (history rewritten).
    #[error("{0}")]
    BaseMoved(String),
    /// The remote cannot be reached, refuses the credentials, or refuses the push.
    #[error("{0}")]
    RemoteUnavailable(String),
    /// git is missing, or a local step failed.
    #[error("promote failed: {0}")]
    Local(String),
}

/// Where a promoted run's changes now are (the REST API answers it as `PromoteResult`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promoted {
    pub run_id: String,
    /// The branch pushed to the run's repository.
    pub branch: String,
    /// The commit on `branch` holding the run's changes.
    pub commit: String,
    /// The commit the agent started from.
    pub base_commit: String,
    /// A web page comparing the base with the branch, when the remote's host is known.
    pub compare_url: Option<String>,
    /// `false` when the branch already held this very commit.
    pub pushed: bool,
    /// The pull request opened for the branch, when asked for and possible.
    pub pull_request_url: Option<String>,
}

/// What to promote: the run, what its artifacts say, and the request.
pub struct PromoteInput<'a> {
    pub run: &'a Run,
    /// The run's `diff.patch`.
    pub patch: &'a [u8],
    /// The commit the agent started from (`base_commit` of `summary.json`).
    pub base_commit: &'a str,
    /// Branch to push; `outpost/{run-id}` when absent.
    pub branch: Option<&'a str>,
    /// The tenant's `GIT_TOKEN`, if set.
    pub token: Option<&'a SecretString>,
}

/// Settings of promote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromoteOptions {
    /// Base URL of the GitHub REST API, for pull requests.
    pub github_api: String,
    /// Open (or find) a pull request when the remote is on GitHub and a token is set.
    pub pull_requests: bool,
}

impl Default for PromoteOptions {
    fn default() -> Self {
        Self {
            github_api: DEFAULT_GITHUB_API.to_owned(),
            pull_requests: true,
        }
    }
}

/// The run's repository, if the run can be promoted at all (succeeded, with a repository).
pub fn check_promotable(run: &Run) -> Result<&RepoSpec, PromoteError> {
    if run.status != RunStatus::Succeeded {
        return Err(PromoteError::NotPromotable(format!(
            "run {} is {}; only a succeeded run can be promoted",
            run.id, run.status
        )));
    }
    run.repo.as_ref().ok_or_else(|| {
        PromoteError::NotPromotable(format!("run {} has no repository; there is nothing to push to", run.id))
    })
}

/// The branch to push: `requested`, checked, or `outpost/{run_id}`.
pub fn branch_name(run_id: &str, requested: Option<&str>) -> Result<String, PromoteError> {
    let branch = requested.map_or_else(|| format!("outpost/{run_id}"), str::to_owned);
    check_branch(&branch).map_err(PromoteError::BadBranch)?;
    Ok(branch)
}

/// The `base_commit` recorded in a run's `summary.json` (a [`Summary`]).
pub fn base_commit_from_summary(summary: &[u8]) -> Result<String, PromoteError> {
    let s: Summary = serde_json::from_slice(summary)
        .map_err(|e| PromoteError::NotPromotable(format!("the run's summary.json cannot be read: {e}")))?;
    let base = s.base_commit.ok_or_else(|| {
        PromoteError::NotPromotable("the run started from an empty repository (no base commit)".into())
    })?;
    if is_object_id(&base) {
        Ok(base)
    } else {
        Err(PromoteError::NotPromotable(
            "the run's summary.json holds no valid base commit".into(),
        ))
    }
}

/// 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_object_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Which hosting service a remote is on, for web links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    GitHub,
    GitLab,
    Bitbucket,
}

/// A remote on a known forge: its service and `owner/name` path (no `.git`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgeRepo {
    pub forge: Forge,
    pub host: String,
    pub path: String,
}

impl ForgeRepo {
    /// `(owner, name)`: the first path segment and the last.
    pub fn owner_and_name(&self) -> Option<(&str, &str)> {
        let (owner, _) = self.path.split_once('/')?;
        let (_, name) = self.path.rsplit_once('/')?;
        Some((owner, name))
    }
}

/// Parses `https://host/o/r(.git)`, `ssh://[user@]host[:port]/o/r(.git)` and `user@host:o/r(.git)`
/// remotes on github.com, gitlab.com and bitbucket.org.
pub fn forge_repo(url: &str) -> Option<ForgeRepo> {
    let (host, path) = if url.contains("://") {
        let u = url::Url::parse(url).ok()?;
        if !matches!(u.scheme(), "https" | "ssh" | "http") {
            return None;
        }
        (u.host_str()?.to_ascii_lowercase(), u.path().to_owned())
    } else {
        let (userhost, path) = url.split_once(':')?;
        let host = userhost.rsplit('@').next()?;
        (host.to_ascii_lowercase(), path.to_owned())
    };
    let host = host.strip_prefix("www.").unwrap_or(&host).to_owned();
    let forge = match host.as_str() {
        "github.com" => Forge::GitHub,
        "gitlab.com" => Forge::GitLab,
        "bitbucket.org" => Forge::Bitbucket,
        _ => return None,
    };
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path).trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    // GitLab nests groups (`group/sub/project`); GitHub and Bitbucket are `owner/name`.
    let depth_ok = match forge {
        Forge::GitLab => (2..=20).contains(&segments.len()),
        Forge::GitHub | Forge::Bitbucket => segments.len() == 2,
    };
    if !depth_ok || segments.iter().any(|s| s.is_empty() || *s == "." || *s == "..") {
        return None;
    }
    Some(ForgeRepo {
        forge,
        host,
        path: path.to_owned(),
    })
}

/// A web page comparing `base` (a branch or commit) with `branch`, for remotes on a known forge.
pub fn compare_url(remote: &str, base: &str, branch: &str) -> Option<String> {
    let r = forge_repo(remote)?;
    let (base, branch) = (url_escape(base), url_escape(branch));
    Some(match r.forge {
        Forge::GitHub => format!("https://{}/{}/compare/{base}...{branch}", r.host, r.path),
        Forge::GitLab => format!("https://{}/{}/-/compare/{base}...{branch}", r.host, r.path),
        Forge::Bitbucket => format!("https://{}/{}/branches/compare/{branch}%0D{base}", r.host, r.path),
    })
}

/// Percent-encodes what may not stand in a URL path as is (branch names keep their `/`).
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/@+!$,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The commit message: the task's first line, then the run.
pub fn commit_message(run: &Run, base: &str) -> String {
    let first = run
        .task
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("changes");
    let mut subject: String = first.chars().take(MAX_SUBJECT_CHARS).collect();
    if first.chars().count() > MAX_SUBJECT_CHARS {
        subject.pop();
        subject.push('…');
    }
    format!(
        "{subject}\n\nChanges made by the {} agent in Outpost run {}.\n\nOutpost-Run: {}\nOutpost-Base: {base}\n",
        run.agent, run.id, run.id
    )
}

/// Pushes the run's changes to a new branch of its repository; see the module documentation.
pub async fn promote(input: PromoteInput<'_>, opts: &PromoteOptions) -> Result<Promoted, PromoteError> {
    let run = input.run;
    let repo = check_promotable(run)?;
    if input.patch.iter().all(u8::is_ascii_whitespace) {
        return Err(PromoteError::NotPromotable(format!("run {} changed nothing", run.id)));
    }
    if !is_object_id(input.base_commit) {
        return Err(PromoteError::NotPromotable("the run has no valid base commit".into()));
    }
    if repo.url.starts_with('-') {
        return Err(PromoteError::NotPromotable(
            "the run's repository URL is not usable".into(),
        ));
    }
    let branch = branch_name(run.id.as_str(), input.branch)?;
    let finished = run
        .finished_at
        .ok_or_else(|| PromoteError::NotPromotable(format!("run {} has no finish time", run.id)))?;
    let base = input.base_commit;

    let tmp = tempfile::Builder::new()
        .prefix("outpost-promote-")
        .tempdir()
        .map_err(|e| PromoteError::Local(format!("cannot create a temporary folder: {e}")))?;
    let result = async {
        let dir = tmp.path().join("repo");
        let patch_file = tmp.path().join("diff.patch");
        tokio::fs::write(&patch_file, input.patch)
            .await
            .map_err(|e| PromoteError::Local(format!("cannot write the patch: {e}")))?;
        let git = Git::in_dir(Options::isolated(), &dir).with_token(&repo.url, input.token);
        let local = |f: GitFailure| PromoteError::Local(f.to_string());

        tokio::fs::create_dir(&dir)
            .await
            .map_err(|e| PromoteError::Local(format!("cannot create a temporary folder: {e}")))?;
        git.init("outpost-promote").await.map_err(local)?;
        git.add_remote("origin", &repo.url).await.map_err(local)?;

        // The branch on the remote (this also proves the remote is reachable and takes our auth).
        let refname = format!("refs/heads/{branch}");
        let existing = git
            .remote_ref("origin", &refname)
            .await
            .map_err(|f| PromoteError::RemoteUnavailable(remote_failure(&repo.url, &f, input.token.is_some())))?;

        // Exactly the base commit.
        if let Err(f) = git.fetch_commit("origin", base).await {
            return Err(if is_network_failure(f.stderr()) {
                PromoteError::RemoteUnavailable(remote_failure(&repo.url, &f, input.token.is_some()))
            } else {
                PromoteError::BaseMoved(format!(
                    "the run's base commit {base} can no longer be fetched from {} (was its history rewritten?); \
                     dispatch the task again on the current branch",
                    repo.url
                ))
            });
        }
        git.read_tree(base).await.map_err(local)?;
        if let Err(f) = git.apply_to_index(&patch_file).await {
            return Err(PromoteError::Conflict(format!(
                "the run's patch does not apply to its base commit {base}: {}",
                f.quoted()
            )));
        }
        let tree = git.write_tree().await.map_err(local)?;
        let base_tree = git.rev_parse(&format!("{base}^{{tree}}")).await.map_err(local)?;
        if base_tree == tree {
            return Err(PromoteError::NotPromotable(format!("run {} changed nothing", run.id)));
        }
        let date = format!("{} +0000", finished.timestamp());
        let ident = Ident {
            name: COMMIT_NAME,
            email: COMMIT_EMAIL,
            date: &date,
        };
        let message = commit_message(run, base);
        let commit = git.commit_tree(&tree, base, &message, ident).await.map_err(local)?;

        let pushed = match existing {
            Some(sha) if sha == commit => false,
            Some(sha) => {
                return Err(PromoteError::Conflict(format!(
                    "branch {branch} already exists on the remote at {sha}, not at this run's commit {commit}; \
                     pick another branch name"
                )))
            }
            None => {
                let refspec = format!("{commit}:{refname}");
                if let Err(f) = git.push("origin", &refspec).await {
                    return Err(
                        if f.stderr().contains("[rejected]") || f.stderr().contains("already exists") {
                            PromoteError::Conflict(format!(
                                "branch {branch} was created on the remote meanwhile with another commit: {}",
                                f.quoted()
                            ))
                        } else {
                            PromoteError::RemoteUnavailable(remote_failure(&repo.url, &f, input.token.is_some()))
                        },
                    );
                }
                true
            }
        };
        tracing::info!(run_id = %run.id, %branch, %commit, pushed, "run promoted");
        Ok((commit, pushed))
    }
    .await;
    // A fetched tree can be large: remove it off the async threads.
    let _ = tokio::task::spawn_blocking(move || drop(tmp)).await;
    let (commit, pushed) = result?;

    let base_name = repo.branch.as_deref().unwrap_or(base);
    let mut out = Promoted {
        run_id: run.id.to_string(),
        compare_url: compare_url(&repo.url, base_name, &branch),
        branch,
        commit,
        base_commit: base.to_owned(),
        pushed,
        pull_request_url: None,
    };
    if let (true, Some(token), Some(gh)) = (
        opts.pull_requests,
        input.token,
        forge_repo(&repo.url).filter(|r| r.forge == Forge::GitHub),
    ) {
        let pr = PullRequest {
            head: &out.branch,
            base: repo.branch.as_deref(),
            title: commit_message(run, base).lines().next().unwrap_or_default().to_owned(),
            body: format!(
                "Changes made by the `{}` agent in Outpost run `{}`.\n\nBase commit: {base}\n",
                run.agent, run.id
            ),
        };
        match open_pull_request(&opts.github_api, &gh, token, &pr).await {
            Ok(url) => out.pull_request_url = Some(url),
            Err(e) => {
                tracing::warn!(run_id = %run.id, error = %e, "could not open a pull request; the branch is pushed")
            }
        }
    }
    Ok(out)
}

/// A pull request to open: `head` into `base` (the repository's default branch when `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest<'a> {
    pub head: &'a str,
    pub base: Option<&'a str>,
    pub title: String,
    pub body: String,
}

/// Why a pull request could not be opened (no token in the message).
#[derive(Debug, thiserror::Error)]
pub enum PullRequestError {
    #[error("GitHub API request failed: {0}")]
    Http(String),
    #[error("GitHub API answered {status}: {message}")]
    Api { status: u16, message: String },
    #[error("not a GitHub owner/name repository: {0}")]
    BadRepo(String),
}

/// Opens a pull request on GitHub (`POST {api}/repos/{owner}/{repo}/pulls`) and returns its web
/// URL. If one is already open for `head`, returns that one.
pub async fn open_pull_request(
    api: &str,
    repo: &ForgeRepo,
    token: &SecretString,
    pr: &PullRequest<'_>,
) -> Result<String, PullRequestError> {
    let (owner, name) = repo
        .owner_and_name()
        .ok_or_else(|| PullRequestError::BadRepo(repo.path.clone()))?;
    let api = api.trim_end_matches('/');
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .user_agent(concat!("outpost/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PullRequestError::Http(e.to_string()))?;
    let get = |url: String| {
        http.get(url)
            .bearer_auth(token.expose_secret())
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
    };
    let base = match pr.base {
        Some(b) => b.to_owned(),
        None => {
            let v = send_json(get(format!("{api}/repos/{owner}/{name}"))).await?;
            v.get("default_branch")
                .and_then(|b| b.as_str())
                .ok_or_else(|| PullRequestError::Http("the repository has no default_branch".into()))?
                .to_owned()
        }
    };
    let body = serde_json::json!({ "title": pr.title, "head": pr.head, "base": base, "body": pr.body });
    let created = http
        .post(format!("{api}/repos/{owner}/{name}/pulls"))
        .bearer_auth(token.expose_secret())
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .json(&body);
    match send_json(created).await {
        Ok(v) => html_url(&v),
        Err(PullRequestError::Api { status: 422, message }) => {
            // Most often: a pull request for this branch exists already (a repeated promote).
            let open = send_json(
                get(format!("{api}/repos/{owner}/{name}/pulls"))
                    .query(&[("head", format!("{owner}:{}", pr.head)), ("state", "open".into())]),
            )
            .await?;
            match open.as_array().and_then(|a| a.first()) {
                Some(first) => html_url(first),
                None => Err(PullRequestError::Api { status: 422, message }),
            }
        }
        Err(e) => Err(e),
    }
}

fn html_url(v: &serde_json::Value) -> Result<String, PullRequestError> {
    v.get("html_url")
        .and_then(|u| u.as_str())
        .map(str::to_owned)
        .ok_or_else(|| PullRequestError::Http("the answer has no html_url".into()))
}

async fn send_json(req: reqwest::RequestBuilder) -> Result<serde_json::Value, PullRequestError> {
    let resp = req
        .send()
        .await
        .map_err(|e| PullRequestError::Http(e.without_url().to_string()))?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| PullRequestError::Http(e.without_url().to_string()))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned());
        return Err(PullRequestError::Api {
            status: status.as_u16(),
            message,
        });
    }
    serde_json::from_slice(&bytes).map_err(|e| PullRequestError::Http(format!("the answer is not JSON: {e}")))
}

/// Whether git's message says the remote could not be reached or refused us (as opposed to a
/// missing object).
fn is_network_failure(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    [
        "could not resolve host",
        "unable to access",
        "connection refused",
        "authentication failed",
        "could not read username",
        "could not read from remote repository",
        "timed out",
        "the requested url returned error: 401",
        "the requested url returned error: 403",
        "the requested url returned error: 5",
    ]
    .iter()
    .any(|p| s.contains(p))
        && !s.contains("not our ref")
}

/// The client's message for a remote that failed.
fn remote_failure(url: &str, f: &GitFailure, had_token: bool) -> String {
    let s = f.stderr().to_ascii_lowercase();
    let auth = s.contains("authentication failed")
        || s.contains("could not read username")
        || s.contains("returned error: 401")
        || s.contains("returned error: 403")
        || s.contains("permission denied");
    if auth {
        let hint = if had_token {
            "the tenant's GIT_TOKEN secret was refused"
        } else {
            "set the tenant secret GIT_TOKEN (PUT /v1/secrets/GIT_TOKEN) to a token that may push"
        };
        format!("the remote {url} refused authentication: {hint}")
    } else {
        format!("the remote {url} is unavailable: {}", f.quoted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use outpost_core::domain::{NewRun, RunId};
    use outpost_testkit::{git_ok, seed_repo};
    use std::path::Path;

    /// An origin repository with `main` (README.md, src/lib.txt) and its head commit.
    fn make_origin(dir: &Path) -> (String, String) {
        let url = seed_repo(dir);
        let head = git_ok(dir, &["rev-parse", "HEAD"]).trim().to_owned();
        (url, head)
    }

    /// The patch a worker would store: clone at `base`, apply `edit`, `git diff --cached --binary`.
    fn make_patch(tmp: &Path, url: &str, name: &str, edit: impl FnOnce(&Path)) -> Vec<u8> {
        let ws = tmp.join(name);
        let out = std::process::Command::new("git")
            .args(["clone", "--quiet", "--depth", "1", "--branch=main", url])
            .arg(&ws)
            .output()
            .expect("clone");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        edit(&ws);
        git_ok(&ws, &["add", "-A"]);
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&ws)
            .args(["diff", "--cached", "--binary", "--full-index", "HEAD"])
            .output()
            .expect("diff");
        out.stdout
    }

    fn run_for(url: &str, task: &str) -> Run {
        let mut run = Run::queued(NewRun {
            id: RunId::generate(),
            tenant: "acme".parse().expect("tenant"),
            agent: "fake".into(),
            task: task.into(),
            repo: Some(RepoSpec {
                url: url.into(),
                branch: Some("main".into()),
            }),
            timeout_secs: 60,
            idle_timeout_secs: None,
            created_at: chrono::Utc.timestamp_opt(1_700_000_000, 0).single().expect("time"),
        });
        run.status = RunStatus::Succeeded;
        run.finished_at = chrono::Utc.timestamp_opt(1_700_000_100, 0).single();
        run
    }

    fn binary() -> Vec<u8> {
        (0..=255u8).cycle().take(3000).collect()
    }

    fn no_pr() -> PromoteOptions {
        PromoteOptions {
            pull_requests: false,
            ..PromoteOptions::default()
        }
    }

    #[test]
    fn forges_and_compare_urls() {
        let gh = "https://github.com/o/r/compare/main...outpost/run_1";
        for url in [
            "https://github.com/o/r.git",
            "https://github.com/o/r",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
        ] {
            assert_eq!(compare_url(url, "main", "outpost/run_1").as_deref(), Some(gh), "{url}");
        }
        assert_eq!(
            compare_url("git@gitlab.com:g/sub/p.git", "abc", "b").as_deref(),
            Some("https://gitlab.com/g/sub/p/-/compare/abc...b")
        );
        assert_eq!(
            compare_url("https://bitbucket.org/o/r.git", "main", "x#y").as_deref(),
            Some("https://bitbucket.org/o/r/branches/compare/x%23y%0Dmain")
        );
        assert_eq!(compare_url("file:///tmp/r", "main", "b"), None);
        assert_eq!(compare_url("https://example.com/o/r.git", "main", "b"), None);
        assert_eq!(compare_url("https://github.com/o", "main", "b"), None);
        let r = forge_repo("git@github.com:acme/app.git").expect("github");
        assert_eq!(r.owner_and_name(), Some(("acme", "app")));
    }

    #[test]
    fn branch_summary_and_auth_env() {
        assert_eq!(branch_name("run_X", None).expect("default"), "outpost/run_X");
        assert_eq!(branch_name("run_X", Some("feat/a")).expect("given"), "feat/a");
        assert!(matches!(
            branch_name("run_X", Some("a..b")),
            Err(PromoteError::BadBranch(_))
        ));

        // summary.json as the worker writes it (`run_files::Summary`), with the base given.
        let summary = |base: Option<&str>| {
            let mut s = serde_json::json!({
                "run_id": "r", "agent": "fake", "status": "succeeded", "exit_code": 0,
                "failure_reason": null, "duration_ms": 1, "attempts": 1, "changed_files": ["a"],
                "output_bytes": 0, "redactions": 0
            });
            if let Some(b) = base {
                s["base_commit"] = b.into();
            }
            serde_json::to_vec(&s).expect("json")
        };
        let sha = "a".repeat(40);
        assert_eq!(base_commit_from_summary(&summary(Some(&sha))).expect("base"), sha);
        assert!(base_commit_from_summary(&summary(None)).is_err());
        assert!(base_commit_from_summary(&summary(Some("--upload-pack=x"))).is_err());
        assert!(base_commit_from_summary(br#"{"run_id":"r"}"#).is_err());
        assert!(base_commit_from_summary(br#"{"base_commit":"--upload-pack=x"}"#).is_err());
        assert!(base_commit_from_summary(b"not json").is_err());
        // git_auth_env's scoping is tested with the runner (runner.rs).
    }

    #[test]
    fn commit_messages_name_the_run_and_the_task() {
        let mut run = run_for("file:///x", "\n  Fix the flaky test\nand more detail");
        let msg = commit_message(&run, "abc");
        assert!(msg.starts_with("Fix the flaky test\n\n"), "{msg}");
        assert!(msg.contains(run.id.as_str()));
        run.task = "x".repeat(200);
        let subject = commit_message(&run, "abc")
            .lines()
            .next()
            .map(str::to_owned)
            .expect("subject");
        assert_eq!(subject.chars().count(), MAX_SUBJECT_CHARS);
    }

    #[tokio::test]
    async fn promote_pushes_a_deterministic_commit_once_and_never_overwrites() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = tmp.path().join("origin");
        let (url, base) = make_origin(&origin);
        let patch = make_patch(tmp.path(), &url, "ws1", |ws| {
            std::fs::write(ws.join("src/lib.txt"), "one\nTWO\nthree\n").expect("edit");
            std::fs::write(ws.join("logo.bin"), binary()).expect("binary");
        });
        let run = run_for(&url, "Shout the second line\nplease");
        let input = || PromoteInput {
            run: &run,
            patch: &patch,
            base_commit: &base,
            branch: None,
            token: None,
        };
        let first = promote(input(), &no_pr()).await.expect("promote");
        assert!(first.pushed);
        assert_eq!(first.branch, format!("outpost/{}", run.id));
        assert_eq!(first.base_commit, base);
        assert_eq!(first.compare_url, None);
        let on_origin = git_ok(&origin, &["rev-parse", &format!("refs/heads/{}", first.branch)]);
        assert_eq!(on_origin.trim(), first.commit);
        let shown = git_ok(&origin, &["show", &format!("{}:src/lib.txt", first.commit)]);
        assert_eq!(shown, "one\nTWO\nthree\n");
        let parent = git_ok(&origin, &["rev-parse", &format!("{}^", first.commit)]);
        assert_eq!(parent.trim(), base);
        let log = git_ok(&origin, &["log", "-1", "--format=%an <%ae>%n%B", &first.commit]);
        assert!(
            log.starts_with("Outpost <outpost@noreply.invalid>\nShout the second line\n"),
            "{log}"
        );
        assert!(log.contains(run.id.as_str()), "{log}");
        let blob = std::process::Command::new("git")
            .arg("-C")
            .arg(&origin)
            .args(["cat-file", "blob", &format!("{}:logo.bin", first.commit)])
            .output()
            .expect("cat-file");
        assert_eq!(blob.stdout, binary());

        // Again: the same commit, nothing pushed.
        let again = promote(input(), &no_pr()).await.expect("promote again");
        assert_eq!((again.commit.as_str(), again.pushed), (first.commit.as_str(), false));

        // Another run's changes onto the same branch: refused, the branch is untouched.
        let other_patch = make_patch(tmp.path(), &url, "ws2", |ws| {
            std::fs::write(ws.join("README.md"), "bye\n").expect("edit");
        });
        let other = run_for(&url, "Say bye");
        let err = promote(
            PromoteInput {
                run: &other,
                patch: &other_patch,
                base_commit: &base,
                branch: Some(&first.branch),
                token: None,
            },
            &no_pr(),
        )
        .await
        .expect_err("conflict");
        assert!(matches!(err, PromoteError::Conflict(_)), "{err:?}");
        let on_origin = git_ok(&origin, &["rev-parse", &format!("refs/heads/{}", first.branch)]);
        assert_eq!(on_origin.trim(), first.commit);

        // A patch that does not apply to the base.
        let bogus = b"diff --git a/src/lib.txt b/src/lib.txt\n--- a/src/lib.txt\n+++ b/src/lib.txt\n@@ -1,3 +1,3 @@\n-uno\n-dos\n+x\n tres\n";
        let err = promote(
            PromoteInput {
                run: &other,
                patch: bogus,
                base_commit: &base,
                branch: Some("elsewhere"),
                token: None,
            },
            &no_pr(),
        )
        .await
        .expect_err("does not apply");
        assert!(matches!(err, PromoteError::Conflict(_)), "{err:?}");
        assert!(git_ok(&origin, &["branch", "--list", "elsewhere"]).trim().is_empty());
    }

    #[tokio::test]
    async fn moved_base_unreachable_remote_and_unpromotable_runs_fail_cleanly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let origin = tmp.path().join("origin");
        let (url, base) = make_origin(&origin);
        let patch = make_patch(tmp.path(), &url, "ws", |ws| {
            std::fs::write(ws.join("README.md"), "changed\n").expect("edit");
        });
        let run = run_for(&url, "edit");

        let mut failed = run.clone();
        failed.status = RunStatus::Failed;
        let mut no_repo = run.clone();
        no_repo.repo = None;
        for r in [&failed, &no_repo] {
            let input = PromoteInput {
                run: r,
                patch: &patch,
                base_commit: &base,
                branch: None,
                token: None,
            };
            let err = promote(input, &no_pr()).await.expect_err("not promotable");
            assert!(matches!(err, PromoteError::NotPromotable(_)), "{err:?}");
        }
        let input = PromoteInput {
            run: &run,
            patch: b"",
            base_commit: &base,
            branch: None,
            token: None,
        };
        let err = promote(input, &no_pr()).await.expect_err("empty patch");
        assert!(matches!(err, PromoteError::NotPromotable(_)), "{err:?}");

        let mut gone = run.clone();
        gone.repo = Some(RepoSpec {
            url: format!("file://{}", tmp.path().join("missing").display()),
            branch: None,
        });
        let input = PromoteInput {
            run: &gone,
            patch: &patch,
            base_commit: &base,
            branch: None,
            token: None,
        };
        let err = promote(input, &no_pr()).await.expect_err("unreachable");
        assert!(matches!(err, PromoteError::RemoteUnavailable(_)), "{err:?}");

        // Rewrite origin's history so the base commit is gone.
        git_ok(&origin, &["commit", "--quiet", "--amend", "-m", "rewritten"]);
        git_ok(&origin, &["reflog", "expire", "--expire=now", "--all"]);
        git_ok(&origin, &["gc", "--quiet", "--prune=now"]);
        let input = PromoteInput {
            run: &run,
            patch: &patch,
            base_commit: &base,
            branch: None,
            token: None,
        };
        let err = promote(input, &no_pr()).await.expect_err("moved base");
        assert!(matches!(err, PromoteError::BaseMoved(_)), "{err:?}");
    }

    /// A GitHub API stand-in: `GET /repos/o/r` and `POST /repos/o/r/pulls`, checking the token.
    async fn fake_github(seen: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>) -> String {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, post};
        let auth_ok = |h: &HeaderMap| h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer ghp_test");
        let app = axum::Router::new()
            .route(
                "/repos/o/r",
                get(move |h: HeaderMap| async move {
                    if !auth_ok(&h) {
                        return (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(serde_json::json!({"message": "Bad credentials"})),
                        );
                    }
                    (
                        StatusCode::OK,
                        axum::Json(serde_json::json!({"default_branch": "trunk"})),
                    )
                }),
            )
            .route(
                "/repos/o/r/pulls",
                post(
                    move |h: HeaderMap, axum::Json(body): axum::Json<serde_json::Value>| async move {
                        if !auth_ok(&h) {
                            return (
                                StatusCode::UNAUTHORIZED,
                                axum::Json(serde_json::json!({"message": "Bad credentials"})),
                            );
                        }
                        seen.lock().expect("lock").push(body.clone());
                        let head = body["head"].as_str().unwrap_or_default().to_owned();
                        (
                            StatusCode::CREATED,
                            axum::Json(
                                serde_json::json!({"html_url": format!("https://github.com/o/r/pull/{}", head.len())}),
                            ),
                        )
                    },
                ),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn pull_requests_are_opened_with_the_token() {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let api = fake_github(std::sync::Arc::clone(&seen)).await;
        let repo = forge_repo("https://github.com/o/r.git").expect("github");
        let pr = PullRequest {
            head: "outpost/run_1",
            base: None,
            title: "Fix it".into(),
            body: "body".into(),
        };
        let url = open_pull_request(&api, &repo, &SecretString::from("ghp_test"), &pr)
            .await
            .expect("pull request");
        assert_eq!(url, "https://github.com/o/r/pull/13");
        let bodies = seen.lock().expect("lock").clone();
        assert_eq!(bodies.len(), 1);
        assert_eq!(bodies[0]["head"], "outpost/run_1");
        assert_eq!(bodies[0]["base"], "trunk");
        assert_eq!(bodies[0]["title"], "Fix it");

        let err = open_pull_request(&api, &repo, &SecretString::from("wrong"), &pr)
            .await
            .expect_err("refused");
        assert!(matches!(err, PullRequestError::Api { status: 401, .. }), "{err:?}");
        assert!(!err.to_string().contains("wrong"));
    }
}
