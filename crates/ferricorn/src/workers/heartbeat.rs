//! The heartbeat table: one monotonic-millisecond timestamp per worker slot
//! in shared memory created before the first fork. A worker stores `now` in
//! its slot; the master compares each slot with its clock and kills workers
//! silent for longer than `--timeout`.
//!
//! Replaces gunicorn's `WorkerTmp` (fchmod of a temp file per notify).

use std::sync::atomic::Ordering;

use crate::sys::shm::SharedSlots;
use crate::util::monotonic_ms;

/// Upper bound on simultaneously live workers (TTIN included); 4096 slots
/// cost 32 KiB of address space, touched only as used.
pub const SLOTS: usize = 4096;

pub struct Heartbeats {
    slots: SharedSlots,
}

impl Heartbeats {
    pub fn new() -> std::io::Result<Self> {
        Ok(Heartbeats {
            slots: SharedSlots::new(SLOTS)?,
        })
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Record a beat for `slot` now.
    pub fn beat(&self, slot: usize) {
        if let Some(s) = self.slots.get(slot) {
            s.store(monotonic_ms(), Ordering::Relaxed);
        }
    }

    /// Reset a slot before a worker is forked into it.
    pub fn reset(&self, slot: usize, now: u64) {
        if let Some(s) = self.slots.get(slot) {
            s.store(now, Ordering::Relaxed);
        }
    }

    /// Last beat of `slot`, in monotonic ms.
    pub fn last(&self, slot: usize) -> u64 {
        self.slots
            .get(slot)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }
}
