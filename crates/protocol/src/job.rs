//! The job envelope: what the gateway puts on a lane and a worker takes off it. Versioned, so that a worker never
//! guesses at an envelope written by a newer gateway.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The envelope version this build writes and understands.
pub const JOB_ENVELOPE_VERSION: u32 = 1;

/// A chat job's id: a UUIDv7, so ids sort by creation time. Also the chat id clients see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    pub fn new_random() -> Self {
        Self(Uuid::now_v7())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(formatter)
    }
}

impl FromStr for JobId {
    type Err = InvalidJobId;

    /// Only the lowercase hyphenated form is accepted, so every id has exactly one spelling in keys and URLs.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match Uuid::try_parse(text) {
            Ok(uuid) if uuid.hyphenated().to_string() == text => Ok(Self(uuid)),
            _ => Err(InvalidJobId),
        }
    }
}

/// A string that is not a job id in its canonical form.
#[derive(Debug, thiserror::Error)]
#[error("not a job id (expected a lowercase hyphenated UUID)")]
pub struct InvalidJobId;

/// The priority lane a job waits in. Earlier lanes are served first, with a weighted share for later ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Premium,
    Standard,
}

impl Lane {
    /// All lanes, in priority order.
    pub const ALL: [Lane; 2] = [Lane::Premium, Lane::Standard];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Premium => "premium",
            Lane::Standard => "standard",
        }
    }
}

impl FromStr for Lane {
    type Err = UnknownLane;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Lane::ALL.into_iter().find(|lane| lane.as_str() == text).ok_or_else(|| UnknownLane(text.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown lane {0:?}")]
pub struct UnknownLane(pub String);

/// Who wrote a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatRole {
    System,
    Developer,
    User,
    Assistant,
}

/// One message of the conversation sent to the LLM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: ChatRole,
    pub content: String,
}

/// Sampling parameters passed through to the LLM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationParameters {
    /// Always set: the gateway fills in the default, so the worker knows the most it may cost.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
}

impl GenerationParameters {
    /// Only `max_tokens` set; everything else is left to the provider.
    pub fn with_max_tokens(max_tokens: u32) -> Self {
        Self {
            max_tokens,
            temperature: None,
            top_p: None,
            stop: Vec::new(),
            presence_penalty: None,
            frequency_penalty: None,
            seed: None,
        }
    }
}

/// A chat job as it travels through a lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEnvelope {
    /// [`JOB_ENVELOPE_VERSION`] at the time of writing.
    pub version: u32,
    pub id: JobId,
    /// The caller the job is charged to: an API key's name or a client IP.
    pub identity: String,
    pub lane: Lane,
    pub messages: Vec<ChatMessage>,
    pub model: String,
    pub parameters: GenerationParameters,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// A job still queued at this instant (ms since the epoch) is not sent upstream; it expires.
    pub deadline_ms: u64,
    /// 1 for the first run; raised each time the job is started again (recovered or put back on shutdown). It
    /// is the fence: only the current attempt may write the job's stream.
    pub attempt: u32,
    /// How often the job was recovered from a worker that died with it; past a limit it is a poison job.
    #[serde(default)]
    pub recoveries: u32,
    /// No client is expected to listen (an operator replayed it): it is not cancelled for want of listeners.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unattended: bool,
    /// W3C trace context (`traceparent`, `tracestate`) so traces cross the queue.
    #[serde(default)]
    pub trace_context: BTreeMap<String, String>,
}

/// Why an envelope could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope is not valid JSON for version {JOB_ENVELOPE_VERSION}: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("envelope version {found} is not supported (this build reads version {JOB_ENVELOPE_VERSION})")]
    UnsupportedVersion { found: u32 },
}

impl JobEnvelope {
    /// A chat's first envelope: a fresh id, the first attempt, no recoveries, nobody's trace yet.
    pub fn new_chat(
        identity: String,
        lane: Lane,
        messages: Vec<ChatMessage>,
        model: String,
        parameters: GenerationParameters,
        created_at_ms: u64,
        deadline_ms: u64,
    ) -> Self {
        Self {
            version: JOB_ENVELOPE_VERSION,
            id: JobId::new_random(),
            identity,
            lane,
            messages,
            model,
            parameters,
            created_at_ms,
            deadline_ms,
            attempt: 1,
            recoveries: 0,
            unattended: false,
            trace_context: BTreeMap::new(),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a job envelope always serializes")
    }

    /// Reads an envelope, refusing versions this build does not know.
    pub fn decode(text: &str) -> Result<Self, EnvelopeError> {
        #[derive(Deserialize)]
        struct VersionOnly {
            version: u32,
        }
        let VersionOnly { version } = serde_json::from_str(text)?;
        if version != JOB_ENVELOPE_VERSION {
            return Err(EnvelopeError::UnsupportedVersion { found: version });
        }
        Ok(serde_json::from_str(text)?)
    }
}

/// The lifecycle of a job, as stored in the job state hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Cancelled,
        JobStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Expired => "expired",
        }
    }
}

impl FromStr for JobStatus {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL.into_iter().find(|status| status.as_str() == text).ok_or_else(|| text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_envelope() -> JobEnvelope {
        JobEnvelope {
            version: JOB_ENVELOPE_VERSION,
            id: JobId::new_random(),
            identity: "ip:127.0.0.1".to_owned(),
            lane: Lane::Standard,
            messages: vec![
                ChatMessage { role: ChatRole::System, content: "Be brief.".to_owned() },
                ChatMessage { role: ChatRole::User, content: "Hello".to_owned() },
            ],
            model: "mock-1".to_owned(),
            parameters: GenerationParameters {
                max_tokens: 64,
                temperature: Some(0.5),
                top_p: None,
                stop: vec!["\n\n".to_owned()],
                presence_penalty: None,
                frequency_penalty: None,
                seed: Some(3),
            },
            created_at_ms: 1_700_000_000_000,
            deadline_ms: 1_700_000_120_000,
            attempt: 1,
            recoveries: 0,
            unattended: false,
            trace_context: BTreeMap::from([("traceparent".to_owned(), "00-abc-def-01".to_owned())]),
        }
    }

    #[test]
    fn an_envelope_survives_a_round_trip() {
        let envelope = sample_envelope();
        assert_eq!(JobEnvelope::decode(&envelope.encode()).expect("decodes"), envelope);
    }

    #[test]
    fn an_envelope_of_another_version_is_refused() {
        let mut json: serde_json::Value = serde_json::from_str(&sample_envelope().encode()).expect("json");
        json["version"] = 2.into();
        let error = JobEnvelope::decode(&json.to_string()).expect_err("version 2 is unknown");
        assert!(matches!(error, EnvelopeError::UnsupportedVersion { found: 2 }));
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(JobEnvelope::decode("{not json").is_err());
        assert!(JobEnvelope::decode("{\"version\":1}").is_err());
    }

    #[test]
    fn job_ids_have_one_spelling() {
        let id = JobId::new_random();
        assert_eq!(id.to_string().parse::<JobId>().expect("parses"), id);
        assert!(id.to_string().to_uppercase().parse::<JobId>().is_err());
        assert!("not-a-uuid".parse::<JobId>().is_err());
        assert!(id.to_string().replace('-', "").parse::<JobId>().is_err());
    }

    #[test]
    fn lanes_and_statuses_parse_their_own_names() {
        for lane in Lane::ALL {
            assert_eq!(lane.as_str().parse::<Lane>().expect("lane"), lane);
        }
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>().expect("status"), status);
        }
    }
}
