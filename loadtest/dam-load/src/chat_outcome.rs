//! What one chat looked like to its client: when it was admitted, when its first token and each next one came,
//! and how it ended. The chat flows fill these in; `run_recorder` counts and summarises them.

use std::time::{Duration, Instant};

/// How a chat ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOutcome {
    /// `[DONE]` (OpenAI) or `event: done` (browser).
    Done,
    /// An `error` event or an OpenAI error chunk, with its code.
    ErrorEvent(String),
    /// A status other than the expected one, with `X-Dam-Reason` when the answer had it.
    HttpStatus { status: u16, reason: Option<String> },
    /// The connection failed: refused, reset, or cut mid-body.
    Transport { stage: &'static str, detail: String },
    /// The body ended before the final event.
    EndedWithoutFinalEvent,
    /// The chat took longer than the chat timeout.
    TimedOut,
}

impl ChatOutcome {
    /// A short, low-cardinality name for counting (`done`, `http_429:queue_full`, `transport:connect`).
    pub fn key(&self) -> String {
        match self {
            ChatOutcome::Done => "done".to_owned(),
            ChatOutcome::ErrorEvent(code) => format!("error_event:{code}"),
            ChatOutcome::HttpStatus { status, reason: Some(reason) } => format!("http_{status}:{reason}"),
            ChatOutcome::HttpStatus { status, reason: None } => format!("http_{status}"),
            ChatOutcome::Transport { stage, .. } => format!("transport:{stage}"),
            ChatOutcome::EndedWithoutFinalEvent => "ended_without_final_event".to_owned(),
            ChatOutcome::TimedOut => "timed_out".to_owned(),
        }
    }

    /// A longer description of one occurrence, kept once per key in the result file.
    pub fn detail(&self) -> String {
        match self {
            ChatOutcome::Transport { detail, .. } => detail.clone(),
            other => other.key(),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, ChatOutcome::Done)
    }
}

/// What one chat looked like to its client. Times count from `started`, the moment the first request was sent.
#[derive(Debug, Clone)]
pub struct ChatTimeline {
    pub started: Instant,
    /// Until the response headers of the first request (for the browser flow, the 202).
    pub admitted_after: Option<Duration>,
    /// Until the first non-empty piece of text.
    pub first_token_after: Option<Duration>,
    /// Between consecutive non-empty pieces of text, in the order they came.
    pub token_gaps: Vec<Duration>,
    last_token_at: Option<Instant>,
    /// Non-empty pieces of text received.
    pub tokens: u32,
    /// `reset` events (the answer restarted).
    pub resets: u32,
    /// Until the final event, or until the chat failed.
    pub finished_after: Option<Duration>,
}

impl ChatTimeline {
    pub fn start() -> Self {
        Self {
            started: Instant::now(),
            admitted_after: None,
            first_token_after: None,
            token_gaps: Vec::with_capacity(64),
            last_token_at: None,
            tokens: 0,
            resets: 0,
            finished_after: None,
        }
    }

    pub fn note_admitted(&mut self) {
        self.admitted_after = Some(self.started.elapsed());
    }

    pub fn note_text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        let now = Instant::now();
        match self.last_token_at {
            Some(previous) => self.token_gaps.push(now - previous),
            None => self.first_token_after = Some(now - self.started),
        }
        self.last_token_at = Some(now);
        self.tokens += 1;
    }
}

/// A finished chat: its timeline and how it ended.
#[derive(Debug, Clone)]
pub struct ChatRecord {
    pub timeline: ChatTimeline,
    pub outcome: ChatOutcome,
    pub ended_at: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_keys_are_short_and_name_the_reason() {
        let refused = ChatOutcome::HttpStatus { status: 429, reason: Some("queue_full".to_owned()) };
        assert_eq!(refused.key(), "http_429:queue_full");
        let failed = ChatOutcome::Transport { stage: "connect", detail: "refused".to_owned() };
        assert_eq!(failed.key(), "transport:connect");
        assert_eq!(failed.detail(), "refused");
    }
}
