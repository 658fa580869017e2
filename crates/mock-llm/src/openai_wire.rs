//! OpenAI's chat-completions wire format: the request fields the mock reads (all others are ignored, as a lenient
//! server would) and the exact response, chunk and model-list shapes. Types only; no behaviour.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions` body. Unknown fields are accepted and ignored, so any SDK's request parses.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatCompletionRequestBody {
    /// Echoed back; any id is accepted.
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The newer name of `max_tokens`; when both are present the smaller one applies.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ChatMessage {
    pub role: String,
    /// Absent or null for assistant messages that only carry tool calls.
    #[serde(default)]
    pub content: Option<MessageContent>,
}

impl ChatMessage {
    /// The message's text; the text parts of an array are joined by newlines, other parts (images...) are skipped.
    pub(crate) fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(MessageContent::Text(text)) => text.clone(),
            Some(MessageContent::Parts(parts)) => parts
                .iter()
                .filter(|part| part.part_type == "text")
                .filter_map(|part| part.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum MessageContent {
    Text(String),
    Parts(Vec<MessageContentPart>),
}

#[derive(Debug, Deserialize)]
pub(crate) struct MessageContentPart {
    #[serde(rename = "type")]
    pub part_type: String,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub include_usage: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FinishReason {
    Stop,
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u32, completion_tokens: u32) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A whole non-streamed answer (`object: "chat.completion"`).
#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletion<'answer> {
    pub id: &'answer str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'answer str,
    pub choices: [ChatCompletionChoice<'answer>; 1],
    pub usage: Usage,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletionChoice<'answer> {
    pub index: u32,
    pub message: AssistantMessage<'answer>,
    /// Always null; present because OpenAI always sends it.
    pub logprobs: Option<()>,
    pub finish_reason: FinishReason,
}

#[derive(Debug, Serialize)]
pub(crate) struct AssistantMessage<'answer> {
    pub role: &'static str,
    pub content: &'answer str,
    pub refusal: Option<()>,
}

/// One streamed event (`object: "chat.completion.chunk"`).
#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletionChunk<'answer> {
    pub id: &'answer str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'answer str,
    /// Empty only in the final usage chunk.
    pub choices: Vec<ChatCompletionChunkChoice<'answer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChatCompletionChunkChoice<'answer> {
    pub index: u32,
    pub delta: ChatCompletionChunkDelta<'answer>,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

/// Serialises as `{}` when both are absent, as in OpenAI's finishing chunk.
#[derive(Debug, Default, Serialize)]
pub(crate) struct ChatCompletionChunkDelta<'answer> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'answer str>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub(crate) struct ModelList {
    pub object: &'static str,
    pub data: Vec<Model>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Model {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}
