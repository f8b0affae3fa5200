//! When a worker takes new connections from the listeners it shares with the
//! other workers (evloop and gthread).
//!
//! A keep-alive connection stays with the worker that accepted it, so an
//! uneven split at accept time lasts for the connection's lifetime. A worker
//! that takes every waiting connection at once (it is running while the
//! others still wait to be scheduled, or they are busy) leaves the others
//! idle; measured with evloop: 32 of 32 connections of a burst on one of four
//! workers, and 64 of 64 on one of sixteen (docs/workers.md). With other
//! workers (`-w` above 1) a worker therefore
//! - with room (fewer open connections than it serves at once: one for
//!   evloop, `--threads` for gthread), fills it at once, and goes on while
//!   what it takes is answered and closed at once (`Connection: close`);
//! - otherwise first waits `DEFER_PER_CONN` per open connection (at most
//!   `DEFER_MAX`), serving its connections meanwhile, so that a worker with
//!   room gets there first (the idea of Puma's `wait_for_less_busy_worker`);
//!   then it takes its share of what waits: the accept queue's length divided
//!   by `-w`, rounded up (TCP; where the kernel does not say, as for a unix
//!   socket, as many as it already has: its count at most doubles per turn).
//!   A share rather than one keeps a burst from waiting one loop turn per
//!   connection when turns are long (a slow app under evloop).
//!   gthread takes at most `--threads` per share: its threads keep it running
//!   through the wait (it does not give up the cpu as an idle evloop does),
//!   and whole shares then went to one worker of four on a shared cpu.
//!
//! A lone worker takes all that wait, at once.
//!
//! "Other workers" and the share's divisor are `-w` as configured: TTIN and
//! TTOU do not change them (after TTIN from `-w 1` the workers accept all
//! that wait, as before; after TTOU down to one, the last one still takes
//! turns with nobody, taking new connections up to 2 ms later).
//!
//! gunicorn counterpart: none (its workers accept whatever they can).

use std::time::{Duration, Instant};

use crate::sock::Listener;

/// Wait per open connection before taking more, with no room.
pub const DEFER_PER_CONN: Duration = Duration::from_micros(50);
/// The longest such wait.
pub const DEFER_MAX: Duration = Duration::from_millis(2);

pub struct Accepts {
    /// Other workers accept from the same listeners.
    shared: bool,
    workers: usize,
    /// Open connections the worker serves at once.
    room: usize,
    /// The most it takes in one share.
    share_max: usize,
    /// While deferring: when the worker may take its share.
    defer_until: Option<Instant>,
}

impl Accepts {
    /// For a worker among `workers` that serves `room` connections at once
    /// and takes at most `share_max` after a wait.
    pub fn new(workers: usize, room: usize, share_max: usize) -> Self {
        Accepts {
            shared: workers > 1,
            workers: workers.max(1),
            room: room.max(1),
            share_max: share_max.max(1),
            defer_until: None,
        }
    }

    /// How many a worker with `open` connections takes without waiting.
    pub fn free(&self, open: usize) -> usize {
        if self.shared {
            self.room.saturating_sub(open)
        } else {
            usize::MAX
        }
    }

    /// The instant a worker with `open` connections may take more, if that
    /// is later than `now`.
    pub fn wait_until(&mut self, open: usize, now: Instant) -> Option<Instant> {
        if self.free(open) > 0 {
            return None;
        }
        let defer = (DEFER_PER_CONN * open as u32).min(DEFER_MAX);
        let until = *self.defer_until.get_or_insert(now + defer);
        (now < until).then_some(until)
    }

    /// How many connections to take from `l` now, with `open` open.
    pub fn budget(&mut self, l: &Listener, open: usize, now: Instant) -> usize {
        let free = self.free(open);
        if free > 0 {
            return free;
        }
        if self.wait_until(open, now).is_some() {
            return 0;
        }
        self.defer_until = None;
        let share = match usize::try_from(l.backlog()) {
            Ok(waiting) if waiting > 0 => waiting.div_ceil(self.workers),
            // Not reported (a unix socket, or no TCP_INFO): as many as it
            // has, so a burst is taken in a few turns, not one per turn.
            _ => open,
        };
        share.min(self.share_max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listener_with_waiting(n: usize) -> (Listener, Vec<std::net::TcpStream>) {
        let sock = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        let clients = (0..n)
            .map(|_| std::net::TcpStream::connect(addr).unwrap())
            .collect();
        (Listener::Tcp { sock, addr }, clients)
    }

    #[test]
    fn a_lone_worker_takes_all_at_once() {
        let (l, _c) = listener_with_waiting(3);
        let mut a = Accepts::new(1, 1, usize::MAX);
        let now = Instant::now();
        assert_eq!(a.wait_until(5, now), None);
        assert_eq!(a.budget(&l, 5, now), usize::MAX);
    }

    #[test]
    #[cfg(target_os = "linux")] // the accept queue's length comes from TCP_INFO
    fn with_other_workers_a_busy_one_waits_then_takes_its_share() {
        let (l, _c) = listener_with_waiting(5);
        let mut a = Accepts::new(2, 1, usize::MAX);
        let now = Instant::now();
        // No open connection: one, at once.
        assert_eq!(a.wait_until(0, now), None);
        assert_eq!(a.budget(&l, 0, now), 1);
        // Four open: wait 4 x 50 us, then half of the five waiting, rounded up.
        assert_eq!(a.budget(&l, 4, now), 0);
        assert_eq!(a.wait_until(4, now), Some(now + DEFER_PER_CONN * 4));
        let later = now + DEFER_PER_CONN * 4;
        assert_eq!(a.budget(&l, 4, later), 3);
        // The wait starts over after a share was taken; it has a ceiling.
        assert_eq!(a.wait_until(1000, later), Some(later + DEFER_MAX));
    }

    #[test]
    fn room_for_several_is_filled_at_once() {
        let (l, _c) = listener_with_waiting(1);
        let mut a = Accepts::new(4, 4, 4); // gthread, --threads 4
        let now = Instant::now();
        assert_eq!(a.budget(&l, 1, now), 3);
        assert_eq!(a.free(3), 1);
        assert_eq!(a.wait_until(4, now), Some(now + DEFER_PER_CONN * 4));
    }

    #[test]
    fn without_a_queue_length_the_share_is_what_it_has() {
        let dir = std::env::temp_dir().join(format!("ferricorn-accepts-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let sock = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let l = Listener::Unix {
            sock,
            path: dir.clone(),
        };
        let mut a = Accepts::new(4, 1, usize::MAX);
        let now = Instant::now();
        assert_eq!(a.budget(&l, 3, now), 0);
        assert_eq!(a.budget(&l, 3, now + DEFER_PER_CONN * 3), 3);
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_share_has_a_ceiling() {
        let (l, _c) = listener_with_waiting(9);
        let mut a = Accepts::new(2, 2, 2);
        let now = Instant::now();
        assert_eq!(a.budget(&l, 2, now), 0);
        assert_eq!(a.budget(&l, 2, now + DEFER_PER_CONN * 2), 2); // not 5
    }
}
