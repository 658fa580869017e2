//! Answers one chat completion: reads the request and its knobs, decides between an answer, an injected error and a
//! hang, then sends the deterministic answer whole or as an SSE stream on the knobs' schedule. Stats are counted
//! through a guard that travels with the answer; wire shapes live in `openai_wire`.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use tokio::time::{Instant, sleep_until};

use crate::answer_text::{answer_tokens, count_prompt_tokens, markup_answer_tokens};
use crate::error::MockLlmError;
use crate::knobs::{AnswerKnobs, KnobOverrides};
use crate::openai_wire::{
    AssistantMessage, ChatCompletion, ChatCompletionChoice, ChatCompletionChunk, ChatCompletionChunkChoice,
    ChatCompletionChunkDelta, ChatCompletionRequestBody, FinishReason, Usage,
};
use crate::startup::MockLlmState;
use crate::stats::ChatRequestGuard;

/// Everything needed to send one answer, decided before the first byte.
#[derive(Debug)]
struct AnswerPlan {
    completion_id: String,
    created: u64,
    model: String,
    /// Already cut to the request's `max_tokens`.
    tokens: Vec<String>,
    finish_reason: FinishReason,
    prompt_tokens: u32,
    stream: bool,
    include_usage: bool,
    knobs: AnswerKnobs,
}

impl AnswerPlan {
    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, u32::try_from(self.tokens.len()).unwrap_or(u32::MAX))
    }

    /// When the token at `token_index` is due: the schedule is fixed from the start, so slow polling does not
    /// stretch the answer.
    fn token_deadline(&self, answer_started: Instant, token_index: usize) -> Instant {
        let inter_token_delays = u32::try_from(token_index).unwrap_or(u32::MAX);
        answer_started
            + Duration::from_millis(self.knobs.time_to_first_token_ms)
            + Duration::from_millis(self.knobs.inter_token_delay_ms).saturating_mul(inter_token_delays)
    }

    /// The number of tokens after which the connection is cut, if the answer is long enough to reach it.
    fn cut_after_tokens(&self) -> Option<usize> {
        let cut = usize::try_from(self.knobs.fail_after_tokens?).ok()?;
        (cut <= self.tokens.len()).then_some(cut)
    }
}

/// Answers `POST /v1/chat/completions`. Every path through here counts in the stats exactly once.
pub(crate) async fn answer_chat_completion(
    state: &MockLlmState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, MockLlmError> {
    let mut guard = state.stats.start_chat_request();
    let plan = match plan_answer(state, headers, body) {
        Ok(plan) => plan,
        Err(error) => {
            guard.mark_failed();
            return Err(error);
        }
    };
    if let Some(status) = plan.knobs.forced_status {
        tracing::debug!(status, "answering the error status the request asked for");
        guard.mark_failed();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return Err(MockLlmError::InjectedStatus {
            status,
            retry_after_seconds: plan.knobs.retry_after_seconds,
        });
    }
    if plan.knobs.hang || state.config.decide(plan.knobs.hang_rate) {
        tracing::debug!("hanging: no answer until the client leaves or the server stops");
        return hang_until_shutdown(state, guard).await;
    }
    if state.config.decide(plan.knobs.failure_rate) {
        tracing::debug!(failure_rate = plan.knobs.failure_rate, "injecting a 500");
        guard.mark_failed();
        return Err(MockLlmError::InjectedFailure { retry_after_seconds: plan.knobs.retry_after_seconds });
    }

    guard.record_prompt_tokens(plan.prompt_tokens);
    if plan.stream { Ok(stream_answer(plan, guard)) } else { Ok(send_whole_answer(plan, guard).await) }
}

fn plan_answer(state: &MockLlmState, headers: &HeaderMap, body: &[u8]) -> Result<AnswerPlan, MockLlmError> {
    let request: ChatCompletionRequestBody = serde_json::from_slice(body).map_err(|error| {
        MockLlmError::InvalidRequestBody(format!("We could not parse the JSON body of your request: {error}"))
    })?;
    if request.messages.is_empty() {
        return Err(MockLlmError::InvalidRequestBody(
            "'messages' must contain at least one message".to_owned(),
        ));
    }
    let max_tokens = match (request.max_tokens, request.max_completion_tokens) {
        (Some(first), Some(second)) => Some(first.min(second)),
        (first, second) => first.or(second),
    };
    if max_tokens == Some(0) {
        return Err(MockLlmError::InvalidRequestBody("max_tokens must be at least 1".to_owned()));
    }

    let message_texts: Vec<String> = request.messages.iter().map(|message| message.text()).collect();
    let last_user_message = request
        .messages
        .iter()
        .zip(&message_texts)
        .rev()
        .find(|(message, _)| message.role == "user")
        .map(|(_, text)| text.as_str())
        .unwrap_or_default();
    // The directive is more specific than a header (it was written into this very message), so it wins.
    let header_overrides = KnobOverrides::from_headers(headers)?;
    let (directive_overrides, _) = KnobOverrides::from_directives(last_user_message)?;
    let knobs =
        state.config.answer_knobs().with_overrides(&header_overrides.overridden_by(&directive_overrides));

    let answer_length = max_tokens.map_or(knobs.tokens, |max_tokens| max_tokens.min(knobs.tokens));
    let finish_reason = if answer_length < knobs.tokens { FinishReason::Length } else { FinishReason::Stop };
    Ok(AnswerPlan {
        completion_id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs()),
        model: request.model,
        tokens: if knobs.markup {
            markup_answer_tokens(answer_length as usize)
        } else {
            answer_tokens(last_user_message, answer_length as usize)
        },
        finish_reason,
        prompt_tokens: count_prompt_tokens(message_texts.iter().map(String::as_str)),
        stream: request.stream.unwrap_or(false),
        include_usage: request.stream_options.and_then(|options| options.include_usage).unwrap_or(false),
        knobs,
    })
}

/// Sends nothing at all until the client gives up (hyper then drops this future and the guard counts the
/// cancellation) or the server shuts down.
async fn hang_until_shutdown(
    state: &MockLlmState,
    mut guard: ChatRequestGuard,
) -> Result<Response, MockLlmError> {
    guard.mark_hung();
    state.stopping.cancelled().await;
    guard.mark_failed();
    Err(MockLlmError::ShuttingDown)
}

/// A non-streamed answer arrives when its last token would have been streamed.
async fn send_whole_answer(plan: AnswerPlan, mut guard: ChatRequestGuard) -> Response {
    let answer_started = Instant::now();
    if let Some(cut) = plan.cut_after_tokens() {
        // As in a stream, the upstream "dies" when the token after the cut was due.
        sleep_until(plan.token_deadline(answer_started, cut)).await;
        (0..cut).for_each(|_| guard.count_completion_token());
        guard.mark_failed();
        // Headers go out, then the body breaks: the closest a handler gets to an upstream dying mid-answer.
        let broken_body = futures::stream::once(async { Err::<Bytes, _>(cut_connection_error()) });
        return (StatusCode::OK, Body::from_stream(broken_body)).into_response();
    }

    sleep_until(plan.token_deadline(answer_started, plan.tokens.len().saturating_sub(1))).await;
    let content = plan.tokens.concat();
    let completion = ChatCompletion {
        id: &plan.completion_id,
        object: "chat.completion",
        created: plan.created,
        model: &plan.model,
        choices: [ChatCompletionChoice {
            index: 0,
            message: AssistantMessage { role: "assistant", content: &content, refusal: None },
            logprobs: None,
            finish_reason: plan.finish_reason,
        }],
        usage: plan.usage(),
    };
    let response = Json(completion).into_response();
    plan.tokens.iter().for_each(|_| guard.count_completion_token());
    guard.mark_completed();
    response
}

/// An SSE response whose body produces the chunks on schedule. The guard lives in the body, so a client that
/// disconnects mid-stream drops it unmarked and is counted as cancelled.
fn stream_answer(plan: AnswerPlan, guard: ChatRequestGuard) -> Response {
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

/// A body error: hyper closes the connection without finishing the response.
fn cut_connection_error() -> io::Error {
    io::Error::other("mock-llm cut the connection on purpose (fail_after_tokens)")
}
