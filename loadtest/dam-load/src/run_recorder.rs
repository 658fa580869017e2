//! Collects finished chats: the histograms and outcome counts of the measured window, and the counters of the
//! whole process life (warm-up and drain included) that the benchmark divides CPU and Redis work by.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::chat_outcome::ChatRecord;
use crate::latency_histogram::{LatencyHistogram, LatencySummary};

/// The figures of the chats that ended inside the measured window.
#[derive(Debug, Default)]
pub struct MeasuredChats {
    pub admission: LatencyHistogram,
    pub first_token: LatencyHistogram,
    pub token_gap: LatencyHistogram,
    pub total: LatencyHistogram,
    pub outcomes: BTreeMap<String, u64>,
    /// One full description per outcome, the first seen, to tell what a failure was.
    pub outcome_examples: BTreeMap<String, String>,
    pub tokens_received: u64,
    pub resets_received: u64,
}

impl MeasuredChats {
    fn record(&mut self, record: &ChatRecord) {
        let timeline = &record.timeline;
        if let Some(admitted_after) = timeline.admitted_after {
            self.admission.record(admitted_after);
        }
        if let Some(first_token_after) = timeline.first_token_after {
            self.first_token.record(first_token_after);
        }
        for gap in &timeline.token_gaps {
            self.token_gap.record(*gap);
        }
        if let Some(finished_after) = timeline.finished_after {
            self.total.record(finished_after);
        }
        self.tokens_received += u64::from(timeline.tokens);
        self.resets_received += u64::from(timeline.resets);
        let key = record.outcome.key();
        if !record.outcome.is_done() && !self.outcome_examples.contains_key(&key) {
            self.outcome_examples.insert(key.clone(), record.outcome.detail());
        }
        *self.outcomes.entry(key).or_default() += 1;
    }

    pub fn done(&self) -> u64 {
        self.outcomes.get("done").copied().unwrap_or(0)
    }

    pub fn summaries(&self) -> HistogramSummaries {
        HistogramSummaries {
            admission: self.admission.summary(),
            first_token: self.first_token.summary(),
            token_gap: self.token_gap.summary(),
            total: self.total.summary(),
        }
    }
}

/// Every histogram of a run, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct HistogramSummaries {
    /// Request sent to the response headers (browser flow: to the 202).
    pub admission: LatencySummary,
    /// Request sent to the first non-empty text.
    pub first_token: LatencySummary,
    /// Between consecutive pieces of text of one chat.
    pub token_gap: LatencySummary,
    /// Request sent to the final event.
    pub total: LatencySummary,
}

/// Chats of the whole process life, by how they ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LifetimeCounts {
    pub started: u64,
    pub done: u64,
    pub failed: u64,
}

/// Shared by every chat task: the measured window's figures behind a lock taken once per chat, and lock-free
/// counters for the progress line.
#[derive(Debug)]
pub struct RunRecorder {
    measure_from: Instant,
    measure_until: Instant,
    measured: Mutex<MeasuredChats>,
    started: AtomicU64,
    done: AtomicU64,
    failed: AtomicU64,
}

impl RunRecorder {
    /// Chats that end at or after `measure_from` and before `measure_until` are measured.
    pub fn new(measure_from: Instant, measure_until: Instant) -> Self {
        Self {
            measure_from,
            measure_until,
            measured: Mutex::new(MeasuredChats::default()),
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Counts a chat as started and returns its number, which makes its prompt unique.
    pub fn note_started(&self) -> u64 {
        self.started.fetch_add(1, Ordering::Relaxed)
    }

    pub fn record(&self, record: &ChatRecord) {
        let counter = if record.outcome.is_done() { &self.done } else { &self.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        if record.ended_at >= self.measure_from && record.ended_at < self.measure_until {
            self.lock_measured().record(record);
        }
    }

    pub fn lifetime(&self) -> LifetimeCounts {
        LifetimeCounts {
            started: self.started.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Runs `read` on the measured figures under the lock.
    pub fn with_measured<T>(&self, read: impl FnOnce(&MeasuredChats) -> T) -> T {
        read(&self.lock_measured())
    }

    fn lock_measured(&self) -> std::sync::MutexGuard<'_, MeasuredChats> {
        // A panic while recording leaves plain counters behind, still worth reporting.
        self.measured.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
