//! The heartbeat table: one monotonic-millisecond timestamp per worker slot
//! in shared memory created before the first fork. A worker stores `now` in
//! its slot; the master compares each slot with its clock and kills workers
//! silent for longer than `--timeout`.
//!
//! Replaces gunicorn's `WorkerTmp` (fchmod of a temp file per notify).
//!
//! Next to it, a request table: per slot, the start time and the first
//! bytes of `METHOD PATH` of the request the worker is running (or idle), so
//! the master can say which request a timed-out worker was stuck in. The
//! worker clears the start, writes the text, then sets the start; a read
//! racing a write can at worst show a garbled line, never fault.
//! A second array holds each slot's lifecycle state (`SlotState`): the worker
//! marks itself ready once its app is loaded, and asks to be retired (max
//! requests, memory cap) instead of exiting, so the master can start its
//! replacement first.
//!
//! Each state change a worker makes wakes the master at once through a
//! pipe made with the table (the *nudge* pipe: the master polls its read
//! end, workers inherit the write end): a budget spent or a replacement
//! booted is acted on within milliseconds, not at the master's next tick.
//! A pipe, not a signal, so that a worker running as `--user` can still
//! reach a master running as root.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use crate::sys::shm::SharedSlots;
use crate::util::monotonic_ms;

/// Upper bound on simultaneously live workers (TTIN included); 4096 slots
/// cost 32 KiB of address space, touched only as used.
pub const SLOTS: usize = 4096;

/// u64 words per request-table entry: start ms, length, then the text.
const REQ_WORDS: usize = 16;
const REQ_TEXT: usize = (REQ_WORDS - 2) * 8;

pub struct Heartbeats {
    slots: SharedSlots,
    requests: SharedSlots,
    states: SharedSlots,
    /// The nudge pipe: (read end, polled by the master; write end).
    nudge: (OwnedFd, OwnedFd),
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
    /// Close to `--max-requests`: start my replacement now, so that it has
    /// booted when my budget is spent (then I say `RetireMaxRequests`).
    ReplaceAhead = 4,
    /// Set by the master just before it sends `TERM` to a worker it has
    /// replaced (a `HUP` reload, a retirement): the stop is a restart, not
    /// a shutdown (the `asgi` worker closes WebSockets with 1012, not 1001).
    Restarting = 5,
}

impl SlotState {
    fn from_raw(v: u64) -> SlotState {
        match v {
            1 => SlotState::Ready,
            2 => SlotState::RetireMaxRequests,
            3 => SlotState::RetireMemory,
            4 => SlotState::ReplaceAhead,
            5 => SlotState::Restarting,
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
            requests: SharedSlots::new(SLOTS * REQ_WORDS)?,
            states: SharedSlots::new(SLOTS)?,
            nudge: nix::unistd::pipe2(
                nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK,
            )?,
        })
    }

    /// The nudge pipe's read end, for the master's poll.
    pub fn nudge_fd(&self) -> BorrowedFd<'_> {
        self.nudge.0.as_fd()
    }

    /// Empty the nudge pipe (the master, after its poll).
    pub fn drain_nudges(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.nudge.0.as_fd(), &mut buf), Ok(n) if n == buf.len()) {
        }
    }

    /// Wake the master (a full pipe already will).
    fn nudge(&self) {
        let _ = nix::unistd::write(self.nudge.1.as_fd(), &[0u8]);
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

    /// Record `slot`'s state; a worker's change (anything but the master's
    /// reset to `Booting`) wakes the master.
    pub fn set_state(&self, slot: usize, state: SlotState) {
        if let Some(s) = self.states.get(slot) {
            s.store(state as u64, Ordering::Relaxed);
        }
        if state != SlotState::Booting {
            self.nudge();
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

    /// The worker in `slot` starts serving `METHOD PATH` (truncated to fit).
    pub fn begin_request(&self, slot: usize, method: &[u8], path: &[u8]) {
        let base = slot * REQ_WORDS;
        let Some(start) = self.requests.get(base) else {
            return;
        };
        start.store(0, Ordering::Release);
        let mut text = [0u8; REQ_TEXT];
        let mut n = 0;
        for &b in method.iter().chain(b" ").chain(path.iter()) {
            if n == REQ_TEXT {
                break;
            }
            text[n] = b;
            n += 1;
        }
        for (i, chunk) in text.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            if let Some(w) = self.requests.get(base + 2 + i) {
                w.store(u64::from_le_bytes(word), Ordering::Relaxed);
            }
        }
        if let Some(len) = self.requests.get(base + 1) {
            len.store(n as u64, Ordering::Relaxed);
        }
        start.store(monotonic_ms().max(1), Ordering::Release);
    }

    /// The worker in `slot` finished its request.
    pub fn end_request(&self, slot: usize) {
        if let Some(start) = self.requests.get(slot * REQ_WORDS) {
            start.store(0, Ordering::Release);
        }
    }

    /// What the worker in `slot` is doing, for the timeout message:
    /// `while handling GET /x for 31.2 s`, or `while idle for 31.2 s`
    /// (since its last beat).
    pub fn activity(&self, slot: usize, now: u64) -> String {
        let base = slot * REQ_WORDS;
        let start = self
            .requests
            .get(base)
            .map_or(0, |s| s.load(Ordering::Acquire));
        if start == 0 {
            let idle = now.saturating_sub(self.last(slot));
            return format!("while idle for {:.1} s", idle as f64 / 1000.0);
        }
        let len = self
            .requests
            .get(base + 1)
            .map_or(0, |l| l.load(Ordering::Relaxed) as usize)
            .min(REQ_TEXT);
        let mut text = Vec::with_capacity(REQ_TEXT);
        for i in 0..REQ_WORDS - 2 {
            let w = self
                .requests
                .get(base + 2 + i)
                .map_or(0, |w| w.load(Ordering::Relaxed));
            text.extend_from_slice(&w.to_le_bytes());
        }
        text.truncate(len);
        format!(
            "while handling {} for {:.1} s",
            String::from_utf8_lossy(&text),
            now.saturating_sub(start) as f64 / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_table_round_trip() {
        let h = Heartbeats::new().unwrap();
        h.beat(3);
        let now = monotonic_ms();
        assert!(h.activity(3, now + 31_000).starts_with("while idle for 3"));
        h.begin_request(3, b"GET", b"/slow");
        let a = h.activity(3, monotonic_ms() + 2_000);
        assert!(a.starts_with("while handling GET /slow for 2."), "{a}");
        let long = vec![b'x'; 500];
        h.begin_request(3, b"POST", &long);
        let a = h.activity(3, monotonic_ms());
        assert!(
            a.contains(&format!("POST {}", "x".repeat(REQ_TEXT - 5))),
            "{a}"
        );
        h.end_request(3);
        assert!(h.activity(3, monotonic_ms()).starts_with("while idle"));
        // Out-of-range slots are ignored.
        h.begin_request(SLOTS, b"GET", b"/");
        h.end_request(SLOTS);
    }
}
