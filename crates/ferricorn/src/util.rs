//! Small shared helpers.

use nix::time::{ClockId, clock_gettime};

/// Milliseconds on the system-wide monotonic clock (CLOCK_MONOTONIC), the
/// same in every process, so a worker's heartbeat is comparable in the master.
pub fn monotonic_ms() -> u64 {
    match clock_gettime(ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() as u64 * 1000 + ts.tv_nsec() as u64 / 1_000_000,
        Err(_) => 0,
    }
}
