//! Coalesces upstream tokens into batches, so a job costs one Redis round trip per batch rather than per token:
//! a batch is flushed once it holds `max_tokens` tokens, or once its first token is `max_delay` old.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct TokenBatcher {
    max_tokens: usize,
    max_delay: Duration,
    text: String,
    tokens: usize,
    first_token_at: Option<Instant>,
}

impl TokenBatcher {
    pub fn new(max_tokens: usize, max_delay: Duration) -> Self {
        Self {
            max_tokens: max_tokens.max(1),
            max_delay,
            text: String::new(),
            tokens: 0,
            first_token_at: None,
        }
    }

    /// Adds one token; returns true when the batch is full and should be flushed now.
    pub fn push(&mut self, token: &str, now: Instant) -> bool {
        self.first_token_at.get_or_insert(now);
        self.text.push_str(token);
        self.tokens += 1;
        self.tokens >= self.max_tokens
    }

    /// When the current batch must be flushed at the latest; `None` while it is empty.
    pub fn flush_deadline(&self) -> Option<Instant> {
        self.first_token_at.map(|first| first + self.max_delay)
    }

    /// Empties the batch, returning its text (`None` when it held nothing).
    pub fn take(&mut self) -> Option<String> {
        self.first_token_at = None;
        self.tokens = 0;
        (!self.text.is_empty()).then(|| std::mem::take(&mut self.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_full_at_the_token_limit() {
        let start = Instant::now();
        let mut batcher = TokenBatcher::new(3, Duration::from_millis(25));
        assert!(!batcher.push("a", start));
        assert!(!batcher.push("b", start));
        assert!(batcher.push("c", start));
        assert_eq!(batcher.take().as_deref(), Some("abc"));
        assert_eq!(batcher.take(), None);
        assert_eq!(batcher.flush_deadline(), None);
    }

    #[test]
    fn the_deadline_runs_from_the_first_token_of_the_batch() {
        let start = Instant::now();
        let mut batcher = TokenBatcher::new(32, Duration::from_millis(25));
        batcher.push("a", start);
        batcher.push("b", start + Duration::from_millis(10));
        assert_eq!(batcher.flush_deadline(), Some(start + Duration::from_millis(25)));
        batcher.take();
        batcher.push("c", start + Duration::from_millis(40));
        assert_eq!(batcher.flush_deadline(), Some(start + Duration::from_millis(65)));
    }
}
