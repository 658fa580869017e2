//! A small Server-Sent Events reader for tests: turns a streaming HTTP response into parsed events, as a browser's
//! EventSource would see them.

use std::time::Duration;

use futures::StreamExt;

use crate::harness_failure::HarnessFailure;

/// One SSE event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    /// `message` when the server sent no `event:` line.
    pub event: String,
    pub data: String,
}

/// Reads events from a `text/event-stream` response.
pub struct SseReader {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SseReader").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self { body: response.bytes_stream().boxed(), buffer: String::new() }
    }

    /// The next event, or `None` when the stream ended cleanly. Comments (keep-alives) are skipped. A stream that
    /// breaks (a failed body, or an end in the middle of an event) panics: a test must not read it as a clean end.
    /// Tests that break streams on purpose use [`Self::try_next_event`].
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        self.try_next_event().await.unwrap_or_else(|failure| panic!("{failure}"))
    }

    /// The next event, `Ok(None)` when the stream ended cleanly, or the failure that broke it.
    pub async fn try_next_event(&mut self) -> Result<Option<SseEvent>, HarnessFailure> {
        loop {
            if let Some(event) = self.take_buffered_event() {
                return Ok(Some(event));
            }
            match self.body.next().await {
                Some(Ok(chunk)) => {
                    self.buffer.push_str(&String::from_utf8_lossy(&chunk).replace("\r\n", "\n"))
                }
                Some(Err(error)) => return Err(HarnessFailure::EventStreamBroke(error)),
                None => return self.end_of_body(),
            }
        }
    }

    /// A body that ended is a clean end only if no event was left half written (comments and blank lines are
    /// not events).
    fn end_of_body(&mut self) -> Result<Option<SseEvent>, HarnessFailure> {
        let leftover = std::mem::take(&mut self.buffer);
        let half_written = leftover.lines().any(|line| !line.is_empty() && !line.starts_with(':'));
        if half_written { Err(HarnessFailure::EventStreamEndedMidEvent(leftover)) } else { Ok(None) }
    }

    /// Like [`Self::next_event`], but panics if nothing arrives within `limit`.
    pub async fn next_event_within(&mut self, limit: Duration) -> Option<SseEvent> {
        tokio::time::timeout(limit, self.next_event()).await.expect("an SSE event within the time limit")
    }

    /// Every event until the stream ends, bounded by `limit` in total.
    pub async fn collect_all_within(&mut self, limit: Duration) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let collect = async {
            while let Some(event) = self.next_event().await {
                events.push(event);
            }
        };
        tokio::time::timeout(limit, collect).await.expect("the SSE stream ends within the time limit");
        events
    }

    fn take_buffered_event(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = SseEvent { event: "message".to_owned(), ..SseEvent::default() };
            let mut data_lines = Vec::new();
            for line in block.lines() {
                let (field, value) = match line.split_once(':') {
                    Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                    None => (line, ""),
                };
                match field {
                    "" => {}
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = value.to_owned(),
                    "data" => data_lines.push(value.to_owned()),
                    _ => {}
                }
            }
            if !data_lines.is_empty() || event.id.is_some() {
                event.data = data_lines.join("\n");
                return Some(event);
            }
        }
    }
}
