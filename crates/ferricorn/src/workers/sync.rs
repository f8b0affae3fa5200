//! The sync worker: one request at a time, `Connection: close` after each
//! response, as gunicorn's default worker.
//!
//! Loop: beat, apply signals, accept without blocking on every listener,
//! serve, and otherwise wait in `poll` (listeners + wake pipe) for at most
//! half the timeout, so the heartbeat stays fresh while idle.
//!
//! gunicorn counterpart: `workers/sync.py` (`SyncWorker.run_for_one`,
//! `run_for_multiple`, `handle`, `handle_request`).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferricorn_http::h1;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pyo3::prelude::*;

use super::{Worker, conn};
use crate::glogging;
use crate::sock::Peer;
use crate::stream::Stream;
use crate::wsgi::environ::AppContext;

/// Requests this worker serves before it retires itself (0 = unlimited):
/// `max_requests` plus a random jitter in `0..=max_requests_jitter`.
pub fn request_budget(max: u64, jitter: u64, seed: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    if jitter == 0 {
        return max;
    }
    // A tiny xorshift from the pid/time seed is plenty to stagger workers.
    let mut x = seed | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    max + x % (jitter + 1)
}

pub fn run(py: Python<'_>, worker: &mut Worker<'_>, app: &AppContext) {
    let setup = worker.setup;
    let settings = setup.settings;
    let timeout = settings.timeout();
    let wait_ms = super::loop_wait(timeout).as_millis() as u16;
    let policy = conn::Policy::from_settings(settings);
    let servers: Vec<(String, String)> = setup
        .listeners
        .iter()
        .map(|l| l.server_name_port())
        .collect();
    // Connections start with their deadlines from the listener (TCP).
    let inherited = conn::arm_listeners(setup.listeners, policy.timeouts, policy.proxy.is_some());
    // One HTTP/1 connection state for every connection (never kept alive).
    let mut http = h1::Conn::new(Arc::new(app.parser_options().clone()), false);
    // One accepted connection, from the main loop or the graceful drain.
    let mut serve = |stream: Stream, peer: &Peer, listener: usize| {
        let header_armed = conn::arm(
            &stream,
            policy.timeouts,
            policy.proxy.is_some(),
            inherited[listener],
        );
        let busy = (setup.heartbeats, setup.slot);
        handle(
            py,
            app,
            stream,
            peer,
            &servers[listener],
            &mut http,
            busy,
            &policy,
            header_armed,
        );
    };

    // Whether the last wait saw the wake pipe readable (true at start: a
    // signal may have come before the loop).
    let mut pipe_ready = true;
    while worker.alive() {
        worker.notify();
        if worker.handle_signals_if(std::mem::take(&mut pipe_ready)) || !worker.alive() {
            break;
        }
        if worker.stop_if_orphaned() {
            break;
        }
        let mut accepted = false;
        for (i, listener) in setup.listeners.iter().enumerate() {
            // Retiring (budget spent): no new connection; wait for TERM.
            if !worker.takes_new() {
                break;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted = true;
                    serve(stream, &peer, i);
                    worker.request_done();
                }
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => glogging::error!("Error accepting a connection: {e}"),
            }
        }
        if accepted || !worker.alive() {
            continue;
        }
        let wake_fd = worker.wake.0.as_fd();
        let listeners = if worker.takes_new() {
            setup.listeners
        } else {
            &[]
        };
        pipe_ready = py.detach(|| {
            let mut fds: Vec<PollFd<'_>> = listeners
                .iter()
                .map(|l| PollFd::new(l.fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(wake_fd, PollFlags::POLLIN));
            // EINTR (a signal) simply ends the wait.
            let _ = poll(&mut fds, PollTimeout::from(wait_ms));
            fds.last()
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        });
    }
    // Graceful stop: serve what already waits in the backlog (ferricorn's
    // improvement over gunicorn, whose workers leave it to be reset).
    let deadline = Instant::now() + Duration::from_secs_f64(settings.graceful_timeout());
    while worker.should_drain() && Instant::now() < deadline {
        let mut accepted = false;
        for (i, listener) in setup.listeners.iter().enumerate() {
            if let Ok((stream, peer)) = listener.accept() {
                accepted = true;
                serve(stream, &peer, i);
                worker.notify();
            }
        }
        worker.handle_signals();
        if !accepted {
            break;
        }
    }
}

/// After a failed accept on a non-blocking listener: log what is worth
/// logging; true when that listener has nothing more to accept for now.
pub(crate) fn accept_failed(e: &io::Error) -> bool {
    if is_transient_accept_error(e) {
        return e.kind() == io::ErrorKind::WouldBlock;
    }
    glogging::error!("Error accepting a connection: {e}");
    true
}

pub(crate) fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EINTR)
    ) || e.kind() == io::ErrorKind::WouldBlock
}

/// Serve one connection: read a request, call the app, close.
#[allow(clippy::too_many_arguments)] // per-connection state threaded through; no natural grouping yet
fn handle(
    py: Python<'_>,
    app: &AppContext,
    stream: Stream,
    peer: &Peer,
    server: &(String, String),
    http: &mut h1::Conn,
    busy: (&super::heartbeat::Heartbeats, usize),
    policy: &conn::Policy,
    mut header_armed: bool,
) {
    let stream = Arc::new(stream);
    let dups_before = crate::wsgi::extras::dups_made();
    http.reset();
    let mut peer = peer.clone();
    let proxied = match &policy.proxy {
        Some(proxy) => conn::read_proxy_header(py, &stream, &mut peer, http, proxy),
        None => true,
    };
    let next = if proxied {
        conn::serve_one(
            py,
            app,
            &stream,
            &peer,
            server,
            http,
            Some(busy),
            policy.timeouts,
            &mut header_armed,
        )
    } else {
        conn::Next::Close(conn::Closing::Clean)
    };
    match next {
        conn::Next::Close(conn::Closing::Unread) => {
            // Lingering may wait: without the GIL (the app's threads run).
            py.detach(|| conn::close(stream, dups_before, conn::Closing::Unread, Some(busy)));
        }
        _ => conn::close(stream, dups_before, conn::Closing::Clean, None),
    }
}

#[cfg(test)]
mod tests {
    use super::request_budget;

    #[test]
    fn budget_with_and_without_jitter() {
        assert_eq!(request_budget(0, 10, 7), 0);
        assert_eq!(request_budget(100, 0, 7), 100);
        for seed in 0..200 {
            let b = request_budget(100, 10, seed);
            assert!((100..=110).contains(&b), "{b}");
        }
    }
}
