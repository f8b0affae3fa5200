//! Where this worker process is in its life: one value that every worker
//! class, every app thread and the response encoder read, instead of flags
//! of their own.
//!
//! ```text
//! Running ──(--max-requests / --max-worker-memory: replacement asked for)──► Retiring
//!    │                                                                         │
//!    └──────────(TERM, or the master went away)──► Draining ◄──(TERM)─────────┘
//!                                                     │
//!                 (QUIT / INT, from any phase) ──► Quitting
//! ```
//!
//! - `Running`: connections are kept alive as the settings allow.
//! - `Retiring`: the worker spent its request budget (or its memory cap)
//!   and asked the master for a replacement: it accepts no new connection,
//!   finishes what it has with every response closing its connection (so
//!   clients reconnect to a sibling), and waits for its TERM.
//! - `Draining`: a graceful stop: no new connections (but those in the
//!   listen backlog), what is in progress finishes with `Connection: close`,
//!   within `--graceful-timeout`.
//! - `Quitting`: leave now (`worker_int` has run).
//!
//! The phase only moves forward. A stop signal that has arrived but that
//! the worker's loop has not taken yet already counts ([`current`]): a sync
//! worker in the middle of a request hears of TERM at its next loop pass,
//! and the response it is writing must already say `Connection: close`.
//!
//! gunicorn counterpart: `Worker.alive` and the `handle_quit`/`handle_exit`
//! signal handlers of `workers/base.py`.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::sys::signals;

/// A worker's phase, in the order it goes through them: the sans-IO
/// HTTP/1 state's own type, so that its keep-alive and close decisions read
/// the same value (`Phase::allows_keep_alive`, `Phase::is_stopping`).
pub use ferricorn_http::h1::Lifecycle as Phase;

fn from_u8(v: u8) -> Phase {
    match v {
        0 => Phase::Running,
        1 => Phase::Retiring,
        2 => Phase::Draining,
        _ => Phase::Quitting,
    }
}

fn to_u8(p: Phase) -> u8 {
    match p {
        Phase::Running => 0,
        Phase::Retiring => 1,
        Phase::Draining => 2,
        Phase::Quitting => 3,
    }
}

/// A phase shared by the threads of one process.
pub struct Lifecycle {
    phase: AtomicU8,
}

impl Lifecycle {
    pub const fn new() -> Self {
        Lifecycle {
            phase: AtomicU8::new(0),
        }
    }

    /// The phase recorded so far (signals not taken yet do not count).
    #[inline]
    pub fn phase(&self) -> Phase {
        from_u8(self.phase.load(Ordering::Relaxed))
    }

    /// Move to `to` unless the worker is already there or further; returns
    /// whether this call moved it.
    pub fn advance(&self, to: Phase) -> bool {
        self.phase.fetch_max(to_u8(to), Ordering::Relaxed) < to_u8(to)
    }

    /// The phase, counting stop signals that arrived but were not taken:
    /// `term` pending means at least `Draining`, `quick` (QUIT/INT) means
    /// `Quitting`.
    pub fn with_pending(&self, term: bool, quick: bool) -> Phase {
        let p = self.phase();
        if quick {
            Phase::Quitting
        } else if term {
            p.max(Phase::Draining)
        } else {
            p
        }
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's worker.
static WORKER: Lifecycle = Lifecycle::new();

/// The worker's phase as recorded by its loop.
#[inline]
pub fn phase() -> Phase {
    WORKER.phase()
}

/// Move the worker to `to` (never back); true when it moved.
pub fn advance(to: Phase) -> bool {
    WORKER.advance(to)
}

/// The worker's phase, counting a stop signal its loop has not taken yet.
#[inline]
pub fn current() -> Phase {
    let (term, quick) = signals::peek_stop();
    WORKER.with_pending(term, quick)
}

#[cfg(test)]
mod tests {
    use super::{Lifecycle, Phase};

    #[test]
    fn phases_only_move_forward() {
        let l = Lifecycle::new();
        assert_eq!(l.phase(), Phase::Running);
        assert!(l.phase().allows_keep_alive());
        assert!(l.advance(Phase::Retiring));
        assert!(!l.advance(Phase::Retiring), "already there");
        assert!(!l.phase().allows_keep_alive());
        assert!(!l.phase().is_stopping());
        assert!(l.advance(Phase::Draining));
        assert!(l.phase().is_stopping());
        assert!(!l.advance(Phase::Running), "never back");
        assert!(!l.advance(Phase::Retiring));
        assert_eq!(l.phase(), Phase::Draining);
        assert!(l.advance(Phase::Quitting));
        assert_eq!(l.phase(), Phase::Quitting);
    }

    #[test]
    fn a_stop_signal_not_taken_yet_already_counts() {
        let l = Lifecycle::new();
        assert_eq!(l.with_pending(false, false), Phase::Running);
        assert_eq!(l.with_pending(true, false), Phase::Draining);
        assert_eq!(l.with_pending(false, true), Phase::Quitting);
        l.advance(Phase::Quitting);
        assert_eq!(
            l.with_pending(true, false),
            Phase::Quitting,
            "TERM does not undo QUIT"
        );
        // Pending signals are looked at, not recorded.
        let r = Lifecycle::new();
        r.with_pending(true, true);
        assert_eq!(r.phase(), Phase::Running);
    }
}
