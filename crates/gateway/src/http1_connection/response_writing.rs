//! Writing answers on an HTTP/1.1 connection: the head encoded with the framing this connection chooses, then the
//! body as its frames come, chunked when its length is unknown, with no write buffer held while the body is
//! quiet; a client that stops reading is cut after `gateway.response_write_timeout_ms`, and one that leaves is
//! noticed while its answer streams.

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::net::TcpStream;

use super::Http1Connection;

/// The first frames of a body ready with its head are written with it, up to this size.
const WRITE_GATHER_BYTES: usize = 16 * 1024;
/// The end of a chunked body: a chunk of size zero, no trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What happened while a response body was waited for.
enum BodyProgress {
    Frame(Option<Result<http_body::Frame<Bytes>, axum::Error>>),
    ClientReadable,
}

impl Http1Connection {
    /// Writes an answer: its head, then its body as the frames come.
    pub(super) async fn write_answer(&mut self, answer: EncodedAnswer) -> io::Result<()> {
        let EncodedAnswer { mut output, body, chunked, .. } = answer;
        let Some(mut body) = body else {
            return self.write_bytes(&output).await;
        };
        // The head goes out with whatever the body already has, so a small answer is one write.
        let ended = gather_ready_frames(&mut body, &mut output, chunked)?;
        if ended && chunked {
            output.extend_from_slice(LAST_CHUNK);
        }
        self.write_bytes(&output).await?;
        if ended {
            return Ok(());
        }
        // Hold no write buffer while the body is quiet (an event stream is quiet most of the time).
        drop(output);
        let mut watching_client = true;
        loop {
            match self.next_body_progress(&mut body, watching_client).await {
                BodyProgress::Frame(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.write_body_data(&data, chunked).await?;
                    }
                }
                BodyProgress::Frame(Some(Err(error))) => return Err(io::Error::other(error)),
                BodyProgress::Frame(None) if chunked => return self.write_bytes(LAST_CHUNK).await,
                BodyProgress::Frame(None) => return Ok(()),
                BodyProgress::ClientReadable => watching_client = self.check_on_client()?,
            }
        }
    }

    /// Writes one piece of a body as it is (no copy): as a chunk (size line, data, line end) in one system call
    /// when the answer is chunked.
    async fn write_body_data(&mut self, data: &[u8], chunked: bool) -> io::Result<()> {
        if !chunked {
            return self.write_bytes(data).await;
        }
        let mut size_line = [0_u8; 20];
        let size_line_length = {
            let mut unwritten = &mut size_line[..];
            let _ = write!(unwritten, "{:x}\r\n", data.len());
            20 - unwritten.len()
        };
        let mut slices =
            [IoSlice::new(&size_line[..size_line_length]), IoSlice::new(data), IoSlice::new(b"\r\n")];
        self.write_slices(&mut slices).await
    }

    pub(super) async fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_slices(&mut [IoSlice::new(bytes)]).await
    }

    async fn write_slices(&mut self, slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        write_all_within(&self.stream, slices, self.context.limits.response_write_timeout).await
    }

    /// Waits for the body's next frame and, meanwhile, for the client's side of the connection, so that a client
    /// that leaves is noticed at once (its stream ends, an OpenAI chat is cancelled) rather than at the next write.
    async fn next_body_progress(&self, body: &mut Body, watching_client: bool) -> BodyProgress {
        poll_fn(|context| {
            if let Poll::Ready(frame) = Pin::new(&mut *body).poll_frame(context) {
                return Poll::Ready(BodyProgress::Frame(frame));
            }
            // One waker slot in the socket's registration, so nothing is allocated or registered per event.
            if watching_client && self.stream.poll_read_ready(context).is_ready() {
                return Poll::Ready(BodyProgress::ClientReadable);
            }
            Poll::Pending
        })
        .await
    }

    /// The client's side became readable while a response was under way: it closed (an error ends the
    /// connection), or it sent its next request early, which is kept for later. Returns whether to keep watching.
    fn check_on_client(&mut self) -> io::Result<bool> {
        let mut probe = [0_u8; 512];
        match self.stream.try_read(&mut probe) {
            Ok(0) => {
                Err(io::Error::new(io::ErrorKind::ConnectionAborted, "the client closed the connection"))
            }
            Ok(read) if self.received.len() + read <= self.context.limits.max_header_bytes => {
                self.received.extend_from_slice(&probe[..read]);
                // Like hyper: once a next request is waiting, stop reading until this answer is complete.
                Ok(false)
            }
            Ok(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "the client sent too much ahead")),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(error) => Err(error),
        }
    }
}

/// A response with its head already encoded.
pub(super) struct EncodedAnswer {
    /// The status line and headers, then room for the first body bytes.
    output: Vec<u8>,
    /// `None` when the answer has no body (HEAD, 204, 304).
    body: Option<Body>,
    chunked: bool,
    /// Whether the connection stays open after this answer.
    pub(super) keep_alive: bool,
}

/// Encodes the status line and headers, choosing the body's framing: `content-length` when the body's size is
/// known, chunked when it is not (an HTTP/1.0 client gets a body that ends when the connection closes).
pub(super) fn encode_response_head(
    response: Response<Body>,
    is_head_request: bool,
    version: Version,
    mut keep_alive: bool,
) -> EncodedAnswer {
    let (parts, body) = response.into_parts();
    let status = parts.status;
    let has_body = !is_head_request
        && !status.is_informational()
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED;
    let length = body.size_hint().exact();
    let chunked = has_body && length.is_none() && version == Version::HTTP_11;
    if has_body && length.is_none() && !chunked {
        keep_alive = false;
    }
    let mut output = Vec::with_capacity(512);
    let reason = status.canonical_reason().unwrap_or("");
    let _ = write!(output, "HTTP/1.1 {} {reason}\r\n", status.as_str());
    for (name, value) in &parts.headers {
        // Framing and connection headers are this connection's to decide.
        if name == CONNECTION || name == TRANSFER_ENCODING || name == CONTENT_LENGTH || name == DATE {
            continue;
        }
        output.extend_from_slice(name.as_str().as_bytes());
        output.extend_from_slice(b": ");
        output.extend_from_slice(value.as_bytes());
        output.extend_from_slice(b"\r\n");
    }
    if let Some(length) = length.filter(|_| status != StatusCode::NO_CONTENT && !status.is_informational()) {
        let _ = write!(output, "content-length: {length}\r\n");
    }
    if chunked {
        output.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    let _ = write!(output, "date: {}\r\n", httpdate::fmt_http_date(SystemTime::now()));
    if !keep_alive {
        output.extend_from_slice(b"connection: close\r\n");
    }
    output.extend_from_slice(b"\r\n");
    EncodedAnswer { output, body: has_body.then_some(body), chunked, keep_alive }
}

/// Writes all of `slices`. A write that finds the client's receive window full waits for room, but only up to
/// `stall_limit` (`gateway.response_write_timeout_ms`): a client that stopped reading is cut rather than held for
/// ever. The common case, room in the window, costs no timer.
async fn write_all_within(
    stream: &TcpStream,
    slices: &mut [IoSlice<'_>],
    stall_limit: Duration,
) -> io::Result<()> {
    let mut remaining = slices;
    while !remaining.is_empty() {
        match stream.try_write_vectored(remaining) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut remaining, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                match tokio::time::timeout(stall_limit, stream.writable()).await {
                    Ok(ready) => ready?,
                    Err(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the client took nothing of the response within gateway.response_write_timeout_ms",
                        ));
                    }
                }
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Polls the body without waiting, appending every frame it has ready; true once it has ended. The next wait
/// polls it again with the task's own waker, so nothing is missed.
fn gather_ready_frames(body: &mut Body, output: &mut Vec<u8>, chunked: bool) -> io::Result<bool> {
    let mut context = Context::from_waker(std::task::Waker::noop());
    while output.len() < WRITE_GATHER_BYTES {
        match Pin::new(&mut *body).poll_frame(&mut context) {
            Poll::Ready(Some(Ok(frame))) => append_frame(output, frame, chunked),
            Poll::Ready(Some(Err(error))) => return Err(io::Error::other(error)),
            Poll::Ready(None) => return Ok(true),
            Poll::Pending => return Ok(false),
        }
    }
    Ok(false)
}

/// Appends a data frame (trailers are dropped), framed as a chunk when `chunked`.
fn append_frame(output: &mut Vec<u8>, frame: http_body::Frame<Bytes>, chunked: bool) {
    let Ok(data) = frame.into_data() else { return };
    if data.is_empty() {
        return;
    }
    if chunked {
        let _ = write!(output, "{:x}\r\n", data.len());
        output.extend_from_slice(&data);
        output.extend_from_slice(b"\r\n");
    } else {
        output.extend_from_slice(&data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_a_client_that_stopped_reading_ends_after_the_stall_limit() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let block = vec![b'x'; 64 * 1024];
        // The client reads nothing: the kernel's buffers (a few MiB on loopback) fill, then a write must wait.
        let mut outcome = Ok(());
        for _ in 0..2_000 {
            outcome =
                write_all_within(&server, &mut [IoSlice::new(&block)], Duration::from_millis(200)).await;
            if outcome.is_err() {
                break;
            }
        }
        let error = outcome.expect_err("the writes stop once the client's window is full");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[test]
    fn frames_are_chunked_only_when_the_length_is_unknown() {
        let mut output = Vec::new();
        append_frame(&mut output, http_body::Frame::data(Bytes::from_static(b"data: x\n\n")), true);
        assert_eq!(output, b"9\r\ndata: x\n\n\r\n");
        let mut output = Vec::new();
        append_frame(&mut output, http_body::Frame::data(Bytes::from_static(b"{}")), false);
        assert_eq!(output, b"{}");
    }
}
