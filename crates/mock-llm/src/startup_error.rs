//! `StartupError`: why the mock-llm binary could not start or stopped serving, each case with its cause as a
//! `#[source]`, so `main` prints the whole chain. Answers to requests are `MockLlmError`s, never these.

use std::io;

use protocol::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen on {address} (mock_llm.host, mock_llm.port)")]
    Listen {
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("the server stopped on an error")]
    Serve(#[source] io::Error),
}
