//! OpenAI's wire shapes for chat answers: `chat.completion.chunk` events for streams, one `chat.completion`
//! object otherwise, built from the relay's events. A token's text goes from the worker's JSON into the chunk as
//! the JSON string it already is: it is neither decoded nor escaped again.

use bytes::BytesMut;
use protocol::{StreamEvent, Usage};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::cancellation::CancelOnDrop;
use crate::chat_relay::{RelayedEvent, StoredEventKind};
use crate::error::GatewayError;
use crate::sse_stream::{StreamFormat, write_sse_comment, write_sse_event};

/// The `choices` of the first chunk, which names the speaker.
const ROLE_CHOICES: &str = r#"[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]"#;

/// Fields every chunk and completion of one answer share.
#[derive(Debug, Clone)]
pub struct CompletionIdentity {
    /// `chatcmpl-<job id>`.
    pub id: String,
    pub model: String,
    /// Seconds since the epoch.
    pub created: u64,
}

impl CompletionIdentity {
    /// Everything a chunk holds before its `choices` value: `{"id":…,"object":…,"created":…,"model":…,"choices":`.
    fn chunk_prefix(&self) -> String {
        let identity = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model});
        // Field order as OpenAI sends it; the object's own order is alphabetical.
        format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":"#,
            identity["id"], identity["created"], identity["model"]
        )
    }
}

/// The text of a stored token event, still as a JSON string.
#[derive(Deserialize)]
struct TokenText<'a> {
    #[serde(borrow)]
    text: &'a RawValue,
}

/// Streams OpenAI chunks. A `reset` after text went out cannot be taken back on this wire, so it ends the stream
/// with an error instead of repeating text.
#[derive(Debug)]
pub struct OpenAiChunks {
    chunk_prefix: String,
    include_usage: bool,
    sent_role: bool,
    sent_text: bool,
    /// Cancels the chat if the client leaves before the end.
    cancel_on_drop: CancelOnDrop,
}

impl OpenAiChunks {
    pub fn new(identity: &CompletionIdentity, include_usage: bool, cancel_on_drop: CancelOnDrop) -> Self {
        Self {
            chunk_prefix: identity.chunk_prefix(),
            include_usage,
            sent_role: false,
            sent_text: false,
            cancel_on_drop,
        }
    }

    /// Appends `data: <chunk>` with these `choices` (JSON) and maybe a `usage`.
    fn write_chunk(&self, output: &mut BytesMut, choices: &str, usage: Option<&Usage>) {
        let mut chunk = String::with_capacity(self.chunk_prefix.len() + choices.len() + 2);
        chunk.push_str(&self.chunk_prefix);
        chunk.push_str(choices);
        if let Some(usage) = usage {
            chunk.push_str(r#","usage":"#);
            chunk.push_str(&json!(usage).to_string());
        }
        chunk.push('}');
        write_sse_event(output, None, None, &chunk);
    }

    fn write_role_once(&mut self, output: &mut BytesMut) {
        if !self.sent_role {
            self.sent_role = true;
            self.write_chunk(output, ROLE_CHOICES, None);
        }
    }

    /// A stored token, the hot path: its JSON string goes into the chunk untouched, written straight into the
    /// output (a JSON string holds no raw line break, so it is one `data:` line).
    fn write_token(&mut self, json: &str, output: &mut BytesMut) {
        let token = match serde_json::from_str::<TokenText<'_>>(json) {
            Ok(token) => token,
            Err(error) => {
                tracing::warn!(%error, "undecodable token event skipped");
                return;
            }
        };
        self.write_role_once(output);
        self.sent_text = true;
        output.extend_from_slice(b"data: ");
        output.extend_from_slice(self.chunk_prefix.as_bytes());
        output.extend_from_slice(br#"[{"index":0,"delta":{"content":"#);
        output.extend_from_slice(token.text.get().as_bytes());
        output.extend_from_slice(br#"},"finish_reason":null}]}"#);
        output.extend_from_slice(b"\n\n");
    }

    /// Every other event; returns whether the stream ends after it.
    fn write_other(&mut self, event: &StreamEvent, output: &mut BytesMut) -> bool {
        if !matches!(event, StreamEvent::Queued { .. } | StreamEvent::Error { .. }) {
            self.write_role_once(output);
        }
        match event {
            StreamEvent::Queued { position, ahead, eta_ms } => {
                let eta = eta_ms.map(|eta| eta.to_string()).unwrap_or_else(|| "unknown".to_owned());
                write_sse_comment(output, &format!("queued position={position} ahead={ahead} eta_ms={eta}"));
                false
            }
            StreamEvent::Token { text, .. } => {
                self.sent_text = true;
                let choices = json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]);
                self.write_chunk(output, &choices.to_string(), None);
                false
            }
            StreamEvent::Reset { .. } if !self.sent_text => false,
            StreamEvent::Reset { .. } => {
                let error = GatewayError::ChatFailed {
                    code: "stream_reset".to_owned(),
                    message: "the answer restarted after part of it was sent; retry the request".to_owned(),
                };
                write_sse_event(output, None, None, &json!(error.body()).to_string());
                true
            }
            StreamEvent::Done { usage, finish_reason, .. } => {
                let finish = json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]);
                self.write_chunk(output, &finish.to_string(), None);
                if self.include_usage {
                    self.write_chunk(output, "[]", Some(usage));
                }
                write_sse_event(output, None, None, "[DONE]");
                true
            }
            StreamEvent::Error { code, message, .. } => {
                let error = GatewayError::ChatFailed { code: code.clone(), message: message.clone() };
                write_sse_event(output, None, None, &json!(error.body()).to_string());
                true
            }
        }
    }
}

impl StreamFormat for OpenAiChunks {
    fn write_event(&mut self, event: &RelayedEvent, _last_seq: u64, output: &mut BytesMut) -> bool {
        let end_stream = match event {
            RelayedEvent::Stored(stored) if stored.kind == StoredEventKind::Token => {
                self.write_token(stored.json(), output);
                false
            }
            other => match other.to_stream_event() {
                Some(event) => self.write_other(&event, output),
                None => false,
            },
        };
        if end_stream || event.is_terminal() {
            self.cancel_on_drop.disarm();
        }
        end_stream
    }
}

/// Accumulates a whole answer for a non-streaming request.
#[derive(Debug, Default)]
pub struct CompletionCollector {
    text: String,
}

impl CompletionCollector {
    /// Takes one event; returns the finished completion on `done`, an error on `error`.
    pub fn accept(
        &mut self,
        event: &RelayedEvent,
        identity: &CompletionIdentity,
    ) -> Option<Result<Value, GatewayError>> {
        match event.to_stream_event()? {
            StreamEvent::Queued { .. } => None,
            StreamEvent::Token { text, .. } => {
                self.text.push_str(&text);
                None
            }
            StreamEvent::Reset { .. } => {
                self.text.clear();
                None
            }
            StreamEvent::Done { usage, finish_reason, .. } => Some(Ok(json!({
                "id": identity.id,
                "object": "chat.completion",
                "created": identity.created,
                "model": identity.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": std::mem::take(&mut self.text)},
                    "finish_reason": finish_reason,
                }],
                "usage": usage,
            }))),
            StreamEvent::Error { code, message, .. } => Some(Err(GatewayError::ChatFailed { code, message })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> CompletionIdentity {
        CompletionIdentity { id: "chatcmpl-1".to_owned(), model: "mock \"1\"".to_owned(), created: 7 }
    }

    #[test]
    fn a_token_chunk_carries_the_text_exactly_and_the_identity() {
        let mut chunks =
            OpenAiChunks::new(&identity(), false, CancelOnDrop::disarmed(protocol::JobId::new_random()));
        let mut output = BytesMut::new();
        let token = r#"{"type":"token","seq":1,"text":"a \"b\"\n\u00e9"}"#;
        chunks.write_token(token, &mut output);
        let text = std::str::from_utf8(&output).expect("utf-8");
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter(|event| !event.is_empty())
            .map(|event| serde_json::from_str(event.strip_prefix("data: ").expect("data")).expect("json"))
            .collect();
        assert_eq!(chunks.len(), 2, "the role chunk, then the text: {text}");
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "a \"b\"\n\u{e9}");
        assert_eq!(chunks[1]["id"], "chatcmpl-1");
        assert_eq!(chunks[1]["model"], "mock \"1\"");
        assert_eq!(chunks[1]["created"], 7);
        assert_eq!(chunks[1]["object"], "chat.completion.chunk");
    }
}
