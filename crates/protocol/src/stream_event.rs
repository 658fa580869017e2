//! The events of one chat's stream, as stored in its replay log, published on its channel and relayed by the
//! gateway. Every event a worker writes carries `seq`, its 1-based place in the replay log, so relays can order
//! events and drop duplicates; `queued` is made by the gateway and is never stored.

use serde::{Deserialize, Serialize};

/// Token counts reported for one answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// One event of a chat stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    /// The job waits: `position` 1 is next in line, `ahead` jobs are before it, `eta_ms` is the estimated wait
    /// from the measured drain rate (absent while there is no measurement yet).
    Queued { position: u64, ahead: u64, eta_ms: Option<u64> },
    /// A batch of answer text.
    Token { seq: u64, text: String },
    /// The answer is complete.
    Done { seq: u64, usage: Usage, finish_reason: String },
    /// The job ended without an answer; `code` is machine-readable.
    Error { seq: u64, code: String, message: String },
    /// The job restarted: discard the text received so far, the whole answer follows again.
    Reset { seq: u64 },
}

impl StreamEvent {
    /// The replay-log position, for every event but `queued`.
    pub fn seq(&self) -> Option<u64> {
        match self {
            StreamEvent::Queued { .. } => None,
            StreamEvent::Token { seq, .. }
            | StreamEvent::Done { seq, .. }
            | StreamEvent::Error { seq, .. }
            | StreamEvent::Reset { seq } => Some(*seq),
        }
    }

    /// The SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamEvent::Queued { .. } => "queued",
            StreamEvent::Token { .. } => "token",
            StreamEvent::Done { .. } => "done",
            StreamEvent::Error { .. } => "error",
            StreamEvent::Reset { .. } => "reset",
        }
    }

    /// Whether the stream ends after this event.
    pub fn is_terminal(&self) -> bool {
        matches!(self, StreamEvent::Done { .. } | StreamEvent::Error { .. })
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a stream event always serializes")
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The events of one message published on a job's event channel (see [`published_event_ranges`]).
    pub fn decode_published(payload: &str) -> impl Iterator<Item = Result<Self, serde_json::Error>> + '_ {
        published_event_ranges(payload).map(|range| Self::decode(&payload[range]))
    }
}

/// Separates the events of one published message.
pub const PUBLISHED_EVENT_SEPARATOR: char = '\n';

/// Where each event's JSON lies in one message published on a job's event channel. A worker publishes each batch
/// it writes as one message: the events' JSON, in seq order, joined by [`PUBLISHED_EVENT_SEPARATOR`] (JSON text
/// never holds a raw newline, so the split is exact). The replay log keeps one event per entry. Ranges let a relay
/// keep each event as a slice of the message rather than a copy.
pub fn published_event_ranges(payload: &str) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        while start < payload.len() {
            let end = payload[start..].find(PUBLISHED_EVENT_SEPARATOR).map_or(payload.len(), |at| start + at);
            let range = start..end;
            start = end + PUBLISHED_EVENT_SEPARATOR.len_utf8();
            if !range.is_empty() {
                return Some(range);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_survives_a_round_trip_with_its_wire_shape() {
        let cases = [
            (
                StreamEvent::Queued { position: 3, ahead: 2, eta_ms: Some(1500) },
                r#"{"type":"queued","position":3,"ahead":2,"eta_ms":1500}"#,
            ),
            (StreamEvent::Token { seq: 1, text: "Hi".to_owned() }, r#"{"type":"token","seq":1,"text":"Hi"}"#),
            (
                StreamEvent::Done {
                    seq: 2,
                    usage: Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3 },
                    finish_reason: "stop".to_owned(),
                },
                r#"{"type":"done","seq":2,"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"finish_reason":"stop"}"#,
            ),
            (
                StreamEvent::Error { seq: 4, code: "expired".to_owned(), message: "too late".to_owned() },
                r#"{"type":"error","seq":4,"code":"expired","message":"too late"}"#,
            ),
            (StreamEvent::Reset { seq: 5 }, r#"{"type":"reset","seq":5}"#),
        ];
        for (event, wire) in cases {
            assert_eq!(event.encode(), wire);
            assert_eq!(StreamEvent::decode(wire).expect("decodes"), event);
        }
    }

    #[test]
    fn a_published_batch_yields_its_events_in_order() {
        let batch = [
            StreamEvent::Token { seq: 3, text: "line one\nline two".to_owned() },
            StreamEvent::Reset { seq: 4 },
        ];
        let payload = batch.iter().map(StreamEvent::encode).collect::<Vec<_>>().join("\n");
        let decoded: Vec<_> =
            StreamEvent::decode_published(&payload).collect::<Result<_, _>>().expect("decodes");
        assert_eq!(decoded, batch);
        assert_eq!(StreamEvent::decode_published(&batch[1].encode()).count(), 1);
        let ranges: Vec<_> = published_event_ranges("a\n\nbc\n").collect();
        assert_eq!(ranges, vec![0..1, 3..5], "empty lines are no events");
    }

    #[test]
    fn only_done_and_error_end_a_stream() {
        let done = StreamEvent::Done {
            seq: 1,
            usage: Usage { prompt_tokens: 1, completion_tokens: 1, total_tokens: 2 },
            finish_reason: "stop".to_owned(),
        };
        let error = StreamEvent::Error { seq: 1, code: String::new(), message: String::new() };
        let queued = StreamEvent::Queued { position: 1, ahead: 0, eta_ms: None };
        let token = StreamEvent::Token { seq: 1, text: String::new() };
        let reset = StreamEvent::Reset { seq: 1 };
        let ending: Vec<bool> = [&done, &error, &queued, &token, &reset].map(StreamEvent::is_terminal).into();
        assert_eq!(ending, [true, true, false, false, false], "done, error | queued, token, reset");
        // A queued update is not part of the log, so it has no seq.
        assert_eq!(queued.seq(), None);
    }
}
