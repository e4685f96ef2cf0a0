//! Validation of a dispatch request against the agent registry and the dispatch limits, in field
//! order (agent, task, repo, branch, timeout, idle timeout); the first problem is reported with its
//! field.

use crate::error::ApiError;
use axum::http::StatusCode;
use outpost_api::DispatchRequest;
use outpost_core::{AgentRegistry, DispatchLimits, RepoSpec, ValidationError};

/// Longest part of a client's input quoted back in an error message.
const MAX_QUOTED: usize = 64;

/// A dispatch that passed validation: what the run record needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidDispatch {
    pub agent: String,
    pub task: String,
    pub repo: Option<RepoSpec>,
    pub timeout_secs: u32,
    /// `None`: the agent's own idle timeout applies.
    pub idle_timeout_secs: Option<u32>,
}

/// Checks `req`; unknown or disabled agents are 422 `unknown_agent`, every other problem is 422
/// `validation_failed` with the field.
pub fn validate_dispatch(
    req: DispatchRequest,
    agents: &AgentRegistry,
    limits: &DispatchLimits,
) -> Result<ValidDispatch, ApiError> {
    let Some(agent) = agents.get(&req.agent) else {
        let known = agents.enabled_names().join(", ");
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_agent",
            format!("agent: unknown agent {}; known agents: {known}", quote(&req.agent)),
        )
        .with_field("agent"));
    };
    limits.check_task(&req.task)?;
    let repo = match (req.repo, req.branch) {
        (Some(url), branch) => {
            let repo = RepoSpec { url, branch };
            limits.check_repo(&repo)?;
            Some(repo)
        }
        (None, Some(_)) => {
            return Err(ValidationError::new("branch", "needs a repo: a branch is checked out of the repo").into())
        }
        (None, None) => None,
    };
    let given_timeout = req.timeout_secs.map(|secs| limits.check_timeout(secs)).transpose()?;
    let timeout_secs = given_timeout.unwrap_or(agent.default_timeout_secs);
    let idle_timeout_secs = req
        .idle_timeout_secs
        // Against the run's timeout, the agent's default when the dispatch gives none: an idle
        // timeout above it could never fire.
        .map(|secs| limits.check_idle_timeout(secs, Some(timeout_secs)))
        .transpose()?;
    Ok(ValidDispatch {
        agent: agent.name.clone(),
        task: req.task,
        repo,
        timeout_secs,
        idle_timeout_secs,
    })
}

/// `s` in quotes, cut to a readable length.
fn quote(s: &str) -> String {
    let mut cut: String = s.chars().take(MAX_QUOTED).collect();
    if cut.len() < s.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(agent: &str, task: &str) -> DispatchRequest {
        DispatchRequest {
            agent: agent.into(),
            task: task.into(),
            repo: None,
            branch: None,
            timeout_secs: None,
            idle_timeout_secs: None,
        }
    }

    fn check(r: DispatchRequest) -> Result<ValidDispatch, ApiError> {
        validate_dispatch(r, &AgentRegistry::builtin(false), &DispatchLimits::default())
    }

    #[test]
    fn a_good_dispatch_takes_the_agent_default_timeout() {
        let v = check(req("claude", "fix the bug")).expect("valid");
        assert_eq!(v.timeout_secs, 1800);
        assert_eq!(v.idle_timeout_secs, None, "the agent's own idle timeout applies");
        assert_eq!(v.repo, None);
        let mut r = req("codex", "x");
        r.repo = Some("https://github.com/acme/app.git".into());
        r.branch = Some("main".into());
        r.timeout_secs = Some(60);
        let v = check(r).expect("valid");
        assert_eq!(v.timeout_secs, 60);
        assert_eq!(v.repo.and_then(|r| r.branch).as_deref(), Some("main"));
    }

    #[test]
    fn unknown_and_disabled_agents_list_the_known_ones() {
        for name in ["nope", "shell"] {
            let e = check(req(name, "x")).expect_err("refused");
            assert_eq!((e.status, e.code), (StatusCode::UNPROCESSABLE_ENTITY, "unknown_agent"));
            assert!(e.message.contains("claude, codex"), "{}", e.message);
            assert_eq!(e.field.as_deref(), Some("agent"));
        }
        let e = check(req(&"a".repeat(10_000), "x")).expect_err("refused");
        assert!(e.message.len() < 300, "long names are cut");
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |r: DispatchRequest| check(r).expect_err("refused").field;
        assert_eq!(field(req("claude", "")), Some("task".into()));
        assert_eq!(field(req("claude", &"x".repeat(50_001))), Some("task".into()));
        let mut r = req("claude", "x");
        r.repo = Some("http://insecure/x.git".into());
        assert_eq!(field(r), Some("repo".into()));
        let mut r = req("claude", "x");
        r.repo = Some("https://github.com/a/b".into());
        r.branch = Some("a..b".into());
        assert_eq!(field(r), Some("branch".into()));
        let mut r = req("claude", "x");
        r.branch = Some("main".into());
        assert_eq!(field(r), Some("branch".into()), "branch without repo");
        for t in [0, 9, 86_401, u64::MAX] {
            let mut r = req("claude", "x");
            r.timeout_secs = Some(t);
            assert_eq!(field(r), Some("timeout_secs".into()), "{t}");
        }
        for t in [0, 86_401, u64::MAX] {
            let mut r = req("claude", "x");
            r.idle_timeout_secs = Some(t);
            assert_eq!(field(r), Some("idle_timeout_secs".into()), "{t}");
        }
    }

    #[test]
    fn the_idle_timeout_is_kept_and_not_above_the_timeout() {
        let mut r = req("claude", "x");
        r.idle_timeout_secs = Some(1);
        assert_eq!(check(r).expect("valid").idle_timeout_secs, Some(1));
        let mut r = req("claude", "x");
        r.timeout_secs = Some(120);
        r.idle_timeout_secs = Some(120);
        let v = check(r).expect("valid");
        assert_eq!((v.timeout_secs, v.idle_timeout_secs), (120, Some(120)));
        let mut r = req("claude", "x");
        r.timeout_secs = Some(120);
        r.idle_timeout_secs = Some(121);
        let e = check(r).expect_err("above the timeout");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed")
        );
        assert_eq!(e.field.as_deref(), Some("idle_timeout_secs"));
        assert!(e.message.contains("not be above timeout_secs (120)"), "{}", e.message);
        // Without a timeout, against the agent's default (claude: 1800 s).
        let mut r = req("claude", "x");
        r.idle_timeout_secs = Some(1801);
        let e = check(r).expect_err("above the agent's default timeout");
        assert!(e.message.contains("(1800)"), "{}", e.message);
        // A bad timeout is reported first (field order).
        let mut r = req("claude", "x");
        r.timeout_secs = Some(5);
        r.idle_timeout_secs = Some(0);
        assert_eq!(check(r).expect_err("refused").field.as_deref(), Some("timeout_secs"));
    }
}
