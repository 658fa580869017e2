//! The dam: the operators' admin service. It sees and steers the flow through Redis only (state in keys, changes
//! announced on the control channel); it never calls a gateway or a worker.

pub mod app_state;
pub mod error;
pub mod routes;
pub mod startup;

pub use error::AdminError;
pub use startup::run;
