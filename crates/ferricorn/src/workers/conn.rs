//! Serving one request on an accepted connection, shared by every worker
//! class: read until a full request head is buffered (GIL released while
//! waiting), call the app through `wsgi::serve`, write the access log line.
//!
//! Invariants: bytes read past the current request (pipelining) stay in
//! `buf` for the next call; a parse error is answered and ends the
//! connection; keep-alive is only ever offered when the caller allows it;
//! a connection closed while request bytes may remain unread lingers first
//! (`close`: FIN, discard until EOF, bounded), one with nothing unread
//! closes with no extra syscall.
//!
//! gunicorn counterpart: `SyncWorker.handle`/`handle_request` and
//! `ThreadWorker.handle`/`handle_request` (the shared parts).

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferricorn_http::parse::{BodyKind, Head, Parser};
use pyo3::prelude::*;

use crate::glogging::{self, access};
use crate::request::Request;
use crate::sock::Peer;
use crate::stream::Stream;
use crate::wsgi::input::BodyReader;
use crate::wsgi::response::{RequestSide, ResponseWriter};
use crate::wsgi::{self, Exchange, environ::AppContext};

const READ_CHUNK: usize = 8192;

/// Socket deadlines of a connection.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Time a client gets to send a complete request head (`--header-timeout`,
    /// beyond gunicorn: a slow client cannot hold a worker for `--timeout`).
    pub header: Option<Duration>,
    /// Reads and writes once the head is in (`--timeout`, as gunicorn's sync worker).
    pub io: Option<Duration>,
}

impl Timeouts {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let secs = |v: f64| (v > 0.0).then(|| Duration::from_secs_f64(v));
        Timeouts {
            header: secs(s.get("header_timeout").as_f64()),
            io: secs(s.timeout()),
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

/// How a closing connection ends (see [`close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Every byte the client sent was read: close at once.
    Clean,
    /// Request bytes may remain unread: linger before the close.
    Unread,
}

/// Once a graceful stop (TERM) begins, how long a connection with no
/// request in progress (idle keep-alive, or new and silent) is kept open
/// for a request that may already be on its way; such a request is
/// answered with `Connection: close`. Closing the connection at once would
/// lose it (the client sees a reset or EOF where its response should be).
/// gunicorn 27's gthread: `STOP_KEEPALIVE_LINGER` (2 s).
pub const STOP_LINGER: Duration = Duration::from_secs(2);

/// A lingering close takes at most this long. Long enough for a client on
/// loopback or a LAN to finish sending a body of a few megabytes that the
/// app ignored and then read the response (a 1 MB body takes milliseconds
/// on loopback); short enough that a sync worker, which serves nothing
/// while it lingers, is not held long by a client that keeps sending (or a
/// hostile one), and well under any sensible `--timeout` (the heartbeat is
/// beaten while lingering anyway). nginx's `lingering_time` is 30 s, for an
/// event loop where a lingering connection costs no worker.
pub const LINGER_FOR: Duration = Duration::from_secs(2);

/// A lingering close ends when nothing came for this long: a client that
/// has sent all it meant to and still holds its side open (it read the
/// response but keeps the connection) gets no more time. nginx's
/// `lingering_timeout` is 5 s.
pub const LINGER_IDLE: Duration = Duration::from_millis(500);

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

/// What became of the connection after one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Another request may follow; `buf` holds what was already read of it.
    KeepAlive,
    /// Close the connection (pass this to [`close`]).
    Close(Closing),
}

/// Read one request from `stream` (continuing from what `buf` holds), serve
/// it and log it. `allow_keep_alive` is the server's side of the decision.
/// `header_armed`: whether the read timeout is exactly the header timeout
/// (on a fresh connection from [`arm`]); updated on return, so that the
/// next request of a kept connection needs no `setsockopt` either.
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
    parser: &mut Parser,
    buf: &mut Vec<u8>,
    allow_keep_alive: bool,
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
    parser.set_peer_trusted(trusted);
    loop {
        match parser.parse(buf) {
            Ok(Some((head, consumed))) => {
                let body = !matches!(head.body, BodyKind::None | BodyKind::Length(0));
                if head_deadline.is_some() && body {
                    let _ = stream.set_read_timeout(timeouts.io);
                    *header_armed = false;
                }
                let dups = wsgi::extras::dups_made();
                let kept = serve_head(
                    py,
                    app,
                    stream,
                    peer,
                    server,
                    &head,
                    &buf[consumed..],
                    trusted,
                    allow_keep_alive,
                    busy,
                    started,
                    None,
                    None,
                );
                if wsgi::extras::dups_made() != dups {
                    *header_armed = false; // the app's socket set the I/O timeout
                }
                drop(head);
                buf.clear();
                return match kept {
                    Ok(rest) => {
                        buf.extend_from_slice(&rest);
                        Next::KeepAlive
                    }
                    Err(closing) => Next::Close(closing),
                };
            }
            Ok(None) => {
                let start = buf.len();
                if let (Some(deadline), true) = (head_deadline, start > 0) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    *header_armed = false;
                    if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                        return head_timed_out(py, stream, peer, buf);
                    }
                }
                let read = read_more(py, stream, buf);
                match read {
                    Err(e)
                        if head_deadline.is_some()
                            && matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) =>
                    {
                        return head_timed_out(py, stream, peer, buf);
                    }
                    Ok(0) | Err(_) => {
                        // Client went away (or timed out) before a full request: nothing to answer.
                        return Next::Close(Closing::Clean);
                    }
                    Ok(_) => {}
                }
            }
            Err(err) => {
                refuse(py, stream, peer, &err);
                buf.clear();
                // What follows the refused part (a body?) was not read.
                return Next::Close(Closing::Unread);
            }
        }
    }
}

/// Serve one request whose head is parsed (`rest`: the bytes read after the
/// head) and log it. Returns the bytes already read past this request when
/// the connection stays open, how to close it when it must close.
#[allow(clippy::too_many_arguments)]
pub fn serve_head(
    py: Python<'_>,
    app: &AppContext,
    stream: &Arc<Stream>,
    peer: &Peer,
    server: &(String, String),
    head: &Head<'_>,
    rest: &[u8],
    trusted: bool,
    allow_keep_alive: bool,
    busy: Option<(&super::heartbeat::Heartbeats, usize)>,
    started: Instant,
    socket: Option<&wsgi::extras::SocketSlot>,
    held: Option<&wsgi::Held>,
) -> Result<Vec<u8>, Closing> {
    let url_scheme = match app.trust().scheme(&head.headers, trusted) {
        Ok(scheme) => scheme.unwrap_or("http"),
        Err(_) => {
            let why = "Contradictory scheme headers";
            glogging::warning!("Invalid request from ip={}: {why}", peer.addr);
            let out = crate::app::error_response(400, "Bad Request", why);
            let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
            let body = !matches!(head.body, BodyKind::None | BodyKind::Length(0));
            return Err(if body || !rest.is_empty() {
                Closing::Unread
            } else {
                Closing::Clean
            });
        }
    };
    let req = Request::new(head, url_scheme, server, peer, app.script_name());
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
    let decoder = ferricorn_http::body::Decoder::new(&head.body, app.parser_options());
    let body = BodyReader::new(stream.clone(), decoder, rest.to_vec(), head.expect_continue);
    let response = ResponseWriter::new(
        stream.clone(),
        RequestSide {
            head: &*head.method == b"HEAD",
            version: head.version,
            keep_alive: head.keep_alive,
            server_allows_keep_alive: allow_keep_alive,
        },
    );
    let exchange = Exchange {
        body: Arc::new(Mutex::new(body)),
        response: Arc::new(Mutex::new(response)),
        socket,
        held,
    };
    let outcome = crate::hooks::serve(py, app, &req, exchange);
    super::signals::set_current_request(b"");
    if let Some((table, slot)) = busy {
        table.end_request(slot);
    }
    if glogging::access_enabled() {
        log_access(py, &req, &outcome, started);
    }
    let keep = outcome.keep_alive && allow_keep_alive;
    if allow_keep_alive && !keep && !outcome.failed {
        // gthread's line for a response that ends its connection.
        glogging::debug!("Closing connection.");
    }
    if keep {
        Ok(outcome.leftover)
    } else if outcome.unread {
        Err(Closing::Unread)
    } else {
        Err(Closing::Clean)
    }
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

/// The client did not send a complete head in time: 408 if it sent part of
/// one, a silent close if it sent nothing (an idle connection).
fn head_timed_out(py: Python<'_>, stream: &Arc<Stream>, peer: &Peer, buf: &mut Vec<u8>) -> Next {
    if !buf.is_empty() {
        glogging::debug!("Request head from ip={} not complete in time", peer.addr);
        let out =
            crate::app::error_response(408, "Request Timeout", "Request head not received in time");
        let _ = py.detach(|| io::Write::write_all(&mut &**stream, &out));
    }
    buf.clear();
    Next::Close(Closing::Clean)
}

/// Append what the socket has to `buf` (GIL released while waiting); retries
/// reads interrupted by a signal unless a quick exit is pending. `Ok(0)` is EOF.
fn read_more(py: Python<'_>, stream: &Arc<Stream>, buf: &mut Vec<u8>) -> io::Result<usize> {
    // Into the spare capacity: no 8 KiB zero-fill per read (docs/profile.md).
    py.detach(|| {
        loop {
            match stream.read_append(buf, READ_CHUNK) {
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
    buf: &mut Vec<u8>,
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
        match proxy::parse(buf, policy.mode) {
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
                buf.drain(..used);
                return true;
            }
            Ok(None) => match read_more(py, stream, buf) {
                Ok(n) if n > 0 => {}
                _ => return false,
            },
            Err(e) => return refuse(e.status(), e.reason(), &e.to_string()),
        }
    }
}
