//! How a dead letter is named and read: `DeadLetterHandle` (a job id, or `record-<16 hex>` for a record whose
//! envelope is unreadable) and `StoredDeadLetter` (a record exactly as stored, with what it says when it can be
//! read). No Redis here.

use protocol::dead_letter::DeadLetter;
use protocol::{JobEnvelope, JobId, Settings};
use sha2::{Digest, Sha256};

use super::DeadLetterSummary;
use crate::error::AdminError;

/// Hex digits of the record digest in a `record-...` id.
const RECORD_DIGEST_HEX_DIGITS: usize = 16;

/// How the routes name one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterHandle {
    Job(JobId),
    /// The first hex digits of the SHA-256 of the record as stored.
    Record(String),
}

impl DeadLetterHandle {
    pub fn parse(text: &str) -> Result<Self, AdminError> {
        if let Ok(job_id) = text.parse::<JobId>() {
            return Ok(DeadLetterHandle::Job(job_id));
        }
        match text.strip_prefix("record-") {
            Some(digest)
                if digest.len() == RECORD_DIGEST_HEX_DIGITS
                    && digest.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f')) =>
            {
                Ok(DeadLetterHandle::Record(digest.to_owned()))
            }
            _ => Err(AdminError::invalid_field(
                "id",
                "must be a job id (lowercase hyphenated UUID) or record-<16 hex digits>, as listed",
            )),
        }
    }

    pub(super) fn matches(&self, record: &StoredDeadLetter) -> bool {
        match self {
            DeadLetterHandle::Job(job_id) => {
                record.decoded.as_ref().and_then(|letter| letter.job_id) == Some(*job_id)
            }
            DeadLetterHandle::Record(digest) => record_digest(&record.stored) == *digest,
        }
    }
}

/// One record as it sits in the list, and what it says when it can be read.
#[derive(Debug, Clone)]
pub(super) struct StoredDeadLetter {
    pub(super) stored: String,
    pub(super) decoded: Option<DeadLetter>,
}

impl StoredDeadLetter {
    pub(super) fn new(stored: String) -> Self {
        let decoded = DeadLetter::decode(&stored).ok();
        Self { stored, decoded }
    }

    /// The id shown in listings: the job id when there is one.
    pub(super) fn id(&self) -> String {
        match self.decoded.as_ref().and_then(|letter| letter.job_id) {
            Some(job_id) => job_id.to_string(),
            None => format!("record-{}", record_digest(&self.stored)),
        }
    }

    /// The envelope a replay would queue now, or why there is none.
    pub(super) fn replayable_envelope(
        &self,
        settings: &Settings,
        now_ms: u64,
    ) -> Result<JobEnvelope, String> {
        let letter = self.decoded.as_ref().ok_or("the record itself is not a readable dead letter")?;
        letter.replayable_envelope(now_ms, settings.chat.queue_deadline_s).map_err(|error| error.to_string())
    }

    pub(super) fn summary(&self, settings: &Settings, now_ms: u64) -> DeadLetterSummary {
        let replayable = self.replayable_envelope(settings, now_ms);
        let envelope =
            self.decoded.as_ref().and_then(|letter| JobEnvelope::decode(&letter.raw_envelope).ok());
        let letter = self.decoded.clone().unwrap_or_else(|| DeadLetter {
            job_id: None,
            reason: "undecodable_record".to_owned(),
            last_error: "the dead-letter record is not valid JSON for this build".to_owned(),
            attempts: 0,
            worker_id: String::new(),
            dead_at_ms: 0,
            raw_envelope: String::new(),
        });
        DeadLetterSummary {
            id: self.id(),
            job_id: letter.job_id,
            reason: letter.reason,
            last_error: letter.last_error,
            attempts: letter.attempts,
            worker_id: letter.worker_id,
            dead_at_ms: letter.dead_at_ms,
            replayable: replayable.is_ok(),
            not_replayable_reason: replayable.err(),
            lane: envelope.as_ref().map(|envelope| envelope.lane),
            identity: envelope.as_ref().map(|envelope| envelope.identity.clone()),
            model: envelope.as_ref().map(|envelope| envelope.model.clone()),
            created_at_ms: envelope.as_ref().map(|envelope| envelope.created_at_ms),
        }
    }
}

fn record_digest(stored: &str) -> String {
    let mut digest = hex::encode(Sha256::digest(stored.as_bytes()));
    digest.truncate(RECORD_DIGEST_HEX_DIGITS);
    digest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_job_ids_or_record_digests_and_nothing_else() {
        let job_id = JobId::new_random();
        assert_eq!(DeadLetterHandle::parse(&job_id.to_string()).expect("job"), DeadLetterHandle::Job(job_id));
        assert_eq!(
            DeadLetterHandle::parse("record-0123456789abcdef").expect("record"),
            DeadLetterHandle::Record("0123456789abcdef".to_owned())
        );
        for bad in ["", "record-", "record-0123456789ABCDEF", "record-0123", "42", "../etc"] {
            assert_eq!(DeadLetterHandle::parse(bad).expect_err(bad).code(), "invalid_field");
        }
    }

    #[test]
    fn a_record_without_a_job_id_is_listed_under_its_digest_and_matched_by_it() {
        let record = StoredDeadLetter::new("{not a dead letter".to_owned());
        let id = record.id();
        assert!(id.starts_with("record-"), "{id}");
        let handle = DeadLetterHandle::parse(&id).expect("its own id parses");
        assert!(handle.matches(&record));
        let summary = record.summary(&Settings::default(), 0);
        assert!(!summary.replayable);
        assert_eq!(summary.reason, "undecodable_record");
    }
}
