//! Validation of dispatch input: task size, timeout and idle timeout ranges, repository URL and
//! branch name.
//! Each error names the field and says what is accepted.

use super::run::RepoSpec;

/// Bounds a dispatch must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DispatchLimits {
    pub task_max_chars: usize,
    pub timeout_min_secs: u32,
    pub timeout_max_secs: u32,
    pub body_max_bytes: usize,
    /// Whether repositories on the server's own machine are accepted: `file://` paths and
    /// `http://` to a loopback host. Workers clone them, and promote pushes to them, with the
    /// server's rights, so a deployment shared by tenants that do not trust each other turns this
    /// off (the AWS deployment does by default: `OUTPOST_ALLOW_LOCAL_REPOS`).
    pub allow_local_repos: bool,
}

impl Default for DispatchLimits {
    fn default() -> Self {
        Self {
            task_max_chars: 50_000,
            timeout_min_secs: 10,
            timeout_max_secs: 24 * 3600,
            body_max_bytes: 256 * 1024,
            allow_local_repos: true,
        }
    }
}

/// A field of a dispatch that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl DispatchLimits {
    pub fn check_task(&self, task: &str) -> Result<(), ValidationError> {
        let n = task.chars().count();
        if task.trim().is_empty() {
            return Err(ValidationError::new("task", "must not be empty"));
        }
        if n > self.task_max_chars {
            return Err(ValidationError::new(
                "task",
                format!("is {n} characters; the limit is {}", self.task_max_chars),
            ));
        }
        if task.contains('\0') {
            return Err(ValidationError::new("task", "must not contain NUL characters"));
        }
        Ok(())
    }

    pub fn check_timeout(&self, secs: u64) -> Result<u32, ValidationError> {
        if secs < u64::from(self.timeout_min_secs) || secs > u64::from(self.timeout_max_secs) {
            return Err(ValidationError::new(
                "timeout_secs",
                format!(
                    "is {secs}; it must be between {} and {} seconds",
                    self.timeout_min_secs, self.timeout_max_secs
                ),
            ));
        }
        Ok(secs as u32)
    }

    /// Checks an idle timeout (`idle_timeout_secs`): 1 second up to the longest timeout, and not
    /// above the run's timeout `timeout_secs` when given (the dispatch's, else the agent's
    /// default: the run would end first).
    pub fn check_idle_timeout(&self, secs: u64, timeout_secs: Option<u32>) -> Result<u32, ValidationError> {
        let max = u64::from(self.timeout_max_secs);
        if !(IDLE_TIMEOUT_MIN_SECS..=max).contains(&secs) {
            return Err(ValidationError::new(
                "idle_timeout_secs",
                format!("is {secs}; it must be between {IDLE_TIMEOUT_MIN_SECS} and {max} seconds"),
            ));
        }
        if let Some(timeout) = timeout_secs.filter(|&t| secs > u64::from(t)) {
            return Err(ValidationError::new(
                "idle_timeout_secs",
                format!("is {secs}; it must not be above timeout_secs ({timeout})"),
            ));
        }
        Ok(secs as u32)
    }
}

/// Shortest idle timeout a dispatch may ask for.
pub const IDLE_TIMEOUT_MIN_SECS: u64 = 1;

/// Checks a repository URL: `https://`, `ssh://`, `file://` or scp-like `user@host:path`.
/// Plain `http://` (except to a loopback host: a git server on the same machine), `git://`,
/// transport helpers (`ext::`) and URLs carrying a password are refused.
pub fn check_repo_url(raw: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new("repo", m.to_owned()));
    if raw.is_empty() || raw.len() > 2048 {
        return err("must be 1..=2048 characters");
    }
    if raw.starts_with('-') || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return err("must not start with '-' or contain spaces or control characters");
    }
    if let Some((scheme, _)) = raw.split_once("://") {
        let url = match url::Url::parse(raw) {
            Ok(u) => u,
            Err(e) => return err(&format!("is not a valid URL ({e})")),
        };
        match scheme {
            "http" if !is_loopback(&url) => err("plain http:// is allowed only to a loopback host; use https://"),
            "https" | "ssh" | "http" => {
                if url.host_str().is_none_or(str::is_empty) {
                    return err("needs a host");
                }
                if url.password().is_some() {
                    return err("must not carry a password or token; store the git token as a secret instead");
                }
                Ok(())
            }
            "file" => {
                if url.path().len() <= 1 {
                    return err("file:// URL needs a path");
                }
                Ok(())
            }
            _ => err("scheme must be https, ssh or file"),
        }
    } else if raw.contains("::") {
        err("transport helpers (such as ext::) are not allowed")
    } else if let Some((userhost, path)) = raw.split_once(':') {
        // scp-like syntax: [user@]host:path
        let host = userhost.rsplit('@').next().unwrap_or_default();
        if host.is_empty() || path.is_empty() || userhost.contains('/') {
            return err("must be https://, ssh://, file:// or user@host:path");
        }
        Ok(())
    } else {
        err("must be https://, ssh://, file:// or user@host:path")
    }
}

/// Whether `url`'s host is this machine (`localhost`, `127.0.0.0/8`, `::1`).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Checks a branch name against git's rules (`git check-ref-format --branch`).
pub fn check_branch(name: &str) -> Result<(), ValidationError> {
    let bad = |m: &str| {
        Err(ValidationError::new(
            "branch",
            format!("{name:?} is not a valid git branch name: {m}"),
        ))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("must be 1..=255 bytes");
    }
    if name.starts_with('-') {
        return bad("must not start with '-'");
    }
    if name == "@" || name == "HEAD" {
        return bad("is reserved");
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return bad("must not contain '..', '@{' or '//'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return bad("must not start or end with '/' or end with '.'");
    }
    if name
        .chars()
        .any(|c| c.is_ascii_control() || " ~^:?*[\\\x7f".contains(c))
    {
        return bad("must not contain spaces, control characters or any of ~ ^ : ? * [ \\");
    }
    for component in name.split('/') {
        if component.starts_with('.') || component.ends_with(".lock") {
            return bad("no part may start with '.' or end with '.lock'");
        }
    }
    Ok(())
}

/// Checks a whole repository spec.
pub fn check_repo(repo: &RepoSpec) -> Result<(), ValidationError> {
    check_repo_url(&repo.url)?;
    if let Some(b) = &repo.branch {
        check_branch(b)?;
    }
    Ok(())
}

/// Whether `raw` (a URL that passed [`check_repo_url`]) names a repository on this machine:
/// `file://`, or `http://` to a loopback host.
pub fn is_local_repo_url(raw: &str) -> bool {
    match raw.split_once("://") {
        Some(("file", _)) => true,
        Some(("http", _)) => url::Url::parse(raw).is_ok_and(|u| is_loopback(&u)),
        _ => false,
    }
}

impl DispatchLimits {
    /// [`check_repo`], and refuses local repositories unless [`Self::allow_local_repos`].
    pub fn check_repo(&self, repo: &RepoSpec) -> Result<(), ValidationError> {
        check_repo(repo)?;
        if !self.allow_local_repos && is_local_repo_url(&repo.url) {
            return Err(ValidationError::new(
                "repo",
                "repositories on the server's machine (file://, http:// to localhost) are disabled on this \
                 deployment; use an https:// or ssh:// remote"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_repositories_can_be_turned_off() {
        let repo = |url: &str| RepoSpec {
            url: url.to_owned(),
            branch: None,
        };
        let open = DispatchLimits::default();
        let shared = DispatchLimits {
            allow_local_repos: false,
            ..DispatchLimits::default()
        };
        for local in [
            "file:///srv/repo.git",
            "http://localhost:8080/r.git",
            "http://127.0.0.1/r.git",
        ] {
            assert!(open.check_repo(&repo(local)).is_ok(), "{local}");
            let e = shared.check_repo(&repo(local)).expect_err(local);
            assert_eq!(e.field, "repo");
            assert!(e.message.contains("disabled on this deployment"), "{e}");
        }
        for remote in [
            "https://github.com/o/r.git",
            "ssh://git@host/r.git",
            "git@github.com:o/r.git",
        ] {
            assert!(shared.check_repo(&repo(remote)).is_ok(), "{remote}");
        }
        // Bad input is still refused for what it is.
        assert!(shared.check_repo(&repo("http://example.com/r.git")).is_err());
    }

    #[test]
    fn task_bounds() {
        let l = DispatchLimits::default();
        assert!(l.check_task("x").is_ok());
        assert!(
            l.check_task(&"é".repeat(50_000)).is_ok(),
            "limit counts characters, not bytes"
        );
        assert_eq!(l.check_task(&"x".repeat(50_001)).map_err(|e| e.field), Err("task"));
        assert!(l.check_task("   ").is_err());
        assert!(l.check_task("a\0b").is_err());
    }

    #[test]
    fn timeout_bounds() {
        let l = DispatchLimits::default();
        assert_eq!(l.check_timeout(10), Ok(10));
        assert_eq!(l.check_timeout(86_400), Ok(86_400));
        assert!(l.check_timeout(9).is_err());
        assert!(l.check_timeout(86_401).is_err());
        assert!(l.check_timeout(u64::MAX).is_err());
    }

    #[test]
    fn idle_timeout_bounds() {
        let l = DispatchLimits::default();
        assert_eq!(l.check_idle_timeout(1, None), Ok(1));
        assert_eq!(l.check_idle_timeout(86_400, None), Ok(86_400));
        assert_eq!(
            l.check_idle_timeout(60, Some(60)),
            Ok(60),
            "equal to the timeout is fine"
        );
        for bad in [0, 86_401, u64::MAX] {
            let e = l.check_idle_timeout(bad, None).expect_err("out of range");
            assert_eq!(e.field, "idle_timeout_secs");
            assert!(e.message.contains("between 1 and 86400"), "{e}");
        }
        let e = l.check_idle_timeout(61, Some(60)).expect_err("above the timeout");
        assert_eq!(
            e.to_string(),
            "idle_timeout_secs: is 61; it must not be above timeout_secs (60)"
        );
    }

    #[test]
    fn repo_urls() {
        for ok in [
            "https://github.com/acme/app.git",
            "ssh://git@github.com/acme/app.git",
            "git@github.com:acme/app.git",
            "file:///tmp/repo.git",
            "http://127.0.0.1:8080/repo.git",
            "http://localhost/repo.git",
            "http://[::1]:9/r.git",
        ] {
            assert!(check_repo_url(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "http://github.com/acme/app.git",
            "http://10.0.0.1/app.git",
            "http://localhost.evil.com/app.git",
            "git://github.com/acme/app.git",
            "ext::sh -c touch% /tmp/pwned",
            "-uhttps://x",
            "https://user:token@github.com/acme/app.git",
            "ftp://x/y",
            "/tmp/repo",
            "",
            "https://",
        ] {
            assert!(check_repo_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn branch_names_follow_git() {
        for ok in ["main", "feature/x-1", "release-2026.11", "outpost/run_01ABC"] {
            assert!(check_branch(ok).is_ok(), "{ok} refused");
        }
        for bad in [
            "", "-x", "a..b", "a b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/", "a.", ".a", "a/.b",
            "a.lock", "a@{1}", "@", "a//b",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?} accepted");
        }
    }
}
