//! The API keys this gateway recognizes: those from configuration plus those the dam keeps in Redis (by SHA-256,
//! never in clear). Held in memory so that identifying a caller costs no Redis round trip; reloaded whenever the
//! dam announces a change on the control channel, and every `FULL_RELOAD_INTERVAL` in case an announcement was
//! missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use protocol::access::{ApiKeyRecord, api_key_identity};
use protocol::control::ControlMessage;
use protocol::limits::{Tier, TierLimits};
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use protocol::settings::ConfiguredApiKey;
use protocol::{RedisConnections, RedisKeys};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::stream_router::{RouterMessage, StreamRouter};

/// Re-read everything this often even without an announcement.
const FULL_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Pauses before trying the control-channel subscription again: at most a second, at least half of one, jittered
/// so that the gateways which lost Redis together do not all subscribe again in the same instant.
const SUBSCRIBE_RETRY: RetryPolicy = RetryPolicy::steady(Duration::from_secs(1), Jitter::Equal);

/// A recognized key: who it is and what it may do.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownApiKey {
    /// `key:<first 16 hex of the hash>`.
    pub identity: String,
    pub tier: Tier,
    pub rate_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub daily_token_budget: Option<u64>,
}

impl KnownApiKey {
    /// The tier's limits with this key's own overrides applied.
    pub fn limits(&self, tier_limits: &TierLimits) -> TierLimits {
        TierLimits {
            rate_per_second: self.rate_per_second.unwrap_or(tier_limits.rate_per_second),
            burst: self.burst.unwrap_or(tier_limits.burst),
            max_active_chats: tier_limits.max_active_chats,
            daily_token_budget: self.daily_token_budget.unwrap_or(tier_limits.daily_token_budget),
        }
    }
}

type KeyTable = Arc<HashMap<String, KnownApiKey>>;

/// Cheap to clone; every clone sees the latest table.
#[derive(Debug, Clone)]
pub struct AccessDirectory {
    table: watch::Receiver<KeyTable>,
}

impl AccessDirectory {
    /// Starts with the configured keys and keeps the table current until `shutdown`.
    pub fn start(
        redis: RedisConnections,
        keys: RedisKeys,
        configured: Vec<ConfiguredApiKey>,
        router: StreamRouter,
        shutdown: CancellationToken,
    ) -> Self {
        let (sender, table) = watch::channel(Arc::new(configured_table(&configured)));
        tokio::spawn(keep_table_current(redis, keys, configured, router, sender, shutdown));
        Self { table }
    }

    /// The key whose SHA-256 is `key_hash`, if known.
    pub fn lookup(&self, key_hash: &str) -> Option<KnownApiKey> {
        self.table.borrow().get(key_hash).cloned()
    }
}

fn configured_table(configured: &[ConfiguredApiKey]) -> HashMap<String, KnownApiKey> {
    configured
        .iter()
        .map(|key| {
            let hash = key.key_sha256.to_ascii_lowercase();
            let known = KnownApiKey {
                identity: api_key_identity(&hash),
                tier: key.tier,
                rate_per_second: None,
                burst: None,
                daily_token_budget: None,
            };
            (hash, known)
        })
        .collect()
}

async fn keep_table_current(
    redis: RedisConnections,
    keys: RedisKeys,
    configured: Vec<ConfiguredApiKey>,
    router: StreamRouter,
    sender: watch::Sender<KeyTable>,
    shutdown: CancellationToken,
) {
    let mut subscription = None;
    let mut reload = tokio::time::interval(FULL_RELOAD_INTERVAL);
    let mut subscribe_backoff = RetryBackoff::new(SUBSCRIBE_RETRY);
    loop {
        if subscription.is_none() {
            match router.subscribe(keys.control_channel()).await {
                Ok(subscribed) => {
                    subscription = Some(subscribed);
                    subscribe_backoff.reset();
                }
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(subscribe_backoff.next_delay()) => continue,
                    }
                }
            }
        }
        let Some(control) = subscription.as_mut() else { continue };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.tick() => {}
            message = control.next_message() => match message {
                Some(RouterMessage::Published { message: payload, .. }) => {
                    if !matches!(ControlMessage::decode(&payload), Ok(ControlMessage::ApiKeysChanged)) {
                        continue;
                    }
                }
                Some(RouterMessage::Resync) => {}
                None => {
                    subscription = None;
                    continue;
                }
            },
        }
        if let Some(table) = load_table(&redis, &keys, &configured).await {
            sender.send_replace(Arc::new(table));
        }
    }
}

/// Configured keys overlaid with the ones stored in Redis; `None` when Redis could not be read.
async fn load_table(
    redis: &RedisConnections,
    keys: &RedisKeys,
    configured: &[ConfiguredApiKey],
) -> Option<HashMap<String, KnownApiKey>> {
    let hash_key = keys.api_keys();
    let stored: HashMap<String, String> = redis
        .run(|mut connection| async move {
            redis::cmd("HGETALL").arg(&hash_key).query_async(&mut connection).await
        })
        .await
        .ok()?;
    let mut table = configured_table(configured);
    for (hash, record) in stored {
        match ApiKeyRecord::decode(&record) {
            Ok(record) => {
                let known = KnownApiKey {
                    identity: api_key_identity(&hash),
                    tier: record.tier,
                    rate_per_second: record.rate_per_second,
                    burst: record.burst,
                    daily_token_budget: record.daily_token_budget,
                };
                table.insert(hash, known);
            }
            Err(error) => tracing::warn!(%error, "unreadable api key record ignored"),
        }
    }
    Some(table)
}
