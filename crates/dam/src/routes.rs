//! The dam service's whole route table. `/admin/*` needs the admin token and refuses cross-site requests; health
//! and metrics do not (probes and scrapers reach them). The service listens on its own port, never behind the
//! public nginx.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{delete, get, post, put};

use crate::app_state::AdminState;
use crate::auth::{refuse_cross_site_requests, require_admin_token};
use crate::error::AdminError;
use crate::request_input::ADMIN_BODY_LIMIT_BYTES;
use crate::{admin_api, health_api};

pub fn build_router(state: AdminState) -> Router {
    let admin = Router::new()
        .route("/admin/status", get(admin_api::status))
        .route("/admin/limits", get(admin_api::get_limits).put(admin_api::put_limits))
        .route("/admin/intake/pause", post(admin_api::pause_intake))
        .route("/admin/intake/resume", post(admin_api::resume_intake))
        .route("/admin/dead-letters", get(admin_api::list_dead_letters))
        .route("/admin/dead-letters/replay", post(admin_api::replay_all_dead_letters))
        .route("/admin/dead-letters/{id}", delete(admin_api::drop_dead_letter))
        .route("/admin/dead-letters/{id}/replay", post(admin_api::replay_dead_letter))
        .route("/admin/keys", get(admin_api::list_api_keys))
        .route("/admin/keys/{key}", put(admin_api::put_api_key).delete(admin_api::delete_api_key))
        .route("/admin/blocks", get(admin_api::list_blocks).post(admin_api::block_identity))
        .route("/admin/blocks/{identity}", delete(admin_api::unblock_identity))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin_token))
        // Outermost: a request a web page forged is refused before anything else looks at it.
        .route_layer(middleware::from_fn_with_state(state.clone(), refuse_cross_site_requests));
    Router::new()
        .route("/healthz", get(health_api::healthz))
        .route("/readyz", get(health_api::readyz))
        .route("/metrics", get(health_api::metrics))
        .merge(admin)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT_BYTES))
        .with_state(state)
}

async fn route_not_found() -> AdminError {
    AdminError::RouteNotFound
}

async fn method_not_allowed() -> AdminError {
    AdminError::MethodNotAllowed
}
