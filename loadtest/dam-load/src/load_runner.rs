//! The two load shapes: a closed loop (N streams, each starting its next chat as soon as the last one ended)
//! and an open loop (chats arrive at a fixed rate, up to a cap in flight). Both run a warm-up that is not
//! measured, the measured window, then a bounded drain of the chats still running.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::chat_flows::{ChatRequestSettings, run_one_chat};
use crate::http_clients::SourceAddressClients;
use crate::progress_line::spawn_progress_line;
use crate::run_recorder::RunRecorder;

/// A stream whose chat failed waits this long before its next one, so a refused connection does not turn the
/// loop into a busy spin.
const PAUSE_AFTER_FAILED_CHAT: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy)]
pub enum LoadShape {
    ClosedLoop { streams: usize },
    OpenLoop { arrivals_per_second: f64, max_in_flight: usize },
}

impl LoadShape {
    /// The most chats in flight at once, which is also about the most connections.
    pub fn most_in_flight(&self) -> usize {
        match *self {
            LoadShape::ClosedLoop { streams } => streams,
            LoadShape::OpenLoop { max_in_flight, .. } => max_in_flight,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub shape: LoadShape,
    pub warm_up: Duration,
    pub duration: Duration,
    /// After the window, chats still running get this long to end before they are cut.
    pub drain_timeout: Duration,
    pub chat: ChatRequestSettings,
    /// Put into every prompt with the chat's number, so no two chats of any run send the same messages.
    pub run_id: String,
}

/// What a run leaves besides the recorder's figures.
#[derive(Debug)]
pub struct LoadRunSummary {
    pub recorder: Arc<RunRecorder>,
    /// Open loop: arrivals not started because `max_in_flight` chats were running.
    pub arrivals_skipped_at_cap: u64,
    /// Chats still running when the drain timeout passed.
    pub chats_cut_at_end: u64,
    pub elapsed: Duration,
}

/// What every chat task shares.
#[derive(Debug)]
struct ChatDriver {
    clients: Arc<SourceAddressClients>,
    settings: ChatRequestSettings,
    recorder: Arc<RunRecorder>,
    run_id: String,
    in_flight: Arc<AtomicU64>,
}

impl ChatDriver {
    /// Runs one chat with a fresh prompt and records it; false when it did not end with `done`.
    async fn run_next_chat(&self) -> bool {
        let number = self.recorder.note_started();
        let prompt =
            format!("dam-load {} chat {number}: tell me about rivers and where they go", self.run_id);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let record = run_one_chat(self.clients.next_client(), &self.settings, &prompt).await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.recorder.record(&record);
        record.outcome.is_done()
    }
}

pub async fn run_load(plan: &LoadPlan, clients: Arc<SourceAddressClients>) -> LoadRunSummary {
    let started = Instant::now();
    let measure_from = started + plan.warm_up;
    let measure_until = measure_from + plan.duration;
    let recorder = Arc::new(RunRecorder::new(measure_from, measure_until));
    let in_flight = Arc::new(AtomicU64::new(0));
    let driver = Arc::new(ChatDriver {
        clients,
        settings: plan.chat.clone(),
        recorder: Arc::clone(&recorder),
        run_id: plan.run_id.clone(),
        in_flight: Arc::clone(&in_flight),
    });
    let progress = spawn_progress_line(
        Arc::clone(&recorder),
        Arc::clone(&in_flight),
        started,
        measure_from,
        measure_until,
    );

    let mut chats = JoinSet::new();
    let arrivals_skipped_at_cap = match plan.shape {
        LoadShape::ClosedLoop { streams } => {
            start_closed_loop(&mut chats, &driver, streams, started, plan.warm_up, measure_until);
            0
        }
        LoadShape::OpenLoop { arrivals_per_second, max_in_flight } => {
            run_open_loop_arrivals(
                &mut chats,
                &driver,
                arrivals_per_second,
                max_in_flight,
                started,
                measure_until,
            )
            .await
        }
    };
    // Closed-loop streams stop by themselves at the window's end; open-loop chats were all started before it.
    let drain_deadline = measure_until + plan.drain_timeout;
    let all_ended =
        tokio::time::timeout_at(drain_deadline.into(), async { while chats.join_next().await.is_some() {} })
            .await
            .is_ok();
    let chats_cut_at_end = if all_ended {
        0
    } else {
        let cut = in_flight.load(Ordering::Relaxed);
        chats.shutdown().await;
        cut
    };
    progress.abort();
    LoadRunSummary { recorder, arrivals_skipped_at_cap, chats_cut_at_end, elapsed: started.elapsed() }
}

/// `streams` tasks, their starts spread over the first half of the warm-up so they do not all connect at once.
fn start_closed_loop(
    chats: &mut JoinSet<()>,
    driver: &Arc<ChatDriver>,
    streams: usize,
    started: Instant,
    warm_up: Duration,
    stop_starting_at: Instant,
) {
    let spread = warm_up / 2;
    for stream in 0..streams {
        let driver = Arc::clone(driver);
        let first_start = started + spread.mul_f64(stream as f64 / streams as f64);
        chats.spawn(async move {
            tokio::time::sleep_until(first_start.into()).await;
            while Instant::now() < stop_starting_at {
                if !driver.run_next_chat().await {
                    tokio::time::sleep(PAUSE_AFTER_FAILED_CHAT).await;
                }
            }
        });
    }
}

/// Starts a chat every 1/rate seconds on a fixed schedule (a late tick catches up at once, as arrivals do not
/// wait for answers) until the window ends; returns the arrivals skipped because the cap was reached.
async fn run_open_loop_arrivals(
    chats: &mut JoinSet<()>,
    driver: &Arc<ChatDriver>,
    arrivals_per_second: f64,
    max_in_flight: usize,
    started: Instant,
    stop_starting_at: Instant,
) -> u64 {
    let mut skipped = 0;
    for arrival in 0_u64.. {
        let due = started + Duration::from_secs_f64(arrival as f64 / arrivals_per_second);
        if due >= stop_starting_at {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        // Reap finished chats as we go, so the set holds only running ones.
        while chats.try_join_next().is_some() {}
        if chats.len() >= max_in_flight {
            skipped += 1;
            continue;
        }
        let driver = Arc::clone(driver);
        chats.spawn(async move {
            driver.run_next_chat().await;
        });
    }
    skipped
}
