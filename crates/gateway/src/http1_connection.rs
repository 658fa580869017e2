//! One HTTP/1.1 connection, served by the gateway itself rather than hyper so that an open event stream holds
//! almost nothing: the head is read into a buffer that grows only as far as the head needs and is released before
//! the response streams, the body is read whole (bounded in size and time) before the handler runs, and each
//! response is written as its frames come, chunked when its length is unknown. (hyper keeps an 8 KiB write buffer
//! and an 8 to 16 KiB read buffer per connection for its whole life: two thirds of a stream's memory.)
//! Accepting, shutdown and HTTP/2 belong to `http_server.rs`; parsing the head to `http1_head.rs`.

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use axum::http::{Method, Request, Response, StatusCode, Version};
use axum::response::IntoResponse;
use http_body::Body as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::error::GatewayError;
use crate::http_observation::observe_refused_request;
use crate::http_server::{ConnectionContext, serve_http2};
use crate::http1_head::{BodyFraming, HeadRefusal, RequestHead, parse_chunk_size, parse_request_head};

/// First size of the head buffer: a head proxied by nginx takes about 500 bytes; longer heads grow it.
const INITIAL_HEAD_BUFFER_BYTES: usize = 1024;
/// The first frames of a body ready with its head are written with it, up to this size.
const WRITE_GATHER_BYTES: usize = 16 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked body.
const MAX_CHUNK_LINE_BYTES: usize = 1024;
/// The end of a chunked body: a chunk of size zero, no trailers.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";
/// After refusing a request the connection reads and drops what the client still sends, for at most this long,
/// so that closing does not reset the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// What every connection sends first when it speaks HTTP/2 with prior knowledge.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves HTTP/1.1 requests on `stream` one after another until either side closes, the server stops, or a
/// request is refused; hands the connection to HTTP/2 when it opens with the HTTP/2 preface.
pub async fn serve_http1_connection(stream: TcpStream, peer: SocketAddr, context: Arc<ConnectionContext>) {
    let connection = Http1Connection { stream, peer, received: Vec::new(), context, served_requests: 0 };
    connection.serve().await;
}

struct Http1Connection {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read but not consumed yet: part of a head, or what a client sent ahead (pipelining). Empty, with no
    /// allocation, while a response streams, unless the client sent something meanwhile.
    received: Vec<u8>,
    context: Arc<ConnectionContext>,
    served_requests: u64,
}

/// What reading a request and running its handler gave.
enum Exchange {
    Answer {
        response: Response<Body>,
        is_head_request: bool,
        version: Version,
        keep_alive: bool,
    },
    /// Refused before routing; the method is known when the head was read.
    Refuse(GatewayError, Option<Method>),
    Http2,
    Close,
}

/// What waiting for the next request gave.
#[expect(
    clippy::large_enum_variant,
    reason = "a head lives only until its request is built; boxing costs an allocation"
)]
enum NextRequest {
    Request(RequestHead),
    Http2,
    Closed,
}

/// Why a request ends the connection without reaching the router.
#[derive(Debug)]
enum RequestFailure {
    Refused(GatewayError),
    /// Timed out, broken off or failed at the socket: nothing can be answered.
    Dropped,
}

impl From<io::Error> for RequestFailure {
    fn from(_: io::Error) -> Self {
        RequestFailure::Dropped
    }
}

/// What happened while a response body was waited for.
enum BodyProgress {
    Frame(Option<Result<http_body::Frame<Bytes>, axum::Error>>),
    ClientReadable,
}

impl Http1Connection {
    async fn serve(mut self) {
        loop {
            // Boxed, and over before the answer is written: reading a request and running its handler take far
            // more state than writing an answer, and only the writing goes on while an event stream is open.
            let (response, is_head_request, version, keep_alive) =
                match Box::pin(self.receive_and_route()).await {
                    Exchange::Answer { response, is_head_request, version, keep_alive } => {
                        (response, is_head_request, version, keep_alive)
                    }
                    Exchange::Refuse(error, method) => {
                        return Box::pin(self.refuse_and_close(error, method)).await;
                    }
                    Exchange::Http2 => {
                        // Boxed: an HTTP/2 connection is large, and only an HTTP/2 client should pay for it.
                        let received = std::mem::take(&mut self.received);
                        Box::pin(serve_http2(self.stream, received, self.peer, self.context)).await;
                        return;
                    }
                    Exchange::Close => return,
                };
            let answer = encode_response_head(response, is_head_request, version, keep_alive);
            let keep_alive = answer.keep_alive;
            match self.write_answer(answer).await {
                // An answer that promised keep-alive keeps it even if the server began stopping meanwhile: the
                // connection then waits out the idle grace like any idle one, and its next answer closes it.
                Ok(()) if keep_alive => {}
                Ok(()) => {
                    let _ = self.stream.shutdown().await;
                    return;
                }
                Err(error) => {
                    tracing::debug!(%error, peer = %self.peer, "connection ended while answering");
                    return;
                }
            }
        }
    }

    /// Reads the next request and runs its handler.
    async fn receive_and_route(&mut self) -> Exchange {
        let head = match self.next_request().await {
            Ok(NextRequest::Request(head)) => head,
            Ok(NextRequest::Http2) => return Exchange::Http2,
            Ok(NextRequest::Closed) | Err(RequestFailure::Dropped) => return Exchange::Close,
            Err(RequestFailure::Refused(error)) => return Exchange::Refuse(error, None),
        };
        let body = match self.read_body(&head).await {
            Ok(body) => body,
            Err(RequestFailure::Refused(error)) => return Exchange::Refuse(error, Some(head.parts.method)),
            Err(RequestFailure::Dropped) => return Exchange::Close,
        };
        if self.received.is_empty() {
            // Nothing was sent ahead: hold no buffer while the answer (perhaps a long stream) is written.
            self.received = Vec::new();
        }
        self.served_requests += 1;
        let is_head_request = head.parts.method == Method::HEAD;
        let version = head.parts.version;
        let keep_alive = head.keep_alive && !self.context.stopping.is_cancelled();
        let mut request = Request::from_parts(head.parts, Body::from(body));
        request.extensions_mut().insert(ConnectInfo(self.peer));
        let response = match self.context.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        Exchange::Answer { response, is_head_request, version, keep_alive }
    }

    /// Waits for the next request head: the whole wait, idle time included, is bounded by the header timeout
    /// (slowloris). A stopping server still serves a request that comes on this connection during its idle grace
    /// (`IDLE_CONNECTION_GRACE`), then closes the connection unless a head is under way.
    async fn next_request(&mut self) -> Result<NextRequest, RequestFailure> {
        let context = self.context.clone();
        let idle = self.received.is_empty();
        tokio::select! {
            biased;
            _ = context.idle_connections_closing.cancelled(), if idle => Ok(NextRequest::Closed),
            read = tokio::time::timeout(context.limits.header_read_timeout, self.read_head()) => {
                read.unwrap_or(Err(RequestFailure::Dropped))
            }
        }
    }

    async fn read_head(&mut self) -> Result<NextRequest, RequestFailure> {
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
    async fn read_body(&mut self, head: &RequestHead) -> Result<Bytes, RequestFailure> {
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

    /// Writes an answer: its head, then its body as the frames come.
    async fn write_answer(&mut self, answer: EncodedAnswer) -> io::Result<()> {
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

    async fn write_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
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

    /// Answers a request that cannot be served with its JSON error, then closes without resetting the
    /// connection: the client may still be sending what is refused.
    async fn refuse_and_close(mut self, error: GatewayError, method: Option<Method>) {
        let mut response = error.into_response();
        observe_refused_request(&mut response, method.as_ref(), &self.context.instance_header);
        let answer = encode_response_head(response, false, Version::HTTP_11, false);
        if self.write_answer(answer).await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        let mut discard = vec![0_u8; 4096];
        let drain = async { while matches!(self.stream.read(&mut discard).await, Ok(read) if read > 0) {} };
        let _ = tokio::time::timeout(LINGER_TIME, drain).await;
    }
}

/// A response with its head already encoded.
struct EncodedAnswer {
    /// The status line and headers, then room for the first body bytes.
    output: Vec<u8>,
    /// `None` when the answer has no body (HEAD, 204, 304).
    body: Option<Body>,
    chunked: bool,
    keep_alive: bool,
}

/// Encodes the status line and headers, choosing the body's framing: `content-length` when the body's size is
/// known, chunked when it is not (an HTTP/1.0 client gets a body that ends when the connection closes).
fn encode_response_head(
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

/// Whether what the connection received so far may be the HTTP/2 preface.
fn opens_like_http2(received: &[u8]) -> bool {
    !received.is_empty() && HTTP2_PREFACE.starts_with(&received[..received.len().min(HTTP2_PREFACE.len())])
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
