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

#[cfg(test)]
mod tests {
    use super::*;

    /// A connected pair: the server side as a fresh `Core` (accepting,
    /// header timeout 5 s), and the client.
    fn core() -> (Core, std::net::TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (sock, addr) = l.accept().unwrap();
        let peer = Peer {
            addr: addr.ip().to_string(),
            port: Some(addr.port()),
            proxy: None,
        };
        let opts = Arc::new(Options::default());
        let c = Core::accepted(
            (Stream::from(sock), peer),
            0,
            &opts,
            true,
            None,
            Duration::from_secs(5),
            true,
        );
        (c, client)
    }

    #[test]
    fn a_new_connection_gets_the_header_timeout_or_the_stop_linger() {
        let before = Instant::now();
        let (c, _client) = core();
        assert!(c.fresh && !c.trusted && !c.head_started);
        assert!(c.deadline >= before + Duration::from_secs(5));
        assert!(!c.expired(Instant::now()));
        assert!(c.expired(c.deadline));
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (sock, _) = l.accept().unwrap();
        let peer = Peer {
            addr: "127.0.0.1".into(),
            port: Some(1),
            proxy: None,
        };
        let stopping = Core::accepted(
            (Stream::from(sock), peer),
            1,
            &Arc::new(Options::default()),
            true,
            None,
            Duration::from_secs(5),
            false,
        );
        assert!(stopping.deadline <= Instant::now() + conn::STOP_LINGER);
        assert_eq!(stopping.server, 1);
    }

    #[test]
    fn a_head_deadline_starts_once_and_keep_alive_resets_it() {
        let (mut c, _client) = core();
        let before = Instant::now();
        c.head_incomplete(Duration::from_secs(60));
        let first = c.deadline;
        assert!(c.head_started && first >= before + Duration::from_secs(60));
        c.head_incomplete(Duration::from_secs(600));
        assert_eq!(
            c.deadline, first,
            "a head's deadline runs from its first byte"
        );
        c.kept_alive(Duration::from_secs(2));
        assert!(!c.head_started);
        assert!(c.deadline <= Instant::now() + Duration::from_secs(2));
        // Stopping: an idle one is let go by the stop's linger.
        let soon = Instant::now() + Duration::from_millis(1);
        c.stopping(soon);
        assert_eq!(c.deadline, soon);
    }

    #[test]
    fn a_late_head_gets_a_408_and_silence_gets_none() {
        let (mut c, _client) = core();
        assert!(c.timed_out().is_none(), "nothing came: a silent close");
        c.http.extend(b"GET / HTTP/1.1\r\nHost:");
        let ending = c.timed_out().expect("part of a head came");
        assert_eq!(ending.answer, Some(h1::Answer::HeadTimeout));
    }

    #[test]
    fn admit_registers_with_the_poller_or_drops() {
        let (c, mut client) = core();
        let poll = mio::Poll::new().unwrap();
        let mut conns: Slab<Core> = Slab::default();
        let i = admit(
            &mut conns,
            c,
            |c| c,
            poll.registry(),
            100,
            Interest::READABLE,
        )
        .expect("registered");
        io::Write::write_all(&mut client, b"x").unwrap();
        let mut events = mio::Events::with_capacity(4);
        let mut poll = poll;
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert!(events.iter().any(|e| e.token() == Token(100 + i)));
        // Registered twice: the poller refuses, the slot is given back.
        let again = Core {
            stream: conns.get(i).unwrap().stream.clone(),
            ..core().0
        };
        assert!(
            admit(
                &mut conns,
                again,
                |c| c,
                poll.registry(),
                100,
                Interest::READABLE
            )
            .is_none()
        );
        assert_eq!(conns.len(), 1);
    }
}
