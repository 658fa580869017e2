//! The chat requests the gateway accepts (the browser's `POST /api/chats` body and OpenAI's
//! `POST /v1/chat/completions` body) and their validation into one `ValidatedChat`. Pure functions: nothing here
//! touches Redis, so bad input is refused before it costs anything.

use protocol::settings::ChatSettings;
use protocol::{ChatMessage, ChatRole, GenerationParameters};
use serde::Deserialize;

use crate::error::GatewayError;

/// Most stop sequences a request may name, as in OpenAI's API.
const MAX_STOP_SEQUENCES: usize = 4;

/// A request that passed every check, ready for admission.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedChat {
    pub messages: Vec<ChatMessage>,
    pub model: String,
    pub parameters: GenerationParameters,
}

/// Sampling fields shared by both request bodies.
#[derive(Debug, Default, Deserialize)]
pub struct RequestedParameters {
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Option<StopSequences>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub seed: Option<i64>,
    pub n: Option<u32>,
}

/// OpenAI allows `stop` as one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

/// `POST /api/chats`: either one `message` or a whole `messages` conversation.
#[derive(Debug, Deserialize)]
pub struct BrowserChatRequest {
    pub message: Option<String>,
    pub messages: Option<Vec<IncomingMessage>>,
    pub model: Option<String>,
    #[serde(flatten)]
    pub parameters: RequestedParameters,
}

/// `POST /v1/chat/completions`, the fields this gateway reads; others are ignored as OpenAI-compatible servers do.
#[derive(Debug, Deserialize)]
pub struct OpenAiChatRequest {
    pub model: Option<String>,
    pub messages: Vec<IncomingMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    #[serde(flatten)]
    pub parameters: RequestedParameters,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A message as clients send it: content is a string or a list of text parts.
#[derive(Debug, Deserialize)]
pub struct IncomingMessage {
    pub role: String,
    pub content: MessageContent,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl BrowserChatRequest {
    pub fn validate(self, settings: &ChatSettings) -> Result<ValidatedChat, GatewayError> {
        let messages = match (self.message, self.messages) {
            (Some(_), Some(_)) => {
                return Err(GatewayError::invalid(
                    "conflicting_fields",
                    "send either `message` or `messages`, not both",
                    Some("message"),
                ));
            }
            (Some(text), None) => {
                vec![IncomingMessage { role: "user".to_owned(), content: MessageContent::Text(text) }]
            }
            (None, Some(messages)) => messages,
            (None, None) => {
                return Err(GatewayError::invalid(
                    "missing_message",
                    "the body needs `message` (a string) or `messages` (a list)",
                    Some("message"),
                ));
            }
        };
        validate_chat(messages, self.model, self.parameters, settings)
    }
}

impl OpenAiChatRequest {
    /// Validates, returning the chat plus whether to stream and whether to add a usage chunk.
    pub fn validate(self, settings: &ChatSettings) -> Result<(ValidatedChat, StreamChoice), GatewayError> {
        let choice = StreamChoice {
            stream: self.stream,
            include_usage: self.stream_options.is_some_and(|options| options.include_usage),
        };
        Ok((validate_chat(self.messages, self.model, self.parameters, settings)?, choice))
    }
}

/// How an OpenAI client wants its answer delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamChoice {
    pub stream: bool,
    pub include_usage: bool,
}

/// The checks both flows share: messages, model and sampling parameters.
pub fn validate_chat(
    incoming: Vec<IncomingMessage>,
    model: Option<String>,
    requested: RequestedParameters,
    settings: &ChatSettings,
) -> Result<ValidatedChat, GatewayError> {
    if incoming.is_empty() {
        return Err(GatewayError::invalid(
            "missing_message",
            "`messages` must not be empty",
            Some("messages"),
        ));
    }
    if incoming.len() > settings.max_messages {
        return Err(GatewayError::invalid(
            "too_many_messages",
            format!("{} messages sent; the limit is {}", incoming.len(), settings.max_messages),
            Some("messages"),
        ));
    }
    let mut messages = Vec::with_capacity(incoming.len());
    for (index, message) in incoming.into_iter().enumerate() {
        messages.push(validate_message(index, message, settings)?);
    }
    if !messages.iter().any(|message| message.role == ChatRole::User) {
        return Err(GatewayError::invalid(
            "missing_message",
            "the conversation needs at least one `user` message",
            Some("messages"),
        ));
    }

    let model = model.unwrap_or_else(|| settings.default_model.clone());
    if !settings.allowed_models.contains(&model) {
        return Err(GatewayError::UnknownModel {
            requested: model,
            allowed: settings.allowed_models.clone(),
        });
    }
    Ok(ValidatedChat { messages, model, parameters: validate_parameters(requested, settings)? })
}

fn validate_message(
    index: usize,
    message: IncomingMessage,
    settings: &ChatSettings,
) -> Result<ChatMessage, GatewayError> {
    let param = format!("messages[{index}]");
    let role = match message.role.as_str() {
        "system" => ChatRole::System,
        "developer" => ChatRole::Developer,
        "user" => ChatRole::User,
        "assistant" => ChatRole::Assistant,
        other => {
            return Err(GatewayError::invalid(
                "invalid_role",
                format!("{param}.role is {other:?}; allowed: system, developer, user, assistant"),
                Some(&format!("{param}.role")),
            ));
        }
    };
    let content = match message.content {
        MessageContent::Text(text) => text,
        MessageContent::Parts(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.kind.as_str(), part.text) {
                    ("text", Some(part_text)) => text.push_str(&part_text),
                    (kind, _) => {
                        return Err(GatewayError::invalid(
                            "unsupported_content",
                            format!(
                                "{param}.content has a part of type {kind:?}; only text parts are supported"
                            ),
                            Some(&format!("{param}.content")),
                        ));
                    }
                }
            }
            text
        }
    };
    if content.trim().is_empty() {
        return Err(GatewayError::invalid(
            "empty_message",
            format!("{param}.content is empty"),
            Some(&format!("{param}.content")),
        ));
    }
    let length = content.chars().count();
    if length > settings.max_message_chars {
        return Err(GatewayError::MessageTooLong { index, length, limit: settings.max_message_chars });
    }
    Ok(ChatMessage { role, content })
}

fn validate_parameters(
    requested: RequestedParameters,
    settings: &ChatSettings,
) -> Result<GenerationParameters, GatewayError> {
    if requested.n.is_some_and(|n| n != 1) {
        return Err(GatewayError::invalid("unsupported_parameter", "only `n = 1` is supported", Some("n")));
    }
    let max_tokens =
        requested.max_completion_tokens.or(requested.max_tokens).unwrap_or(settings.default_max_tokens);
    if max_tokens == 0 || max_tokens > settings.max_tokens_limit {
        return Err(GatewayError::invalid(
            "invalid_parameter",
            format!("max_tokens must be between 1 and {}", settings.max_tokens_limit),
            Some("max_tokens"),
        ));
    }
    check_range("temperature", requested.temperature, 0.0, 2.0)?;
    check_range("top_p", requested.top_p, 0.0, 1.0)?;
    check_range("presence_penalty", requested.presence_penalty, -2.0, 2.0)?;
    check_range("frequency_penalty", requested.frequency_penalty, -2.0, 2.0)?;
    let stop = match requested.stop {
        None => Vec::new(),
        Some(StopSequences::One(one)) => vec![one],
        Some(StopSequences::Many(many)) => many,
    };
    if stop.len() > MAX_STOP_SEQUENCES || stop.iter().any(String::is_empty) {
        return Err(GatewayError::invalid(
            "invalid_parameter",
            format!("stop takes 1 to {MAX_STOP_SEQUENCES} non-empty strings"),
            Some("stop"),
        ));
    }
    Ok(GenerationParameters {
        max_tokens,
        temperature: requested.temperature,
        top_p: requested.top_p,
        stop,
        presence_penalty: requested.presence_penalty,
        frequency_penalty: requested.frequency_penalty,
        seed: requested.seed,
    })
}

fn check_range(name: &str, value: Option<f32>, low: f32, high: f32) -> Result<(), GatewayError> {
    match value {
        Some(value) if !(low..=high).contains(&value) => Err(GatewayError::invalid(
            "invalid_parameter",
            format!("{name} must be between {low} and {high}"),
            Some(name),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json_body::parse_json_body;

    fn browser(body: &str) -> Result<ValidatedChat, GatewayError> {
        parse_json_body::<BrowserChatRequest>(body.as_bytes())?.validate(&ChatSettings::default())
    }

    #[test]
    fn a_single_message_becomes_one_user_message_with_defaults() {
        let chat = browser(r#"{"message":"Hello"}"#).expect("valid");
        assert_eq!(chat.messages, vec![ChatMessage { role: ChatRole::User, content: "Hello".to_owned() }]);
        assert_eq!(chat.model, "mock-1");
        assert_eq!(chat.parameters.max_tokens, ChatSettings::default().default_max_tokens);
    }

    #[test]
    fn missing_empty_and_conflicting_messages_are_refused_with_codes() {
        assert_eq!(browser("{}").expect_err("missing").code(), "missing_message");
        assert_eq!(browser(r#"{"message":"  "}"#).expect_err("empty").code(), "empty_message");
        assert_eq!(browser(r#"{"messages":[]}"#).expect_err("none").code(), "missing_message");
        assert_eq!(
            browser(r#"{"message":"a","messages":[]}"#).expect_err("both").code(),
            "conflicting_fields"
        );
        assert_eq!(browser(r#"{"message":7}"#).expect_err("type").code(), "invalid_field");
    }

    #[test]
    fn limits_on_length_count_model_and_parameters_hold() {
        let settings = ChatSettings::default();
        let long = "x".repeat(settings.max_message_chars + 1);
        assert_eq!(
            browser(&format!(r#"{{"message":"{long}"}}"#)).expect_err("long").code(),
            "message_too_long"
        );
        let many: Vec<String> =
            (0..=settings.max_messages).map(|_| r#"{"role":"user","content":"hi"}"#.into()).collect();
        let body = format!(r#"{{"messages":[{}]}}"#, many.join(","));
        assert_eq!(browser(&body).expect_err("many").code(), "too_many_messages");
        let unknown = browser(r#"{"message":"a","model":"gpt-9"}"#).expect_err("model");
        assert_eq!(unknown.code(), "model_not_found");
        assert!(unknown.to_string().contains("mock-1"), "lists the allowed models: {unknown}");
        assert_eq!(
            browser(r#"{"message":"a","temperature":3}"#).expect_err("temp").code(),
            "invalid_parameter"
        );
        assert_eq!(
            browser(r#"{"message":"a","max_tokens":0}"#).expect_err("max").code(),
            "invalid_parameter"
        );
        assert_eq!(browser(r#"{"message":"a","n":2}"#).expect_err("n").code(), "unsupported_parameter");
    }

    #[test]
    fn openai_bodies_accept_text_parts_and_ignore_unknown_fields() {
        let body = r#"{"model":"mock-1","stream":true,"stream_options":{"include_usage":true},"user":"u",
            "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],
            "max_completion_tokens":5,"stop":"\n"}"#;
        let request: OpenAiChatRequest = parse_json_body(body.as_bytes()).expect("parses");
        let (chat, choice) = request.validate(&ChatSettings::default()).expect("valid");
        assert_eq!(choice, StreamChoice { stream: true, include_usage: true });
        assert_eq!(chat.messages[1].content, "Hi");
        assert_eq!(chat.parameters.max_tokens, 5);
        assert_eq!(chat.parameters.stop, vec!["\n".to_owned()]);
    }

    #[test]
    fn roles_and_content_parts_outside_text_chat_are_refused() {
        let tool = r#"{"messages":[{"role":"tool","content":"x"}]}"#;
        assert_eq!(browser(tool).expect_err("tool").code(), "invalid_role");
        let image = r#"{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#;
        assert_eq!(browser(image).expect_err("image").code(), "unsupported_content");
        let no_user = r#"{"messages":[{"role":"system","content":"x"}]}"#;
        assert_eq!(browser(no_user).expect_err("no user").code(), "missing_message");
    }
}
