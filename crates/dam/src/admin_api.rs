//! The admin API's handlers. Each only translates: extract the input, call one domain function, return its
//! answer as JSON. Authentication happens before them (`auth.rs`); the work happens in the `*_admin` modules.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api_keys_admin::{self, ApiKeyChange, ApiKeyDeleted, ApiKeyListing, ApiKeySaved};
use crate::app_state::AdminState;
use crate::blocks_admin::{self, ActiveBlock, BlockListing, BlockRemoved, BlockRequest};
use crate::dead_letters_admin::{
    self, DeadLetterHandle, DeadLetterPage, DroppedDeadLetter, ReplayAllReport, ReplayedJob,
};
use crate::error::AdminError;
use crate::intake_admin::{self, IntakeState};
use crate::limits_admin::{self, LimitsInForce};
use crate::request_input::{AdminPath, AdminQuery, JsonBody};
use crate::status_report::{self, StatusReport};

/// Dead letters per page when the query names no `limit`, and the most it may name.
const DEFAULT_DEAD_LETTER_PAGE: u64 = 50;
const MAX_DEAD_LETTER_PAGE: u64 = 500;

pub async fn status(State(state): State<AdminState>) -> Result<Json<StatusReport>, AdminError> {
    Ok(Json(status_report::collect_status_report(&state).await?))
}

pub async fn get_limits(State(state): State<AdminState>) -> Result<Json<LimitsInForce>, AdminError> {
    Ok(Json(limits_admin::read_limits_in_force(&state).await?))
}

pub async fn put_limits(
    State(state): State<AdminState>,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> Result<Json<LimitsInForce>, AdminError> {
    Ok(Json(limits_admin::update_limits(&state, &patch).await?))
}

pub async fn pause_intake(State(state): State<AdminState>) -> Result<Json<IntakeState>, AdminError> {
    Ok(Json(intake_admin::pause_intake(&state).await?))
}

pub async fn resume_intake(State(state): State<AdminState>) -> Result<Json<IntakeState>, AdminError> {
    Ok(Json(intake_admin::resume_intake(&state).await?))
}

pub async fn list_dead_letters(
    State(state): State<AdminState>,
    query: AdminQuery,
) -> Result<Json<DeadLetterPage>, AdminError> {
    query.allow_only(&["limit", "offset"])?;
    let limit = query.number("limit", DEFAULT_DEAD_LETTER_PAGE, 1..=MAX_DEAD_LETTER_PAGE)?;
    let offset = query.number("offset", 0, 0..=u64::from(u32::MAX))?;
    Ok(Json(dead_letters_admin::list_dead_letters(&state, offset, limit).await?))
}

pub async fn replay_dead_letter(
    State(state): State<AdminState>,
    AdminPath(id): AdminPath,
) -> Result<Json<ReplayedJob>, AdminError> {
    let handle = DeadLetterHandle::parse(&id)?;
    Ok(Json(dead_letters_admin::replay_one_dead_letter(&state, &handle).await?))
}

pub async fn replay_all_dead_letters(
    State(state): State<AdminState>,
    query: AdminQuery,
) -> Result<Json<ReplayAllReport>, AdminError> {
    query.allow_only(&["dry_run"])?;
    let dry_run = query.flag("dry_run")?;
    Ok(Json(dead_letters_admin::replay_all_dead_letters(&state, dry_run).await?))
}

pub async fn drop_dead_letter(
    State(state): State<AdminState>,
    AdminPath(id): AdminPath,
) -> Result<Json<DroppedDeadLetter>, AdminError> {
    let handle = DeadLetterHandle::parse(&id)?;
    Ok(Json(dead_letters_admin::drop_dead_letter(&state, &handle).await?))
}

pub async fn list_api_keys(State(state): State<AdminState>) -> Result<Json<ApiKeyListing>, AdminError> {
    Ok(Json(api_keys_admin::list_api_keys(&state).await?))
}

/// 201 for a new key, 200 for an update.
pub async fn put_api_key(
    State(state): State<AdminState>,
    AdminPath(api_key): AdminPath,
    JsonBody(change): JsonBody<ApiKeyChange>,
) -> Result<(StatusCode, Json<ApiKeySaved>), AdminError> {
    let saved = api_keys_admin::put_api_key(&state, &api_key, change).await?;
    let status = if saved.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(saved)))
}

pub async fn delete_api_key(
    State(state): State<AdminState>,
    AdminPath(key_or_hash): AdminPath,
) -> Result<Json<ApiKeyDeleted>, AdminError> {
    Ok(Json(api_keys_admin::delete_api_key(&state, &key_or_hash).await?))
}

pub async fn block_identity(
    State(state): State<AdminState>,
    JsonBody(request): JsonBody<BlockRequest>,
) -> Result<(StatusCode, Json<ActiveBlock>), AdminError> {
    Ok((StatusCode::CREATED, Json(blocks_admin::block_identity(&state, request).await?)))
}

pub async fn list_blocks(State(state): State<AdminState>) -> Result<Json<BlockListing>, AdminError> {
    Ok(Json(blocks_admin::list_blocks(&state).await?))
}

pub async fn unblock_identity(
    State(state): State<AdminState>,
    AdminPath(identity): AdminPath,
) -> Result<Json<BlockRemoved>, AdminError> {
    Ok(Json(blocks_admin::unblock_identity(&state, &identity).await?))
}
