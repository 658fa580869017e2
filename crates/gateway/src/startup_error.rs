//! `StartupError`: why the gateway could not start or stopped serving, each case with its cause as a `#[source]`,
//! so `main` prints the whole chain. Request failures are `GatewayError`s, never these.

use std::io;

use protocol::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("could not build the runtime of {threads} threads (gateway.runtime_threads)")]
    Runtime {
        threads: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot listen on {address} (gateway.host, gateway.port)")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid redis settings")]
    RedisSettings(#[source] redis::RedisError),
    #[error("the server stopped on an error")]
    Serve(#[source] io::Error),
}
