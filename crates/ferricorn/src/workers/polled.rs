//! The per-connection core of the poller-driven workers (evloop, asgi):
//! the socket, its client, the listener it came from, its HTTP/1 state and
//! its deadline, with what both drivers do with them the same way: admit a
//! new connection (socket timeouts, the connection table, the poller), read
//! without blocking (a TLS handshake step first, the PROXY header and the
//! trust check after the first read), run the head and keep-alive
//! deadlines, answer a head that came too slowly, close.
//!
//! Each driver embeds a [`Core`] in its own connection (`evloop::Connection`,
//! `asgi::Conn`) beside what only it needs (held responses, an ASGI
//! exchange, a WebSocket).
//!
//! gunicorn counterpart: none (its async workers keep this in Python).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferricorn_http::h1;
use ferricorn_http::parse::Options;
use mio::{Interest, Registry, Token};
use pyo3::prelude::*;

use super::conn::{self, ProxyPolicy};
use super::slab::Slab;
use crate::request::proxy::Trust;
use crate::sock::Peer;
use crate::stream::Stream;

/// What both drivers hold of a client connection.
pub struct Core {
    pub stream: Arc<Stream>,
    pub peer: Peer,
    /// Index of the listener it came from (SERVER_NAME/PORT, the ASGI `server`).
    pub server: usize,
    /// Its HTTP/1 state: buffer, parser, pipelining, verdicts.
    pub http: h1::Conn,
    /// No byte read yet (a TLS handshake, a PROXY header may come first).
    pub fresh: bool,
    /// `peer` is in `--forwarded-allow-ips` (known once the PROXY header,
    /// if any, is read; the parser is told then).
    pub trusted: bool,
    /// A partial request head is buffered (its deadline is running).
    pub head_started: bool,
    /// When it is closed unless a request head completes first.
    pub deadline: Instant,
}

/// What a [`Core::read`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Bytes, appended to the HTTP/1 state; `more`: the read filled the
    /// buffer (or TLS holds more), so the socket may hold more.
    Data { more: bool },
    /// The client closed its side.
    Eof,
    /// Nothing now (the socket is drained, or a TLS handshake waits for
    /// the client): the next readiness event brings more.
    Empty,
    /// The connection failed (a read error, a failed handshake, a bad or
    /// refused PROXY header, answered and logged): close it.
    Failed,
}

impl Core {
    /// A connection just accepted from listener `server`: its HTTP/1 state
    /// parses with `opts` and may keep the connection alive (`keepalive`);
    /// its reads and writes (outside the drivers' non-blocking ones) are
    /// bounded by `io_timeout`; its first request head is due within
    /// `header_for` (the header timeout), or, once the worker is stopping
    /// (not `accepting`), as long as an idle one is kept (a head begun
    /// then gets the header timeout).
    pub fn accepted(
        (stream, peer): (Stream, Peer),
        server: usize,
        opts: &Arc<Options>,
        keepalive: bool,
        io_timeout: Option<Duration>,
        header_for: Duration,
        accepting: bool,
    ) -> Self {
        let _ = stream.set_timeouts(io_timeout);
        let wait = if accepting {
            header_for
        } else {
            conn::STOP_LINGER
        };
        Core {
            stream: Arc::new(stream),
            peer,
            server,
            http: h1::Conn::new(opts.clone(), keepalive),
            fresh: true,
            trusted: false,
            head_started: false,
            deadline: Instant::now() + wait,
        }
    }

    /// One read without blocking into `scratch` (its length is the most
    /// read at once), appended to the HTTP/1 state. A fresh connection's
    /// TLS handshake goes on first (never waiting: its deadline bounds
    /// it); after its first read, its PROXY header (`proxy`) is read and
    /// whether its client is trusted (`trust`) settled.
    pub fn read(
        &mut self,
        py: Python<'_>,
        scratch: &mut [u8],
        proxy: Option<&ProxyPolicy>,
        trust: &Trust,
    ) -> Read {
        if self.fresh && self.stream.handshaking() {
            match conn::handshake_step(&self.stream, &self.peer) {
                Some(true) => {}
                Some(false) => return Read::Empty,
                None => return Read::Failed,
            }
        }
        let n = loop {
            match self.stream.read_nowait(scratch) {
                Ok(0) => return Read::Eof,
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Empty,
                Err(_) => return Read::Failed,
            }
        };
        self.http.extend(&scratch[..n]);
        // A short read emptied the socket (and the stream holds nothing
        // more): edge-triggered, the next byte brings a new event.
        let more = n == scratch.len() || self.stream.has_buffered();
        if std::mem::take(&mut self.fresh) {
            if let Some(proxy) = proxy {
                if !conn::read_proxy_header(py, &self.stream, &mut self.peer, &mut self.http, proxy)
                {
                    return Read::Failed;
                }
            }
            self.trusted = trust.trusts(&self.peer);
            self.http.set_peer_trusted(self.trusted);
        }
        Read::Data { more }
    }

    /// The next head came in part only: its deadline runs from its first
    /// byte (one clock read per incomplete head, none for whole ones).
    pub fn head_incomplete(&mut self, header_for: Duration) {
        if !self.head_started {
            self.head_started = true;
            self.deadline = Instant::now() + header_for;
        }
    }

    /// A response went and the connection stays: its next head is due
    /// within `keepalive_for`.
    pub fn kept_alive(&mut self, keepalive_for: Duration) {
        self.head_started = false;
        self.deadline = Instant::now() + keepalive_for;
    }

    /// The graceful stop began: one with nothing in progress (idle
    /// keep-alive, or new and silent) is kept until `linger_until` at most.
    pub fn stopping(&mut self, linger_until: Instant) {
        self.deadline = self.http.stop_deadline(self.deadline, linger_until);
    }

    /// Its deadline passed at `now`: close it (after [`Core::timed_out`]).
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline <= now
    }

    /// It expired: the 408 to send when part of a head came (a silent
    /// close when nothing did: `None`). Write it with [`Core::end`].
    pub fn timed_out(&mut self) -> Option<h1::Ending> {
        let ending = self.http.head_timed_out();
        ending.answer.is_some().then_some(ending)
    }

    /// Answer an ending (a refused or late head) and log it.
    pub fn end(&self, py: Python<'_>, ending: h1::Ending) {
        conn::end(py, &self.stream, &self.peer, ending);
    }

    /// Out of the poller, FIN sent (after what was written): the close
    /// follows when the driver drops it.
    pub fn close(&self, registry: &Registry) {
        let _ = self.stream.deregister(registry);
        self.stream.shutdown_write();
    }
}

/// Put a new connection in the table and register its socket with the
/// poller (token `base` + its slot, for `interest`); its slot, or `None`
/// when the poller refused it (it is dropped: closed).
pub(crate) fn admit<T>(
    conns: &mut Slab<T>,
    conn: T,
    core: impl Fn(&T) -> &Core,
    registry: &Registry,
    base: usize,
    interest: Interest,
) -> Option<usize> {
    let i = conns.insert(conn);
    let registered = conns
        .get(i)
        .map(|c| core(c).stream.register(registry, Token(base + i), interest));
    if !matches!(registered, Some(Ok(()))) {
        conns.remove(i);
        return None;
    }
    Some(i)
}
