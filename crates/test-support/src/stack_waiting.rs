//! Bounded waiting for a condition in a `TestStack` test: every wait has a limit and names what it waited for
//! when it times out.

use std::future::Future;
use std::time::Duration;

use crate::test_stack::TestStack;

/// How often a condition is checked again.
const CHECK_INTERVAL: Duration = Duration::from_millis(20);

impl TestStack {
    /// Waits (bounded) until `condition` holds, checking every 20 ms; panics naming `what` otherwise.
    pub async fn wait_until<F, Fut>(&self, what: &str, limit: Duration, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        self.wait_for(what, limit, || {
            let holds = condition();
            async move { holds.await.then_some(()) }
        })
        .await
    }

    /// Like [`Self::wait_until`], for a condition that yields what it found: waits (bounded) until `probe`
    /// returns `Some`, and returns that value.
    pub async fn wait_for<T, F, Fut>(&self, what: &str, limit: Duration, mut probe: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let started = tokio::time::Instant::now();
        loop {
            if let Some(found) = probe().await {
                return found;
            }
            assert!(started.elapsed() < limit, "timed out after {limit:?} waiting until {what}");
            tokio::time::sleep(CHECK_INTERVAL).await;
        }
    }
}
