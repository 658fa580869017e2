//! Watches the lanes' served-ticket counters for the whole gateway process (one MGET per interval, not one query
//! per waiting client) and measures each lane's drain rate over a sliding window, so every queued stream can
//! compute its position and ETA locally in O(1).

use std::collections::VecDeque;
use std::time::Duration;

use protocol::{Lane, RedisConnections, RedisKeys};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How far back the drain rate looks: long enough to smooth bursts, short enough to follow a change in capacity.
const DRAIN_RATE_WINDOW: Duration = Duration::from_secs(15);

/// The latest reading of every lane.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueSnapshot {
    /// Indexed like [`Lane::ALL`].
    pub lanes: [LaneSnapshot; Lane::ALL.len()],
    /// Increases with every reading, so waiters can tell a fresh reading from an old one.
    pub reading: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LaneSnapshot {
    /// Jobs taken off this lane so far (the served-ticket counter).
    pub served_tickets: u64,
    /// Jobs taken off per second over the window; `None` until something was served in it.
    pub drain_per_second: Option<f64>,
}

impl QueueSnapshot {
    pub fn lane(&self, lane: Lane) -> LaneSnapshot {
        self.lanes[lane_index(lane)]
    }

    /// Position (1 = next) of a job holding `ticket` in `lane`, or `None` once a worker has taken it.
    pub fn position_of(&self, lane: Lane, ticket: u64) -> Option<u64> {
        let served = self.lane(lane).served_tickets;
        (ticket > served).then(|| ticket - served)
    }

    /// Jobs taken off all lanes per second (0 while unmeasured).
    pub fn total_drain_per_second(&self) -> f64 {
        self.lanes.iter().filter_map(|lane| lane.drain_per_second).sum()
    }

    /// Estimated wait for a job at `position`, from the lane's measured drain rate.
    pub fn eta_ms(&self, lane: Lane, position: u64) -> Option<u64> {
        let rate = self.lane(lane).drain_per_second?;
        (rate > 0.0).then(|| (position as f64 / rate * 1000.0).round() as u64)
    }
}

fn lane_index(lane: Lane) -> usize {
    Lane::ALL.iter().position(|candidate| *candidate == lane).expect("every lane is in Lane::ALL")
}

/// Starts the watcher; the receiver always holds the latest snapshot.
pub fn start_queue_watch(
    redis: RedisConnections,
    keys: RedisKeys,
    interval: Duration,
    shutdown: CancellationToken,
) -> watch::Receiver<QueueSnapshot> {
    let (sender, receiver) = watch::channel(QueueSnapshot::default());
    tokio::spawn(async move {
        let mut history: VecDeque<(Instant, [u64; Lane::ALL.len()])> = VecDeque::new();
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let counter_keys: Vec<String> =
            Lane::ALL.iter().map(|lane| keys.lane_served_tickets(*lane)).collect();
        let mut reading = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let read_counters = redis::cmd("MGET").arg(&counter_keys).clone();
            let counters: redis::RedisResult<Vec<Option<u64>>> = redis
                .run(|mut connection| async move { read_counters.query_async(&mut connection).await })
                .await;
            let Ok(counters) = counters else { continue };
            let now = Instant::now();
            let served: [u64; Lane::ALL.len()] =
                std::array::from_fn(|index| counters.get(index).copied().flatten().unwrap_or(0));
            history.push_back((now, served));
            while history.front().is_some_and(|(at, _)| now.duration_since(*at) > DRAIN_RATE_WINDOW) {
                history.pop_front();
            }
            reading += 1;
            let snapshot = QueueSnapshot { lanes: measure_lanes(&history, served), reading };
            if sender.send(snapshot).is_err() {
                return;
            }
        }
    });
    receiver
}

fn measure_lanes(
    history: &VecDeque<(Instant, [u64; Lane::ALL.len()])>,
    served: [u64; Lane::ALL.len()],
) -> [LaneSnapshot; Lane::ALL.len()] {
    let oldest = history.front().copied();
    let newest = history.back().copied();
    std::array::from_fn(|index| {
        let drain_per_second = match (oldest, newest) {
            (Some((start, start_counts)), Some((end, end_counts))) if end > start => {
                let drained = end_counts[index].saturating_sub(start_counts[index]);
                (drained > 0).then(|| drained as f64 / end.duration_since(start).as_secs_f64())
            }
            _ => None,
        };
        LaneSnapshot { served_tickets: served[index], drain_per_second }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_and_eta_follow_the_served_counter_and_drain_rate() {
        let mut snapshot = QueueSnapshot::default();
        snapshot.lanes[lane_index(Lane::Standard)] =
            LaneSnapshot { served_tickets: 10, drain_per_second: Some(4.0) };
        assert_eq!(snapshot.position_of(Lane::Standard, 13), Some(3));
        assert_eq!(snapshot.position_of(Lane::Standard, 10), None);
        assert_eq!(snapshot.eta_ms(Lane::Standard, 3), Some(750));
        assert_eq!(snapshot.eta_ms(Lane::Premium, 3), None, "no measurement yet");
    }

    #[test]
    fn drain_rate_is_measured_over_the_window() {
        let start = Instant::now();
        let history = VecDeque::from([(start, [0, 100]), (start + Duration::from_secs(2), [0, 110])]);
        let lanes = measure_lanes(&history, [0, 110]);
        assert_eq!(lanes[1].drain_per_second, Some(5.0));
        assert_eq!(lanes[0].drain_per_second, None);
    }
}
