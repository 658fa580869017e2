//! The dam: the operators' control room. An admin HTTP API (its own port, bearer token) and the `dam` command
//! line over it. It sees and steers the flow through Redis only (state in keys, changes announced on the control
//! channel); it never calls a gateway or a worker.

pub mod admin_api;
pub mod admin_client;
pub mod api_keys_admin;
pub mod app_state;
pub mod auth;
pub mod blocks_admin;
pub mod cli;
pub mod dead_letters_admin;
pub mod error;
pub mod fleet_gauges;
pub mod health_api;
pub mod intake_admin;
pub mod limits_admin;
pub mod request_input;
pub mod routes;
pub mod startup;
pub mod startup_error;
pub mod status_report;

pub use error::AdminError;
pub use startup::{run, serve_until_signalled};
pub use startup_error::StartupError;
