//! Small shared helpers.

use std::sync::OnceLock;

use nix::time::{ClockId, clock_gettime};

/// The `Server` response header: `None` until start-up sets it, and then
/// `None` inside when the user asked for no header.
static SERVER_HEADER: OnceLock<Option<Vec<u8>>> = OnceLock::new();

/// Set the `Server` header once, at start-up, before any worker is forked
/// (`None`: send none). Later calls are ignored.
pub fn set_server_header(value: Option<String>) {
    let _ = SERVER_HEADER.set(value.map(String::into_bytes));
}

/// The `Server` header value responses carry (`ferricorn` unless start-up
/// set another), or `None` for no header.
pub fn server_header() -> Option<&'static [u8]> {
    match SERVER_HEADER.get() {
        Some(v) => v.as_deref(),
        None => Some(b"ferricorn"),
    }
}

/// Milliseconds on the system-wide monotonic clock (CLOCK_MONOTONIC), the
/// same in every process, so a worker's heartbeat is comparable in the master.
pub fn monotonic_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}

/// FNV-1a: header names are short, and SipHash costs more than the lookup.
/// For the header-name caches, which are bounded, so colliding names can
/// only lengthen a bounded probe.
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = self.0;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// A `HashMap` hasher of [`Fnv`].
pub type FnvBuild = std::hash::BuildHasherDefault<Fnv>;
