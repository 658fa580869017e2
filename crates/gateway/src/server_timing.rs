//! `Server-Timing` on chat responses, so a user can attribute a chat's latency without dashboards: the admission
//! round trip (`admission`), the queue wait when it is known as the head is sent (`queue`), and the gateway's own
//! time until the head (`gateway`), each in milliseconds. Computed once per response, never per token.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::http::header::HeaderName;
use axum::response::{IntoResponse, Response};

use crate::error::GatewayError;
use crate::http_observation::RequestStarted;

/// The `Server-Timing` header (W3C Server Timing).
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// What one chat response's head will say about where its time went.
#[derive(Debug, Clone)]
pub struct ChatTiming {
    started: Instant,
    admission: Option<Duration>,
    queue: Option<Duration>,
    /// Set when the gateway's own work ended before the head (a non-streaming answer waits for the LLM first).
    own_time: Option<Duration>,
}

impl ChatTiming {
    pub fn new(started: RequestStarted) -> Self {
        Self { started: started.0, admission: None, queue: None, own_time: None }
    }

    /// The admission's round trip to Redis.
    pub fn record_admission(&mut self, round_trip: Duration) {
        self.admission = Some(round_trip);
    }

    /// The chat's wait in its queue, when known.
    pub fn record_queue_wait(&mut self, wait: Option<Duration>) {
        if wait.is_some() {
            self.queue = wait;
        }
    }

    /// Ends the gateway's own time now: what follows is the wait for the answer, which is not the gateway's.
    pub fn end_own_time(&mut self) {
        self.own_time.get_or_insert_with(|| self.started.elapsed());
    }

    /// The gateway's own time: until [`Self::end_own_time`], or until now.
    pub fn own_time(&self) -> Duration {
        self.own_time.unwrap_or_else(|| self.started.elapsed())
    }

    /// Turns a handler's outcome into its response, an error's included, with `Server-Timing`; records the
    /// gateway's own time in `added_latency` when given.
    pub fn stamp(
        &self,
        outcome: Result<Response, GatewayError>,
        added_latency: Option<&metrics::Histogram>,
    ) -> Response {
        let own_time = self.own_time();
        if let Some(histogram) = added_latency {
            histogram.record(own_time.as_secs_f64());
        }
        let mut response = outcome.unwrap_or_else(IntoResponse::into_response);
        if let Ok(value) = HeaderValue::from_str(&self.header_value(own_time)) {
            response.headers_mut().insert(SERVER_TIMING, value);
        }
        response
    }

    /// `admission;dur=0.412, queue;dur=1520.000, gateway;dur=0.650`: each part only when known.
    fn header_value(&self, own_time: Duration) -> String {
        let mut value = String::with_capacity(64);
        let parts = [("admission", self.admission), ("queue", self.queue), ("gateway", Some(own_time))];
        for (name, duration) in parts {
            let Some(duration) = duration else { continue };
            if !value.is_empty() {
                value.push_str(", ");
            }
            let _ = write!(value, "{name};dur={:.3}", duration.as_secs_f64() * 1000.0);
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_parts_are_named_in_milliseconds_with_three_decimals() {
        let mut timing = ChatTiming::new(RequestStarted(Instant::now()));
        timing.record_admission(Duration::from_micros(412));
        assert_eq!(
            timing.header_value(Duration::from_micros(1_650)),
            "admission;dur=0.412, gateway;dur=1.650"
        );
        timing.record_queue_wait(None);
        timing.record_queue_wait(Some(Duration::from_millis(1_520)));
        assert_eq!(
            timing.header_value(Duration::from_micros(650)),
            "admission;dur=0.412, queue;dur=1520.000, gateway;dur=0.650"
        );
    }

    #[test]
    fn the_own_time_stops_where_the_wait_for_the_answer_begins() {
        let mut timing = ChatTiming::new(RequestStarted(Instant::now() - Duration::from_millis(5)));
        timing.end_own_time();
        let ended = timing.own_time();
        assert!(ended >= Duration::from_millis(5));
        assert_eq!(timing.own_time(), ended, "later calls keep the first end");
    }
}
