//! A tenant's own secrets (BYOK): `PUT /v1/secrets/{name}` sets one, `GET /v1/secrets` lists
//! names and times, `DELETE /v1/secrets/{name}` removes one. Values go in and never come out:
//! workers hand them to the tenant's agents as environment variables of the same name.

use super::TAG_SECRETS;
use crate::auth::Tenant;
use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use outpost_api::{ErrorBody, PutSecretRequest, SecretList, SecretView};
use outpost_core::ports::secrets::check_secret_value;
use outpost_core::ports::{SecretError, SecretName};
use secrecy::SecretString;

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::BadName(_) => ApiError::validation("name", e.to_string()),
            SecretError::BadValue => ApiError::validation("value", e.to_string()),
            SecretError::Backend(err) => ApiError::unavailable("secret store", &err),
        }
    }
}

fn parse_name(raw: &str) -> Result<SecretName, ApiError> {
    raw.parse::<SecretName>().map_err(ApiError::from)
}

#[utoipa::path(
    put,
    path = "/v1/secrets/{name}",
    tag = TAG_SECRETS,
    summary = "Set a secret",
    description = "Creates or replaces one of the tenant's secrets. Agents of this tenant receive it as the \
                   environment variable `name` (e.g. `ANTHROPIC_API_KEY`), in place of the operator's key. \
                   The value is never returned.",
    params(("name" = String, Path, description = "An environment variable name: letters, digits, `_`, not starting with a digit, at most 128")),
    request_body = PutSecretRequest,
    responses(
        (status = 200, description = "Stored", body = SecretView),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 422, description = "Bad name or value", body = ErrorBody),
        (status = 503, description = "Secret store unavailable", body = ErrorBody),
    )
)]
pub async fn put_secret(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<PutSecretRequest>,
) -> Result<Json<SecretView>, ApiError> {
    let name = parse_name(&name)?;
    check_secret_value(&body.value)?;
    let value = SecretString::from(body.value);
    state.backend().secrets.put_secret(&tenant, &name, &value).await?;
    tracing::info!(tenant = %tenant, secret = %name, "secret set");
    Ok(Json(SecretView {
        name: name.to_string(),
        updated_at: chrono::Utc::now(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = TAG_SECRETS,
    summary = "List secrets",
    description = "The tenant's secrets by name, with when each was last set. Never their values.",
    responses(
        (status = 200, description = "Names and times", body = SecretList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Secret store unavailable", body = ErrorBody),
    )
)]
pub async fn list_secrets(State(state): State<AppState>, Tenant(tenant): Tenant) -> Result<Json<SecretList>, ApiError> {
    let secrets = state.backend().secrets.list_secrets(&tenant).await?;
    Ok(Json(SecretList {
        secrets: secrets.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/secrets/{name}",
    tag = TAG_SECRETS,
    summary = "Delete a secret",
    params(("name" = String, Path, description = "The secret's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such secret", body = ErrorBody),
        (status = 503, description = "Secret store unavailable", body = ErrorBody),
    )
)]
pub async fn delete_secret(
    State(state): State<AppState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name).map_err(|_| ApiError::not_found("no such secret"))?;
    if state.backend().secrets.delete_secret(&tenant, &name).await? {
        tracing::info!(tenant = %tenant, secret = %name, "secret deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such secret"))
    }
}
