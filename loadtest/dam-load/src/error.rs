//! The one error type of the load generator: what stops a run before or after it. A chat that fails is not an
//! error here but an outcome the run counts (`chat_outcome::ChatOutcome`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the target {url} is not http:// on a 127.0.0.0/8 address: dam-load sends load to this machine only"
    )]
    TargetNotLoopback { url: String },
    #[error("the target URL {url} is not usable: {reason}")]
    InvalidTarget { url: String, reason: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("reading or raising the open-files limit failed: {0}")]
    OpenFilesLimit(#[source] std::io::Error),
    #[error("could not write the result file {path}: {source}")]
    WriteResult { path: PathBuf, source: std::io::Error },
    #[error("could not listen for the stop signal: {0}")]
    Signal(#[source] std::io::Error),
}
