//! The gateway's HTTP server loop: accepts connections itself (rather than `axum::serve`) so that it can bound
//! what a slow or hostile client may hold, and what an open event stream costs: headers must arrive within a
//! timeout (slowloris), header blocks and bodies are capped (431, 413), slow bodies get 408, and on shutdown it
//! stops accepting, closes idle connections and waits for open ones to finish. HTTP/1.1 is served by
//! `http1_connection.rs`; a client that opens with the HTTP/2 preface (prior knowledge, h2c) is handed to hyper.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::http_observation::InstanceHeader;
use crate::http1_connection::serve_http1_connection;

/// Connections the kernel may complete and hold until the gateway accepts them (capped by `net.core.somaxconn`):
/// a crowd arriving while the process is busy waits there, instead of having its connection attempts dropped
/// and timed out by the proxy (tokio's default is 1,024).
const LISTEN_BACKLOG: u32 = 4096;
/// Pause after a failed accept (for example out of file descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
/// How long a stopping server keeps connections that sit idle between requests. A proxy may pick an idle
/// keep-alive connection and send a request on it at the very moment the server closes it; the proxy cannot tell
/// whether a POST sent so was received, so it answers 502 rather than retry it elsewhere. Kept open, such a
/// request is answered (with `Connection: close`), and the proxy closes its idle ones itself: nginx's upstream
/// `keepalive_timeout` (deploy/nginx/nginx.conf.template) is shorter than this grace, so behind it the server never
/// closes an idle connection first. Other clients' idle connections close when the grace is over.
pub const IDLE_CONNECTION_GRACE: Duration = Duration::from_secs(5);

/// What one connection may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A client must send a request's whole header block within this time (idle keep-alive time included).
    pub header_read_timeout: Duration,
    /// Largest header block; larger gets 431.
    pub max_header_bytes: usize,
    /// Largest request body; larger gets 413.
    pub max_body_bytes: usize,
    /// A client must send a request's whole body within this time; slower gets 408.
    pub body_read_timeout: Duration,
    /// A response the client takes nothing of for this long is cut.
    pub response_write_timeout: Duration,
}

/// What every connection shares.
#[derive(Debug)]
pub struct ConnectionContext {
    pub router: Router,
    pub limits: ConnectionLimits,
    /// Cancelled when the server stops accepting: every answer from then on closes its connection.
    pub stopping: CancellationToken,
    /// Cancelled [`IDLE_CONNECTION_GRACE`] after `stopping`: connections idle between requests close then.
    pub idle_connections_closing: CancellationToken,
    /// `X-Dam-Instance`, for the answers given without the router (refused heads and bodies).
    pub instance_header: InstanceHeader,
}

/// Binds the gateway's listening socket on `address` (`host:port`) with a deep accept backlog.
pub async fn bind_listener(address: &str) -> io::Result<TcpListener> {
    let address = tokio::net::lookup_host(address)
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the address resolves to nothing"))?;
    let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std's bind does: a restarted gateway can bind while old connections linger in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for open connections to close.
pub async fn serve_with_limits(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    instance_header: InstanceHeader,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let context = Arc::new(ConnectionContext {
        router,
        limits,
        stopping: CancellationToken::new(),
        idle_connections_closing: CancellationToken::new(),
        instance_header,
    });
    let connections = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        // Each SSE event is written as soon as it exists; Nagle's algorithm would hold small ones back.
        let _ = stream.set_nodelay(true);
        connections.spawn(serve_http1_connection(stream, peer, context.clone()));
    }
    drop(listener);
    context.stopping.cancel();
    let idle_connections_closing = context.idle_connections_closing.clone();
    tokio::spawn(async move {
        tokio::time::sleep(IDLE_CONNECTION_GRACE).await;
        idle_connections_closing.cancel();
    });
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Serves an HTTP/2 connection with hyper; `received` holds what was read before the preface was recognised.
pub async fn serve_http2(
    stream: TcpStream,
    received: Vec<u8>,
    peer: SocketAddr,
    context: Arc<ConnectionContext>,
) {
    let router = context.router.clone();
    let service = TowerToHyperService::new(router.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
        request
    }));
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_header_list_size(context.limits.max_header_bytes as u32);
    let io = TokioIo::new(ReceivedThenStream { received, position: 0, stream });
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = context.stopping.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "HTTP/2 connection ended with an error");
    }
}

/// A socket whose first bytes were already read: replays them, then reads the socket.
struct ReceivedThenStream {
    received: Vec<u8>,
    position: usize,
    stream: TcpStream,
}

impl AsyncRead for ReceivedThenStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.received.len() {
            let replay = &this.received[this.position..];
            let length = replay.len().min(buffer.remaining());
            buffer.put_slice(&replay[..length]);
            this.position += length;
            if this.position == this.received.len() {
                this.received = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for ReceivedThenStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }
}
