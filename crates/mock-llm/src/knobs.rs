//! The knobs that shape one answer (length, delays, injected failures), and how a request overrides the defaults:
//! `x-mock-*` headers, or a `[[mock key=value ...]]` directive inside the last user message for requests that pass
//! through services which cannot forward custom headers. Parsing only; acting on the knobs is `chat_completions`,
//! finding a directive in the text `mock_directive`, and the knobs' names `knob_table`.

use std::fmt::Write as _;

use axum::http::HeaderMap;
use protocol::settings::MockLlmSettings;

use crate::error::MockLlmError;
use crate::knob_table::Knob;
use crate::mock_directive::{DIRECTIVE_CLOSING, DIRECTIVE_OPENING, scan_mock_directives};

/// Longest answer a request may ask for: each token is a few bytes of memory per request, so a typo such as
/// `tokens=10000000000` is refused instead of eating the machine. A million tokens is far beyond any real model.
pub(crate) const MAX_ANSWER_TOKENS: u32 = 1_000_000;

/// Every per-request header starts with this; an unknown one is refused so that typos do not pass silently.
const KNOB_HEADER_PREFIX: &str = "x-mock-";

/// The knobs in force for one answer: the defaults with the request's overrides applied.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AnswerKnobs {
    /// Answer length before the request's `max_tokens` cap.
    pub tokens: u32,
    pub time_to_first_token_ms: u64,
    pub inter_token_delay_ms: u64,
    /// Probability of a 500 instead of an answer.
    pub failure_rate: f64,
    /// Probability of never answering.
    pub hang_rate: f64,
    /// Answer this error status instead of an answer.
    pub forced_status: Option<u16>,
    /// Sent as `Retry-After` with injected errors.
    pub retry_after_seconds: Option<u64>,
    /// Cut the connection after this many tokens, without the final chunk and `[DONE]`.
    pub fail_after_tokens: Option<u32>,
    /// Never answer, whatever `hang_rate` says.
    pub hang: bool,
    /// Answer with HTML and script fragments instead of words, for clients that must show output as text.
    pub markup: bool,
}

impl AnswerKnobs {
    pub(crate) fn from_settings(settings: &MockLlmSettings) -> Self {
        Self {
            tokens: settings.tokens_per_answer,
            time_to_first_token_ms: settings.time_to_first_token_ms,
            inter_token_delay_ms: settings.inter_token_delay_ms,
            failure_rate: settings.failure_rate,
            hang_rate: settings.hang_rate,
            forced_status: None,
            retry_after_seconds: None,
            fail_after_tokens: None,
            hang: false,
            markup: false,
        }
    }

    pub(crate) fn with_overrides(self, overrides: &KnobOverrides) -> Self {
        Self {
            tokens: overrides.tokens.unwrap_or(self.tokens),
            time_to_first_token_ms: overrides.ttft_ms.unwrap_or(self.time_to_first_token_ms),
            inter_token_delay_ms: overrides.inter_token_ms.unwrap_or(self.inter_token_delay_ms),
            failure_rate: overrides.failure_rate.unwrap_or(self.failure_rate),
            hang_rate: overrides.hang_rate.unwrap_or(self.hang_rate),
            forced_status: overrides.status.or(self.forced_status),
            retry_after_seconds: overrides.retry_after_s.or(self.retry_after_seconds),
            fail_after_tokens: overrides.fail_after_tokens.or(self.fail_after_tokens),
            hang: overrides.hang.unwrap_or(self.hang),
            markup: overrides.markup.unwrap_or(self.markup),
        }
    }
}

/// Per-request knob overrides; `None` keeps the default. Field names are the directive keys.
///
/// Other crates' tests can build a directive with [`KnobOverrides::to_directive`] and append it to a user message.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KnobOverrides {
    /// `tokens` / `x-mock-tokens`: answer length before `max_tokens`.
    pub tokens: Option<u32>,
    /// `ttft_ms` / `x-mock-ttft-ms`: delay before the first token.
    pub ttft_ms: Option<u64>,
    /// `inter_token_ms` / `x-mock-inter-token-ms`: delay between tokens.
    pub inter_token_ms: Option<u64>,
    /// `failure_rate` / `x-mock-failure-rate`: probability (0.0 to 1.0) of a 500.
    pub failure_rate: Option<f64>,
    /// `hang_rate` / `x-mock-hang-rate`: probability (0.0 to 1.0) of never answering.
    pub hang_rate: Option<f64>,
    /// `status` / `x-mock-status`: answer this error status (400 to 599) in OpenAI's error shape.
    pub status: Option<u16>,
    /// `retry_after_s` / `x-mock-retry-after-s`: `Retry-After` seconds on injected errors.
    pub retry_after_s: Option<u64>,
    /// `fail_after_tokens` / `x-mock-fail-after-tokens`: send this many tokens, then cut the connection.
    pub fail_after_tokens: Option<u32>,
    /// `hang` / `x-mock-hang`: never answer.
    pub hang: Option<bool>,
    /// `markup` / `x-mock-markup`: answer with `<script>`, `<img onerror>` and other markup as the text.
    pub markup: Option<bool>,
}

impl KnobOverrides {
    /// Reads the `x-mock-*` headers. Headers without the prefix are ignored; unknown or malformed knobs are refused.
    pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Self, MockLlmError> {
        let mut overrides = Self::default();
        for (name, value) in headers {
            let header_name = name.as_str();
            if !header_name.starts_with(KNOB_HEADER_PREFIX) {
                continue;
            }
            let knob = Knob::ALL
                .into_iter()
                .find(|knob| knob.header_name() == header_name)
                .ok_or_else(|| MockLlmError::UnknownKnob { knob: header_name.to_owned() })?;
            let raw_value = value.to_str().map_err(|_| MockLlmError::MalformedKnob {
                knob: header_name.to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
                expected: knob.expected_value(),
            })?;
            overrides.set_knob(knob, header_name, raw_value)?;
        }
        Ok(overrides)
    }

    /// Reads every directive in `text` (later ones win) and returns the overrides with the text minus the directives.
    pub(crate) fn from_directives(text: &str) -> Result<(Self, String), MockLlmError> {
        let scan = scan_mock_directives(text).ok_or(MockLlmError::UnterminatedDirective)?;
        let mut overrides = Self::default();
        for directive_body in scan.directive_bodies {
            for assignment in directive_body.split_whitespace() {
                let (key, raw_value) =
                    assignment.split_once('=').ok_or_else(|| MockLlmError::MalformedKnob {
                        knob: assignment.to_owned(),
                        value: String::new(),
                        expected: "written as key=value",
                    })?;
                let knob = Knob::ALL
                    .into_iter()
                    .find(|knob| knob.directive_key() == key)
                    .ok_or_else(|| MockLlmError::UnknownKnob { knob: key.to_owned() })?;
                overrides.set_knob(knob, key, raw_value)?;
            }
        }
        Ok((overrides, scan.text_without_directives))
    }

    /// Overrides set here replace those in `self`; used to let the directive win over headers.
    pub(crate) fn overridden_by(self, later: &Self) -> Self {
        Self {
            tokens: later.tokens.or(self.tokens),
            ttft_ms: later.ttft_ms.or(self.ttft_ms),
            inter_token_ms: later.inter_token_ms.or(self.inter_token_ms),
            failure_rate: later.failure_rate.or(self.failure_rate),
            hang_rate: later.hang_rate.or(self.hang_rate),
            status: later.status.or(self.status),
            retry_after_s: later.retry_after_s.or(self.retry_after_s),
            fail_after_tokens: later.fail_after_tokens.or(self.fail_after_tokens),
            hang: later.hang.or(self.hang),
            markup: later.markup.or(self.markup),
        }
    }

    /// The overrides written as a directive, e.g. `[[mock tokens=5 status=429]]`, to append to a user message.
    pub fn to_directive(&self) -> String {
        let mut directive = String::from(DIRECTIVE_OPENING);
        let mut append = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                // Writing into a String cannot fail.
                let _ = write!(directive, " {key}={value}");
            }
        };
        append("tokens", self.tokens.map(|value| value.to_string()));
        append("ttft_ms", self.ttft_ms.map(|value| value.to_string()));
        append("inter_token_ms", self.inter_token_ms.map(|value| value.to_string()));
        append("failure_rate", self.failure_rate.map(|value| value.to_string()));
        append("hang_rate", self.hang_rate.map(|value| value.to_string()));
        append("status", self.status.map(|value| value.to_string()));
        append("retry_after_s", self.retry_after_s.map(|value| value.to_string()));
        append("fail_after_tokens", self.fail_after_tokens.map(|value| value.to_string()));
        append("hang", self.hang.map(|value| value.to_string()));
        append("markup", self.markup.map(|value| value.to_string()));
        directive.push_str(DIRECTIVE_CLOSING);
        directive
    }

    fn set_knob(&mut self, knob: Knob, written_name: &str, raw_value: &str) -> Result<(), MockLlmError> {
        let malformed = || MockLlmError::MalformedKnob {
            knob: written_name.to_owned(),
            value: raw_value.to_owned(),
            expected: knob.expected_value(),
        };
        let raw_value = raw_value.trim();
        match knob {
            Knob::Tokens => {
                let tokens: u32 = raw_value.parse().map_err(|_| malformed())?;
                if tokens > MAX_ANSWER_TOKENS {
                    return Err(malformed());
                }
                self.tokens = Some(tokens);
            }
            Knob::TimeToFirstToken => self.ttft_ms = Some(raw_value.parse().map_err(|_| malformed())?),
            Knob::InterTokenDelay => self.inter_token_ms = Some(raw_value.parse().map_err(|_| malformed())?),
            Knob::FailureRate => {
                self.failure_rate = Some(parse_probability(raw_value).ok_or_else(malformed)?)
            }
            Knob::HangRate => self.hang_rate = Some(parse_probability(raw_value).ok_or_else(malformed)?),
            Knob::Status => {
                let status: u16 = raw_value.parse().map_err(|_| malformed())?;
                if !(400..=599).contains(&status) {
                    return Err(malformed());
                }
                self.status = Some(status);
            }
            Knob::RetryAfter => self.retry_after_s = Some(raw_value.parse().map_err(|_| malformed())?),
            Knob::FailAfterTokens => {
                self.fail_after_tokens = Some(raw_value.parse().map_err(|_| malformed())?)
            }
            Knob::Hang => self.hang = Some(parse_flag(raw_value).ok_or_else(malformed)?),
            Knob::Markup => self.markup = Some(parse_flag(raw_value).ok_or_else(malformed)?),
        }
        Ok(())
    }
}

fn parse_probability(raw_value: &str) -> Option<f64> {
    let probability: f64 = raw_value.parse().ok()?;
    (0.0..=1.0).contains(&probability).then_some(probability)
}

fn parse_flag(raw_value: &str) -> Option<bool> {
    match raw_value {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::mock_directive::strip_mock_directives;

    #[test]
    fn a_directive_sets_every_knob_and_is_stripped() {
        let message = "Tell me a story [[mock tokens=5 ttft_ms=100 inter_token_ms=10 status=429 retry_after_s=2 \
                       fail_after_tokens=3 hang=true failure_rate=1.0 hang_rate=0.5 markup=true]] please";
        let (overrides, text) = KnobOverrides::from_directives(message).expect("valid directive");
        assert_eq!(text, "Tell me a story   please");
        assert_eq!(
            overrides,
            KnobOverrides {
                tokens: Some(5),
                ttft_ms: Some(100),
                inter_token_ms: Some(10),
                failure_rate: Some(1.0),
                hang_rate: Some(0.5),
                status: Some(429),
                retry_after_s: Some(2),
                fail_after_tokens: Some(3),
                hang: Some(true),
                markup: Some(true),
            }
        );
    }

    #[test]
    fn text_without_a_directive_has_no_overrides() {
        let (overrides, text) =
            KnobOverrides::from_directives("  plain [[text]] [[mockingbird]] ").expect("ok");
        assert_eq!(overrides, KnobOverrides::default());
        assert_eq!(text, "plain [[text]] [[mockingbird]]");
    }

    #[test]
    fn later_directives_win() {
        let (overrides, _) = KnobOverrides::from_directives("[[mock tokens=1]] hi [[mock tokens=2]]")
            .expect("valid directives");
        assert_eq!(overrides.tokens, Some(2));
    }

    #[test]
    fn malformed_directive_values_name_the_knob() {
        for (message, knob) in [
            ("[[mock tokens=many]]", "tokens"),
            ("[[mock tokens=1000001]]", "tokens"),
            ("[[mock failure_rate=1.5]]", "failure_rate"),
            ("[[mock status=200]]", "status"),
            ("[[mock hang=maybe]]", "hang"),
            ("[[mock ttft_ms]]", "ttft_ms"),
            ("[[mock colour=red]]", "colour"),
        ] {
            let error = KnobOverrides::from_directives(message).expect_err(message);
            assert!(error.to_string().contains(knob), "{message}: {error}");
        }
    }

    #[test]
    fn an_unterminated_directive_is_refused() {
        let error = KnobOverrides::from_directives("hi [[mock tokens=3").expect_err("unterminated");
        assert!(matches!(error, MockLlmError::UnterminatedDirective));
    }

    #[test]
    fn headers_set_knobs_and_other_headers_are_ignored() {
        let mut headers = HeaderMap::new();
        headers.insert("x-mock-tokens", HeaderValue::from_static("7"));
        headers.insert("x-mock-status", HeaderValue::from_static("503"));
        headers.insert("x-mock-retry-after-s", HeaderValue::from_static("4"));
        headers.insert("x-mock-hang", HeaderValue::from_static("false"));
        headers.insert("authorization", HeaderValue::from_static("Bearer anything"));
        let overrides = KnobOverrides::from_headers(&headers).expect("valid headers");
        assert_eq!(overrides.tokens, Some(7));
        assert_eq!(overrides.status, Some(503));
        assert_eq!(overrides.retry_after_s, Some(4));
        assert_eq!(overrides.hang, Some(false));
        assert_eq!(overrides.ttft_ms, None);
    }

    #[test]
    fn malformed_or_unknown_headers_name_the_header() {
        for (name, value) in
            [("x-mock-inter-token-ms", "-1"), ("x-mock-hang-rate", "2"), ("x-mock-tokenz", "1")]
        {
            let mut headers = HeaderMap::new();
            headers.insert(name, HeaderValue::from_static(value));
            let error = KnobOverrides::from_headers(&headers).expect_err(name);
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn the_directive_wins_over_headers_and_both_over_defaults() {
        let defaults = AnswerKnobs::from_settings(&MockLlmSettings::default());
        let from_headers = KnobOverrides { tokens: Some(3), ttft_ms: Some(1), ..KnobOverrides::default() };
        let from_directive = KnobOverrides { tokens: Some(9), ..KnobOverrides::default() };
        let knobs = defaults.with_overrides(&from_headers.overridden_by(&from_directive));
        assert_eq!(knobs.tokens, 9);
        assert_eq!(knobs.time_to_first_token_ms, 1);
        assert_eq!(knobs.inter_token_delay_ms, defaults.inter_token_delay_ms);
    }

    #[test]
    fn a_rendered_directive_parses_back_to_the_same_overrides() {
        let overrides = KnobOverrides {
            tokens: Some(5),
            failure_rate: Some(0.25),
            status: Some(429),
            hang: Some(false),
            ..KnobOverrides::default()
        };
        let directive = overrides.to_directive();
        assert_eq!(directive, "[[mock tokens=5 failure_rate=0.25 status=429 hang=false]]");
        let (parsed, text) = KnobOverrides::from_directives(&format!("hi {directive}")).expect("round trip");
        assert_eq!(parsed, overrides);
        assert_eq!(text, "hi");
        assert_eq!(strip_mock_directives(&format!("hi {directive}")), "hi");
    }
}
