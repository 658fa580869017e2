//! `dam-load hold`: opens many browser-flow event streams (queue a chat, open its events URL, wait for the first
//! event) and keeps them open until a signal or a duration ends it, to measure what an open stream costs a
//! gateway. Each held stream is then only drained, never parsed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Semaphore;

use crate::chat_outcome::ChatOutcome;
use crate::chat_requests::{open_event_stream, queue_browser_chat};
use crate::error::LoadError;
use crate::http_clients::{LoopbackTarget, SourceAddressClients};
use crate::latency_histogram::{LatencyHistogram, LatencySummary};
use crate::sse_parser::SseParser;

/// One stream gets this long from its turn to open until its first event.
const OPEN_ONE_STREAM_TIMEOUT: Duration = Duration::from_secs(30);
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct HoldPlan {
    pub target: LoopbackTarget,
    pub streams: usize,
    /// Streams being opened at once; more would only queue in the listen backlog.
    pub open_concurrency: usize,
    /// Longest wait for every stream to open or fail.
    pub open_timeout: Duration,
    /// How long to hold them once open; `None` holds until SIGINT or SIGTERM.
    pub hold_for: Option<Duration>,
    pub run_id: String,
}

/// Printed as one JSON line on stdout when every stream opened or failed (`event: "all_open"`) and when the
/// hold ends (`event: "finished"`).
#[derive(Debug, Serialize)]
pub struct HoldReport {
    pub event: &'static str,
    pub requested: usize,
    pub opened: u64,
    pub failed: u64,
    /// Failures by reason (`http_429:too_many_connections`, `transport:connect`, `timed_out_opening`).
    pub failures: BTreeMap<String, u64>,
    pub failure_examples: BTreeMap<String, String>,
    /// Open now; below `opened` when the server ended some.
    pub still_open: u64,
    pub closed_early: u64,
    /// `POST /api/chats` to its 202.
    pub admission: LatencySummary,
    /// `POST /api/chats` to the first event of the stream.
    pub first_event: LatencySummary,
    pub elapsed_s: f64,
}

#[derive(Debug, Default)]
struct HoldFigures {
    admission: LatencyHistogram,
    first_event: LatencyHistogram,
    failures: BTreeMap<String, u64>,
    failure_examples: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct HoldCounters {
    opened: AtomicU64,
    failed: AtomicU64,
    still_open: AtomicU64,
    closed_early: AtomicU64,
    figures: Mutex<HoldFigures>,
}

impl HoldCounters {
    fn lock_figures(&self) -> std::sync::MutexGuard<'_, HoldFigures> {
        self.figures.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_failure(&self, key: String, detail: String) {
        let mut figures = self.lock_figures();
        figures.failure_examples.entry(key.clone()).or_insert(detail);
        *figures.failures.entry(key).or_default() += 1;
        drop(figures);
        self.failed.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self, event: &'static str, requested: usize, started: Instant) -> HoldReport {
        let figures = self.lock_figures();
        HoldReport {
            event,
            requested,
            opened: self.opened.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            failures: figures.failures.clone(),
            failure_examples: figures.failure_examples.clone(),
            still_open: self.still_open.load(Ordering::Relaxed),
            closed_early: self.closed_early.load(Ordering::Relaxed),
            admission: figures.admission.summary(),
            first_event: figures.first_event.summary(),
            elapsed_s: started.elapsed().as_secs_f64(),
        }
    }
}

/// Opens the streams, reports, holds, reports again. Returns the final report.
pub async fn hold_streams(
    plan: HoldPlan,
    clients: Arc<SourceAddressClients>,
) -> Result<HoldReport, LoadError> {
    let started = Instant::now();
    let mut terminate = signal(SignalKind::terminate()).map_err(LoadError::Signal)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(LoadError::Signal)?;
    let counters = Arc::new(HoldCounters::default());
    let openers = Arc::new(Semaphore::new(plan.open_concurrency.max(1)));
    let mut streams = tokio::task::JoinSet::new();
    for stream in 0..plan.streams {
        let prompt = format!("dam-load {} held stream {stream}", plan.run_id);
        streams.spawn(open_and_hold_one_stream(
            Arc::clone(&clients),
            plan.target.clone(),
            prompt,
            Arc::clone(&openers),
            Arc::clone(&counters),
        ));
    }

    let open_deadline = tokio::time::Instant::now() + plan.open_timeout;
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    let mut stopped_early = false;
    loop {
        tokio::select! {
            _ = progress.tick() => {}
            _ = terminate.recv() => { stopped_early = true; break; }
            _ = interrupt.recv() => { stopped_early = true; break; }
        }
        let opened = counters.opened.load(Ordering::Relaxed);
        let failed = counters.failed.load(Ordering::Relaxed);
        eprintln!(
            "[dam-load] {:6.1}s hold: {opened} open, {failed} failed of {}",
            started.elapsed().as_secs_f64(),
            plan.streams
        );
        if opened + failed >= plan.streams as u64 || tokio::time::Instant::now() >= open_deadline {
            break;
        }
    }
    print_json_line(&counters.report("all_open", plan.streams, started));
    eprintln!(
        "[dam-load] holding {} streams {}",
        counters.still_open.load(Ordering::Relaxed),
        match plan.hold_for {
            Some(hold_for) => format!("for {:.0} s", hold_for.as_secs_f64()),
            None => "until SIGINT or SIGTERM".to_owned(),
        }
    );

    if !stopped_early {
        let held = async {
            match plan.hold_for {
                Some(hold_for) => tokio::time::sleep(hold_for).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = held => {}
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    }
    let report = counters.report("finished", plan.streams, started);
    print_json_line(&report);
    streams.abort_all();
    Ok(report)
}

async fn open_and_hold_one_stream(
    clients: Arc<SourceAddressClients>,
    target: LoopbackTarget,
    prompt: String,
    openers: Arc<Semaphore>,
    counters: Arc<HoldCounters>,
) {
    let Ok(opener) = openers.acquire_owned().await else { return };
    let started = Instant::now();
    let client = clients.next_client();
    let opening = tokio::time::timeout(OPEN_ONE_STREAM_TIMEOUT, async {
        let events_url = queue_browser_chat(client, &target, &prompt).await?;
        let admitted_after = started.elapsed();
        let mut body = open_event_stream(client, &target, &events_url).await?.into_body();
        let mut parser = SseParser::new();
        loop {
            match body.frame().await {
                None => return Err(ChatOutcome::EndedWithoutFinalEvent),
                Some(Err(error)) => {
                    return Err(ChatOutcome::Transport { stage: "stream", detail: error.to_string() });
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    parser.push_bytes(&data);
                    if parser.next_event().is_some() {
                        return Ok((admitted_after, started.elapsed(), body));
                    }
                }
            }
        }
    })
    .await;
    drop(opener);
    let mut body = match opening {
        Ok(Ok((admitted_after, first_event_after, body))) => {
            let mut figures = counters.lock_figures();
            figures.admission.record(admitted_after);
            figures.first_event.record(first_event_after);
            drop(figures);
            counters.opened.fetch_add(1, Ordering::Relaxed);
            counters.still_open.fetch_add(1, Ordering::Relaxed);
            body
        }
        Ok(Err(outcome)) => return counters.note_failure(outcome.key(), outcome.detail()),
        Err(_elapsed) => {
            let detail = format!("no first event within {} s", OPEN_ONE_STREAM_TIMEOUT.as_secs());
            return counters.note_failure("timed_out_opening".to_owned(), detail);
        }
    };
    // Held: read and drop whatever comes (queue updates, keep-alives) so the server never blocks on this socket.
    while let Some(Ok(_frame)) = body.frame().await {}
    counters.still_open.fetch_sub(1, Ordering::Relaxed);
    counters.closed_early.fetch_add(1, Ordering::Relaxed);
}

fn print_json_line(report: &HoldReport) {
    println!("{}", serde_json::to_string(report).expect("reports serialize"));
}
