//! The state of one HTTP/1 connection, sans-IO: bytes in, decisions out.
//!
//! [`Conn`] owns the read buffer, the head [`Parser`] and pipelining (bytes
//! read past the current request stay for the next); a parsed request comes
//! out as a [`Request`]: its head (borrowing the buffer), an owned [`Body`]
//! (the body decoder, the body bytes that came with the head, and
//! `Expect: 100-continue`) that a driver may hand to another thread or to
//! Python, and an [`Exchange`] (copyable request facts) that frames the
//! response. [`Conn::finish`] takes the body back with what became of the
//! response and gives the verdict: [`Next::KeepAlive`] or
//! [`Next::Close`] with a [`Closing`] that says whether the close must
//! linger. Every keep-alive and close decision of the request path lives
//! here: the request's version and `Connection` header (from the parser),
//! the server's `--keep-alive` setting, the worker's [`Lifecycle`] at the
//! moment the response head is made, the response framing
//! ([`crate::response::encode_head`]), a failed application, a body left
//! unread, header timeouts, and how long an idle connection is kept
//! ([`Conn::wait_until`], [`STOP_LINGER`]).
//!
//! Drivers do the I/O: a blocking loop, a readiness poller or an async task
//! reads into [`Conn::read_buf`] (or [`Body::read_buf`]), writes what the
//! methods say to write, and closes as told. Nothing here reads a clock
//! (instants are passed in), allocates per request once the buffers have
//! grown, or implies a syscall: a `Connection: close` request costs a driver
//! one read, one write and the close.
//!
//! Invariants:
//! - a byte the client sent is either parsed, handed to the body, kept for
//!   the next request, or reported as unread ([`Closing::Unread`]);
//! - the parser always sees the current request from its first byte
//!   (compaction moves the bytes, never cuts them);
//! - `100 Continue` goes out at most once, only for an HTTP/1.1 request
//!   that asked for it, only when a body read must wait for the client
//!   (nothing of the body is buffered), never after the body ended;
//! - keep-alive is only ever offered when the setting allows it and the
//!   worker is [`Lifecycle::Running`].
//!
//! Counterparts: hyper's `proto/h1/conn.rs` `State` (reading, writing,
//! keep-alive) for the shape; gunicorn's `http/message.py` `should_close`,
//! `http/wsgi.py` `Response.should_close`, `workers/gthread.py` keep-alive
//! handling, `util.close_graceful` for the behaviour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::body::Decoder;
use crate::error::Error;
use crate::parse::{BodyKind, Head, Options, Parser};
use crate::response::{Framing, ResponseContext};

/// The interim response [`Body::take_continue`] hands out.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a driver reads at a time into [`Conn::read_buf`].
pub const READ_CHUNK: usize = 8192;

/// What one body read into [`Body::read_buf`] asks for at most.
pub const BODY_READ_CHUNK: usize = 64 * 1024;

/// Unread body bytes a kept connection reads and discards after the
/// response ([`Body::drain`]); a larger rest closes the connection instead.
pub const DRAIN_MAX: u64 = 64 * 1024;

/// Once a graceful stop begins, how long a connection with no request in
/// progress (idle keep-alive, or new and silent) is kept open for a request
/// that may already be on its way; that request is answered with
/// `Connection: close`. gunicorn 27's gthread: `STOP_KEEPALIVE_LINGER`.
pub const STOP_LINGER: Duration = Duration::from_secs(2);

/// A lingering close ([`Closing::Unread`]) takes at most this long.
pub const LINGER_FOR: Duration = Duration::from_secs(2);

/// A lingering close ends when nothing came for this long.
pub const LINGER_IDLE: Duration = Duration::from_millis(500);

/// Where the worker serving the connection is in its life. The worker's
/// own lifecycle value maps onto this; it only moves forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lifecycle {
    /// Serving normally.
    Running,
    /// Asked for its replacement (`--max-requests`, `--max-worker-memory`):
    /// serves on, but every response closes its connection so that clients
    /// move to another worker.
    Retiring,
    /// Graceful stop (TERM, or the master went away): responses close their
    /// connections; idle ones are kept only for [`STOP_LINGER`].
    Draining,
    /// Quick stop (QUIT, INT): nothing more, not even a lingering close.
    Quitting,
}

impl Lifecycle {
    /// Whether a response may keep its connection open.
    pub fn allows_keep_alive(self) -> bool {
        self == Lifecycle::Running
    }

    /// Whether a graceful stop is under way (or a quick one).
    pub fn is_stopping(self) -> bool {
        self >= Lifecycle::Draining
    }
}

/// How a closing connection ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// Every byte the client sent was read: close at once.
    Clean,
    /// Request bytes may remain unread (a body not read to its end,
    /// pipelined bytes, a refused request): closing now would make the
    /// kernel send a reset that may destroy the response, so the close
    /// lingers ([`Linger`]): FIN, then discard what comes until EOF.
    Unread,
}

impl Closing {
    /// Whether the close lingers, given where the worker is: a quick stop
    /// (QUIT, INT) cuts it.
    pub fn lingers(self, lifecycle: Lifecycle) -> bool {
        self == Closing::Unread && lifecycle != Lifecycle::Quitting
    }
}

/// What became of a connection after a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Another request may follow; what was read of it is buffered.
    KeepAlive,
    /// Close the connection, this way.
    Close(Closing),
}

/// A response the server itself writes before it closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The request was refused (4xx/5xx per [`Error::status`]).
    Refused(Error),
    /// Part of a request head came, not all of it in time (408).
    HeadTimeout,
}

impl Answer {
    /// The status code.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Refused(e) => e.status(),
            Answer::HeadTimeout => 408,
        }
    }

    /// The reason phrase.
    pub fn reason(&self) -> &'static str {
        match self {
            Answer::Refused(e) => e.reason(),
            Answer::HeadTimeout => "Request Timeout",
        }
    }

    /// The message for the response body and the log (no request bytes).
    pub fn message(&self) -> String {
        match self {
            Answer::Refused(e) => e.to_string(),
            Answer::HeadTimeout => "Request head not received in time".into(),
        }
    }
}

/// The end of a connection: what to write first, if anything, then how to close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ending {
    /// Write this error response (`Connection: close`) first.
    pub answer: Option<Answer>,
    pub closing: Closing,
}

/// What [`Conn::next_head`] found.
// Returned by value once per request: a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum HeadEvent<'b> {
    /// A complete request head: serve it, then [`Conn::finish`].
    Request(Request<'b>),
    /// Read more ([`Conn::read_buf`], [`Conn::received`]).
    NeedMore,
    /// End the connection: the client closed it before a complete head
    /// (silently, [`Closing::Clean`]), or the head was refused (answer,
    /// then [`Closing::Unread`]: what followed the refused part is unread).
    End(Ending),
}

/// One request: its head, its body and the facts its response depends on.
#[derive(Debug)]
pub struct Request<'b> {
    pub head: Head<'b>,
    pub body: Body,
    pub exchange: Exchange,
}

/// The request facts a response depends on (copyable, so a response
/// writer on another thread can hold them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exchange {
    /// Request version.
    pub version: (u8, u8),
    /// The method is `HEAD`.
    pub head_method: bool,
    /// The request allows keep-alive (version, `Connection`, CONNECT,
    /// transfer codings: [`Head::keep_alive`]).
    pub request_keep_alive: bool,
    /// The server's `--keep-alive` allows it (false: the sync worker, or
    /// `--keep-alive 0`).
    pub server_keep_alive: bool,
}

impl Exchange {
    /// Whether the server lets this response keep its connection, with the
    /// worker where it is now. Ask at the moment the response head is made:
    /// a graceful stop that began while the app ran turns it off.
    pub fn server_allows_keep_alive(&self, lifecycle: Lifecycle) -> bool {
        self.server_keep_alive && lifecycle.allows_keep_alive()
    }

    /// What [`crate::response::encode_head`] needs, with the worker where it
    /// is now. The framing it returns ([`Framing::keep_alive`]) is final:
    /// pass it to [`Conn::finish`] as [`Response::Complete`].
    pub fn response_context<'a>(
        &self,
        lifecycle: Lifecycle,
        server_header: Option<&'a [u8]>,
    ) -> ResponseContext<'a> {
        ResponseContext {
            method: if self.head_method { b"HEAD" } else { b"" },
            version: self.version,
            request_keep_alive: self.request_keep_alive,
            server_allows_keep_alive: self.server_allows_keep_alive(lifecycle),
            server_header,
        }
    }

    /// Whether an interim response (`103 Early Hints`) may be sent before
    /// the final one: HTTP/1.1 and later only.
    pub fn interim_allowed(&self) -> bool {
        self.version >= (1, 1)
    }
}

/// What became of the response, for [`Conn::finish`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response {
    /// Sent whole, framed as this.
    Complete(Framing),
    /// The application (or reading its body) failed, or the client went
    /// away: the response, if any, was an error or was cut.
    Failed,
    /// The server refused the request after its head was parsed (an error
    /// response such as contradictory scheme headers).
    Refused,
}

/// A run of decoded body bytes, or why there is none.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Body bytes (borrowing the body's buffer).
    Data(&'a [u8]),
    /// The body is complete.
    End,
    /// Nothing buffered: read from the client ([`Body::take_continue`]
    /// first, then [`Body::read_buf`] and [`Body::received`]).
    NeedRead,
}

/// What [`Body::drain`] reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drain {
    /// The body is complete: the connection may be reused.
    Done,
    /// More must be read from the client to get to its end.
    NeedRead,
    /// More than the budget remains: close instead.
    OverBudget,
}

/// One request's body: its decoder and the body bytes read so far and not
/// yet handed out. Owned (it holds no borrow of the connection), so a driver
/// can hand it to the application for the request's life and give it back
/// to [`Conn::finish`]; its buffer then serves the next body.
///
/// Reading: [`Body::data`] shows the next decoded bytes without taking
/// them (a run of a chunk, or of a Content-Length body), [`Body::consume`]
/// takes some (a `read(n)` or a `readline` takes what it needs, the rest
/// stays); [`Body::next_data`] does both for a whole run. None of them
/// copies: the bytes are a slice of the body's buffer.
#[derive(Debug)]
pub struct Body {
    decoder: Decoder,
    /// Raw body bytes. `raw[window.0..window.1]`: decoded body bytes not
    /// handed out yet; `raw[pos..]`: bytes not decoded yet (for a
    /// Content-Length body never more than the body; for a chunked one
    /// possibly the next request's bytes). `window.1 <= pos`.
    raw: Vec<u8>,
    window: (usize, usize),
    pos: usize,
    /// `Expect: 100-continue` not answered yet.
    continue_pending: bool,
    /// The request had a body (not none, not `Content-Length: 0`).
    had_body: bool,
    /// The first framing error met.
    error: Option<Error>,
}

impl Body {
    /// A body framed as `kind`, starting with `raw` (the bytes that came
    /// with the head); for tests and for drivers that parse heads themselves.
    pub fn new(kind: &BodyKind, opts: &Options, raw: Vec<u8>, expect_continue: bool) -> Self {
        Self::with_decoder(Decoder::new(kind, opts), raw, expect_continue)
    }

    fn with_decoder(decoder: Decoder, raw: Vec<u8>, expect_continue: bool) -> Self {
        Body {
            continue_pending: expect_continue && !decoder.is_done(),
            had_body: !decoder.is_done(),
            decoder,
            raw,
            window: (0, 0),
            pos: 0,
            error: None,
        }
    }

    /// The next decoded body bytes, left in place until [`Body::consume`]d
    /// (no copy).
    pub fn data(&mut self) -> Result<Chunk<'_>, Error> {
        if self.window.0 == self.window.1 {
            self.window = (self.pos, self.pos);
            loop {
                if self.decoder.is_done() {
                    return Ok(Chunk::End);
                }
                let input = &self.raw[self.pos..];
                if input.is_empty() {
                    return Ok(Chunk::NeedRead);
                }
                let (used, data) = match self.decoder.next_data(input) {
                    Ok(r) => r,
                    Err(e) => {
                        self.error.get_or_insert(e);
                        return Err(e);
                    }
                };
                let len = data.len();
                if len > 0 {
                    // `data` is a slice of `input`: where it sits in `raw`.
                    let at = self.pos + (data.as_ptr() as usize - input.as_ptr() as usize);
                    self.pos += used;
                    self.window = (at, at + len);
                    break;
                }
                self.pos += used;
                if used == 0 {
                    return Ok(Chunk::NeedRead);
                }
            }
        }
        Ok(Chunk::Data(&self.raw[self.window.0..self.window.1]))
    }

    /// Take `n` of the bytes [`Body::data`] showed.
    pub fn consume(&mut self, n: usize) {
        self.window.0 = (self.window.0 + n).min(self.window.1);
    }

    /// The next run of decoded body bytes, taken (no copy).
    pub fn next_data(&mut self) -> Result<Chunk<'_>, Error> {
        let range = match self.data()? {
            Chunk::Data(_) => self.window.0..self.window.1,
            Chunk::End => return Ok(Chunk::End),
            Chunk::NeedRead => return Ok(Chunk::NeedRead),
        };
        self.window.0 = self.window.1;
        Ok(Chunk::Data(&self.raw[range]))
    }

    /// Decoded body bytes shown by [`Body::data`] and not taken yet.
    pub fn available(&self) -> usize {
        self.window.1 - self.window.0
    }

    /// Before a read from the client for this body: the interim response
    /// to write first, once. `None` unless the request asked for it, the
    /// body is not complete and nothing of it is buffered: an application
    /// that never reads the body never makes the client send it.
    pub fn take_continue(&mut self) -> Option<&'static [u8]> {
        if self.continue_pending && !self.decoder.is_done() && self.is_empty() {
            self.continue_pending = false;
            return Some(CONTINUE);
        }
        None
    }

    /// Whether `100 Continue` is still owed (asked for, not sent yet).
    pub fn continue_pending(&self) -> bool {
        self.continue_pending && !self.decoder.is_done()
    }

    /// Nothing buffered: neither decoded bytes nor raw ones.
    fn is_empty(&self) -> bool {
        self.window.0 == self.window.1 && self.pos == self.raw.len()
    }

    /// The buffer to read body bytes into (append to it, then call
    /// [`Body::received`]) and how many bytes to ask for at most: never
    /// past the end of a Content-Length body. Call when [`Body::data`]
    /// said [`Chunk::NeedRead`].
    pub fn read_buf(&mut self) -> (&mut Vec<u8>, usize) {
        // Keep the bytes not taken yet (the window, then the raw rest).
        let keep = if self.window.0 < self.window.1 {
            self.window.0
        } else {
            self.pos
        };
        if keep == self.raw.len() {
            self.raw.clear();
        } else if keep > 0 {
            self.raw.drain(..keep);
        }
        self.window = (
            self.window.0 - keep.min(self.window.0),
            self.window.1.saturating_sub(keep),
        );
        self.pos -= keep;
        let want = match self.decoder.remaining() {
            Some(n) => clamp(n, BODY_READ_CHUNK).max(1),
            None => BODY_READ_CHUNK,
        };
        (&mut self.raw, want)
    }

    /// `n` bytes were appended to [`Body::read_buf`]; 0 is the client's
    /// EOF, an error unless the body was complete.
    pub fn received(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return self.eof();
        }
        Ok(())
    }

    /// The client closed its side: an error unless the body was complete.
    pub fn eof(&mut self) -> Result<(), Error> {
        self.decoder.finish_eof().inspect_err(|e| {
            self.error.get_or_insert(*e);
        })
    }

    /// When the next body bytes may be read from the client straight into
    /// the application's buffer (a Content-Length body, nothing buffered):
    /// how many remain. Write [`Body::take_continue`] first.
    pub fn direct(&self) -> Option<u64> {
        if !self.is_empty() {
            return None;
        }
        self.decoder.remaining().filter(|&n| n > 0)
    }

    /// `n` body bytes were read straight into the application's buffer
    /// (after [`Body::direct`]); 0 is the client's EOF.
    pub fn direct_received(&mut self, n: usize) -> Result<(), Error> {
        if n == 0 {
            return self.eof();
        }
        self.decoder.advance(n as u64);
        Ok(())
    }

    /// Body bytes still to come from the client, for a Content-Length body
    /// (buffered raw ones included, decoded ones not); `None` for a
    /// chunked one.
    pub fn remaining(&self) -> Option<u64> {
        self.decoder.remaining()
    }

    /// The exact number of body bytes the application has still to read,
    /// when known: Content-Length bodies (`None` for chunked ones).
    pub fn known_len(&self) -> Option<u64> {
        Some(self.decoder.remaining()? + self.available() as u64)
    }

    /// The body is complete on the wire (all of it was read from the
    /// client; [`Body::available`] may still hold some for the application).
    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The first framing error met (its status answers the request).
    pub fn error(&self) -> Option<Error> {
        self.error
    }

    /// Trailer fields of a chunked body, once complete.
    pub fn trailers(&self) -> &[(Vec<u8>, Vec<u8>)] {
        self.decoder.trailers()
    }

    /// Discard body bytes, counting them against `budget` (decremented):
    /// to reuse a connection whose application did not read its body to
    /// the end. On [`Drain::NeedRead`] read (after [`Body::take_continue`])
    /// and call again.
    pub fn drain(&mut self, budget: &mut u64) -> Result<Drain, Error> {
        loop {
            match self.next_data()? {
                Chunk::End => return Ok(Drain::Done),
                Chunk::NeedRead => return Ok(Drain::NeedRead),
                Chunk::Data(d) => {
                    let n = d.len() as u64;
                    if n > *budget {
                        *budget = 0;
                        return Ok(Drain::OverBudget);
                    }
                    *budget -= n;
                }
            }
        }
    }

    /// Whether request bytes may remain unread on the connection when it
    /// closes now: body bytes not read from the client yet, or bytes after
    /// the body already read (pipelining: more may follow). A
    /// Content-Length body read whole along with the head leaves nothing
    /// unread.
    fn unread(&self) -> bool {
        let buffered = (self.raw.len() - self.pos) as u64;
        if self.decoder.is_done() {
            return buffered > 0;
        }
        match self.decoder.remaining() {
            Some(n) => buffered != n,
            None => true, // chunked: where it ends is not known before decoding it
        }
    }
}

fn clamp(n: u64, max: usize) -> usize {
    usize::try_from(n).map_or(max, |n| n.min(max))
}

/// How long a connection may wait for its next request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waits {
    /// A fresh connection's first head, and a head once its first byte came.
    pub header: Duration,
    /// The next head after a response (`--keep-alive`).
    pub keepalive: Duration,
}

/// The state of one HTTP/1 connection (server side). One per connection;
/// [`Conn::reset`] readies it for another connection, keeping its buffers.
#[derive(Debug)]
pub struct Conn {
    parser: Parser,
    /// Bytes read; those before `start` are consumed.
    buf: Vec<u8>,
    start: usize,
    /// A body buffer to lend the next [`Body`].
    spare: Vec<u8>,
    /// The server's `--keep-alive` (false: close after every response).
    keep_alive: bool,
    /// The client closed its side.
    eof: bool,
    /// A request is out ([`Conn::next_head`]) and not finished.
    in_flight: bool,
    /// Requests finished on this connection.
    served: u64,
}

impl Conn {
    /// A connection parsing with `opts` (shared, not copied); `keep_alive`:
    /// the server may keep connections open between requests.
    pub fn new(opts: Arc<Options>, keep_alive: bool) -> Self {
        Conn {
            parser: Parser::with_shared_options(opts),
            buf: Vec::new(),
            start: 0,
            spare: Vec::new(),
            keep_alive,
            eof: false,
            in_flight: false,
            served: 0,
        }
    }

    /// Ready for a new connection, keeping the buffers' memory (the sync
    /// worker's one `Conn` serves every connection it accepts).
    pub fn reset(&mut self) {
        self.parser.reset();
        self.buf.clear();
        self.start = 0;
        self.eof = false;
        self.in_flight = false;
        self.served = 0;
    }

    /// The parser's options.
    pub fn options(&self) -> &Options {
        self.parser.options()
    }

    /// Whether the peer is a trusted front-end (see [`Parser::set_peer_trusted`]).
    pub fn set_peer_trusted(&mut self, trusted: bool) {
        self.parser.set_peer_trusted(trusted);
    }

    /// The buffer to read into: append (into its spare capacity; reserve
    /// [`READ_CHUNK`]), then call [`Conn::received`]. Consumed bytes are
    /// dropped first (a move only when unconsumed ones sit behind them and
    /// room runs short).
    pub fn read_buf(&mut self) -> &mut Vec<u8> {
        debug_assert!(!self.in_flight, "read the body through Body::read_buf");
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 0 && self.buf.capacity() - self.buf.len() < READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// `n` bytes were appended to [`Conn::read_buf`]; 0 is the client's
    /// EOF. Returns true when these bytes begin a request head (nothing was
    /// buffered before): its header deadline starts now ([`Conn::wait_until`]).
    pub fn received(&mut self, n: usize) -> bool {
        if n == 0 {
            self.eof = true;
            return false;
        }
        self.buf.len() - self.start == n
    }

    /// Append `bytes` read elsewhere (same as [`Conn::read_buf`] then
    /// [`Conn::received`]).
    pub fn extend(&mut self, bytes: &[u8]) -> bool {
        self.read_buf().extend_from_slice(bytes);
        self.received(bytes.len())
    }

    /// The client closed its side.
    pub fn eof(&mut self) {
        self.eof = true;
    }

    /// Whether the client closed its side.
    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Bytes read and not consumed: the next request's, or a PROXY header.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Consume `n` buffered bytes the driver dealt with itself (a PROXY
    /// header).
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        self.parser.reset();
    }

    /// Nothing of a next request is buffered: the connection is idle (new,
    /// or between requests).
    pub fn is_idle(&self) -> bool {
        self.start == self.buf.len()
    }

    /// Requests finished on this connection.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// For a driver that reads heads without blocking and serves them
    /// elsewhere (gthread's poller hands connections to its threads):
    /// whether to hand the connection over now. True when a whole head is
    /// buffered (its empty line came: `\n\n` or `\n\r\n`), the client
    /// closed its side, or more is buffered than a head may be under the
    /// limits (the parser refuses it). A partial head is not ready: its
    /// client may be slow, and holds nothing but its buffer meanwhile.
    pub fn head_ready(&self) -> bool {
        let b = self.buffered();
        if self.eof || b.len() > self.head_max() {
            return true;
        }
        b.iter()
            .enumerate()
            .any(|(i, &c)| c == b'\n' && matches!(&b[i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
    }

    /// The most a request head (with a PROXY header before it) may take
    /// under the parser's limits (a 0 limit as the parser reads it).
    fn head_max(&self) -> usize {
        let o = self.parser.options();
        let or = |v: usize, zero: usize| if v == 0 { zero } else { v };
        let line = or(
            o.limit_request_line,
            crate::parse::UNLIMITED_REQUEST_LINE_CAP,
        );
        let fields = or(o.limit_request_fields, 32768);
        let field = or(o.limit_request_field_size, 8190);
        (line + 2)
            .saturating_add(fields.saturating_mul(field + 2))
            .saturating_add(2 + 536) // the empty line, a PROXY v2 header
    }

    /// Parse the next request head from what is buffered.
    pub fn next_head(&mut self) -> HeadEvent<'_> {
        debug_assert!(!self.in_flight, "finish the last request first");
        let Conn {
            parser,
            buf,
            start,
            spare,
            keep_alive,
            eof,
            in_flight,
            ..
        } = self;
        let input = &buf[*start..];
        if input.is_empty() && *eof {
            return HeadEvent::End(Ending {
                answer: None,
                closing: Closing::Clean,
            });
        }
        match parser.parse(input) {
            Ok(Some((head, consumed))) => {
                let rest = &input[consumed..];
                let decoder = Decoder::new(&head.body, parser.options());
                // The body's bytes go to its own buffer (lent, so no
                // allocation once it has grown); pipelined bytes after a
                // Content-Length body stay here for the next request.
                let take = match head.body {
                    BodyKind::None => 0,
                    BodyKind::Length(n) => clamp(n, rest.len()),
                    BodyKind::Chunked => rest.len(),
                };
                let mut raw = std::mem::take(spare);
                raw.clear();
                raw.extend_from_slice(&rest[..take]);
                *start += consumed + take;
                *in_flight = true;
                let exchange = Exchange {
                    version: head.version,
                    head_method: &*head.method == b"HEAD",
                    request_keep_alive: head.keep_alive,
                    server_keep_alive: *keep_alive,
                };
                let body = Body::with_decoder(decoder, raw, head.expect_continue);
                HeadEvent::Request(Request {
                    head,
                    body,
                    exchange,
                })
            }
            Ok(None) if *eof => HeadEvent::End(Ending {
                // The client went away before a full request: nothing to answer.
                answer: None,
                closing: Closing::Clean,
            }),
            Ok(None) => HeadEvent::NeedMore,
            Err(e) => {
                *start = buf.len();
                HeadEvent::End(Ending {
                    answer: Some(Answer::Refused(e)),
                    closing: Closing::Unread,
                })
            }
        }
    }

    /// The request from [`Conn::next_head`] is over: take its body back and
    /// say what becomes of the connection.
    ///
    /// Keep-alive needs a response framed for it ([`Framing::keep_alive`]:
    /// the request, the setting, the lifecycle when the head was made, the
    /// application's headers and the body framing all agreed) and the body
    /// read to its end: before calling this with such a response, discard
    /// what the application left ([`Body::drain`] with [`DRAIN_MAX`]). A
    /// closing connection lingers when request bytes may remain unread.
    pub fn finish(&mut self, body: Body, response: Response) -> Next {
        self.in_flight = false;
        self.served += 1;
        let keep = match response {
            Response::Complete(framing) => framing.keep_alive && self.keep_alive && body.is_done(),
            Response::Failed | Response::Refused => false,
        };
        let pipelined = !self.is_idle();
        let closing = match response {
            _ if keep => None,
            Response::Refused => Some(if body.had_body || pipelined || body.pos < body.raw.len() {
                Closing::Unread
            } else {
                Closing::Clean
            }),
            _ => Some(if body.unread() || pipelined {
                Closing::Unread
            } else {
                Closing::Clean
            }),
        };
        let Body { mut raw, pos, .. } = body;
        if keep && pos < raw.len() {
            // Read past a chunked body: the next request's first bytes.
            self.buf.splice(self.start..self.start, raw.drain(pos..));
        }
        self.spare = raw;
        match closing {
            None => Next::KeepAlive,
            Some(c) => {
                self.start = self.buf.len();
                Next::Close(c)
            }
        }
    }

    /// The head deadline passed ([`Conn::wait_until`]): a 408 when part of
    /// a head came, a silent close when nothing did (an idle connection).
    pub fn head_timed_out(&mut self) -> Ending {
        let answer = (!self.is_idle()).then_some(Answer::HeadTimeout);
        self.start = self.buf.len();
        Ending {
            answer,
            closing: Closing::Clean,
        }
    }

    /// When the connection is closed unless a request head completes
    /// first, for a driver that checks deadlines itself. Ask when it was
    /// accepted, after each response, and when the first byte of a head
    /// arrives ([`Conn::received`] returns true). `stop_linger_until`: when
    /// a graceful stop began, plus [`STOP_LINGER`].
    ///
    /// - part of a head is buffered: `now + waits.header`, stop or not (a
    ///   started request gets its header timeout);
    /// - new: `now + waits.header`, at most [`STOP_LINGER`] once stopping;
    /// - after a response: `now + waits.keepalive`, at most until
    ///   `stop_linger_until`.
    pub fn wait_until(
        &self,
        now: Instant,
        waits: Waits,
        stop_linger_until: Option<Instant>,
    ) -> Instant {
        if !self.is_idle() {
            now + waits.header
        } else if self.served == 0 {
            let wait = match stop_linger_until {
                Some(_) => waits.header.min(STOP_LINGER),
                None => waits.header,
            };
            now + wait
        } else {
            let until = now + waits.keepalive;
            stop_linger_until.map_or(until, |l| until.min(l))
        }
    }

    /// A graceful stop began: the deadline of a connection waiting in a
    /// poller with `deadline`. An idle one (nothing sent since its last
    /// response, or at all) waits at most until `stop_linger_until`; one
    /// with part of a head keeps its header deadline.
    pub fn stop_deadline(&self, deadline: Instant, stop_linger_until: Instant) -> Instant {
        if self.is_idle() {
            deadline.min(stop_linger_until)
        } else {
            deadline
        }
    }
}

/// A lingering close ([`Closing::Unread`]) as a state: after the response
/// and a FIN (`shutdown(SHUT_WR)`), the driver reads and discards what the
/// client still sends until EOF, [`LINGER_IDLE`] without data or
/// [`LINGER_FOR`] in all, then closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Linger {
    until: Instant,
    idle_until: Instant,
}

/// What a lingering close does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LingerStep {
    /// Keep discarding; wait for data at most until this instant.
    WaitUntil(Instant),
    /// Close now.
    Close,
}

impl Linger {
    /// Begins now (after the FIN).
    pub fn start(now: Instant) -> Self {
        Linger {
            until: now + LINGER_FOR,
            idle_until: now + LINGER_IDLE,
        }
    }

    /// `n` bytes were read and discarded (0: EOF).
    pub fn received(&mut self, n: usize, now: Instant) -> LingerStep {
        if n == 0 || now >= self.until {
            return LingerStep::Close;
        }
        self.idle_until = self.until.min(now + LINGER_IDLE);
        LingerStep::WaitUntil(self.idle_until)
    }

    /// Nothing more to read now: how long to wait for more, or close
    /// (idle for [`LINGER_IDLE`], over [`LINGER_FOR`], or a quick stop).
    pub fn wait(&self, now: Instant, lifecycle: Lifecycle) -> LingerStep {
        if now >= self.until || now >= self.idle_until || lifecycle == Lifecycle::Quitting {
            LingerStep::Close
        } else {
            LingerStep::WaitUntil(self.idle_until)
        }
    }

    /// When the whole linger ends.
    pub fn until(&self) -> Instant {
        self.until
    }
}
