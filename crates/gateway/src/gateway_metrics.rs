//! The gateway's metrics that dashboards and alerts read, named and labelled as `docs/observability.md` (the
//! metric catalog) says: the admission decisions, the requests answered, and the series registered at zero at
//! startup so that a panel shows 0, not "no data", before anything happened. Where each is measured lives with
//! the code that measures it.

use axum::http::{Method, StatusCode};
use protocol::job_lifecycle::RejectionReason;

/// `dam_gateway_http_requests_total{route,method,status}`: every answered request.
pub const HTTP_REQUESTS: &str = "dam_gateway_http_requests_total";
/// `dam_gateway_admission_decisions_total{decision,reason,flow}`: the gate's decisions.
pub const ADMISSION_DECISIONS: &str = "dam_gateway_admission_decisions_total";
/// `dam_gateway_added_latency_seconds{stage}`: the gateway's own time.
pub const ADDED_LATENCY: &str = "dam_gateway_added_latency_seconds";
/// `dam_gateway_time_to_first_token_seconds{flow}`: a chat's creation to its first token leaving the gateway.
pub const TIME_TO_FIRST_TOKEN: &str = "dam_gateway_time_to_first_token_seconds";
/// Requests naming a client in `X-Forwarded-For` from a peer `auth.trusted_proxies` does not trust.
pub const UNTRUSTED_FORWARDED_REQUESTS: &str = "dam_gateway_untrusted_forwarded_requests_total";

/// The `route` of a request no route matched, or that was refused before routing (bad head, body too large).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The `reason` of a decision that refused nothing.
pub const NO_REASON: &str = "none";
/// The two ways a chat arrives: the browser API and the OpenAI-compatible API.
pub const BROWSER_FLOW: &str = "browser";
pub const OPENAI_FLOW: &str = "openai";
const FLOWS: [&str; 2] = [BROWSER_FLOW, OPENAI_FLOW];

/// The chat routes and the statuses their panels plot, registered at zero: (route, method, statuses).
const CHAT_ROUTE_STATUSES: [(&str, &str, &[u16]); 3] = [
    ("/api/chats", "POST", &[202, 429]),
    ("/api/chats/{id}/events", "GET", &[200]),
    ("/v1/chat/completions", "POST", &[200, 429]),
];

/// One decision of the gate, by flow: `reason` is the refusal's code, or [`NO_REASON`].
pub fn count_admission_decision(decision: &'static str, reason: &'static str, flow: &'static str) {
    metrics::counter!(ADMISSION_DECISIONS, "decision" => decision, "reason" => reason, "flow" => flow)
        .increment(1);
}

/// One answered request. `route` is the matched route template or [`UNMATCHED_ROUTE`].
pub fn count_answered_request(route: &str, method: &'static str, status: StatusCode) {
    metrics::counter!(
        HTTP_REQUESTS,
        "route" => route.to_owned(),
        "method" => method,
        "status" => status.as_u16().to_string()
    )
    .increment(1);
}

/// The `method` label: the standard methods by name, any other as `other`, so that a client inventing methods
/// cannot grow the number of series.
pub fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// Registers, at zero, the fixed-label series dashboards and alerts rely on. Call once the recorder is installed.
/// (The histograms are registered, empty, by `GatewayCounters::register`, which keeps their handles.)
pub fn register_series_at_zero() {
    for flow in FLOWS {
        for decision in ["admitted", "joined"] {
            metrics::counter!(ADMISSION_DECISIONS, "decision" => decision, "reason" => NO_REASON, "flow" => flow)
                .increment(0);
        }
        for reason in RejectionReason::ALL {
            metrics::counter!(ADMISSION_DECISIONS, "decision" => "rejected", "reason" => reason.code(), "flow" => flow)
                .increment(0);
        }
        metrics::counter!(
            ADMISSION_DECISIONS,
            "decision" => "too_many_connections",
            "reason" => "too_many_connections",
            "flow" => flow
        )
        .increment(0);
    }
    for (route, method, statuses) in CHAT_ROUTE_STATUSES {
        for status in statuses {
            metrics::counter!(HTTP_REQUESTS, "route" => route, "method" => method, "status" => status.to_string())
                .increment(0);
        }
    }
    metrics::counter!("dam_gateway_cancellations_total").increment(0);
    metrics::counter!(UNTRUSTED_FORWARDED_REQUESTS).increment(0);
    metrics::counter!("dam_gateway_lagging_streams_dropped_total").increment(0);
    metrics::gauge!("dam_gateway_open_streams").increment(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").expect("a token")), "other");
    }
}
