//! OpenAI's wire shapes for chat answers: `chat.completion.chunk` events for streams, one `chat.completion`
//! object otherwise, built from the relay's events.

use axum::response::sse::Event;
use protocol::{StreamEvent, Usage};
use serde_json::{Value, json};

use crate::cancellation::CancelOnDrop;
use crate::error::GatewayError;
use crate::sse_stream::{FormattedEvents, StreamFormat};

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
    fn chunk(&self, choices: Value, usage: Option<Usage>) -> Event {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(usage) = usage {
            chunk["usage"] = json!(usage);
        }
        Event::default().data(chunk.to_string())
    }
}

/// Streams OpenAI chunks. A `reset` after text went out cannot be taken back on this wire, so it ends the stream
/// with an error instead of repeating text.
#[derive(Debug)]
pub struct OpenAiChunks {
    pub identity: CompletionIdentity,
    pub include_usage: bool,
    pub sent_role: bool,
    pub sent_text: bool,
    /// Cancels the chat if the client leaves before the end.
    pub cancel_on_drop: CancelOnDrop,
}

impl StreamFormat for OpenAiChunks {
    fn format(&mut self, event: &StreamEvent, _last_seq: u64) -> FormattedEvents {
        let mut events = Vec::new();
        if !self.sent_role && !matches!(event, StreamEvent::Queued { .. } | StreamEvent::Error { .. }) {
            self.sent_role = true;
            let delta =
                json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]);
            events.push(self.identity.chunk(delta, None));
        }
        let end_stream = match event {
            StreamEvent::Queued { position, ahead, eta_ms } => {
                let eta = eta_ms.map(|eta| eta.to_string()).unwrap_or_else(|| "unknown".to_owned());
                events.push(
                    Event::default()
                        .comment(format!("queued position={position} ahead={ahead} eta_ms={eta}")),
                );
                false
            }
            StreamEvent::Token { text, .. } => {
                self.sent_text = true;
                let delta = json!([{"index": 0, "delta": {"content": text}, "finish_reason": null}]);
                events.push(self.identity.chunk(delta, None));
                false
            }
            StreamEvent::Reset { .. } if !self.sent_text => false,
            StreamEvent::Reset { .. } => {
                let error = GatewayError::ChatFailed {
                    code: "stream_reset".to_owned(),
                    message: "the answer restarted after part of it was sent; retry the request".to_owned(),
                };
                events.push(Event::default().data(json!(error.body()).to_string()));
                true
            }
            StreamEvent::Done { usage, finish_reason, .. } => {
                let finish = json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]);
                events.push(self.identity.chunk(finish, None));
                if self.include_usage {
                    events.push(self.identity.chunk(json!([]), Some(*usage)));
                }
                events.push(Event::default().data("[DONE]"));
                true
            }
            StreamEvent::Error { code, message, .. } => {
                let error = GatewayError::ChatFailed { code: code.clone(), message: message.clone() };
                events.push(Event::default().data(json!(error.body()).to_string()));
                true
            }
        };
        if end_stream || event.is_terminal() {
            self.cancel_on_drop.disarm();
        }
        FormattedEvents { events, end_stream }
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
        event: StreamEvent,
        identity: &CompletionIdentity,
    ) -> Option<Result<Value, GatewayError>> {
        match event {
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
