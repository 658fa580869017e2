//! A streamed answer: OpenAI's chunk sequence (the role, one chunk per token, the finishing chunk, the usage when
//! asked for, then `[DONE]`) sent as SSE on the plan's schedule, cut short when the knobs say so. What to answer
//! is decided in `chat_completions.rs`.

use std::io;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

use crate::chat_completions::{AnswerPlan, cut_connection_error};
use crate::openai_wire::{
    ChatCompletionChunk, ChatCompletionChunkChoice, ChatCompletionChunkDelta, FinishReason,
};
use crate::stats::ChatRequestGuard;

/// An SSE response whose body produces the chunks on schedule. The guard lives in the body, so a client that
/// disconnects mid-stream drops it unmarked and is counted as cancelled.
pub(crate) fn stream_answer(plan: AnswerPlan, guard: ChatRequestGuard) -> Response {
    let answer_stream =
        AnswerStream { plan, guard, answer_started: Instant::now(), next_step: AnswerStreamStep::RoleChunk };
    let body = futures::stream::unfold(answer_stream, |mut answer_stream| async move {
        let event = answer_stream.next_event().await?;
        Some((event, answer_stream))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Where a stream is in OpenAI's chunk sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AnswerStreamStep {
    RoleChunk,
    /// The token at this index, or the finishing chunk once the index reaches the answer's end.
    Token(usize),
    UsageChunk,
    Done,
    Ended,
}

#[derive(Debug)]
struct AnswerStream {
    plan: AnswerPlan,
    guard: ChatRequestGuard,
    answer_started: Instant,
    next_step: AnswerStreamStep,
}

impl AnswerStream {
    /// The next SSE event, or an error that makes hyper cut the connection, or `None` after `[DONE]`.
    async fn next_event(&mut self) -> Option<Result<Bytes, io::Error>> {
        match self.next_step {
            AnswerStreamStep::RoleChunk => {
                sleep_until(self.plan.token_deadline(self.answer_started, 0)).await;
                self.next_step = AnswerStreamStep::Token(0);
                let delta = ChatCompletionChunkDelta { role: Some("assistant"), content: Some("") };
                Some(self.choice_chunk(delta, None))
            }
            AnswerStreamStep::Token(token_index) if Some(token_index) == self.plan.cut_after_tokens() => {
                // The upstream "dies" when the next token was due. Yielding once lets hyper flush the tokens
                // already produced; an error right after them would make it drop them unsent.
                sleep_until(self.plan.token_deadline(self.answer_started, token_index)).await;
                tokio::task::yield_now().await;
                self.guard.mark_failed();
                self.next_step = AnswerStreamStep::Ended;
                Some(Err(cut_connection_error()))
            }
            AnswerStreamStep::Token(token_index) if token_index < self.plan.tokens.len() => {
                sleep_until(self.plan.token_deadline(self.answer_started, token_index)).await;
                self.next_step = AnswerStreamStep::Token(token_index + 1);
                self.guard.count_completion_token();
                let delta =
                    ChatCompletionChunkDelta { role: None, content: Some(&self.plan.tokens[token_index]) };
                Some(self.choice_chunk(delta, None))
            }
            AnswerStreamStep::Token(_) => {
                self.next_step = if self.plan.include_usage {
                    AnswerStreamStep::UsageChunk
                } else {
                    AnswerStreamStep::Done
                };
                Some(self.choice_chunk(ChatCompletionChunkDelta::default(), Some(self.plan.finish_reason)))
            }
            AnswerStreamStep::UsageChunk => {
                self.next_step = AnswerStreamStep::Done;
                Some(sse_event(&ChatCompletionChunk {
                    id: &self.plan.completion_id,
                    object: "chat.completion.chunk",
                    created: self.plan.created,
                    model: &self.plan.model,
                    choices: Vec::new(),
                    usage: Some(self.plan.usage()),
                }))
            }
            AnswerStreamStep::Done => {
                self.guard.mark_completed();
                self.next_step = AnswerStreamStep::Ended;
                Some(Ok(Bytes::from_static(b"data: [DONE]\n\n")))
            }
            AnswerStreamStep::Ended => None,
        }
    }

    fn choice_chunk(
        &self,
        delta: ChatCompletionChunkDelta<'_>,
        finish_reason: Option<FinishReason>,
    ) -> Result<Bytes, io::Error> {
        sse_event(&ChatCompletionChunk {
            id: &self.plan.completion_id,
            object: "chat.completion.chunk",
            created: self.plan.created,
            model: &self.plan.model,
            choices: vec![ChatCompletionChunkChoice { index: 0, delta, logprobs: None, finish_reason }],
            usage: None,
        })
    }
}

/// `data: <json>\n\n`.
fn sse_event(payload: &impl Serialize) -> Result<Bytes, io::Error> {
    let mut event = b"data: ".to_vec();
    serde_json::to_writer(&mut event, payload)?;
    event.extend_from_slice(b"\n\n");
    Ok(Bytes::from(event))
}
