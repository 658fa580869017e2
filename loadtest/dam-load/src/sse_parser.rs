//! An incremental server-sent events parser: bytes go in as the network delivers them (split anywhere), whole
//! events come out. It knows the wire format only; what an event means belongs to `chat_events`.

/// One dispatched event: its `event:` type (`message` when none was given) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub event_type: String,
    pub data: String,
}

/// Holds the bytes of an unfinished line and the fields of the event being read.
#[derive(Debug, Default)]
pub struct SseParser {
    unread: Vec<u8>,
    /// Where the next unparsed line starts in `unread`.
    line_start: usize,
    fields: EventFields,
}

/// The fields of the event being read, apart from the bytes so the two can be borrowed separately.
#[derive(Debug, Default)]
struct EventFields {
    event_type: Option<String>,
    data: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes as they arrived; call `next_event` until it returns `None` afterwards.
    pub fn push_bytes(&mut self, chunk: &[u8]) {
        if self.line_start > 0 && self.line_start == self.unread.len() {
            self.unread.clear();
            self.line_start = 0;
        }
        self.unread.extend_from_slice(chunk);
    }

    /// The next complete event, if the bytes pushed so far finish one. Lines end in `\n` or `\r\n`; a blank line
    /// ends an event; lines starting with `:` are comments; unknown fields (`id:`, `retry:`) are skipped.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        while let Some(newline) = self.unread[self.line_start..].iter().position(|&byte| byte == b'\n') {
            let line_end = self.line_start + newline;
            let mut line = &self.unread[self.line_start..line_end];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let dispatched = self.fields.take_line(line);
            self.line_start = line_end + 1;
            if dispatched.is_some() {
                return dispatched;
            }
        }
        // Keep only the unfinished line, so the buffer never grows with the stream's length.
        self.unread.drain(..self.line_start);
        self.line_start = 0;
        None
    }
}

impl EventFields {
    fn take_line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            let event_type = self.event_type.take();
            let data = self.data.take()?;
            return Some(SseEvent { event_type: event_type.unwrap_or_else(|| "message".to_owned()), data });
        }
        if line[0] == b':' {
            // A comment: keep-alives, and the OpenAI flow's queue updates.
            return None;
        }
        let (field, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.event_type = Some(value.into_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events_from_chunks(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        for chunk in chunks {
            parser.push_bytes(chunk);
            while let Some(event) = parser.next_event() {
                events.push(event);
            }
        }
        events
    }

    fn event(event_type: &str, data: &str) -> SseEvent {
        SseEvent { event_type: event_type.to_owned(), data: data.to_owned() }
    }

    #[test]
    fn an_event_split_across_chunks_anywhere_comes_out_whole() {
        let wire: &[u8] = b"id: 3\nevent: token\ndata: {\"text\":\"river\"}\n\ndata: [DONE]\n\n";
        for split in 0..wire.len() {
            let events = events_from_chunks(&[&wire[..split], &wire[split..]]);
            assert_eq!(events, vec![event("token", "{\"text\":\"river\"}"), event("message", "[DONE]")]);
        }
    }

    #[test]
    fn a_byte_at_a_time_gives_the_same_events() {
        let wire: &[u8] = b"event: queued\ndata: {}\n\nevent: done\ndata: {}\n\n";
        let chunks: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(events_from_chunks(&chunks), vec![event("queued", "{}"), event("done", "{}")]);
    }

    #[test]
    fn multi_line_data_is_joined_with_newlines() {
        let events = events_from_chunks(&[b"data: first\ndata: second\ndata:third\n\n"]);
        assert_eq!(events, vec![event("message", "first\nsecond\nthird")]);
    }

    #[test]
    fn comments_are_never_dispatched_and_do_not_end_an_event() {
        let events = events_from_chunks(&[
            b": queued position=3 ahead=2\n\n: keep-alive\n\ndata: x\n: mid\ndata: y\n\n",
        ]);
        assert_eq!(events, vec![event("message", "x\ny")]);
    }

    #[test]
    fn crlf_line_endings_are_accepted() {
        let events = events_from_chunks(&[b"event: token\r\ndata: a\r", b"\n\r\n", b"data: b\r\n\r\n"]);
        assert_eq!(events, vec![event("token", "a"), event("message", "b")]);
    }

    #[test]
    fn a_blank_line_without_data_dispatches_nothing_and_the_type_resets() {
        let events = events_from_chunks(&[b"event: orphan\n\nid: 9\n\ndata: y\n\n"]);
        assert_eq!(events, vec![event("message", "y")]);
    }

    #[test]
    fn an_unfinished_event_waits_for_its_blank_line() {
        let mut parser = SseParser::new();
        parser.push_bytes(b"event: token\ndata: partial\n");
        assert_eq!(parser.next_event(), None);
        parser.push_bytes(b"\n");
        assert_eq!(parser.next_event(), Some(event("token", "partial")));
    }
}
