//! `GET /v1/fleet`: the agents on offer, the queue, running runs and the workers seen lately.

use super::TAG_FLEET;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use chrono::Utc;
use outpost_api::{AgentView, ErrorBody, FleetStatus, QueueView};

#[utoipa::path(
    get,
    path = "/v1/fleet",
    tag = TAG_FLEET,
    summary = "Fleet status",
    description = "Enabled agents, queue depth, runs in `running` state (all tenants), workers that \
                   reported recently and the sums of their slots.",
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
        .map(|a| AgentView {
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
