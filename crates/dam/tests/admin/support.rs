//! `AdminTestApp`: a `TestStack` plus a dam with an admin token, and request helpers that answer (status, JSON).

use std::time::Duration;

use futures::StreamExt;
use protocol::settings::SecretString;
use protocol::{JobEnvelope, Lane};
use reqwest::Method;
use serde_json::Value;
use test_support::{ServiceHandle, StackOptions, TestStack, spawn_dam};

pub const ADMIN_TOKEN: &str = "test-admin-token-4f9c2a";

/// A stack without gateways or workers: enough for everything the dam does alone.
pub fn dam_only() -> StackOptions {
    StackOptions { gateways: 0, workers: 0, ..StackOptions::default() }
}

#[derive(Debug)]
pub struct AdminTestApp {
    pub stack: TestStack,
    pub dam: ServiceHandle,
}

impl AdminTestApp {
    pub async fn start(options: StackOptions) -> Self {
        let stack = TestStack::start_with(options, |settings| {
            settings.dam.admin_token = Some(SecretString::from(ADMIN_TOKEN));
        })
        .await;
        let dam = spawn_dam(stack.settings.clone()).await;
        Self { stack, dam }
    }

    pub fn dam_url(&self) -> String {
        self.dam.url()
    }

    /// Sends an authenticated admin request.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request(method, path, Some(ADMIN_TOKEN), body).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.admin(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin(Method::POST, path, body).await
    }

    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.admin(Method::DELETE, path, None).await
    }

    /// Sends a request with any token (or none); the answer must be JSON.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.stack.http.request(method, format!("{}{path}", self.dam_url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the request reaches the dam");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON answer, got {status}: {text}")),
        )
    }

    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        self.stack.redis_connection().await
    }

    pub fn keys(&self) -> protocol::RedisKeys {
        self.stack.keys()
    }

    /// Subscribes to the control channel; messages published after this call arrive on the stream.
    pub async fn control_messages(&self) -> futures::stream::BoxStream<'static, String> {
        let mut subscriber = self.stack.redis.client().get_async_pubsub().await.expect("pubsub connection");
        subscriber.subscribe(self.keys().control_channel()).await.expect("subscribe");
        subscriber
            .into_on_message()
            .map(|message| message.get_payload::<String>().expect("text payload"))
            .boxed()
    }
}

/// The next control message, within a second.
pub async fn next_control_message(messages: &mut futures::stream::BoxStream<'static, String>) -> Value {
    let payload = tokio::time::timeout(Duration::from_secs(1), messages.next())
        .await
        .expect("a control message within a second")
        .expect("the subscription is open");
    serde_json::from_str(&payload).expect("control messages are JSON")
}

/// Asserts an error answer: status, stable code, a message for humans.
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    let (actual_status, body) = answer;
    assert_eq!(*actual_status, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{body}");
}

/// A chat envelope as a gateway would have queued it, `age_ms` ago.
pub fn chat_envelope(prompt: &str, lane: Lane, age_ms: u64) -> JobEnvelope {
    let mut envelope = test_support::sample_envelope(prompt, lane);
    envelope.created_at_ms -= age_ms;
    envelope.deadline_ms -= age_ms;
    envelope
}
