//! The HTTP requests tests make of a `TestStack`: chats posted to a gateway, their event streams opened, and
//! mock-llm's knobs changed at runtime.

use crate::sse_client::SseReader;
use crate::test_stack::TestStack;

impl TestStack {
    /// Changes mock-llm's default knobs at runtime (`PUT /config`), e.g. `{"failure_rate": 1.0}`.
    pub async fn configure_mock_llm(&self, knobs: serde_json::Value) {
        let response = self
            .http
            .put(format!("http://{}/config", self.mock_llm.address()))
            .json(&knobs)
            .send()
            .await
            .expect("mock-llm answers");
        assert!(response.status().is_success(), "mock-llm took the knobs: {}", response.status());
    }

    pub fn gateway_url(&self, index: usize) -> String {
        self.gateways[index].url()
    }

    /// `POST /api/chats` on gateway `index` claiming to come from `client_ip` (through a trusted proxy).
    pub async fn post_chat_from(
        &self,
        index: usize,
        client_ip: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.http
            .post(format!("{}/api/chats", self.gateway_url(index)))
            .header("x-forwarded-for", client_ip)
            .json(body)
            .send()
            .await
            .expect("POST /api/chats reaches the gateway")
    }

    /// `POST /api/chats` on gateway `index` with a JSON body.
    pub async fn post_chat(&self, index: usize, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/chats", self.gateway_url(index)))
            .json(body)
            .send()
            .await
            .expect("POST /api/chats reaches the gateway")
    }

    /// Opens `events_url` (as returned by `POST /api/chats`) on gateway `index`.
    pub async fn open_events(&self, index: usize, events_url: &str) -> SseReader {
        let response = self
            .http
            .get(format!("{}{events_url}", self.gateway_url(index)))
            .send()
            .await
            .expect("GET events reaches the gateway");
        assert_eq!(response.status(), 200, "events stream opens");
        SseReader::new(response)
    }
}
