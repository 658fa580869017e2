//! The gateway's own HTTP/1.1 head parser and chunk-size reader on arbitrary bytes: the first thing any client,
//! hostile or not, reaches. A head is complete, incomplete or refused, never a panic, and a complete head never
//! claims more bytes than it was given.
#![no_main]

use gateway::http1_head::{parse_chunk_size, parse_request_head};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((_head, length))) = parse_request_head(data) {
        assert!(length <= data.len());
    }
    for line in data.split(|byte| *byte == b'\n') {
        let _ = parse_chunk_size(line.strip_suffix(b"\r").unwrap_or(line));
    }
});
