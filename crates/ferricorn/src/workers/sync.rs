//! The sync worker: one request at a time, `Connection: close` after each
//! response, as gunicorn's default worker.
//!
//! Loop: beat, apply signals, accept without blocking on every listener,
//! serve, and otherwise wait in `poll` (listeners + wake pipe) for at most
//! half the timeout, so the heartbeat stays fresh while idle.
//!
//! gunicorn counterpart: `workers/sync.py` (`SyncWorker.run_for_one`,
//! `run_for_multiple`, `handle`, `handle_request`).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferricorn_http::parse::Parser;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use pyo3::prelude::*;

use super::Worker;
use crate::glogging::{self, access};
use crate::sock::{Peer, Stream};
use crate::wsgi::{self, Conn, environ::AppContext};

const READ_CHUNK: usize = 8192;

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
    // Wake at least every half timeout to beat (gunicorn: timeout / 2), and at most every second.
    let wait_ms: u16 = if timeout > 0.0 {
        ((timeout * 500.0) as u64).clamp(10, 1000) as u16
    } else {
        1000
    };
    let io_timeout = (timeout > 0.0).then(|| Duration::from_secs_f64(timeout));
    let servers: Vec<(String, String)> = setup
        .listeners
        .iter()
        .map(|l| l.server_name_port())
        .collect();
    let mut parser = Parser::new(app.parser_options().clone());
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);

    while worker.alive {
        worker.notify();
        if worker.handle_signals() || !worker.alive {
            break;
        }
        if worker.parent_changed() {
            glogging::info!("Parent changed, shutting down: worker {}", worker.pid);
            break;
        }
        let mut accepted = false;
        for (i, listener) in setup.listeners.iter().enumerate() {
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted = true;
                    let _ = stream.set_timeouts(io_timeout);
                    handle(py, app, stream, &peer, &servers[i], &mut parser, &mut buf);
                    worker.request_done();
                }
                Err(e) if is_transient_accept_error(&e) => {}
                Err(e) => glogging::error!("Error accepting a connection: {e}"),
            }
        }
        if accepted || !worker.alive {
            continue;
        }
        let wake_fd = worker.wake.0.as_fd();
        let listeners = setup.listeners;
        py.detach(|| {
            let mut fds: Vec<PollFd<'_>> = listeners
                .iter()
                .map(|l| PollFd::new(l.fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(wake_fd, PollFlags::POLLIN));
            // EINTR (a signal) simply ends the wait.
            let _ = poll(&mut fds, PollTimeout::from(wait_ms));
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
                let _ = stream.set_timeouts(io_timeout);
                handle(py, app, stream, &peer, &servers[i], &mut parser, &mut buf);
                worker.notify();
            }
        }
        worker.handle_signals();
        if !accepted {
            break;
        }
    }
}

fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAGAIN) | Some(libc::ECONNABORTED) | Some(libc::EPROTO) | Some(libc::EINTR)
    ) || e.kind() == io::ErrorKind::WouldBlock
}

/// Serve one connection: read a request, call the app, close.
fn handle(
    py: Python<'_>,
    app: &AppContext,
    stream: Stream,
    peer: &Peer,
    server: &(String, String),
    parser: &mut Parser,
    buf: &mut Vec<u8>,
) {
    let stream = Arc::new(stream);
    buf.clear();
    let started = Instant::now();
    loop {
        match parser.parse(buf) {
            Ok(Some((head, consumed))) => {
                let conn = Conn {
                    stream: &stream,
                    peer,
                    server,
                    url_scheme: "http",
                    server_allows_keep_alive: false,
                };
                super::signals::set_current_request(
                    &[
                        head.method.as_ref(),
                        b" ",
                        head.target,
                        if head.version == (1, 0) {
                            b" HTTP/1.0"
                        } else {
                            b" HTTP/1.1"
                        },
                    ]
                    .concat(),
                );
                let outcome = wsgi::serve(py, app, &head, &buf[consumed..], &conn);
                super::signals::set_current_request(b"");
                if glogging::access_enabled() {
                    let environ = outcome.environ.bind(py);
                    let lookup = |key: &str| -> Option<String> {
                        environ
                            .get_item(key)
                            .ok()
                            .flatten()
                            .and_then(|v| v.str().ok())
                            .map(|s| s.to_string())
                    };
                    let protocol = match head.version {
                        (1, 0) => "HTTP/1.0",
                        _ => "HTTP/1.1",
                    };
                    let path = wsgi::environ::percent_decode(head.path);
                    let request_headers: Vec<(&[u8], &[u8])> =
                        head.headers.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                    glogging::access(&access::Record {
                        remote_addr: &peer.addr,
                        method: &head.method,
                        raw_uri: head.target,
                        path_info: &path,
                        query: head.query,
                        protocol,
                        status: &outcome.status,
                        sent: outcome.sent,
                        request_headers: &request_headers,
                        response_headers: &outcome.response_headers,
                        duration: started.elapsed(),
                        environ: Some(&lookup),
                    });
                }
                break;
            }
            Ok(None) => {
                let start = buf.len();
                buf.resize(start + READ_CHUNK, 0);
                let read = py.detach(|| {
                    loop {
                        match (&*stream).read(&mut buf[start..]) {
                            Err(e)
                                if e.kind() == io::ErrorKind::Interrupted
                                    && !super::signals::peek_quit() =>
                            {
                                continue;
                            }
                            other => break other,
                        }
                    }
                });
                match read {
                    Ok(0) | Err(_) => {
                        // Client went away (or timed out) before a full request: nothing to answer.
                        buf.truncate(start);
                        return;
                    }
                    Ok(n) => buf.truncate(start + n),
                }
            }
            Err(err) => {
                glogging::warning!("Invalid request from ip={}: {}", peer.addr, err);
                let out = wsgi::error_response(err.status(), err.reason(), &err.to_string());
                let _ = py.detach(|| (&*stream).write_all(&out));
                break;
            }
        }
    }
    // Closing: shut down our side so the client sees EOF after the response.
    stream.shutdown_write();
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
