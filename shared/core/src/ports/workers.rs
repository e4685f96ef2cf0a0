//! WorkerRegistry: workers report their slots, and per agent what they run and whether its
//! executor can take runs, so `GET /v1/fleet` can show the fleet.

use super::runs::StoreError;
use crate::domain::{ExecutorKind, WorkerId};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One worker process as it last reported itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: WorkerId,
    pub hostname: String,
    pub slots: u32,
    pub busy: u32,
    pub started_at: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Per agent the worker serves: its executor, the runs in flight and the executor's
    /// availability as the worker last saw it. Stores keep at most [`MAX_AGENT_LOADS`] of them
    /// (see [`cap_agent_loads`]); a report stored before this field existed reads as empty.
    pub agents: Vec<AgentLoad>,
}

/// What one worker reports of one agent (of one executor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentLoad {
    pub agent: String,
    pub executor: ExecutorKind,
    /// Runs of this agent the worker is handling now.
    pub in_flight: u32,
    /// Whether the executor can take runs of this agent now; `None`: not known (not probed yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<bool>,
    /// What the executor said (e.g. "2 of 3 hosts online"); never a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Most agent loads a store keeps of one report.
pub const MAX_AGENT_LOADS: usize = 64;
/// Longest agent name or detail (bytes) a store keeps.
pub const MAX_AGENT_LOAD_TEXT: usize = 256;

/// What a store keeps of a report's agent loads, the one rule every
/// [`WorkerRegistry::report_worker`] applies first: the first [`MAX_AGENT_LOADS`] entries whose
/// agent name is 1..=[`MAX_AGENT_LOAD_TEXT`] bytes (a longer name is no agent of the registry,
/// and cutting it would name another), with each detail cut to [`MAX_AGENT_LOAD_TEXT`] bytes on
/// a character boundary. A presence report is never refused for its loads: the worker stays
/// listed.
pub fn cap_agent_loads(loads: &[AgentLoad]) -> Vec<AgentLoad> {
    loads
        .iter()
        .filter(|l| !l.agent.is_empty() && l.agent.len() <= MAX_AGENT_LOAD_TEXT)
        .take(MAX_AGENT_LOADS)
        .map(|l| AgentLoad {
            detail: l.detail.as_deref().map(|d| cut(d, MAX_AGENT_LOAD_TEXT).to_owned()),
            ..l.clone()
        })
        .collect()
}

/// `s` cut to at most `max` bytes, on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[async_trait]
pub trait WorkerRegistry: Send + Sync + 'static {
    /// Records (or refreshes) a worker's report, its agent loads as [`cap_agent_loads`] keeps
    /// them.
    async fn report_worker(&self, info: &WorkerInfo) -> Result<(), StoreError>;

    /// Workers seen since `since`.
    async fn live_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerInfo>, StoreError>;

    /// Removes a worker that is shutting down cleanly.
    async fn remove_worker(&self, id: &WorkerId) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(agent: &str, detail: Option<&str>) -> AgentLoad {
        AgentLoad {
            agent: agent.into(),
            executor: ExecutorKind::Ssm,
            in_flight: 2,
            available: Some(true),
            detail: detail.map(Into::into),
        }
    }

    #[test]
    fn loads_are_capped_in_count_and_length() {
        let mut loads: Vec<AgentLoad> = (0..MAX_AGENT_LOADS + 5).map(|i| load(&format!("a{i}"), None)).collect();
        loads.insert(0, load("", None));
        loads.insert(1, load(&"n".repeat(MAX_AGENT_LOAD_TEXT + 1), None));
        // 'é' is two bytes: a cut at 256 would split the last one.
        loads.insert(2, load("long", Some(&format!("x{}", "é".repeat(200)))));
        let kept = cap_agent_loads(&loads);
        assert_eq!(kept.len(), MAX_AGENT_LOADS);
        assert_eq!(kept[0].agent, "long");
        let detail = kept[0].detail.as_deref().expect("detail");
        assert_eq!(detail.len(), MAX_AGENT_LOAD_TEXT - 1);
        assert!(detail.starts_with('x') && detail.ends_with('é'));
        assert_eq!(kept[1], load("a0", None));
        assert_eq!(
            cap_agent_loads(&[load("ok", Some("fine"))]),
            vec![load("ok", Some("fine"))]
        );
    }

    #[test]
    fn loads_round_trip_as_json_and_old_shapes_read() {
        let l = load("claude", Some("2 of 3 hosts online"));
        let back: AgentLoad = serde_json::from_str(&serde_json::to_string(&l).expect("json")).expect("back");
        assert_eq!(back, l);
        let bare: AgentLoad =
            serde_json::from_str(r#"{"agent":"codex","executor":"process","in_flight":0}"#).expect("bare");
        assert_eq!((bare.available, bare.detail), (None, None));
    }
}
