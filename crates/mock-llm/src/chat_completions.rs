//! Answers one chat completion: reads the request and its knobs, decides between an answer, an injected error and a
//! hang, then sends the deterministic answer whole, or hands it to `answer_stream` to send as SSE, on the knobs'
//! schedule. Stats are counted through a guard that travels with the answer; wire shapes live in `openai_wire`.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::time::{Instant, sleep_until};

use crate::answer_stream::stream_answer;
use crate::answer_text::{answer_tokens, count_prompt_tokens, markup_answer_tokens};
use crate::error::MockLlmError;
use crate::knobs::{AnswerKnobs, KnobOverrides};
use crate::openai_wire::{
    AssistantMessage, ChatCompletion, ChatCompletionChoice, ChatCompletionRequestBody, FinishReason, Usage,
};
use crate::startup::MockLlmState;
use crate::stats::ChatRequestGuard;

/// Everything needed to send one answer, decided before the first byte.
#[derive(Debug)]
pub(crate) struct AnswerPlan {
    pub completion_id: String,
    pub created: u64,
    pub model: String,
    /// Already cut to the request's `max_tokens`.
    pub tokens: Vec<String>,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub stream: bool,
    pub include_usage: bool,
    pub knobs: AnswerKnobs,
}

impl AnswerPlan {
    pub(crate) fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, u32::try_from(self.tokens.len()).unwrap_or(u32::MAX))
    }

    /// When the token at `token_index` is due: the schedule is fixed from the start, so slow polling does not
    /// stretch the answer.
    pub(crate) fn token_deadline(&self, answer_started: Instant, token_index: usize) -> Instant {
        let inter_token_delays = u32::try_from(token_index).unwrap_or(u32::MAX);
        answer_started
            + Duration::from_millis(self.knobs.time_to_first_token_ms)
            + Duration::from_millis(self.knobs.inter_token_delay_ms).saturating_mul(inter_token_delays)
    }

    /// The number of tokens after which the connection is cut, if the answer is long enough to reach it.
    pub(crate) fn cut_after_tokens(&self) -> Option<usize> {
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

/// A body error: hyper closes the connection without finishing the response.
pub(crate) fn cut_connection_error() -> io::Error {
    io::Error::other("mock-llm cut the connection on purpose (fail_after_tokens)")
}
