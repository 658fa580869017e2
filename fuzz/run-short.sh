#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short while and fails on the first crash, for `make chaos`.
#
#   fuzz/run-short.sh [SECONDS]        # default 30 s per target; FUZZ_SECONDS works too
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Each target starts from the committed
# valid examples in fuzz/seeds/<target>, keeps what it learns in fuzz/corpus/<target> (so runs build on each
# other; not committed) and saves a crashing input in fuzz/artifacts/<target>; the last
# lines of each run (execs, coverage) are printed. The sanitizer is off: the code under test is safe Rust, where
# a bug shows as a panic, which libFuzzer catches as a crash anyway, and runs are several times faster.
set -euo pipefail

seconds="${1:-${FUZZ_SECONDS:-30}}"
fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$fuzz_dir"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "run-short.sh: needs the nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)" >&2
    exit 2
fi

targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build --sanitizer none --release
failed=()
for target in $targets; do
    echo "== $target: ${seconds}s"
    mkdir -p "corpus/$target"
    log="$(mktemp)"
    # -max_len: the gateway's bodies are capped at 1 MiB; 64 KiB covers every shape without slowing each run.
    if cargo +nightly fuzz run --sanitizer none --release "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added|stat::peak_rss_mb)' "$log" || tail -n 3 "$log"
    else
        echo "!! $target crashed (input saved under fuzz/artifacts/$target):"
        tail -n 40 "$log"
        failed+=("$target")
    fi
    rm -f "$log"
done

if ((${#failed[@]})); then
    echo "fuzzing found crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: no crash in $(wc -w <<<"$targets") targets, ${seconds}s each"
