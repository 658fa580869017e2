//! What every answered request gets at the router, over HTTP/1.1 and HTTP/2 alike: it is counted by route
//! template, method and status, it carries `X-Dam-Instance` and `X-Dam-Layer: gate`, and its handler can read when
//! it reached the router (`RequestStarted`, where `Server-Timing` starts). Requests refused before routing get the
//! same from `http1_connection.rs` through [`observe_refused_request`]. Chat timings themselves belong to
//! `server_timing.rs`.

use std::convert::Infallible;
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::HeaderName;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::gateway_metrics::{UNMATCHED_ROUTE, count_answered_request, method_label};

/// Names the gateway instance that answered, so a user (or an operator reading a bug report) knows which one.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-dam-instance");

/// Says which layer answered: `gate` on every gateway answer, `edge` on the answers nginx makes itself (its own
/// refusals, deploy/nginx/nginx.conf.template), so a 429 from one is never taken for the other.
pub const LAYER_HEADER: HeaderName = HeaderName::from_static("x-dam-layer");
const GATE_LAYER: HeaderValue = HeaderValue::from_static("gate");

/// This process's instance name, ready to be a header value.
#[derive(Debug, Clone)]
pub struct InstanceHeader(pub HeaderValue);

impl InstanceHeader {
    /// The header value for `instance_name`; a name that cannot be a header value (a control character) is
    /// replaced by `unknown` rather than refusing to start.
    pub fn new(instance_name: &str) -> Self {
        Self(HeaderValue::from_str(instance_name).unwrap_or_else(|_| HeaderValue::from_static("unknown")))
    }
}

/// When the request reached the router. Over HTTP/1.1 its body was read whole before (`http1_connection.rs`), so
/// this is when the request was fully read; over HTTP/2 the body streams, and a chat's small body usually comes
/// with its head.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub Instant);

impl<S: Send + Sync> FromRequestParts<S> for RequestStarted {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // Absent only when a handler runs without the middleware (never through `build_router`).
        Ok(parts
            .extensions
            .get::<RequestStarted>()
            .copied()
            .unwrap_or_else(|| RequestStarted(Instant::now())))
    }
}

/// The middleware around every route and the fallbacks: a streaming response is counted when its head is
/// ready, its status being known then.
pub async fn observe_request(
    State(instance): State<InstanceHeader>,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(RequestStarted(Instant::now()));
    let method = method_label(request.method());
    // A clone of the matched path is a reference count, not a copy of the template.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    count_answered_request(route, method, response.status());
    stamp_answer(&mut response, instance.0);
    response
}

/// Counts and stamps an answer given without routing (a refused head or body); `method` is `None` when the
/// head could not be read.
pub fn observe_refused_request(response: &mut Response, method: Option<&Method>, instance: &InstanceHeader) {
    let method = method.map_or("unknown", method_label);
    count_answered_request(UNMATCHED_ROUTE, method, response.status());
    stamp_answer(response, instance.0.clone());
}

/// Names who answered: this instance, in the gate layer.
fn stamp_answer(response: &mut Response, instance: HeaderValue) {
    let headers = response.headers_mut();
    headers.insert(INSTANCE_HEADER, instance);
    headers.insert(LAYER_HEADER, GATE_LAYER);
}
