//! Property tests: every protocol decoder against arbitrary input (never a panic; valid values survive a round
//! trip), and the admission script against arbitrary bounded inputs on a real redis-server (always a decision,
//! never a script error). `PROPTEST_CASES` sets the cases per property (64 by default, so `make test` stays
//! quick; `make chaos` raises it).

mod admission_inputs;
mod decoders;
mod strategies;

use proptest::test_runner::Config;

/// Cases per property when `PROPTEST_CASES` does not say: enough to find shallow bugs in a few seconds.
const DEFAULT_CASES: u32 = 64;

/// The runner's configuration: `PROPTEST_CASES` or [`DEFAULT_CASES`], and no failure files written into the
/// source tree (a failing case is printed with its minimal input instead).
pub fn property_config() -> Config {
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|cases| cases.parse().ok()).unwrap_or(DEFAULT_CASES);
    Config { cases, failure_persistence: None, ..Config::default() }
}
