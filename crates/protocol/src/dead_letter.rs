//! The dead-letter record: a job that could not be completed, kept with why, so an operator can inspect it and
//! replay it. Jobs are never dropped silently.

use serde::{Deserialize, Serialize};

use crate::job::JobId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Absent when the envelope could not even be decoded.
    pub job_id: Option<JobId>,
    /// Machine-readable: `undecodable_envelope`, `poison_job`, `upstream_failed`, ...
    pub reason: String,
    /// The last error, for a human.
    pub last_error: String,
    pub attempts: u32,
    pub worker_id: String,
    pub dead_at_ms: u64,
    /// The envelope exactly as it sat in the queue, so a replay loses nothing.
    pub raw_envelope: String,
}

impl DeadLetter {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a dead letter always serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
