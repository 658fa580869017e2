//! `AdminState`: what the dam's handlers can reach.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use protocol::{RedisConnections, RedisKeys, Settings};

#[derive(Debug, Clone)]
pub struct AdminState {
    pub settings: Arc<Settings>,
    pub keys: RedisKeys,
    pub redis: RedisConnections,
    pub metrics: PrometheusHandle,
}
