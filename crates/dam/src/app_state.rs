//! `AdminState`: what the dam's handlers can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use protocol::{RedisConnections, RedisKeys, Settings};

use crate::auth::AdminToken;

#[derive(Debug, Clone)]
pub struct AdminState {
    pub settings: Arc<Settings>,
    pub keys: RedisKeys,
    pub redis: RedisConnections,
    pub metrics: PrometheusHandle,
    /// `None` only when the dam listens on loopback (checked at startup); then the admin API is open.
    pub admin_token: Option<AdminToken>,
}
