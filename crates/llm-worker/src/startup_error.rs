//! `StartupError`: why the worker could not start, or its own listener failed, each case with its cause as a
//! `#[source]`, so `main` prints the whole chain. A job's failures are `WorkerError`s, never these.

use std::io;

use protocol::settings::SettingsError;

use crate::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("could not build the runtime of {threads} threads (worker.runtime_threads)")]
    Runtime {
        threads: usize,
        #[source]
        source: io::Error,
    },
    /// Several workers on one host each need their own port: the message says which setting to change.
    #[error(
        "cannot listen on {address} for /metrics, /healthz and /readyz (each worker on a host needs its own \
         worker.port, DAM_WORKER__PORT)"
    )]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("invalid redis settings")]
    RedisSettings(#[source] redis::RedisError),
    #[error("could not build the client of the LLM at {base_url}")]
    LlmClient {
        base_url: String,
        #[source]
        source: ProviderError,
    },
    #[error("the listener for /metrics, /healthz and /readyz failed")]
    Listener(#[source] io::Error),
    #[error("the listener's task for /metrics, /healthz and /readyz failed")]
    ListenerTask(#[source] tokio::task::JoinError),
}
