//! The daily token budget as a hard cap across gateways: concurrent chats cannot together overshoot it, because
//! each reserves the most it can cost at admission.

use futures::future::join_all;
use protocol::limits::TierLimits;
use serde_json::json;
use test_support::{StackOptions, TestStack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_chats_never_reserve_more_than_the_daily_budget() {
    let stack = TestStack::start_with(
        StackOptions { gateways: 2, workers: 0, ..StackOptions::default() },
        |settings| {
            // Each chat below may cost 1 (prompt "hi") + 100 (max_tokens) tokens: the budget holds one, not two.
            settings.limits.tiers.anonymous =
                TierLimits { daily_token_budget: 150, ..settings.limits.tiers.anonymous };
        },
    )
    .await;

    let statuses: Vec<u16> = join_all((0..10).map(|index| {
        let stack = &stack;
        async move {
            let body = json!({"message": "hi", "max_tokens": 100, "temperature": index as f32 / 10.0});
            stack.post_chat(index % 2, &body).await.status().as_u16()
        }
    }))
    .await;
    let admitted = statuses.iter().filter(|status| **status == 202).count();
    let refused = statuses.iter().filter(|status| **status == 429).count();
    assert_eq!((admitted, refused), (1, 9), "one chat fits the budget: {statuses:?}");
}
