//! The gateway's single pub/sub connection, multiplexing every open chat stream of this process: one task owns
//! the connection, batches SUBSCRIBE/UNSUBSCRIBE commands, fans messages out to the streams that asked, and on a
//! lost connection reconnects, resubscribes and tells every stream to re-read its replay log (`Resync`), since
//! messages published during the gap are only in the log. No Redis connection is ever held per client. Each
//! stream's queue is bounded: a stream that falls that far behind (its client stopped reading) is dropped rather
//! than allowed to hold memory or slow the others; its relay then ends, and the client resumes from the log.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use protocol::retry_backoff::{Jitter, RetryBackoff, RetryPolicy};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Most channels named in one SUBSCRIBE or UNSUBSCRIBE command.
const CHANNELS_PER_COMMAND: usize = 500;
/// Pauses between reconnection attempts while Redis is unreachable: at most 250 ms, at least half of that,
/// jittered so that the gateways which lost Redis together do not reconnect in the same instant.
const RECONNECT_RETRY: RetryPolicy = RetryPolicy::steady(Duration::from_millis(250), Jitter::Equal);
/// Most messages one stream may have waiting. A relay takes its messages as soon as its client takes the bytes,
/// so only a client that stopped reading comes near this: 256 batches is minutes of a fast answer, and a few
/// hundred KiB at most.
pub const STREAM_QUEUE_CAPACITY: usize = 256;

/// What a subscribed stream receives.
#[derive(Debug, Clone)]
pub enum RouterMessage {
    /// A message published on the stream's channel, as published: one batch of events, one JSON per line; and when
    /// the router received it (one clock reading per message, shared by its streams), where relay latency starts.
    Published { message: Arc<str>, received_at: Instant },
    /// The connection was lost and restored: messages may have been missed; re-read the replay log.
    Resync,
}

/// Why a subscription could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    #[error("the pub/sub connection to redis is down")]
    Disconnected,
    #[error("the stream router has stopped")]
    Stopped,
}

/// A handle to the router task; cheap to clone.
#[derive(Debug, Clone)]
pub struct StreamRouter {
    commands: mpsc::UnboundedSender<RouterCommand>,
    next_subscriber_id: Arc<AtomicU64>,
}

/// One stream's interest in one channel; unsubscribes when dropped.
#[derive(Debug)]
pub struct StreamSubscription {
    channel: String,
    subscriber_id: u64,
    messages: mpsc::Receiver<RouterMessage>,
    commands: mpsc::UnboundedSender<RouterCommand>,
}

impl StreamSubscription {
    /// The next message, or `None` when the router stopped or dropped this stream for falling
    /// [`STREAM_QUEUE_CAPACITY`] messages behind.
    pub async fn next_message(&mut self) -> Option<RouterMessage> {
        self.messages.recv().await
    }
}

impl Drop for StreamSubscription {
    fn drop(&mut self) {
        let _ = self.commands.send(RouterCommand::Unsubscribe {
            channel: std::mem::take(&mut self.channel),
            subscriber_id: self.subscriber_id,
        });
    }
}

#[derive(Debug)]
enum RouterCommand {
    Subscribe {
        channel: String,
        subscriber_id: u64,
        messages: mpsc::Sender<RouterMessage>,
        confirmed: oneshot::Sender<Result<(), SubscribeError>>,
    },
    Unsubscribe {
        channel: String,
        subscriber_id: u64,
    },
}

impl StreamRouter {
    /// Starts the router task; it runs until `shutdown` is cancelled.
    pub fn start(
        client: redis::Client,
        connect_timeout: Duration,
        messages_counter: metrics::Counter,
        shutdown: CancellationToken,
    ) -> Self {
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let task = RouterTask {
            client,
            connect_timeout,
            messages_counter,
            commands: command_receiver,
            subscribers: HashMap::new(),
            subscribed_at_redis: HashSet::new(),
            reconnect_backoff: RetryBackoff::new(RECONNECT_RETRY),
        };
        tokio::spawn(task.run_until_cancelled(shutdown));
        Self { commands, next_subscriber_id: Arc::new(AtomicU64::new(1)) }
    }

    /// Subscribes to `channel`; returns once Redis confirmed the subscription, so anything published afterwards
    /// reaches the subscription. Read the replay log only after this returns.
    pub async fn subscribe(&self, channel: String) -> Result<StreamSubscription, SubscribeError> {
        let subscriber_id = self.next_subscriber_id.fetch_add(1, Ordering::Relaxed);
        let (sender, messages) = mpsc::channel(STREAM_QUEUE_CAPACITY);
        let (confirmed, confirmation) = oneshot::channel();
        self.commands
            .send(RouterCommand::Subscribe {
                channel: channel.clone(),
                subscriber_id,
                messages: sender,
                confirmed,
            })
            .map_err(|_| SubscribeError::Stopped)?;
        // From here on the subscription unsubscribes itself if the caller gives up waiting.
        let subscription =
            StreamSubscription { channel, subscriber_id, messages, commands: self.commands.clone() };
        confirmation.await.map_err(|_| SubscribeError::Stopped)??;
        Ok(subscription)
    }
}

type Subscribers = HashMap<String, Vec<(u64, mpsc::Sender<RouterMessage>)>>;

struct RouterTask {
    client: redis::Client,
    connect_timeout: Duration,
    messages_counter: metrics::Counter,
    commands: mpsc::UnboundedReceiver<RouterCommand>,
    subscribers: Subscribers,
    /// Channels Redis has confirmed on the current connection.
    subscribed_at_redis: HashSet<String>,
    /// Pauses between failed connection attempts, reset once one succeeds.
    reconnect_backoff: RetryBackoff,
}

/// Why the connected phase ended.
enum ConnectionEnd {
    Lost,
    Shutdown,
}

impl RouterTask {
    async fn run_until_cancelled(mut self, shutdown: CancellationToken) {
        let mut has_connected_before = false;
        loop {
            let pubsub = tokio::select! {
                _ = shutdown.cancelled() => return,
                connected = tokio::time::timeout(self.connect_timeout, self.client.get_async_pubsub()) => connected,
            };
            let Ok(Ok(pubsub)) = pubsub else {
                metrics::gauge!("dam_gateway_pubsub_connected").set(0.0);
                if self.refuse_commands_while_disconnected(&shutdown).await {
                    return;
                }
                continue;
            };
            self.reconnect_backoff.reset();
            metrics::gauge!("dam_gateway_pubsub_connected").set(1.0);
            let (sink, messages) = pubsub.split();
            match self.serve_connection(sink, messages, has_connected_before, &shutdown).await {
                ConnectionEnd::Shutdown => return,
                ConnectionEnd::Lost => {
                    tracing::warn!("pub/sub connection to redis lost; reconnecting");
                    metrics::gauge!("dam_gateway_pubsub_connected").set(0.0);
                    has_connected_before = true;
                    self.subscribed_at_redis.clear();
                }
            }
        }
    }

    /// While Redis is unreachable: new subscriptions fail at once (the caller answers 503), departures are
    /// recorded. Returns true on shutdown.
    async fn refuse_commands_while_disconnected(&mut self, shutdown: &CancellationToken) -> bool {
        let pause = tokio::time::sleep(self.reconnect_backoff.next_delay());
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return true,
                _ = &mut pause => return false,
                command = self.commands.recv() => match command {
                    None => return true,
                    Some(RouterCommand::Subscribe { confirmed, .. }) => {
                        let _ = confirmed.send(Err(SubscribeError::Disconnected));
                    }
                    Some(RouterCommand::Unsubscribe { channel, subscriber_id }) => {
                        self.remove_subscriber(&channel, subscriber_id);
                    }
                },
            }
        }
    }

    async fn serve_connection(
        &mut self,
        mut sink: redis::aio::PubSubSink,
        mut messages: redis::aio::PubSubStream,
        is_reconnection: bool,
        shutdown: &CancellationToken,
    ) -> ConnectionEnd {
        let channels: Vec<String> = self.subscribers.keys().cloned().collect();
        for batch in channels.chunks(CHANNELS_PER_COMMAND) {
            if !self.bounded(sink.subscribe(batch)).await {
                return ConnectionEnd::Lost;
            }
            self.subscribed_at_redis.extend(batch.iter().cloned());
        }
        if is_reconnection {
            // A stream too far behind to take the Resync would miss it: it is dropped like any lagging stream.
            self.subscribers.retain(|_, subscribers| {
                subscribers.retain(|(_, sender)| deliver(sender, RouterMessage::Resync));
                !subscribers.is_empty()
            });
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return ConnectionEnd::Shutdown,
                message = messages.next() => match message {
                    Some(message) => self.fan_out(&message),
                    None => return ConnectionEnd::Lost,
                },
                command = self.commands.recv() => {
                    let Some(first) = command else { return ConnectionEnd::Shutdown };
                    if !self.apply_command_batch(first, &mut sink).await {
                        return ConnectionEnd::Lost;
                    }
                }
            }
        }
    }

    fn fan_out(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        let Some(subscribers) = self.subscribers.get_mut(channel) else { return };
        // One copy of the payload, shared by every stream of this chat on this gateway.
        let Ok(payload) = std::str::from_utf8(message.get_payload_bytes()) else { return };
        let payload: Arc<str> = payload.into();
        let received_at = Instant::now();
        subscribers.retain(|(_, sender)| {
            deliver(sender, RouterMessage::Published { message: payload.clone(), received_at })
        });
        if subscribers.is_empty() {
            // Forgotten here; the subscriptions' own departures then unsubscribe the channel at Redis.
            self.subscribers.remove(channel);
        }
        self.messages_counter.increment(1);
    }

    /// Applies `first` and whatever other commands are already waiting, with one SUBSCRIBE and one UNSUBSCRIBE
    /// for the net change. Returns false when the connection failed.
    async fn apply_command_batch(&mut self, first: RouterCommand, sink: &mut redis::aio::PubSubSink) -> bool {
        let mut batch = vec![first];
        while batch.len() < CHANNELS_PER_COMMAND {
            match self.commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut touched = HashSet::new();
        let mut waiting_confirmations = Vec::new();
        for command in batch {
            match command {
                RouterCommand::Subscribe { channel, subscriber_id, messages, confirmed } => {
                    self.subscribers.entry(channel.clone()).or_default().push((subscriber_id, messages));
                    waiting_confirmations.push((channel.clone(), subscriber_id, confirmed));
                    touched.insert(channel);
                }
                RouterCommand::Unsubscribe { channel, subscriber_id } => {
                    self.remove_subscriber(&channel, subscriber_id);
                    touched.insert(channel);
                }
            }
        }
        let (to_subscribe, to_unsubscribe): (Vec<String>, Vec<String>) = touched
            .into_iter()
            .filter(|channel| {
                self.subscribers.contains_key(channel) != self.subscribed_at_redis.contains(channel)
            })
            .partition(|channel| self.subscribers.contains_key(channel));

        let mut connection_ok = true;
        if !to_subscribe.is_empty() {
            connection_ok = self.bounded(sink.subscribe(&to_subscribe)).await;
            if connection_ok {
                self.subscribed_at_redis.extend(to_subscribe);
            }
        }
        if connection_ok && !to_unsubscribe.is_empty() {
            connection_ok = self.bounded(sink.unsubscribe(&to_unsubscribe)).await;
            for channel in &to_unsubscribe {
                self.subscribed_at_redis.remove(channel);
            }
        }
        for (channel, subscriber_id, confirmed) in waiting_confirmations {
            if connection_ok {
                let _ = confirmed.send(Ok(()));
            } else {
                self.remove_subscriber(&channel, subscriber_id);
                let _ = confirmed.send(Err(SubscribeError::Disconnected));
            }
        }
        metrics::gauge!("dam_gateway_pubsub_channels").set(self.subscribed_at_redis.len() as f64);
        connection_ok
    }

    /// Runs one subscription command under the connect timeout; false when it failed or hung.
    async fn bounded(&self, command: impl std::future::Future<Output = redis::RedisResult<()>>) -> bool {
        matches!(tokio::time::timeout(self.connect_timeout, command).await, Ok(Ok(())))
    }

    fn remove_subscriber(&mut self, channel: &str, subscriber_id: u64) {
        if let Some(subscribers) = self.subscribers.get_mut(channel) {
            subscribers.retain(|(id, _)| *id != subscriber_id);
            if subscribers.is_empty() {
                self.subscribers.remove(channel);
            }
        }
    }
}

/// Hands `message` to one stream without ever waiting for it; false when the stream is gone or is
/// [`STREAM_QUEUE_CAPACITY`] messages behind. Dropping its sender then ends the stream's relay, which tells its
/// client to resume from the replay log (`Last-Event-ID`).
fn deliver(sender: &mpsc::Sender<RouterMessage>, message: RouterMessage) -> bool {
    match sender.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics::counter!("dam_gateway_lagging_streams_dropped_total").increment(1);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}
