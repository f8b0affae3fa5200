//! Driving a connection's HTTP/1 state (`ferricorn_http::h1::Conn`), shared
//! by every worker class: read until it has a full request head (GIL
//! released while waiting), serve that request (its facts and an
//! `Exchange` to the app through `wsgi::serve`, the access log line), and
//! hand the body and how the response went back to the state, whose
//! verdict (`h1::Next`) says whether the connection stays.
//!
//! Every keep-alive and close decision is `h1`'s: bytes read past the
//! current request (pipelining) stay in its buffer for the next one; a
//! parse error is answered and ends the connection; keep-alive is only ever
//! offered when the setting and the worker's lifecycle allow it; a
//! connection closed while request bytes may remain unread lingers first
//! (`close`: FIN, discard until EOF, bounded), one with nothing unread
//! closes with no extra syscall. This module moves the bytes and arms the
//! socket deadlines.
//!
//! gunicorn counterpart: `SyncWorker.handle`/`handle_request` and
//! `ThreadWorker.handle`/`handle_request` (the shared parts).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferricorn_http::h1::{self, Answer, Body, Exchange as H1Exchange, HeadEvent, Response};
use ferricorn_http::parse::{BodyKind, Head};
use pyo3::prelude::*;

use crate::glogging::{self, access};
use crate::request::Request;
use crate::sock::Peer;
use crate::stream::Stream;
use crate::wsgi::input::BodyReader;
use crate::wsgi::response::ResponseWriter;
use crate::wsgi::{self, Exchange, environ::AppContext};

/// Socket deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Time a client gets to send a complete request head (`--header-timeout`,
    /// beyond gunicorn: a slow client cannot hold a worker for `--timeout`).
    pub header: Option<Duration>,
    /// Reads and writes once the head is in (`--timeout`, as gunicorn's sync worker).
    pub io: Option<Duration>,
    /// The whole request body within this of the request's start (gthread:
    /// `--timeout`; a sync or evloop worker reading a body beats no
    /// heartbeat, so the master's timeout bounds it there).
    pub body: Option<Duration>,
}

impl Timeouts {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let secs = |v: f64| (v > 0.0).then(|| Duration::from_secs_f64(v));
        Timeouts {
            header: secs(s.get("header_timeout").as_f64()),
            io: secs(s.timeout()),
            body: None,
        }
    }
}

/// Give the connections every listener accepts from now on the deadlines a
/// fresh connection starts with (see [`arm`]); returns, per listener,
/// whether its connections inherit them (TCP) so `arm` has nothing to do.
///
/// Called by a worker (sync, gthread) once at start. The listeners are
/// shared by all workers, so the last worker to start sets them. Every
/// worker of one configuration sets the same values; evloop sets its own
/// per connection. After a reload that changes `--timeout` or
/// `--header-timeout` (or `--proxy-protocol`), an old worker that accepts a
/// connection between the new workers' start and its own stop serves it
/// with the new configuration's starting deadlines: read by the new
/// header (or I/O) timeout, written by the new I/O timeout. That is the only
/// effect, for a short window, and no connection is left without the
/// deadlines of one of the two configurations.
pub fn arm_listeners(
    listeners: &[crate::sock::Listener],
    timeouts: Timeouts,
    proxy_first: bool,
) -> Vec<bool> {
    let read = match timeouts.header {
        Some(h) if !proxy_first => Some(h),
        _ => timeouts.io,
    };
    listeners
        .iter()
        .map(|l| l.set_connection_timeouts(read, timeouts.io))
        .collect()
}

/// [`arm_listeners`] with the deadlines `settings` give. The master calls
/// it as soon as it has its listeners (at start, and for new ones at a
/// reload), before any worker runs: a connection that waits in the
/// backlog while the first workers boot was made from the listener as it
/// was then, and a worker trusts it to have inherited its deadlines.
pub fn arm_listeners_from(listeners: &[crate::sock::Listener], s: &crate::config::Settings) {
    let policy = Policy::from_settings(s);
    arm_listeners(listeners, policy.timeouts, policy.proxy.is_some());
}

/// Arm a fresh connection's deadlines before its first read: the send
/// timeout, and the read timeout: the header timeout, or the I/O timeout
/// when there is none or a PROXY header (read first) comes before the head.
/// `inherited`: the listener already gave it these ([`arm_listeners`]), so
/// no syscall is made. Returns whether the read timeout is now the header
/// timeout (pass it to the first `serve_one` as `header_armed`).
pub fn arm(stream: &Stream, timeouts: Timeouts, proxy_first: bool, inherited: bool) -> bool {
    let header = timeouts.header.filter(|_| !proxy_first);
    if !inherited {
        if timeouts.io.is_some() {
            let _ = stream.set_write_timeout(timeouts.io);
        }
        if let Some(read) = header.or(timeouts.io) {
            let _ = stream.set_read_timeout(Some(read));
        }
    }
    header.is_some()
}

/// End a connection the worker is done with.
///
/// `closing` is [`Closing::Unread`] when request bytes may remain unread
/// (a body the app did not read to its end, pipelined bytes, a refused
/// request): closing a socket with unread received data makes the kernel
/// send a reset instead of a FIN, and a reset may destroy the end of the
/// response before the client has read it. Such a close lingers
/// ([`linger`]): FIN after the response, then what the client still sends
/// is read and discarded until it closes its side, for at most
/// [`LINGER_FOR`] (and [`LINGER_IDLE`] without data), then the close.
/// nginx does the same (`lingering_close`); gunicorn 27.0.1 lingers on every
/// sync connection, but drains at most 64 KiB (`util.close_graceful`).
///
/// [`Closing::Clean`]: `shutdown(SHUT_WR)` before the close only when
/// something else may still hold the connection open: another `Arc` of the
/// stream (a Python object the app kept, such as `wsgi.input` or
/// `wsgi.early_hints`) or a `gunicorn.socket` duplicate made since
/// `dups_before` ([`crate::wsgi::extras::dups_made`]; a process-wide count,
/// so under gthread another connection's duplicate also counts, which only
/// costs a needless shutdown). Otherwise the close alone ends the
/// connection: the kernel sends the queued response, then the FIN, exactly
/// as after a shutdown. No syscall
/// beyond the close: the sync worker's `Connection: close` path stays
/// `accept4, read, sendto, close`.
///
/// `beat`: the worker's heartbeat slot, beaten while lingering (sync).
/// Call without the GIL when `closing` is `Unread` (it may wait).
pub fn close(
    stream: Arc<Stream>,
    dups_before: u64,
    closing: Closing,
    beat: Option<(&super::heartbeat::Heartbeats, usize)>,
) {
    if closing == Closing::Unread {
        linger(&stream, beat);
    } else if Arc::strong_count(&stream) > 1 || wsgi::extras::dups_made() != dups_before {
        stream.shutdown_write();
    }
}

pub use ferricorn_http::h1::{Closing, LINGER_FOR, LINGER_IDLE, Next, STOP_LINGER};

/// Lingering close: FIN after the response (`shutdown(SHUT_WR)`), then
/// read and discard whatever the client sends until it closes (EOF), an
/// error, [`LINGER_IDLE`] without data, [`LINGER_FOR`] in all, or a pending
/// QUIT/INT (a signal interrupts the wait; TERM lets it finish, bounded).
/// The caller's drop of the stream then closes it with nothing unread, or
/// with a reset only after the bound.
fn linger(stream: &Stream, beat: Option<(&super::heartbeat::Heartbeats, usize)>) {
    stream.shutdown_write();
    let end = Instant::now() + LINGER_FOR;
    let mut scratch = vec![0u8; LINGER_CHUNK];
    loop {
        // What is there now, without blocking (bounded by the time too: a
        // fast sender could keep this loop busy).
        loop {
            match stream.read_nowait(&mut scratch) {
                Ok(0) => return,
                Ok(_) if Instant::now() >= end => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        if let Some((table, slot)) = beat {
            table.beat(slot);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() || super::signals::peek_quit() {
            return;
        }
        match stream.wait_readable(left.min(LINGER_IDLE)) {
            Ok(true) => {}
            Ok(false) | Err(_) => return, // idle: the client sends nothing more
        }
    }
}

/// What one read of a lingering close takes in.
const LINGER_CHUNK: usize = 64 * 1024;

/// Read one request on `conn` (continuing from what it holds), serve it
/// and log it; what becomes of the connection is `conn`'s verdict
/// (`h1::Conn::finish`). `header_armed`: whether the read timeout is
/// exactly the header timeout (on a fresh connection from [`arm`]); updated
/// on return, so that the next request of a kept connection needs no
/// `setsockopt` either.
///
/// Read timeouts: the header timeout until the head is in, then the I/O
/// timeout, but only for a request with a body: without one this function
/// reads nothing more for this request (the next request of a kept
/// connection wants the header timeout again), and the app's own reads on
/// `gunicorn.socket` get the I/O timeout when it first uses the object
/// (`wsgi::extras`, counted by `dups_made`). One `setsockopt` saved per
/// body-less request, two per body-less keep-alive request.
#[allow(clippy::too_many_arguments)]
pub fn serve_one(
    py: Python<'_>,
    app: &AppContext,
    stream: &Arc<Stream>,
    peer: &Peer,
    server: &(String, String),
    conn: &mut h1::Conn,
    busy: Option<(&super::heartbeat::Heartbeats, usize)>,
    timeouts: Timeouts,
    header_armed: &mut bool,
) -> Next {
    let started = Instant::now();
    let head_deadline = timeouts.header.map(|t| started + t);
    if head_deadline.is_some() && !*header_armed {
        let _ = stream.set_read_timeout(timeouts.header);
    }
    *header_armed = head_deadline.is_some();
    let trusted = app.trust().trusts(peer);
    conn.set_peer_trusted(trusted);
    loop {
        let begun = !conn.is_idle();
        match conn.next_head() {
            HeadEvent::Request(h1::Request {
                head,
                body,
                exchange,
            }) => {
                if head_deadline.is_some() && !body.is_done() {
                    let _ = stream.set_read_timeout(timeouts.io);
                    *header_armed = false;
                }
                let dups = wsgi::extras::dups_made();
                let on = Connection {
                    stream,
                    peer,
                    server,
                    trusted,
                    body_within: timeouts.body,
                };
                let served =
                    serve_request(py, app, &on, &head, body, exchange, busy, started, None);
                drop(head);
                if wsgi::extras::dups_made() != dups {
                    *header_armed = false; // the app's socket set the I/O timeout
                }
                return served.finish(conn);
            }
            HeadEvent::NeedMore => {
                if let (Some(deadline), true) = (head_deadline, begun) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    *header_armed = false;
                    if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                        return end(py, stream, peer, conn.head_timed_out());
                    }
                }
                match read_more(py, stream, conn.read_buf()) {
                    Err(e)
                        if head_deadline.is_some()
                            && matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                    {
                        return end(py, stream, peer, conn.head_timed_out());
                    }
                    // The client went away (or failed): `next_head` ends it.
                    Ok(0) | Err(_) => conn.eof(),
                    Ok(n) => {
                        conn.received(n);
                    }
                }
            }
            HeadEvent::End(ending) => return end(py, stream, peer, ending),
        }
    }
}

/// A connection's facts that serving a request on it needs.
pub struct Connection<'a> {
    pub stream: &'a Arc<Stream>,
    pub peer: &'a Peer,
    /// The listener's `(name, port)`.
    pub server: &'a (String, String),
    /// `peer` may set scheme and forwarder headers (`forwarded_allow_ips`).
    pub trusted: bool,
    /// The request body must be in within this of the request's start
    /// (`Timeouts::body`).
    pub body_within: Option<Duration>,
}

/// What serving a request left for its connection: the body to give back
/// and how the response went (`h1::Conn::finish` decides from them).
pub struct Served {
    /// The body source, whose body goes back to the connection.
    reader: Arc<Mutex<BodyReader>>,
    response: Response,
    /// The server offered keep-alive and the app did not fail: a response
    /// that closes anyway is worth gthread's debug line.
    say_closing: bool,
}

impl Served {
    /// The connection's verdict, from `conn`.
    pub fn finish(self, conn: &mut h1::Conn) -> Next {
        let body = self
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take_body();
        let body =
            body.unwrap_or_else(|| Body::new(&BodyKind::None, conn.options(), Vec::new(), false));
        let next = conn.finish(body, self.response);
        if self.say_closing && next != Next::KeepAlive {
            // gthread's line for a response that ends its connection.
            glogging::debug!("Closing connection.");
        }
        next
    }
}

/// Serve one request whose head `conn` parsed, with its `body` and
/// `exchange` (`h1::Request`), and log it.
#[allow(clippy::too_many_arguments)]
pub fn serve_request(
    py: Python<'_>,
    app: &AppContext,
    on: &Connection<'_>,
    head: &Head<'_>,
    body: Body,
    exchange: H1Exchange,
    busy: Option<(&super::heartbeat::Heartbeats, usize)>,
    started: Instant,
    kept: Option<(&wsgi::extras::SocketSlot, &wsgi::Held)>,
) -> Served {
    let (stream, peer) = (on.stream, on.peer);
    let mut reader = BodyReader::new(stream.clone(), body);
    if let Some(within) = on.body_within {
        reader.set_deadline(started + within);
    }
    let reader = Arc::new(Mutex::new(reader));
    let url_scheme = match app.trust().scheme(&head.headers, on.trusted) {
        Ok(scheme) => scheme.unwrap_or("http"),
        Err(_) => {
            let why = "Contradictory scheme headers";
            glogging::warning!("Invalid request from ip={}: {why}", peer.addr);
            let out = crate::app::error_response(400, "Bad Request", why);
            let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
            return Served {
                reader,
                response: Response::Refused,
                say_closing: false,
            };
        }
    };
    let req = Request::new(head, url_scheme, on.server, peer, app.script_name());
    glogging::debug!(
        "{} {}",
        String::from_utf8_lossy(&head.method),
        String::from_utf8_lossy(head.path)
    );
    if let Some((table, slot)) = busy {
        table.begin_request(slot, &head.method, head.target);
    }
    // For the stack dump a timed-out worker writes (sys::signals).
    let version: &[u8] = if head.version == (1, 0) {
        b" HTTP/1.0"
    } else {
        b" HTTP/1.1"
    };
    super::signals::set_current_request_parts(&[&head.method, b" ", head.target, version]);
    let offered = exchange.server_allows_keep_alive(crate::lifecycle::current());
    let ex = Exchange {
        body: reader.clone(),
        response: Arc::new(Mutex::new(ResponseWriter::new(stream.clone(), exchange))),
        socket: kept.map(|k| k.0),
        held: kept.map(|k| k.1),
    };
    let outcome = crate::hooks::serve(py, app, &req, ex);
    super::signals::set_current_request(b"");
    if let Some((table, slot)) = busy {
        table.end_request(slot);
    }
    if glogging::access_enabled() {
        log_access(py, &req, &outcome, started);
    }
    Served {
        reader,
        response: outcome.response,
        say_closing: offered && !outcome.failed,
    }
}

/// End a connection as `ending` says: answer it first when there is an
/// answer (a refused request, a head not complete in time).
pub fn end(py: Python<'_>, stream: &Arc<Stream>, peer: &Peer, ending: h1::Ending) -> Next {
    match &ending.answer {
        Some(Answer::Refused(err)) => refuse(py, stream, peer, err),
        Some(Answer::HeadTimeout) => {
            glogging::debug!("Request head from ip={} not complete in time", peer.addr);
            let out = head_timeout_answer();
            let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
        }
        None => {}
    }
    Next::Close(ending.closing)
}

/// The answer to a request head not complete within its deadline.
pub fn head_timeout_answer() -> Vec<u8> {
    crate::app::error_response(408, "Request Timeout", "Request head not received in time")
}

/// Answer a request the parser refused (4xx/5xx, `Connection: close`) and log it.
pub fn refuse(py: Python<'_>, stream: &Arc<Stream>, peer: &Peer, err: &ferricorn_http::Error) {
    glogging::warning!("Invalid request from ip={}: {}", peer.addr, err);
    let out = crate::app::error_response(err.status(), err.reason(), &err.to_string());
    let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
}

fn log_access(py: Python<'_>, req: &Request<'_>, outcome: &wsgi::Outcome, started: Instant) {
    let environ = outcome.environ.bind(py);
    // `{var}e`: environ keys match case-insensitively; the last match wins (as gunicorn).
    let lookup = |key: &str| -> Option<String> {
        let mut found = None;
        for (k, v) in environ.iter() {
            if k.str().is_ok_and(|k| k.to_string().to_lowercase() == key) {
                found = v.str().ok().map(|s| s.to_string());
            }
        }
        found
    };
    let protocol = match req.version() {
        (1, 0) => "HTTP/1.0",
        _ => "HTTP/1.1",
    };
    let request_headers: Vec<(&[u8], &[u8])> = req
        .headers()
        .iter()
        .map(|(k, v)| (*k, v.as_ref()))
        .collect();
    glogging::access(&access::Record {
        remote_addr: &req.peer.addr,
        method: req.method(),
        raw_uri: req.raw_target(),
        path_info: req.path(),
        query: req.query(),
        protocol,
        status: &outcome.status,
        sent: outcome.sent,
        request_headers: &request_headers,
        response_headers: &outcome.response_headers,
        duration: started.elapsed(),
        environ: Some(&lookup),
    });
}

/// Append what the socket has to `buf` (GIL released while waiting); retries
/// reads interrupted by a signal unless a quick exit is pending. `Ok(0)` is EOF.
fn read_more(py: Python<'_>, stream: &Arc<Stream>, buf: &mut Vec<u8>) -> io::Result<usize> {
    // Into the spare capacity: no 8 KiB zero-fill per read (docs/profile.md).
    py.detach(|| {
        loop {
            match stream.read_append(buf, h1::READ_CHUNK) {
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted && !super::signals::peek_quit() =>
                {
                    continue;
                }
                other => break other,
            }
        }
    })
}

/// Per-connection policy of a worker, built once from the settings.
#[derive(Clone, Debug)]
pub struct Policy {
    pub timeouts: Timeouts,
    pub proxy: Option<ProxyPolicy>,
}

impl Policy {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        Policy {
            timeouts: Timeouts::from_settings(s),
            proxy: ProxyPolicy::from_settings(s),
        }
    }
}

/// `--proxy-protocol` and `--proxy-allow-from` of a worker.
#[derive(Clone, Debug)]
pub struct ProxyPolicy {
    mode: ferricorn_http::proxy::Mode,
    allow: crate::request::proxy::Trust,
}

impl ProxyPolicy {
    /// `None` when the PROXY protocol is off.
    pub fn from_settings(s: &crate::config::Settings) -> Option<Self> {
        use ferricorn_http::proxy::Mode;
        let mode = match s.get("proxy_protocol").as_str() {
            Some("v1") => Mode::V1,
            Some("v2") => Mode::V2,
            Some("auto") => Mode::Auto,
            _ => return None,
        };
        Some(ProxyPolicy {
            mode,
            allow: crate::request::proxy::Trust::new(s.get("proxy_allow_ips").as_list(), &[]),
        })
    }
}

/// At the start of a connection: read and strip a PROXY header if the
/// client sent one; the client it names replaces `peer`. Returns false when
/// the connection was refused (403 for a proxy not in `--proxy-allow-from`,
/// 400 for a malformed header) or closed.
///
/// gunicorn counterpart: `Message.proxy_protocol`, `proxy_protocol_access_check`.
pub fn read_proxy_header(
    py: Python<'_>,
    stream: &Arc<Stream>,
    peer: &mut Peer,
    conn: &mut h1::Conn,
    policy: &ProxyPolicy,
) -> bool {
    use ferricorn_http::proxy::{self, ProxyInfo};
    loop {
        let refuse = |status: u16, reason: &str, why: &str| {
            glogging::warning!("Invalid request from ip={}: {why}", peer.addr);
            let out = crate::app::error_response(status, reason, why);
            let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
            false
        };
        match proxy::parse(conn.buffered(), policy.mode) {
            Ok(Some((_, 0))) => return true,
            Ok(Some((info, used))) => {
                if !policy.allow.trusts(peer) {
                    return refuse(403, "Forbidden", "Request forbidden");
                }
                if let ProxyInfo::Proxied { src, dst } = info {
                    *peer = Peer {
                        addr: src.ip().to_string(),
                        port: Some(src.port()),
                        proxy: Some(crate::sock::Proxied {
                            protocol: if src.is_ipv4() { "TCP4" } else { "TCP6" },
                            addr: dst.ip().to_string(),
                            port: dst.port(),
                        }),
                    };
                }
                conn.consume(used);
                return true;
            }
            Ok(None) => match read_more(py, stream, conn.read_buf()) {
                Ok(n) if n > 0 => {
                    conn.received(n);
                }
                _ => return false,
            },
            Err(e) => return refuse(e.status(), e.reason(), &e.to_string()),
        }
    }
}
