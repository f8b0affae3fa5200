//! The listening side of a poller-driven worker (gthread, evloop): which
//! listeners may have connections waiting, the graceful stop's first step,
//! whether the stop is over, and one accept with its error handling.
//!
//! A retiring worker (`Retiring`: its request budget spent, or above its
//! memory cap) takes no new connection: its listeners leave the poller
//! (`pause_if_retiring`) while it finishes what it has.
//! A graceful stop (the worker's phase leaves `Running`/`Retiring`, see
//! [`crate::lifecycle`]) deregisters the listeners, keeps taking what their
//! listen backlog already holds (as the connection cap allows: those
//! clients connected before the stop and would otherwise be reset when the
//! worker exits, docs/signals.md), gives connections with nothing in
//! progress [`conn::STOP_LINGER`] for a request that may be on its way,
//! and ends when nothing is open and nothing waits, or when
//! `--graceful-timeout` is over.
//!
//! gunicorn counterpart: the `alive` checks of `ThreadWorker.run` and
//! `is_parent_alive`.

use std::time::{Duration, Instant};

use super::Worker;
use super::accepts::Accepts;
use super::conn;
use crate::sock::{Listener, Peer};
use crate::stream::Stream;

/// Deadlines of a graceful stop, fixed when it begins.
#[derive(Clone, Copy, Debug)]
pub struct Stop {
    /// `--graceful-timeout` from the stop: requests still running then are cut.
    pub by: Instant,
    /// Connections with no request in progress are let go by then.
    pub linger_until: Instant,
}

/// How a stopping worker's loop ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// Nothing open, nothing waiting in the backlog.
    Done,
    /// `--graceful-timeout` is over with requests still running.
    TimedOut,
}

pub struct Listening<'a> {
    listeners: &'a [Listener],
    /// Per listener: a connection may be waiting to be accepted (set by a
    /// readiness event, cleared when an accept finds none).
    pending: Vec<bool>,
    stop: Option<Stop>,
    /// Out of the poller since the worker began retiring.
    paused: bool,
}

impl<'a> Listening<'a> {
    pub fn new(listeners: &'a [Listener]) -> Self {
        Listening {
            listeners,
            pending: vec![true; listeners.len()],
            stop: None,
            paused: false,
        }
    }

    /// Once the worker retires (see [`Worker::takes_new`]): its listeners
    /// leave the poller and nothing more is accepted, until a stop, which
    /// takes the backlog only where `Worker::should_drain` says.
    pub fn pause_if_retiring(&mut self, worker: &Worker<'_>, registry: &mio::Registry) {
        if self.paused || self.stop.is_some() || worker.takes_new() {
            return;
        }
        self.paused = true;
        self.pending.fill(false);
        for l in self.listeners {
            let _ = l.deregister(registry);
        }
    }

    pub fn listeners(&self) -> &'a [Listener] {
        self.listeners
    }

    /// Still taking new connections (no stop begun).
    pub fn accepting(&self) -> bool {
        self.stop.is_none()
    }

    /// The stop's deadlines, once it began.
    pub fn stop(&self) -> Option<Stop> {
        self.stop
    }

    /// A readiness event for listener `i`.
    pub fn ready(&mut self, i: usize) {
        if self.paused {
            return; // an event from before the pause
        }
        if let Some(p) = self.pending.get_mut(i) {
            *p = true;
        }
    }

    /// Listener `i` may have connections waiting.
    pub fn waiting(&self, i: usize) -> bool {
        self.pending[i]
    }

    /// Some listener may have connections waiting.
    pub fn any_waiting(&self) -> bool {
        self.pending.contains(&true)
    }

    /// Begin the graceful stop once the worker stops being alive; returns
    /// its deadlines that one time (the caller then shortens the wait of
    /// its connections with nothing in progress to `linger_until`).
    pub fn stop_if_stopping(
        &mut self,
        worker: &Worker<'_>,
        registry: &mio::Registry,
        graceful: Duration,
    ) -> Option<Stop> {
        if self.stop.is_some() || worker.alive() {
            return None;
        }
        self.begin_stop(worker.should_drain(), registry, graceful)
    }

    /// Begin the graceful stop (once; `None` after): out of the poller,
    /// and the backlog is taken when `drain_backlog` (not on a quick stop
    /// or for an orphaned worker).
    pub fn begin_stop(
        &mut self,
        drain_backlog: bool,
        registry: &mio::Registry,
        graceful: Duration,
    ) -> Option<Stop> {
        if self.stop.is_some() {
            return None;
        }
        let now = Instant::now();
        let stop = Stop {
            by: now + graceful,
            linger_until: now + conn::STOP_LINGER,
        };
        // The backlog is taken until a listener has none left: no
        // readiness event sets the flags again once the listeners are out
        // of the poller.
        self.pending.fill(drain_backlog);
        for l in self.listeners {
            let _ = l.deregister(registry);
        }
        self.stop = Some(stop);
        Some(stop)
    }

    /// Stopping, and connections wait in a backlog that the cap lets us
    /// take (`open` connections, at most `max`): take them now, no waiting.
    pub fn draining_backlog(&self, open: usize, max: usize) -> bool {
        self.stop.is_some() && open < max && self.any_waiting()
    }

    /// Whether the stopping worker's loop is over.
    pub fn end(&self, open: usize, max: usize, now: Instant) -> Option<End> {
        let stop = self.stop?;
        if open == 0 && !self.draining_backlog(open, max) {
            Some(End::Done)
        } else if now >= stop.by {
            Some(End::TimedOut)
        } else {
            None
        }
    }

    /// How many connections to take from listener `i` in this turn, with
    /// `open` of at most `max` open: none at the cap or when none waits;
    /// while accepting, as `accepts` allows (in turns with the other
    /// workers); once stopping, all that the backlog holds.
    pub fn budget(&self, i: usize, accepts: &mut Accepts, open: usize, max: usize) -> usize {
        if open >= max || !self.waiting(i) {
            0
        } else if self.accepting() {
            accepts.budget(&self.listeners[i], open, Instant::now())
        } else {
            usize::MAX
        }
    }

    /// Whether to take one more from listener `i`, with `budget` left
    /// ([`Listening::budget`]) and `open` of at most `max` open.
    pub fn may_take(&self, i: usize, budget: usize, open: usize, max: usize) -> bool {
        budget > 0 && open < max && self.waiting(i)
    }

    /// Accept one connection from listener `i`; `None` when there was none
    /// or the accept failed (logged when worth it; the listener is marked
    /// empty unless the failure was a passing one).
    pub fn accept(&mut self, i: usize) -> Option<(Stream, Peer)> {
        match self.listeners[i].accept() {
            Ok(c) => Some(c),
            Err(e) => {
                if super::sync::accept_failed(&e) {
                    self.pending[i] = false;
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{End, Listening};
    use crate::sock::{Address, BindOptions, Listener, bind};
    use std::time::{Duration, Instant};

    fn listener() -> (Listener, std::net::SocketAddr) {
        let opts = BindOptions {
            backlog: 16,
            reuse_port: false,
        };
        let addr = Address::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let l = bind(&addr, &opts).unwrap();
        let Listener::Tcp { addr, .. } = &l else {
            unreachable!()
        };
        let addr = *addr;
        (l, addr)
    }

    #[test]
    fn a_stop_takes_the_backlog_then_ends() {
        let (l, addr) = listener();
        let ls = std::slice::from_ref(&l);
        let poll = mio::Poll::new().unwrap();
        l.register(poll.registry(), mio::Token(1)).unwrap();
        let mut lis = Listening::new(ls);
        assert!(lis.accepting());
        assert_eq!(lis.end(0, 10, Instant::now()), None, "not stopping");

        let _waiting = std::net::TcpStream::connect(addr).unwrap();
        let stop = lis
            .begin_stop(true, poll.registry(), Duration::from_secs(30))
            .expect("first stop");
        assert!(stop.linger_until <= stop.by);
        assert!(
            lis.begin_stop(true, poll.registry(), Duration::ZERO)
                .is_none(),
            "once"
        );
        assert!(!lis.accepting());
        // What the backlog holds is taken while the cap allows.
        assert!(lis.draining_backlog(0, 10));
        assert!(!lis.draining_backlog(10, 10), "cap full");
        assert_eq!(lis.end(0, 10, Instant::now()), None, "backlog first");
        let deadline = Instant::now() + Duration::from_secs(10);
        while lis.accept(0).is_none() {
            assert!(
                Instant::now() < deadline,
                "the waiting client was not accepted"
            );
        }
        // The next accept finds none: the backlog is empty.
        assert!(lis.accept(0).is_none());
        assert!(!lis.waiting(0));
        assert_eq!(lis.end(1, 10, Instant::now()), None, "one still open");
        assert_eq!(lis.end(0, 10, Instant::now()), Some(End::Done));
        assert_eq!(lis.end(1, 10, stop.by), Some(End::TimedOut));
    }

    #[test]
    fn a_quick_stop_leaves_the_backlog() {
        let (l, addr) = listener();
        let poll = mio::Poll::new().unwrap();
        let mut lis = Listening::new(std::slice::from_ref(&l));
        let _waiting = std::net::TcpStream::connect(addr).unwrap();
        lis.begin_stop(false, poll.registry(), Duration::from_secs(30));
        assert!(!lis.draining_backlog(0, 10));
        assert_eq!(lis.end(0, 10, Instant::now()), Some(End::Done));
    }
}
