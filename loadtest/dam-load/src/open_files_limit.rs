//! The process's open-files limit: every held stream is a socket, so dam-load takes the whole hard limit at
//! start and says so when even that is below what the run needs.

use serde::Serialize;

use crate::error::LoadError;

/// File descriptors a run needs besides its streams: stdio, the runtime's own, a few spare pool connections.
const DESCRIPTORS_BESIDES_STREAMS: u64 = 64;

/// The limit before and after raising it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OpenFilesLimit {
    pub soft_before: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft limit to the hard one and warns on stderr when the hard limit is below `streams` plus a
/// margin; the run then goes ahead and the failed connections show up in its outcomes.
pub fn raise_open_files_limit(streams: u64) -> Result<OpenFilesLimit, LoadError> {
    let (soft_before, hard) =
        rlimit::getrlimit(rlimit::Resource::NOFILE).map_err(LoadError::OpenFilesLimit)?;
    if soft_before < hard {
        rlimit::setrlimit(rlimit::Resource::NOFILE, hard, hard).map_err(LoadError::OpenFilesLimit)?;
    }
    let needed = streams.saturating_add(DESCRIPTORS_BESIDES_STREAMS);
    if hard < needed {
        eprintln!(
            "[dam-load] warning: the open-files hard limit is {hard}, below the {needed} this run needs; \
             raise it (ulimit -Hn, /etc/security/limits.conf) or expect failed connections"
        );
    }
    Ok(OpenFilesLimit { soft_before, soft: hard.max(soft_before), hard })
}
