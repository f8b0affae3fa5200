//! When a worker (evloop, asgi; gthread in part) takes new connections
//! from the listeners it shares with the other workers.
//!
//! A keep-alive connection stays with the worker that accepted it, so an
//! uneven split at accept time lasts for the connection's lifetime; under
//! evloop, which serves its connections one request at a time on one thread,
//! a worker holding most of them is the whole server's limit. A worker that
//! takes every waiting connection at once (it is running while the others
//! still wait to be scheduled, or they are busy) leaves the others idle:
//! measured, 32 of 32 connections of a burst on one of four workers, and 64
//! of 64 on one of sixteen (docs/workers.md). With other workers (`-w` above
//! 1) a worker therefore
//! - with no open connection, takes one at once, and goes on while each it
//!   takes is answered and closed in its first turn (`Connection: close`);
//! - otherwise first waits `DEFER_PER_CONN` per open connection (at most
//!   `DEFER_MAX`), serving its connections meanwhile, so that an idle worker
//!   gets there first (the idea of Puma's `wait_for_less_busy_worker`); then
//!   it takes its share of what waits: the accept queue's length divided by
//!   `-w`, rounded up (TCP; where the kernel does not say, as for a unix
//!   socket, as many as it already has: its count at most doubles per turn).
//!   A share rather than one keeps a burst from waiting one loop turn per
//!   connection when turns are long (a slow app).
//!
//! A lone worker takes all that wait, at once. gthread takes a [`share`]
//! per turn without the wait: the wait there (tried, with
//! `--threads` as the room) cost ~5 % of `Connection: close` throughput with
//! two workers (docs/workers.md).
//!
//! "Other workers" and the share's divisor are `-w` as configured: TTIN and
//! TTOU do not change them (after TTIN from `-w 1` the workers accept all
//! that wait, as before; after TTOU down to one, the last one still takes
//! turns with nobody, taking new connections up to 2 ms later).
//!
//! gunicorn counterpart: none (its workers accept whatever they can).

use std::time::{Duration, Instant};

use crate::sock::Listener;

/// Wait per open connection before taking more.
pub const DEFER_PER_CONN: Duration = Duration::from_micros(50);
/// The longest such wait.
pub const DEFER_MAX: Duration = Duration::from_millis(2);

pub struct Accepts {
    /// Other workers accept from the same listeners.
    shared: bool,
    workers: usize,
    /// While deferring: when the worker may take its share.
    defer_until: Option<Instant>,
}

impl Accepts {
    /// For a worker among `workers`.
    pub fn new(workers: usize) -> Self {
        Accepts {
            shared: workers > 1,
            workers: workers.max(1),
            defer_until: None,
        }
    }

    /// How many a worker with `open` connections takes without waiting.
    pub fn free(&self, open: usize) -> usize {
        match (self.shared, open) {
            (false, _) => usize::MAX,
            (true, 0) => 1,
            (true, _) => 0,
        }
    }

    /// The instant a worker with `open` connections may take more, if that
    /// is later than `now`.
    pub fn wait_until(&mut self, open: usize, now: Instant) -> Option<Instant> {
        if self.free(open) > 0 {
            self.defer_until = None; // a wait begun while busy is over
            return None;
        }
        let defer = (DEFER_PER_CONN * open as u32).min(DEFER_MAX);
        let until = *self.defer_until.get_or_insert(now + defer);
        (now < until).then_some(until)
    }

    /// How many connections to take from `l` now, with `open` open.
    pub fn budget(&mut self, l: &Listener, open: usize, now: Instant) -> usize {
        if self.wait_until(open, now).is_some() {
            return 0;
        }
        let free = self.free(open);
        if free > 0 {
            return free; // no wait was needed (and none is left over)
        }
        self.defer_until = None;
        share(l, self.workers, open)
    }
}

/// A worker's share of what waits on `l` among `workers`: the accept queue
/// divided by `workers`, rounded up; where the kernel does not report the
/// queue (a unix socket, or no TCP_INFO), as many as the worker already has
/// (`open`, at least one), so a burst is taken in a few turns, not one per
/// turn.
pub fn share(l: &Listener, workers: usize, open: usize) -> usize {
    match usize::try_from(l.backlog()) {
        Ok(waiting) if waiting > 0 => waiting.div_ceil(workers.max(1)),
        _ => open.max(1),
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
        let mut a = Accepts::new(1);
        let now = Instant::now();
        assert_eq!(a.wait_until(5, now), None);
        assert_eq!(a.budget(&l, 5, now), usize::MAX);
    }

    #[test]
    #[cfg(target_os = "linux")] // the accept queue's length comes from TCP_INFO
    fn with_other_workers_a_busy_one_waits_then_takes_its_share() {
        let (l, _c) = listener_with_waiting(5);
        let mut a = Accepts::new(2);
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
        // A wait begun while busy does not carry over to a later busy spell.
        assert_eq!(a.budget(&l, 0, later), 1);
        let much_later = later + DEFER_MAX * 10;
        assert_eq!(
            a.wait_until(2, much_later),
            Some(much_later + DEFER_PER_CONN * 2)
        );
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
        let mut a = Accepts::new(4);
        let now = Instant::now();
        assert_eq!(a.budget(&l, 3, now), 0);
        assert_eq!(a.budget(&l, 3, now + DEFER_PER_CONN * 3), 3);
        let _ = std::fs::remove_file(&dir);
    }
}
