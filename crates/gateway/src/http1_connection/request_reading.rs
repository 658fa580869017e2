//! Reading one request off an HTTP/1.1 connection: the head, into a buffer that grows only as far as the head
//! needs and bounded by `gateway.max_header_bytes`, then the whole body (sized or chunked), bounded by
//! `gateway.max_body_bytes` and `gateway.body_read_timeout_ms`. Parsing the head itself is `http1_head.rs`.

use axum::body::Bytes;
use tokio::io::AsyncReadExt;

use super::{Http1Connection, NextRequest, RequestFailure};
use crate::error::GatewayError;
use crate::http1_head::{BodyFraming, HeadRefusal, RequestHead, parse_chunk_size, parse_request_head};

/// First size of the head buffer: a head proxied by nginx takes about 500 bytes; longer heads grow it.
const INITIAL_HEAD_BUFFER_BYTES: usize = 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// What every connection sends first when it speaks HTTP/2 with prior knowledge.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Http1Connection {
    /// Reads until a whole head is received (or the HTTP/2 preface, on a connection's first request).
    pub(super) async fn read_head(&mut self) -> Result<NextRequest, RequestFailure> {
        let max_header_bytes = self.context.limits.max_header_bytes;
        loop {
            if self.served_requests == 0 && opens_like_http2(&self.received) {
                if self.received.len() >= HTTP2_PREFACE.len() {
                    return Ok(NextRequest::Http2);
                }
            } else if !self.received.is_empty() {
                match parse_request_head(&self.received) {
                    Ok(Some((head, length))) if length <= max_header_bytes => {
                        self.received.drain(..length);
                        return Ok(NextRequest::Request(head));
                    }
                    Ok(Some(_)) => return Err(headers_too_large(max_header_bytes)),
                    Ok(None) if self.received.len() >= max_header_bytes => {
                        return Err(headers_too_large(max_header_bytes));
                    }
                    Ok(None) => {}
                    Err(HeadRefusal::TooLarge) => return Err(headers_too_large(max_header_bytes)),
                    Err(HeadRefusal::Malformed(message)) => {
                        return Err(RequestFailure::Refused(GatewayError::MalformedHttp(message)));
                    }
                }
            }
            if self.received.is_empty() {
                // An idle connection waits without a buffer.
                self.stream.readable().await?;
            }
            let wanted = (self.received.len().max(INITIAL_HEAD_BUFFER_BYTES))
                .min(max_header_bytes.saturating_sub(self.received.len()).max(1));
            if self.received.capacity() - self.received.len() < wanted / 2 {
                self.received.reserve_exact(wanted);
            }
            if self.stream.read_buf(&mut self.received).await? == 0 {
                // The client closed: cleanly between requests, or in the middle of a head.
                return Ok(NextRequest::Closed);
            }
        }
    }

    /// Reads the whole request body, within `gateway.max_body_bytes` and `gateway.body_read_timeout_ms`.
    pub(super) async fn read_body(&mut self, head: &RequestHead) -> Result<Bytes, RequestFailure> {
        let limits = self.context.limits;
        let too_large =
            || RequestFailure::Refused(GatewayError::BodyTooLarge { limit_bytes: limits.max_body_bytes });
        match head.body {
            BodyFraming::Empty => return Ok(Bytes::new()),
            BodyFraming::Length(length) if length > limits.max_body_bytes as u64 => return Err(too_large()),
            BodyFraming::Length(_) | BodyFraming::Chunked => {}
        }
        if head.expects_continue && self.received.is_empty() {
            self.write_bytes(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let read = async {
            match head.body {
                BodyFraming::Length(length) => self.read_sized_body(length as usize).await,
                _ => self.read_chunked_body(limits.max_body_bytes).await,
            }
        };
        match tokio::time::timeout(limits.body_read_timeout, read).await {
            Ok(body) => body,
            Err(_) => Err(RequestFailure::Refused(GatewayError::BodyTimeout)),
        }
    }

    async fn read_sized_body(&mut self, length: usize) -> Result<Bytes, RequestFailure> {
        let mut body = Vec::with_capacity(length);
        let already_received = length.min(self.received.len());
        body.extend(self.received.drain(..already_received));
        while body.len() < length {
            // The spare capacity is exactly what is missing, so nothing past this body is read.
            if self.stream.read_buf(&mut body).await? == 0 {
                return Err(RequestFailure::Dropped);
            }
        }
        Ok(Bytes::from(body))
    }

    async fn read_chunked_body(&mut self, max_body_bytes: usize) -> Result<Bytes, RequestFailure> {
        let mut body = Vec::new();
        loop {
            let line = self.read_line().await?;
            let size =
                parse_chunk_size(&line).map_err(|_| malformed("invalid chunk size in a chunked body"))?;
            if size == 0 {
                // Trailers, which are ignored, end with an empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(Bytes::from(body));
            }
            if body.len() as u64 + size > max_body_bytes as u64 {
                return Err(RequestFailure::Refused(GatewayError::BodyTooLarge {
                    limit_bytes: max_body_bytes,
                }));
            }
            let size = size as usize;
            while self.received.len() < size {
                self.receive_more().await?;
            }
            body.extend(self.received.drain(..size));
            if !self.read_line().await?.is_empty() {
                return Err(malformed("a chunk is longer than its size"));
            }
        }
    }

    /// One line of a chunked body, without its line ending.
    async fn read_line(&mut self) -> Result<Vec<u8>, RequestFailure> {
        loop {
            if let Some(end) = self.received.iter().position(|byte| *byte == b'\n') {
                let mut line: Vec<u8> = self.received.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.received.len() > MAX_CHUNK_LINE_BYTES {
                return Err(malformed("a line of the chunked body is too long"));
            }
            self.receive_more().await?;
        }
    }

    async fn receive_more(&mut self) -> Result<(), RequestFailure> {
        self.received.reserve(INITIAL_HEAD_BUFFER_BYTES);
        match self.stream.read_buf(&mut self.received).await? {
            0 => Err(RequestFailure::Dropped),
            _ => Ok(()),
        }
    }
}

/// Whether what the connection received so far may be the HTTP/2 preface.
fn opens_like_http2(received: &[u8]) -> bool {
    !received.is_empty() && HTTP2_PREFACE.starts_with(&received[..received.len().min(HTTP2_PREFACE.len())])
}

fn headers_too_large(limit_bytes: usize) -> RequestFailure {
    RequestFailure::Refused(GatewayError::HeadersTooLarge { limit_bytes })
}

fn malformed(message: &str) -> RequestFailure {
    RequestFailure::Refused(GatewayError::MalformedHttp(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_prefix_of_the_http2_preface_looks_like_http2() {
        assert!(opens_like_http2(b"PRI * HT"));
        assert!(opens_like_http2(HTTP2_PREFACE));
        assert!(!opens_like_http2(b"POST / HTTP/1.1\r\n"));
        assert!(!opens_like_http2(b""));
    }
}
