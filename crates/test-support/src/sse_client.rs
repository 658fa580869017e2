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
    /// Bytes after the last complete line: a chunk may end inside a line, even inside a character.
    undecoded: Vec<u8>,
    /// Complete lines not yet taken as events.
    buffer: String,
}

impl std::fmt::Debug for SseReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SseReader").field("buffered", &self.buffer.len()).finish_non_exhaustive()
    }
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        Self { body: response.bytes_stream().boxed(), undecoded: Vec::new(), buffer: String::new() }
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
                    self.undecoded.extend_from_slice(&chunk);
                    let lines = take_complete_lines(&mut self.undecoded)
                        .map_err(HarnessFailure::EventStreamNotUtf8)?;
                    self.buffer.push_str(&lines);
                }
                Some(Err(error)) => return Err(HarnessFailure::EventStreamBroke(error)),
                None => return self.end_of_body(),
            }
        }
    }

    /// A body that ended is a clean end only if no event was left half written (comments and blank lines are
    /// not events).
    fn end_of_body(&mut self) -> Result<Option<SseEvent>, HarnessFailure> {
        let mut leftover = std::mem::take(&mut self.buffer);
        leftover.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.undecoded)));
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

/// Takes the complete lines (up to the last `\n`) off the front of `undecoded` as text, with `\r\n` made `\n`.
/// A line ends with an ASCII byte, so a character split between two chunks stays whole in what is left.
fn take_complete_lines(undecoded: &mut Vec<u8>) -> Result<String, String> {
    let Some(last_newline) = undecoded.iter().rposition(|byte| *byte == b'\n') else {
        return Ok(String::new());
    };
    let lines: Vec<u8> = undecoded.drain(..=last_newline).collect();
    String::from_utf8(lines)
        .map(|text| text.replace("\r\n", "\n"))
        .map_err(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::take_complete_lines;

    #[test]
    fn a_character_split_between_two_chunks_is_decoded_whole() {
        let text = "data: {\"text\":\"caf\u{e9} \u{1f30a}\"}\r\n\n";
        let bytes = text.as_bytes();
        for split in 0..bytes.len() {
            let mut undecoded = bytes[..split].to_vec();
            let mut decoded = take_complete_lines(&mut undecoded).expect("UTF-8");
            undecoded.extend_from_slice(&bytes[split..]);
            decoded.push_str(&take_complete_lines(&mut undecoded).expect("UTF-8"));
            assert_eq!(decoded, text.replace("\r\n", "\n"), "split at byte {split}");
            assert!(undecoded.is_empty());
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_refused() {
        let mut undecoded = b"data: \xff\n\n".to_vec();
        assert!(take_complete_lines(&mut undecoded).is_err());
    }
}
