//! The table of knobs: each knob's directive key, its `x-mock-*` header and the value it expects. Reading the
//! values is `knobs.rs`; what the knobs do is `chat_completions.rs`.

/// One knob, with its two spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Knob {
    Tokens,
    TimeToFirstToken,
    InterTokenDelay,
    FailureRate,
    HangRate,
    Status,
    RetryAfter,
    FailAfterTokens,
    Hang,
    Markup,
}

impl Knob {
    pub(crate) const ALL: [Knob; 10] = [
        Knob::Tokens,
        Knob::TimeToFirstToken,
        Knob::InterTokenDelay,
        Knob::FailureRate,
        Knob::HangRate,
        Knob::Status,
        Knob::RetryAfter,
        Knob::FailAfterTokens,
        Knob::Hang,
        Knob::Markup,
    ];

    pub(crate) fn directive_key(self) -> &'static str {
        match self {
            Knob::Tokens => "tokens",
            Knob::TimeToFirstToken => "ttft_ms",
            Knob::InterTokenDelay => "inter_token_ms",
            Knob::FailureRate => "failure_rate",
            Knob::HangRate => "hang_rate",
            Knob::Status => "status",
            Knob::RetryAfter => "retry_after_s",
            Knob::FailAfterTokens => "fail_after_tokens",
            Knob::Hang => "hang",
            Knob::Markup => "markup",
        }
    }

    pub(crate) fn header_name(self) -> &'static str {
        match self {
            Knob::Tokens => "x-mock-tokens",
            Knob::TimeToFirstToken => "x-mock-ttft-ms",
            Knob::InterTokenDelay => "x-mock-inter-token-ms",
            Knob::FailureRate => "x-mock-failure-rate",
            Knob::HangRate => "x-mock-hang-rate",
            Knob::Status => "x-mock-status",
            Knob::RetryAfter => "x-mock-retry-after-s",
            Knob::FailAfterTokens => "x-mock-fail-after-tokens",
            Knob::Hang => "x-mock-hang",
            Knob::Markup => "x-mock-markup",
        }
    }

    pub(crate) fn expected_value(self) -> &'static str {
        match self {
            Knob::Tokens => "a whole number of tokens up to 1000000",
            Knob::FailAfterTokens => "a whole number of tokens",
            Knob::TimeToFirstToken | Knob::InterTokenDelay => "a whole number of milliseconds",
            Knob::FailureRate | Knob::HangRate => "a probability between 0.0 and 1.0",
            Knob::Status => "an HTTP error status between 400 and 599",
            Knob::RetryAfter => "a whole number of seconds",
            Knob::Hang | Knob::Markup => "true or false",
        }
    }
}
