//! `JobEnvelope::decode` on arbitrary bytes: a worker reads whatever sits in a lane (written by another version,
//! or by hand), so decoding may refuse but never panic; what decodes is a supported version and re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::JobEnvelope;
use protocol::dead_letter::DeadLetter;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(envelope) = JobEnvelope::decode(text) {
        assert_eq!(envelope.version, protocol::job::JOB_ENVELOPE_VERSION);
        // Requeues and dead letters write the envelope again: that must not panic either.
        let _ = envelope.encode();
    }
    // A dead letter's replay decodes the same stored text.
    let letter = DeadLetter {
        job_id: None,
        reason: "fuzz".to_owned(),
        last_error: String::new(),
        attempts: 1,
        worker_id: String::new(),
        dead_at_ms: 0,
        raw_envelope: text.to_owned(),
    };
    let _ = letter.replayable_envelope(u64::MAX, u64::MAX);
});
