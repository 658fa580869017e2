//! Every protocol decoder: arbitrary text or JSON never panics it, and every valid value survives encode → decode.

use proptest::prelude::*;
use protocol::control::ControlMessage;
use protocol::dead_letter::DeadLetter;
use protocol::limits::Limits;
use protocol::stream_event::{PUBLISHED_EVENT_SEPARATOR, published_event_ranges};
use protocol::{JobEnvelope, StreamEvent};

use crate::property_config;
use crate::strategies::{any_json, any_text, dead_letter, job_envelope, mangled, stream_event, valid_limits};

/// Feeds `text` to every decoder; each may refuse it, none may panic.
fn decode_with_every_decoder(text: &str) {
    let _ = JobEnvelope::decode(text);
    let _ = StreamEvent::decode(text);
    let _ = StreamEvent::decode_published(text).count();
    let _ = DeadLetter::decode(text);
    let _ = ControlMessage::decode(text);
    let _ = Limits::decode(text);
}

proptest! {
    #![proptest_config(property_config())]

    #[test]
    fn no_decoder_panics_on_arbitrary_text(text in any_text(200)) {
        decode_with_every_decoder(&text);
    }

    #[test]
    fn no_decoder_panics_on_arbitrary_json(value in any_json()) {
        decode_with_every_decoder(&value.to_string());
        let _ = Limits::default().with_patch(&value);
    }

    #[test]
    fn a_job_envelope_survives_a_round_trip(envelope in job_envelope()) {
        let decoded = JobEnvelope::decode(&envelope.encode()).expect("an encoded envelope decodes");
        prop_assert_eq!(decoded, envelope);
    }

    #[test]
    fn a_mangled_job_envelope_is_refused_or_read_never_a_panic(
        text in job_envelope().prop_flat_map(|envelope| mangled(envelope.encode()))
    ) {
        if let Ok(envelope) = JobEnvelope::decode(&text) {
            prop_assert_eq!(envelope.version, protocol::job::JOB_ENVELOPE_VERSION);
        }
    }

    #[test]
    fn an_envelope_of_another_version_is_refused(envelope in job_envelope(), version in 2u32..) {
        let mut value = serde_json::to_value(&envelope).expect("an envelope serializes");
        value["version"] = version.into();
        prop_assert!(JobEnvelope::decode(&value.to_string()).is_err());
    }

    #[test]
    fn a_stream_event_survives_a_round_trip(event in stream_event()) {
        prop_assert_eq!(StreamEvent::decode(&event.encode()).expect("an encoded event decodes"), event);
    }

    #[test]
    fn a_published_batch_splits_back_into_its_events(events in proptest::collection::vec(stream_event(), 0..8)) {
        let payload: Vec<String> = events.iter().map(StreamEvent::encode).collect();
        let payload = payload.join(&PUBLISHED_EVENT_SEPARATOR.to_string());
        let decoded: Vec<StreamEvent> =
            StreamEvent::decode_published(&payload).collect::<Result<_, _>>().expect("every event decodes");
        prop_assert_eq!(decoded, events);
    }

    #[test]
    fn published_ranges_of_any_payload_are_non_empty_ordered_slices_without_separators(payload in any_text(120)) {
        let mut previous_end = 0;
        for range in published_event_ranges(&payload) {
            prop_assert!(range.start >= previous_end && range.start < range.end && range.end <= payload.len());
            // Slicing panics off a char boundary: the range must be on boundaries.
            let event = &payload[range.clone()];
            prop_assert!(!event.contains(PUBLISHED_EVENT_SEPARATOR));
            previous_end = range.end;
        }
        let kept: usize = published_event_ranges(&payload).map(|range| range.len()).sum();
        prop_assert_eq!(kept, payload.len() - payload.matches(PUBLISHED_EVENT_SEPARATOR).count());
    }

    #[test]
    fn a_dead_letter_survives_a_round_trip_and_a_replay_never_panics(
        letter in dead_letter(), now_ms in any::<u64>(), deadline_s in any::<u64>()
    ) {
        let decoded = DeadLetter::decode(&letter.encode()).expect("an encoded dead letter decodes");
        prop_assert_eq!(&decoded, &letter);
        if let Ok(envelope) = decoded.replayable_envelope(now_ms, deadline_s) {
            prop_assert_eq!(Some(envelope.id), letter.job_id);
            prop_assert!(envelope.deadline_ms >= envelope.created_at_ms);
        }
    }

    #[test]
    fn control_messages_survive_a_round_trip(
        message in prop_oneof![
            Just(ControlMessage::LimitsChanged),
            Just(ControlMessage::ApiKeysChanged),
            Just(ControlMessage::IntakeChanged),
        ]
    ) {
        prop_assert_eq!(ControlMessage::decode(&message.encode()).expect("decodes"), message);
    }

    #[test]
    fn valid_limits_survive_a_round_trip_and_a_patch_of_themselves(limits in valid_limits()) {
        prop_assert!(limits.validate().is_ok());
        prop_assert_eq!(Limits::decode(&limits.encode()).expect("encoded limits decode"), limits.clone());
        let patch = serde_json::to_value(&limits).expect("limits serialize");
        prop_assert_eq!(Limits::default().with_patch(&patch).expect("valid limits patch cleanly"), limits);
    }

    #[test]
    fn a_patch_that_is_accepted_always_gives_valid_limits(patch in any_json()) {
        if let Ok(limits) = Limits::default().with_patch(&patch) {
            prop_assert!(limits.validate().is_ok());
        }
    }
}
