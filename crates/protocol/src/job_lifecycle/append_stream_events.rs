//! A running job's events on their way out: `append_stream_events` (`lua/append_stream_events.lua`) appends a
//! batch to the replay log and publishes it, fenced by the log length the batch must produce. The ending goes
//! through `finish_job` instead.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, Script};

use crate::job::JobId;
use crate::keys::RedisKeys;
use crate::script_runner::run_script;
use crate::stream_event::StreamEvent;

static APPEND_STREAM_EVENTS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/append_stream_events.lua")));

/// The names of one job's stream keys, built once per job rather than once per write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStreamKeys {
    pub replay_log: String,
    pub event_channel: String,
}

impl JobStreamKeys {
    pub fn new(keys: &RedisKeys, job_id: &JobId) -> Self {
        Self { replay_log: keys.job_replay_log(job_id), event_channel: keys.job_event_channel(job_id) }
    }
}

/// Whether a non-final stream write went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        replay_log_length: u64,
    },
    /// The log is not at the length this writer expects: another attempt owns the job now; this writer must stop.
    Fenced,
}

/// Appends a batch of a running job's events (`seq` = log index, consecutive) to its replay log and publishes
/// them as one message. One round trip and no read: the fence is the log length the batch must produce (the
/// last event's seq). `new_log_ttl_s` is given with the attempt's first write only (0 otherwise).
pub async fn append_stream_events(
    connection: &mut impl ConnectionLike,
    stream: &JobStreamKeys,
    events: &[StreamEvent],
    new_log_ttl_s: u64,
) -> RedisResult<AppendOutcome> {
    let Some(last_seq) = events.last().and_then(StreamEvent::seq) else {
        return Err(RedisError::from((ErrorKind::Client, "a stream write needs numbered events")));
    };
    let mut invocation = APPEND_STREAM_EVENTS.key(&stream.replay_log);
    invocation.key(&stream.event_channel).arg(last_seq).arg(new_log_ttl_s);
    for event in events {
        invocation.arg(event.encode());
    }
    let length: i64 = run_script("append_stream_events", &invocation, connection).await?;
    Ok(match length {
        -1 => AppendOutcome::Fenced,
        length => AppendOutcome::Appended { replay_log_length: length.max(0) as u64 },
    })
}
