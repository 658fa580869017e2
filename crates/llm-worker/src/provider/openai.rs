//! The OpenAI-compatible provider, through async-openai's streaming chat API. The response types are our own,
//! lenient ones ("bring your own type"): providers such as OpenRouter add fields, send `finish_reason` values
//! outside OpenAI's list or omit fields, and none of that should fail an answer. Retries are the worker's
//! decision, so async-openai's built-in retry layer is replaced by a plain transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::error::OpenAIError;
use async_openai::middleware::{HttpRequestFactory, ReqwestService};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use protocol::settings::{ExposeSecret, LlmSettings};
use protocol::{ChatRole, JobEnvelope, Usage};
use serde::Deserialize;
use serde_json::json;

use super::{ProviderError, ProviderEvent};

/// An upstream answer as a stream of events.
pub type ProviderStream = BoxStream<'static, Result<ProviderEvent, ProviderError>>;

/// A client for one OpenAI-compatible base URL. Built once per process and cloned: one connection pool with
/// keep-alive for every job, and no per-call TLS or client setup (building a client loads the system's root
/// certificates from disk).
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: Client<OpenAIConfig>,
}

tokio::task_local! {
    /// Where the transport notes the `Retry-After` of the current call's error answer: set around each call, so
    /// one shared client still reports every call's own.
    static CALL_RETRY_AFTER: RetryAfterSlot;
}

impl OpenAiProvider {
    pub fn new(settings: &LlmSettings) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_secs(settings.request_timeout_s))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ProviderError::Transport(error.to_string()))?;
        let mut config = OpenAIConfig::new().with_api_base(settings.base_url.trim_end_matches('/'));
        if let Some(api_key) = &settings.api_key {
            config = config.with_api_key(api_key.expose_secret());
        }
        let service = RetryAfterRecorder { inner: ReqwestService::new(http.clone()) };
        Ok(Self { client: Client::build(http, config).with_http_service(service) })
    }

    /// Starts a streamed completion for `envelope`; the returned stream ends after the last event. Dropping it
    /// closes the upstream connection, which stops generation (and its cost).
    pub async fn stream_completion(&self, envelope: &JobEnvelope) -> Result<ProviderStream, ProviderError> {
        let request = completion_request(envelope);
        let retry_after = RetryAfterSlot::default();
        let chunks = CALL_RETRY_AFTER
            .scope(
                retry_after.clone(),
                self.client.chat().create_stream_byot::<serde_json::Value, LenientChunk>(request),
            )
            .await
            .map_err(|error| with_retry_after(provider_error(error), &retry_after))?;
        let events = chunks
            .map_err(provider_error)
            .map_ok(|chunk| futures::stream::iter(chunk.into_events().into_iter().map(Ok)))
            .try_flatten();
        Ok(events.boxed())
    }
}

/// The request body: the conversation, the sampling parameters and a request for usage in the last chunk.
fn completion_request(envelope: &JobEnvelope) -> serde_json::Value {
    let messages: Vec<_> = envelope
        .messages
        .iter()
        .map(|message| {
            let role = match message.role {
                ChatRole::System => "system",
                ChatRole::Developer => "developer",
                ChatRole::User => "user",
                ChatRole::Assistant => "assistant",
            };
            json!({"role": role, "content": message.content})
        })
        .collect();
    let parameters = &envelope.parameters;
    let mut request = json!({
        "model": envelope.model,
        "messages": messages,
        "max_tokens": parameters.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let optional = [
        ("temperature", parameters.temperature.map(|value| json!(value))),
        ("top_p", parameters.top_p.map(|value| json!(value))),
        ("presence_penalty", parameters.presence_penalty.map(|value| json!(value))),
        ("frequency_penalty", parameters.frequency_penalty.map(|value| json!(value))),
        ("seed", parameters.seed.map(|value| json!(value))),
        ("stop", (!parameters.stop.is_empty()).then(|| json!(parameters.stop))),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            request[name] = value;
        }
    }
    request
}

fn provider_error(error: OpenAIError) -> ProviderError {
    match error {
        OpenAIError::ApiError(response) => ProviderError::Status {
            status: response.status_code.as_u16(),
            message: response.api_error.message,
            retry_after: None,
        },
        OpenAIError::Reqwest(error) if error.is_timeout() => ProviderError::Timeout("request"),
        OpenAIError::Reqwest(error) => match error.status() {
            Some(status) => ProviderError::Status {
                status: status.as_u16(),
                message: error.to_string(),
                retry_after: None,
            },
            None => ProviderError::Transport(error.to_string()),
        },
        other => ProviderError::Transport(other.to_string()),
    }
}

/// The `Retry-After` of one call's error answer.
#[derive(Debug, Clone, Default)]
struct RetryAfterSlot(Arc<Mutex<Option<Duration>>>);

fn with_retry_after(error: ProviderError, slot: &RetryAfterSlot) -> ProviderError {
    match error {
        ProviderError::Status { status, message, .. } => {
            let retry_after = *slot.0.lock().unwrap_or_else(PoisonError::into_inner);
            ProviderError::Status { status, message, retry_after }
        }
        other => other,
    }
}

/// The transport, plus a note of the `Retry-After` header of error answers (async-openai's errors drop headers)
/// in the calling task's slot.
#[derive(Clone)]
struct RetryAfterRecorder {
    inner: ReqwestService,
}

impl tower::Service<HttpRequestFactory> for RetryAfterRecorder {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future = Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let answer = self.inner.call(request);
        // Called from within the job's task, inside its `CALL_RETRY_AFTER` scope.
        let slot = CALL_RETRY_AFTER.try_with(RetryAfterSlot::clone).ok();
        Box::pin(async move {
            let response = answer.await?;
            if let Some(slot) = slot.filter(|_| !response.status().is_success()) {
                let delay = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(|value| retry_after_delay(value, SystemTime::now()));
                *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = delay;
            }
            Ok(response)
        })
    }
}

/// A `Retry-After` value as a delay from `now`: seconds (RFC 9110 says a whole number; fractions are accepted),
/// or an HTTP date (a date already past is no delay). Anything else, or a delay too long for a `Duration`, is
/// no value: a provider's odd header must never crash the worker.
pub fn retry_after_delay(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds >= 0.0).then(|| Duration::try_from_secs_f64(seconds).ok()).flatten();
    }
    let until = httpdate::parse_http_date(value).ok()?;
    Some(until.duration_since(now).unwrap_or_default())
}

/// A `chat.completion.chunk`, reading only what the worker needs.
#[derive(Debug, Deserialize)]
struct LenientChunk {
    #[serde(default)]
    choices: Vec<LenientChoice>,
    #[serde(default)]
    usage: Option<LenientUsage>,
}

#[derive(Debug, Deserialize)]
struct LenientChoice {
    #[serde(default)]
    delta: Option<LenientDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LenientDelta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LenientUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
}

impl LenientChunk {
    fn into_events(self) -> Vec<ProviderEvent> {
        let mut events = Vec::new();
        // Only the first choice is relayed: the gateway refuses `n > 1`.
        if let Some(choice) = self.choices.into_iter().next() {
            if let Some(text) = choice.delta.and_then(|delta| delta.content).filter(|text| !text.is_empty()) {
                events.push(ProviderEvent::Text(text));
            }
            if let Some(finish_reason) = choice.finish_reason {
                events.push(ProviderEvent::Finished { finish_reason });
            }
        }
        if let Some(usage) = self.usage {
            let total_tokens = usage.total_tokens.max(usage.prompt_tokens + usage.completion_tokens);
            events.push(ProviderEvent::Usage(Usage {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                total_tokens,
            }));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_chunks_read_text_finish_and_usage_and_ignore_the_rest() {
        let chunk: LenientChunk = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion.chunk","provider":"extra",
                "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"error"}],
                "usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .expect("lenient chunk");
        assert_eq!(
            chunk.into_events(),
            vec![
                ProviderEvent::Text("Hi".to_owned()),
                ProviderEvent::Finished { finish_reason: "error".to_owned() },
                ProviderEvent::Usage(Usage { prompt_tokens: 3, completion_tokens: 1, total_tokens: 4 }),
            ]
        );
        let usage_only: LenientChunk = serde_json::from_str(r#"{"choices":[]}"#).expect("empty chunk");
        assert!(usage_only.into_events().is_empty());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates_and_never_panics_on_odd_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after_delay(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_delay("0.5", now), Some(Duration::from_millis(500)));
        let in_a_minute = httpdate::fmt_http_date(now + Duration::from_secs(60));
        assert_eq!(retry_after_delay(&in_a_minute, now), Some(Duration::from_secs(60)));
        let a_minute_ago = httpdate::fmt_http_date(now - Duration::from_secs(60));
        assert_eq!(retry_after_delay(&a_minute_ago, now), Some(Duration::ZERO), "a past date is no delay");
        for odd in ["1e30", "-3", "NaN", "inf", "soon", ""] {
            assert_eq!(retry_after_delay(odd, now), None, "{odd:?}");
        }
    }
}
