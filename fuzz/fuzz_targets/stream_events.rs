//! The stream event decoders on arbitrary bytes, as a gateway meets them on a job's channel (one published
//! message, events joined by newlines) and in its replay log; plus the other records read back from Redis (dead
//! letters, control messages, live limits). Refusals are fine; panics are not; decoded events re-encode to
//! themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::StreamEvent;
use protocol::control::ControlMessage;
use protocol::dead_letter::DeadLetter;
use protocol::limits::Limits;
use protocol::stream_event::{PUBLISHED_EVENT_SEPARATOR, published_event_ranges};

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = std::str::from_utf8(data) else {
        return;
    };
    let mut previous_end = 0;
    for range in published_event_ranges(payload) {
        assert!(range.start >= previous_end && range.start < range.end && range.end <= payload.len());
        let text = &payload[range.clone()];
        assert!(!text.contains(PUBLISHED_EVENT_SEPARATOR));
        previous_end = range.end;
        if let Ok(event) = StreamEvent::decode(text) {
            let _ = (event.seq(), event.kind(), event.is_terminal());
            assert_eq!(StreamEvent::decode(&event.encode()).expect("an encoded event decodes"), event);
        }
    }
    let _ = StreamEvent::decode_published(payload).count();
    let _ = StreamEvent::decode(payload);
    let _ = DeadLetter::decode(payload);
    let _ = ControlMessage::decode(payload);
    if let Ok(limits) = Limits::decode(payload) {
        let _ = limits.validate();
        let _ = limits.encode();
    }
    if let Ok(patch) = serde_json::from_str::<serde_json::Value>(payload) {
        if let Ok(limits) = Limits::default().with_patch(&patch) {
            assert!(limits.validate().is_ok(), "an accepted patch gives valid limits");
        }
    }
});
