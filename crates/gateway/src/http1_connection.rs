//! One HTTP/1.1 connection, served by the gateway itself rather than hyper so that an open event stream holds
//! almost nothing: the head is read into a buffer that grows only as far as the head needs and is released before
//! the response streams, the body is read whole (bounded in size and time) before the handler runs, and each
//! response is written as its frames come, chunked when its length is unknown. (hyper keeps an 8 KiB write buffer
//! and an 8 to 16 KiB read buffer per connection for its whole life: two thirds of a stream's memory.)
//! This file holds the connection's loop, its idle wait and its refusals; reading a request is
//! `http1_connection/request_reading.rs`, writing an answer `http1_connection/response_writing.rs`.
//! Accepting, shutdown and HTTP/2 belong to `http_server.rs`; parsing the head to `http1_head.rs`.

mod request_reading;
mod response_writing;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, Version};
use axum::response::IntoResponse;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use self::response_writing::encode_response_head;
use crate::error::GatewayError;
use crate::http_observation::observe_refused_request;
use crate::http_server::{ConnectionContext, serve_http2};
use crate::http1_head::RequestHead;

/// After refusing a request the connection reads and drops what the client still sends, for at most this long,
/// so that closing does not reset the connection before the client has read the answer.
const LINGER_TIME: Duration = Duration::from_secs(2);

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
