//! What a relay hands to a format: an event of the chat's stream as the worker stored it (its JSON kept whole and
//! shared, only its type and `seq` read), or an event this gateway made. Formatting them belongs to the formats.

use std::fmt;
use std::sync::Arc;

use protocol::StreamEvent;
use serde::Deserialize;

/// One event as the relay hands it to a format.
#[derive(Debug, Clone)]
pub enum RelayedEvent {
    /// An event of the chat's stream, exactly as the worker stored and published it.
    Stored(StoredEvent),
    /// An event this gateway made: a `queued` update, or the error that ends a stream it can no longer relay.
    Made(StreamEvent),
}

impl RelayedEvent {
    pub fn is_terminal(&self) -> bool {
        match self {
            RelayedEvent::Stored(stored) => {
                matches!(stored.kind, StoredEventKind::Done | StoredEventKind::Error)
            }
            RelayedEvent::Made(made) => made.is_terminal(),
        }
    }

    /// The whole event; a stored one is decoded from its JSON (`None`, with a warning, if it does not decode).
    pub fn to_stream_event(&self) -> Option<StreamEvent> {
        match self {
            RelayedEvent::Stored(stored) => stored
                .decode()
                .inspect_err(
                    |error| tracing::warn!(%error, seq = stored.seq, "undecodable stream event skipped"),
                )
                .ok(),
            RelayedEvent::Made(made) => Some(made.clone()),
        }
    }
}

/// A stored event: its `seq` and type, read from its JSON, and the JSON itself, shared with every other client of
/// the same chat on this gateway (a slice of the published message, not a copy).
#[derive(Clone)]
pub struct StoredEvent {
    pub seq: u64,
    pub kind: StoredEventKind,
    message: Arc<str>,
    start: usize,
    end: usize,
}

impl fmt::Debug for StoredEvent {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("StoredEvent").field("json", &self.json()).finish()
    }
}

/// The types of stored events (`queued` is never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredEventKind {
    Token,
    Done,
    Error,
    Reset,
}

impl StoredEventKind {
    /// The SSE `event:` name, which is also the JSON `type`.
    pub fn name(self) -> &'static str {
        match self {
            StoredEventKind::Token => "token",
            StoredEventKind::Done => "done",
            StoredEventKind::Error => "error",
            StoredEventKind::Reset => "reset",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "token" => Some(StoredEventKind::Token),
            "done" => Some(StoredEventKind::Done),
            "error" => Some(StoredEventKind::Error),
            "reset" => Some(StoredEventKind::Reset),
            _ => None,
        }
    }
}

/// What a relay needs to read from each event: its type and place, not its text.
#[derive(Deserialize)]
struct StoredEventHeader<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    seq: u64,
}

/// Why a stored event cannot be relayed.
#[derive(Debug, thiserror::Error)]
pub(super) enum StoredEventError {
    #[error("undecodable stream event: {0}")]
    Undecodable(#[from] serde_json::Error),
    #[error("stream event {seq} has an unknown type {kind:?}")]
    UnknownKind { seq: u64, kind: String },
}

impl StoredEvent {
    /// Reads the event at `start..end` of `message`.
    pub(super) fn read(message: &Arc<str>, start: usize, end: usize) -> Result<Self, StoredEventError> {
        let header: StoredEventHeader<'_> = serde_json::from_str(&message[start..end])?;
        let kind = StoredEventKind::from_name(header.kind)
            .ok_or_else(|| StoredEventError::UnknownKind { seq: header.seq, kind: header.kind.to_owned() })?;
        Ok(Self { seq: header.seq, kind, message: message.clone(), start, end })
    }

    /// The event's JSON, as the worker wrote it (one line: JSON text holds no raw newline).
    pub fn json(&self) -> &str {
        &self.message[self.start..self.end]
    }

    pub fn decode(&self) -> Result<StreamEvent, serde_json::Error> {
        StreamEvent::decode(self.json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_event_keeps_its_json_and_reads_only_its_type_and_seq() {
        let message: Arc<str> =
            r#"{"type":"token","seq":3,"text":"a \"quoted\" line"}
{"type":"done","seq":4,"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3},"finish_reason":"stop"}"#
                .into();
        let newline = message.find('\n').expect("two events");
        let token = StoredEvent::read(&message, 0, newline).expect("token");
        assert_eq!((token.seq, token.kind), (3, StoredEventKind::Token));
        assert_eq!(token.json(), &message[..newline]);
        assert_eq!(
            token.decode().expect("decodes"),
            StreamEvent::Token { seq: 3, text: "a \"quoted\" line".into() }
        );
        let done = StoredEvent::read(&message, newline + 1, message.len()).expect("done");
        assert!(RelayedEvent::Stored(done).is_terminal());
        assert!(matches!(
            StoredEvent::read(&Arc::from(r#"{"type":"later","seq":5}"#), 0, 24),
            Err(StoredEventError::UnknownKind { seq: 5, .. })
        ));
    }
}
