//! A chat's event stream read until its final event, and what each event means in either flow: OpenAI `data:`
//! chunks until `[DONE]`, or the browser flow's `token`, `reset`, `done` and `error` events.

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;

use crate::chat_outcome::{ChatOutcome, ChatTimeline};
use crate::sse_parser::{SseEvent, SseParser};

/// After the final event, the rest of the body (the OpenAI usage chunk, the end of the chunked body) is read
/// for at most this long, so the connection can go back to the pool; past it the connection is dropped.
const BODY_END_WAIT: Duration = Duration::from_secs(2);

/// What an event means for the chat: `Some(outcome)` when it is the final one.
pub type EventInterpreter = fn(&SseEvent, &mut ChatTimeline) -> Option<ChatOutcome>;

/// Reads the event stream until `interpret` names a final event, the body ends, or the connection fails.
pub async fn read_events_until_final(
    mut body: Incoming,
    timeline: &mut ChatTimeline,
    interpret: EventInterpreter,
) -> ChatOutcome {
    let mut parser = SseParser::new();
    loop {
        match body.frame().await {
            None => return ChatOutcome::EndedWithoutFinalEvent,
            Some(Err(error)) => {
                return ChatOutcome::Transport { stage: "stream", detail: error.to_string() };
            }
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else { continue };
                parser.push_bytes(&data);
                while let Some(event) = parser.next_event() {
                    if let Some(outcome) = interpret(&event, timeline) {
                        timeline.finished_after = Some(timeline.started.elapsed());
                        finish_reading_body(body).await;
                        return outcome;
                    }
                }
            }
        }
    }
}

/// Reads what is left of a body, briefly, so that its keep-alive connection returns to the pool.
async fn finish_reading_body(mut body: Incoming) {
    let _ignored =
        tokio::time::timeout(BODY_END_WAIT, async { while let Some(Ok(_frame)) = body.frame().await {} })
            .await;
}

pub fn interpret_openai_event(event: &SseEvent, timeline: &mut ChatTimeline) -> Option<ChatOutcome> {
    #[derive(Deserialize)]
    struct Chunk {
        #[serde(default)]
        choices: Vec<Choice>,
        error: Option<ErrorBody>,
    }
    #[derive(Deserialize)]
    struct Choice {
        delta: Option<Delta>,
    }
    #[derive(Deserialize)]
    struct Delta {
        content: Option<String>,
    }

    if event.data == "[DONE]" {
        return Some(ChatOutcome::Done);
    }
    let Ok(chunk) = serde_json::from_str::<Chunk>(&event.data) else {
        return Some(ChatOutcome::ErrorEvent("unparsable_chunk".to_owned()));
    };
    if let Some(error) = chunk.error {
        return Some(ChatOutcome::ErrorEvent(error.code_or_unknown()));
    }
    for choice in chunk.choices {
        if let Some(content) = choice.delta.and_then(|delta| delta.content) {
            timeline.note_text(&content);
        }
    }
    None
}

pub fn interpret_browser_event(event: &SseEvent, timeline: &mut ChatTimeline) -> Option<ChatOutcome> {
    #[derive(Deserialize)]
    struct TokenData {
        text: String,
    }
    match event.event_type.as_str() {
        "token" => {
            match serde_json::from_str::<TokenData>(&event.data) {
                Ok(token) => timeline.note_text(&token.text),
                Err(_) => return Some(ChatOutcome::ErrorEvent("unparsable_token".to_owned())),
            }
            None
        }
        "reset" => {
            timeline.resets += 1;
            None
        }
        "done" => Some(ChatOutcome::Done),
        "error" => {
            let code = serde_json::from_str::<ErrorBody>(&event.data).map(ErrorBody::code_or_unknown);
            Some(ChatOutcome::ErrorEvent(code.unwrap_or_else(|_| "unparsable_error".to_owned())))
        }
        _ => None,
    }
}

/// The `code` of an error, wherever the two flows put it.
#[derive(Deserialize)]
struct ErrorBody {
    code: Option<serde_json::Value>,
}

impl ErrorBody {
    fn code_or_unknown(self) -> String {
        match self.code {
            Some(serde_json::Value::String(code)) => code,
            Some(other) => other.to_string(),
            None => "unknown".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: &str) -> SseEvent {
        SseEvent { event_type: event_type.to_owned(), data: data.to_owned() }
    }

    #[test]
    fn openai_chunks_count_non_empty_text_and_end_at_done() {
        let mut timeline = ChatTimeline::start();
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let text = r#"{"choices":[{"index":0,"delta":{"content":"The river"}}]}"#;
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":3}}"#;
        assert_eq!(interpret_openai_event(&event("message", role), &mut timeline), None);
        assert_eq!(timeline.first_token_after, None);
        assert_eq!(interpret_openai_event(&event("message", text), &mut timeline), None);
        assert_eq!(interpret_openai_event(&event("message", text), &mut timeline), None);
        assert_eq!(interpret_openai_event(&event("message", usage), &mut timeline), None);
        assert_eq!(
            interpret_openai_event(&event("message", "[DONE]"), &mut timeline),
            Some(ChatOutcome::Done)
        );
        assert_eq!(timeline.tokens, 2);
        assert!(timeline.first_token_after.is_some());
        assert_eq!(timeline.token_gaps.len(), 1);
    }

    #[test]
    fn an_openai_error_chunk_ends_the_chat_with_its_code() {
        let mut timeline = ChatTimeline::start();
        let error = r#"{"error":{"code":"upstream_failed","message":"x"}}"#;
        assert_eq!(
            interpret_openai_event(&event("message", error), &mut timeline),
            Some(ChatOutcome::ErrorEvent("upstream_failed".to_owned()))
        );
    }

    #[test]
    fn browser_events_count_tokens_and_resets_and_end_at_done_or_error() {
        let mut timeline = ChatTimeline::start();
        assert_eq!(interpret_browser_event(&event("queued", r#"{"position":1}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("token", r#"{"seq":1,"text":"A"}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("reset", r#"{"seq":2}"#), &mut timeline), None);
        assert_eq!(interpret_browser_event(&event("done", "{}"), &mut timeline), Some(ChatOutcome::Done));
        assert_eq!((timeline.tokens, timeline.resets), (1, 1));
        assert_eq!(
            interpret_browser_event(&event("error", r#"{"seq":3,"code":"expired"}"#), &mut timeline),
            Some(ChatOutcome::ErrorEvent("expired".to_owned()))
        );
    }
}
