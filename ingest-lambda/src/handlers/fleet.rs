//! `GET /v1/fleet`: the agents on offer (each with its executor, its runs in flight and whether
//! its executor can take runs, from the live workers' reports), the queue, running runs and the
//! workers seen lately.

use super::TAG_FLEET;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use outpost_api::{AgentView, ErrorBody, FleetStatus, QueueView};
use outpost_core::domain::ExecutorKind;
use outpost_core::ports::WorkerInfo;

#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = TAG_FLEET,
    summary = "Fleet status",
    description = "Enabled agents (each with its executor, its runs in flight and whether the executor \
                   can take runs now, as the live workers report), queue depth, runs in `running` \
                   state (all tenants), workers that reported recently and the sums of their slots.",
    responses(
        (status = 200, description = "The fleet", body = FleetStatus),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Store or queue unavailable", body = ErrorBody),
    )
)]
pub async fn fleet(State(state): State<AppState>, _tenant: Tenant) -> Result<Json<FleetStatus>, ApiError> {
    let backend = state.backend();
    let window = chrono::Duration::from_std(state.config().worker_seen_within).unwrap_or(chrono::Duration::MAX);
    let since = Utc::now()
        .checked_sub_signed(window)
        .unwrap_or(chrono::DateTime::<Utc>::MIN_UTC);
    let (depth, running, workers) = tokio::join!(
        backend.queue.depth(),
        backend.runs.count_running(),
        backend.workers.live_workers(since),
    );
    let (depth, running, workers) = (depth?, running?, workers?);
    let agents = state
        .agents()
        .enabled()
        .map(|a| {
            let load = AgentTotals::of(&workers, &a.name, a.executor);
            AgentView {
                name: a.name.clone(),
                description: a.description.clone(),
                key_env: a.key_env.clone(),
                key_aliases: a.key_aliases.clone(),
                default_timeout_secs: a.default_timeout_secs,
                idle_timeout_secs: a.idle_timeout_secs,
                verified_with: a.verified_with.clone(),
                sandbox: a.sandbox,
                network: a.network,
                allow_hosts: a.allow_hosts.iter().map(ToString::to_string).collect(),
                key_injection: a.key_injection.is_some(),
                executor: a.executor,
                in_flight: load.in_flight,
                available: load.available,
                availability: load.detail,
            }
        })
        .collect();
    let slots_total = workers.iter().map(|w| w.slots).fold(0u32, u32::saturating_add);
    let slots_busy = workers.iter().map(|w| w.busy).fold(0u32, u32::saturating_add);
    Ok(Json(FleetStatus {
        agents,
        queue: QueueView::from(depth),
        running,
        workers: workers.into_iter().map(Into::into).collect(),
        slots_total,
        slots_busy,
    }))
}

/// One agent's totals over the live workers' reports.
#[derive(Debug, Default, PartialEq, Eq)]
struct AgentTotals {
    in_flight: u32,
    available: Option<bool>,
    detail: Option<String>,
}

impl AgentTotals {
    /// `agent`'s runs in flight on all `workers` (whatever executor they report), and its
    /// availability from the reports of its configured `executor` only (a worker with another
    /// entry for it says nothing of this one): available if one says so (its detail: the first
    /// available report's), unavailable if some say it is and none available (the first one's
    /// reason), unknown if none says either.
    fn of(workers: &[WorkerInfo], agent: &str, executor: ExecutorKind) -> Self {
        let loads = || workers.iter().flat_map(|w| &w.agents).filter(|l| l.agent == agent);
        let in_flight = loads().map(|l| l.in_flight).fold(0u32, u32::saturating_add);
        let of_executor = || loads().filter(|l| l.executor == executor);
        let with = |available: bool| of_executor().filter(move |l| l.available == Some(available));
        let (available, detail) = if with(true).next().is_some() {
            (Some(true), with(true).find_map(|l| l.detail.clone()))
        } else if with(false).next().is_some() {
            (Some(false), with(false).find_map(|l| l.detail.clone()))
        } else {
            (None, None)
        };
        Self {
            in_flight,
            available,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_core::domain::WorkerId;
    use outpost_core::ports::workers::AgentLoad;

    /// Agent, executor, in flight, available, detail.
    type Load<'a> = (&'a str, ExecutorKind, u32, Option<bool>, Option<&'a str>);

    fn worker(loads: &[Load<'_>]) -> WorkerInfo {
        WorkerInfo {
            id: WorkerId::generate(),
            hostname: "box".into(),
            slots: 4,
            busy: 0,
            started_at: Utc::now(),
            last_seen: Utc::now(),
            agents: loads
                .iter()
                .map(|&(agent, executor, in_flight, available, detail)| AgentLoad {
                    agent: agent.into(),
                    executor,
                    in_flight,
                    available,
                    detail: detail.map(Into::into),
                })
                .collect(),
        }
    }

    #[test]
    fn totals_sum_in_flight_and_take_availability_from_the_configured_executor() {
        use ExecutorKind::{Ecs, Process, Ssm};
        let workers = [
            worker(&[
                ("codex", Ssm, 1, Some(false), Some("0 of 2 hosts online")),
                ("claude", Process, 2, Some(true), None),
            ]),
            worker(&[
                ("codex", Ssm, 2, Some(true), None),
                ("codex", Process, 1, Some(true), Some("stale entry")),
            ]),
            worker(&[("codex", Ssm, 0, Some(true), Some("1 of 2 hosts online"))]),
            worker(&[("gemini", Ecs, 0, Some(false), Some("task definition INACTIVE"))]),
            worker(&[("gemini", Ecs, 0, Some(false), Some("second"))]),
            worker(&[("fresh", Ecs, 0, None, None)]),
        ];
        let totals = |agent, executor| AgentTotals::of(&workers, agent, executor);
        let t = |in_flight, available, detail: Option<&str>| AgentTotals {
            in_flight,
            available,
            detail: detail.map(Into::into),
        };
        assert_eq!(totals("codex", Ssm), t(4, Some(true), Some("1 of 2 hosts online")));
        assert_eq!(totals("claude", Process), t(2, Some(true), None));
        assert_eq!(
            totals("gemini", Ecs),
            t(0, Some(false), Some("task definition INACTIVE"))
        );
        assert_eq!(totals("fresh", Ecs), t(0, None, None), "reported but not probed yet");
        assert_eq!(
            totals("claude", Ecs),
            t(2, None, None),
            "no worker reports its ecs entry"
        );
        assert_eq!(totals("nobody", Process), AgentTotals::default());
        assert_eq!(AgentTotals::of(&[], "codex", Ssm), AgentTotals::default());
    }
}
