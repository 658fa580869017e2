//! The ways a test stack tells a test that something went wrong out of its sight: a service crashed, a service
//! did not stop, an event stream broke. Failures of the code under test, not of the test's own assertions.

use std::time::Duration;

/// A failure the harness saw, which the test must see too.
#[derive(Debug, thiserror::Error)]
pub enum HarnessFailure {
    /// A service panicked: its own future, or any task it spawned. Each panic's message and place, in order.
    #[error("service {service} crashed: {}", panics.join("; "))]
    ServiceCrashed { service: String, panics: Vec<String> },
    /// A service asked to stop (or killed) had not finished within the bound; it was killed to clean up.
    #[error("service {service} did not stop within {limit:?}")]
    ServiceDidNotStop { service: String, limit: Duration },
    /// The HTTP body of an event stream failed (reset connection, truncated chunk) instead of ending cleanly.
    #[error("the event stream broke: {0}")]
    EventStreamBroke(#[source] reqwest::Error),
    /// The body ended cleanly, but in the middle of an event: the server stopped writing halfway.
    #[error("the event stream broke: it ended in the middle of an event: {0:?}")]
    EventStreamEndedMidEvent(String),
    /// A line of the event stream was not UTF-8, which the SSE format requires.
    #[error("the event stream broke: a line is not UTF-8: {0:?}")]
    EventStreamNotUtf8(String),
}
