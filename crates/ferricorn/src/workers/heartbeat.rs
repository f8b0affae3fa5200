//! The heartbeat table: one monotonic-millisecond timestamp per worker slot
//! in shared memory created before the first fork. A worker stores `now` in
//! its slot; the master compares each slot with its clock and kills workers
//! silent for longer than `--timeout`.
//!
//! Replaces gunicorn's `WorkerTmp` (fchmod of a temp file per notify).
//!
//! A second array holds each slot's lifecycle state (`SlotState`): the worker
//! marks itself ready once its app is loaded, and asks to be retired (max
//! requests, memory cap) instead of exiting, so the master can start its
//! replacement first.

use std::sync::atomic::Ordering;

use crate::sys::shm::SharedSlots;
use crate::util::monotonic_ms;

/// Upper bound on simultaneously live workers (TTIN included); 4096 slots
/// cost 32 KiB of address space, touched only as used.
pub const SLOTS: usize = 4096;

pub struct Heartbeats {
    slots: SharedSlots,
    states: SharedSlots,
}

/// What a worker tells the master through its slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Forked, app not loaded yet.
    Booting = 0,
    /// Serving requests.
    Ready = 1,
    /// Reached `--max-requests`: replace me, then retire me.
    RetireMaxRequests = 2,
    /// Above `--max-worker-memory`: replace me, then retire me.
    RetireMemory = 3,
}

impl SlotState {
    fn from_raw(v: u64) -> SlotState {
        match v {
            1 => SlotState::Ready,
            2 => SlotState::RetireMaxRequests,
            3 => SlotState::RetireMemory,
            _ => SlotState::Booting,
        }
    }

    /// The worker has booted (ready or asking for retirement).
    pub fn booted(self) -> bool {
        self != SlotState::Booting
    }

    pub fn wants_retirement(self) -> bool {
        matches!(self, SlotState::RetireMaxRequests | SlotState::RetireMemory)
    }
}

impl Heartbeats {
    pub fn new() -> std::io::Result<Self> {
        Ok(Heartbeats {
            slots: SharedSlots::new(SLOTS)?,
            states: SharedSlots::new(SLOTS)?,
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
        self.set_state(slot, SlotState::Booting);
    }

    pub fn set_state(&self, slot: usize, state: SlotState) {
        if let Some(s) = self.states.get(slot) {
            s.store(state as u64, Ordering::Relaxed);
        }
    }

    pub fn state(&self, slot: usize) -> SlotState {
        SlotState::from_raw(
            self.states
                .get(slot)
                .map_or(0, |s| s.load(Ordering::Relaxed)),
        )
    }

    /// Last beat of `slot`, in monotonic ms.
    pub fn last(&self, slot: usize) -> u64 {
        self.slots
            .get(slot)
            .map_or(0, |s| s.load(Ordering::Relaxed))
    }
}
