//! `StartupError`: why `dam serve` could not start or stopped serving, each case with its cause as a `#[source]`,
//! so `main` prints the whole chain. Request failures are `AdminError`s, never these.

use std::io;
use std::net::SocketAddr;

use protocol::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen on {address} (dam.host, dam.port)")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read the listener's address")]
    ListenerAddress(#[source] io::Error),
    /// Without a token the admin API would let anyone who reaches the port steer the whole system.
    #[error(
        "refusing to start: no admin token is set (DAM_DAM__ADMIN_TOKEN) and the dam would listen on {address}, \
         which is not loopback; set a token or listen on 127.0.0.1"
    )]
    NoTokenBeyondLoopback { address: SocketAddr },
    #[error("invalid redis settings")]
    RedisSettings(#[source] redis::RedisError),
    #[error("the server stopped on an error")]
    Serve(#[source] io::Error),
}
