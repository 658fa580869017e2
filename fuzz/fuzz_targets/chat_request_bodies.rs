//! The gateway's chat request bodies on arbitrary bytes, through the same parse and validation as
//! `POST /api/chats` (first byte even) and `POST /v1/chat/completions` (odd): every body gets a chat or an error
//! answer, never a panic; a chat that passes keeps every limit and survives the trip to the worker.
#![no_main]

use axum::response::IntoResponse;
use gateway::chat_request::{BrowserChatRequest, OpenAiChatRequest, ValidatedChat};
use gateway::json_body::parse_json_body;
use libfuzzer_sys::fuzz_target;
use protocol::settings::ChatSettings;
use protocol::{JobEnvelope, Lane};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let settings = ChatSettings::default();
    let validated = if selector % 2 == 0 {
        parse_json_body::<BrowserChatRequest>(body).and_then(|request| request.validate(&settings))
    } else {
        parse_json_body::<OpenAiChatRequest>(body)
            .and_then(|request| request.validate(&settings))
            .map(|(chat, _stream)| chat)
    };
    match validated {
        Ok(chat) => check_validated_chat(&chat, &settings),
        // Every refusal becomes an answer with a status and a JSON body.
        Err(error) => {
            let response = error.into_response();
            assert!(response.status().is_client_error(), "{}", response.status());
        }
    }
});

fn check_validated_chat(chat: &ValidatedChat, settings: &ChatSettings) {
    assert!(!chat.messages.is_empty() && chat.messages.len() <= settings.max_messages);
    for message in &chat.messages {
        assert!(!message.content.trim().is_empty());
        assert!(message.content.chars().count() <= settings.max_message_chars);
    }
    assert!(settings.allowed_models.contains(&chat.model));
    let parameters = &chat.parameters;
    assert!(parameters.max_tokens >= 1 && parameters.max_tokens <= settings.max_tokens_limit);
    assert!(parameters.temperature.is_none_or(|value| (0.0..=2.0).contains(&value)));
    assert!(parameters.top_p.is_none_or(|value| (0.0..=1.0).contains(&value)));
    assert!(parameters.stop.len() <= 4);
    // What the gateway queues, the worker reads back unchanged.
    let envelope = JobEnvelope::new_chat(
        "ip:127.0.0.1".to_owned(),
        Lane::Standard,
        chat.messages.clone(),
        chat.model.clone(),
        parameters.clone(),
        1,
        2,
    );
    assert_eq!(JobEnvelope::decode(&envelope.encode()).expect("a queued envelope decodes"), envelope);
}
