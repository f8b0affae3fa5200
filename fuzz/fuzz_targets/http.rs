//! Fuzz the request parser, the body decoders, the PROXY protocol parser
//! and the response encoder: no panics, no over-reads, limits enforced, and
//! the same outcome however the input is split. The checks live in
//! `crates/ferricorn-http/tests/support/check.rs`, shared with the
//! deterministic `tests/random.rs` that `cargo test` runs.
//!
//! Run: `cd fuzz && cargo +nightly fuzz run http -- -max_len=4096`
//! (seed it with the request corpus: see fuzz/README.md).

#![no_main]

#[path = "../../crates/ferricorn-http/tests/support/check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    check::check_all(data);
});
