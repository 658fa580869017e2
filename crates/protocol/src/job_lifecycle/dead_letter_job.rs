//! A claimed job that cannot run at all (an envelope that does not decode): `dead_letter_job`
//! (`lua/dead_letter_job.lua`) moves it from the processing list to the dead-letter list.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};

use crate::dead_letter::{DeadLetter, DeadLetterCaps, count_dropped_dead_letters};
use crate::keys::RedisKeys;
use crate::script_runner::run_script;

static DEAD_LETTER_JOB: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/dead_letter_job.lua")));

/// Moves a claimed job from the worker's processing list to the dead-letter list, kept within
/// `dead_letter_caps`. Returns false, changing nothing, when the job was no longer in the processing list.
pub async fn dead_letter_job(
    connection: &mut impl ConnectionLike,
    keys: &RedisKeys,
    dead_letter: &DeadLetter,
    dead_letter_caps: DeadLetterCaps,
) -> RedisResult<bool> {
    let (moved, dropped): (i64, u64) = run_script(
        "dead_letter_job",
        DEAD_LETTER_JOB
            .key(keys.worker_processing_list(&dead_letter.worker_id))
            .key(keys.dead_letters())
            .key(keys.dead_letter_bytes())
            .key(keys.dead_letters_dropped())
            .arg(&dead_letter.raw_envelope)
            .arg(dead_letter.encode())
            .arg(dead_letter_caps.max_records)
            .arg(dead_letter_caps.max_bytes),
        connection,
    )
    .await?;
    count_dropped_dead_letters(dropped);
    Ok(moved == 1)
}
