//! `h1::Conn` driven by a scripted client: bytes in, bytes out, verdicts;
//! no sockets, no threads, no Python. The `Driver` below does what a worker
//! does (read, parse, call the "app", frame the response, finish) with a
//! `Client` standing in for the socket.

#![allow(clippy::unwrap_used)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferricorn_http::date::DateCache;
use ferricorn_http::h1::{
    Answer, Body, CONTINUE, Chunk, Closing, Conn, DRAIN_MAX, Drain, Exchange, HeadEvent,
    LINGER_FOR, LINGER_IDLE, Lifecycle, Linger, LingerStep, Next, READ_CHUNK, Response,
    STOP_LINGER, Waits,
};
use ferricorn_http::parse::{BodyKind, Options};
use ferricorn_http::response::{BodyEncoder, BodyFraming, Framing, encode_head, error_response};

/// The client side of the socket: what it has sent, as the reads see it
/// (a read never crosses a send's boundary, and takes at most what it asks).
struct Client {
    sends: VecDeque<Vec<u8>>,
    /// It closed its side after the last send.
    closes: bool,
}

impl Client {
    fn new(sends: &[&[u8]]) -> Self {
        Client {
            sends: sends.iter().map(|s| s.to_vec()).collect(),
            closes: true,
        }
    }

    /// One `read(2)` of at most `max` bytes into `out`: `Some(n)`, or
    /// `None` when it would block (the client has not closed).
    fn read(&mut self, out: &mut Vec<u8>, max: usize) -> Option<usize> {
        let Some(front) = self.sends.front_mut() else {
            return self.closes.then_some(0);
        };
        let n = front.len().min(max);
        out.extend(front.drain(..n));
        if front.is_empty() {
            self.sends.pop_front();
        }
        Some(n)
    }
}

/// How the scripted app treats the request body.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Reads {
    All,
    Nothing,
}

/// The scripted app's response.
#[derive(Clone, Debug)]
struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
}

impl Reply {
    fn ok(body: &'static [u8]) -> Self {
        Reply {
            status: "200 OK",
            headers: vec![("Content-Type", "text/plain")],
            body,
        }
    }

    fn with_length(mut self) -> Self {
        let len: &'static str = Box::leak(self.body.len().to_string().into_boxed_str());
        self.headers.push(("Content-Length", len));
        self
    }

    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// What one request looked like to the app.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    line: String,
    body: Vec<u8>,
}

struct Driver {
    conn: Conn,
    client: Client,
    /// Everything the server wrote.
    out: Vec<u8>,
    seen: Vec<Seen>,
    reads: Reads,
    reply: Reply,
    /// The worker's lifecycle, as read when a response head is made;
    /// `term_after` requests in, it turns to `Draining` (a TERM arriving
    /// while the app runs).
    lifecycle: Lifecycle,
    term_during: Option<usize>,
    date: DateCache,
}

impl Driver {
    fn new(sends: &[&[u8]], keep_alive: bool) -> Self {
        Driver {
            conn: conn(keep_alive),
            client: Client::new(sends),
            out: Vec::new(),
            seen: Vec::new(),
            reads: Reads::All,
            reply: Reply::ok(b"hello").with_length(),
            lifecycle: Lifecycle::Running,
            term_during: None,
            date: DateCache::new(),
        }
    }

    fn out(&self) -> String {
        String::from_utf8_lossy(&self.out).into_owned()
    }

    /// Serve until the connection ends or would wait for the client;
    /// returns the last verdict (`None`: waiting with the connection open).
    fn run(&mut self) -> Option<Next> {
        loop {
            match self.conn.next_head() {
                HeadEvent::NeedMore => {
                    let buf = self.conn.read_buf();
                    buf.reserve(READ_CHUNK);
                    match self.client.read(buf, READ_CHUNK) {
                        Some(n) => {
                            self.conn.received(n);
                        }
                        None => return None,
                    }
                }
                HeadEvent::End(ending) => {
                    if let Some(answer) = ending.answer {
                        error_response(
                            answer.status(),
                            answer.reason(),
                            &answer.message(),
                            &self.date,
                            &mut self.out,
                        );
                    }
                    return Some(Next::Close(ending.closing));
                }
                HeadEvent::Request(req) => {
                    let line = format!(
                        "{} {}",
                        String::from_utf8_lossy(&req.head.method),
                        String::from_utf8_lossy(req.head.target)
                    );
                    let exchange = req.exchange;
                    let mut body = req.body;
                    let index = self.seen.len();
                    let (got, failed) = match self.reads {
                        Reads::All => match read_all(&mut body, &mut self.client, &mut self.out) {
                            Ok(b) => (b, false),
                            Err(_) => (Vec::new(), true),
                        },
                        Reads::Nothing => (Vec::new(), false),
                    };
                    self.seen.push(Seen { line, body: got });
                    if self.term_during == Some(index) {
                        self.lifecycle = Lifecycle::Draining;
                    }
                    let response = if failed {
                        error_response(500, "Internal Server Error", "", &self.date, &mut self.out);
                        Response::Failed
                    } else {
                        let ctx = exchange.response_context(self.lifecycle, Some(b"ferricorn"));
                        let framing = encode_head(
                            &mut self.out,
                            self.reply.status.as_bytes(),
                            &self.reply.headers,
                            &ctx,
                            &self.date,
                        )
                        .unwrap();
                        let mut enc = BodyEncoder::new(&framing);
                        enc.chunk(self.reply.body, &mut self.out);
                        enc.finish(&mut self.out);
                        if framing.keep_alive && drain(&mut body, &mut self.client, &mut self.out) {
                            Response::Complete(framing)
                        } else if framing.keep_alive {
                            Response::Failed
                        } else {
                            Response::Complete(framing)
                        }
                    };
                    let next = self.conn.finish(body, response);
                    if next != Next::KeepAlive {
                        return Some(next);
                    }
                }
            }
        }
    }
}

/// The app reads the whole body, as `wsgi.input.read()` would.
fn read_all(
    body: &mut Body,
    client: &mut Client,
    out: &mut Vec<u8>,
) -> Result<Vec<u8>, ferricorn_http::Error> {
    let mut got = Vec::new();
    loop {
        match body.next_data()? {
            Chunk::Data(d) => got.extend_from_slice(d),
            Chunk::End => return Ok(got),
            Chunk::NeedRead => fill(body, client, out)?,
        }
    }
}

/// One read for the body (the interim response first, when owed).
fn fill(
    body: &mut Body,
    client: &mut Client,
    out: &mut Vec<u8>,
) -> Result<(), ferricorn_http::Error> {
    if let Some(c) = body.take_continue() {
        out.extend_from_slice(c);
    }
    let (buf, want) = body.read_buf();
    let n = client.read(buf, want).unwrap_or(0);
    body.received(n)
}

/// What the server does before keeping a connection whose body the app
/// left: discard up to `DRAIN_MAX`. False: close instead.
fn drain(body: &mut Body, client: &mut Client, out: &mut Vec<u8>) -> bool {
    let mut budget = DRAIN_MAX;
    loop {
        match body.drain(&mut budget) {
            Ok(Drain::Done) => return true,
            Ok(Drain::OverBudget) | Err(_) => return false,
            Ok(Drain::NeedRead) => {
                if fill(body, client, out).is_err() {
                    return false;
                }
            }
        }
    }
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

/// A response framed to keep its connection.
const KEEP: Framing = Framing {
    kind: BodyFraming::Length(0),
    keep_alive: true,
    upgrade: false,
    status: 200,
};

/// A connection with default options.
fn conn(keep_alive: bool) -> Conn {
    Conn::new(Arc::new(Options::default()), keep_alive)
}

/// The request `c` has buffered (its body and facts; the head is dropped).
fn request(c: &mut Conn) -> (Body, Exchange) {
    match c.next_head() {
        HeadEvent::Request(r) => (r.body, r.exchange),
        other => panic!("no request: {other:?}"),
    }
}

// --- pipelining -----------------------------------------------------------

#[test]
fn two_and_three_requests_in_one_read() {
    for n in [2, 3] {
        let mut all = Vec::new();
        for i in 0..n {
            all.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        }
        let mut d = Driver::new(&[&all], true);
        assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
        let lines: Vec<_> = d.seen.iter().map(|s| s.line.clone()).collect();
        let want: Vec<_> = (0..n).map(|i| format!("GET /{i}")).collect();
        assert_eq!(lines, want);
        assert_eq!(count(&d.out(), "HTTP/1.1 200 OK"), n);
        assert_eq!(count(&d.out(), "Connection: keep-alive"), n);
        assert_eq!(d.conn.served(), n as u64);
    }
}

#[test]
fn pipelined_requests_with_bodies_split_at_every_offset() {
    let script: &[u8] = b"POST /1 HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
POST /2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n\
GET /3 HTTP/1.1\r\n\r\n";
    let whole = {
        let mut d = Driver::new(&[script], true);
        d.run();
        (d.seen, d.out.len())
    };
    assert_eq!(
        whole.0,
        vec![
            Seen {
                line: "POST /1".into(),
                body: b"hello".to_vec()
            },
            Seen {
                line: "POST /2".into(),
                body: b"abcde".to_vec()
            },
            Seen {
                line: "GET /3".into(),
                body: vec![]
            },
        ]
    );
    for at in 1..script.len() {
        let mut d = Driver::new(&[&script[..at], &script[at..]], true);
        assert_eq!(d.run(), Some(Next::Close(Closing::Clean)), "split at {at}");
        assert_eq!(d.seen, whole.0, "split at {at}");
        assert_eq!(d.out.len(), whole.1, "split at {at}");
    }
    // One byte per read.
    let bytes: Vec<&[u8]> = script.chunks(1).collect();
    let mut d = Driver::new(&bytes, true);
    d.run();
    assert_eq!(d.seen, whole.0);
}

#[test]
fn request_split_at_every_byte_offset() {
    let req: &[u8] = b"GET /x?y=1 HTTP/1.1\r\nHost: example\r\nX-A: b\r\n\r\n";
    for at in 1..req.len() {
        let mut d = Driver::new(&[&req[..at], &req[at..]], true);
        assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
        assert_eq!(d.seen.len(), 1, "split at {at}");
        assert_eq!(d.seen[0].line, "GET /x?y=1");
    }
}

#[test]
fn partial_head_waits_for_more() {
    let mut d = Driver::new(&[b"GET / HTTP/1.1\r\nHo"], true);
    d.client.closes = false;
    assert_eq!(d.run(), None);
    assert!(!d.conn.is_idle());
    assert!(d.out.is_empty());
    // The rest comes.
    d.client.sends.push_back(b"st: x\r\n\r\n".to_vec());
    assert_eq!(d.run(), None);
    assert_eq!(d.seen.len(), 1);
    assert!(d.conn.is_idle());
}

#[test]
fn received_reports_the_start_of_a_head() {
    let mut c = conn(true);
    assert!(c.extend(b"GE"));
    assert!(!c.extend(b"T / HTTP/1.1\r\n"));
    assert!(matches!(c.next_head(), HeadEvent::NeedMore));
    assert!(!c.extend(b"\r\n"));
    let (body, _) = request(&mut c);
    assert_eq!(
        c.finish(body, Response::Failed),
        Next::Close(Closing::Clean)
    );
}

#[test]
fn read_buf_compacts_without_cutting_a_partial_head() {
    let mut c = conn(true);
    // A first request, then most of a second one, in one read.
    let mut first = GET.to_vec();
    first.extend_from_slice(b"GET /second HTTP/1.1\r\nHost: ");
    c.extend(&first);
    let (body, _) = request(&mut c);
    assert_eq!(c.finish(body, Response::Complete(KEEP)), Next::KeepAlive);
    assert!(matches!(c.next_head(), HeadEvent::NeedMore));
    // Fill the buffer so the next read_buf compacts.
    let buf = c.read_buf();
    let room = buf.capacity() - buf.len();
    let pad = vec![b'a'; room.saturating_sub(10)];
    buf.extend_from_slice(&pad);
    let n = pad.len();
    c.received(n);
    assert!(matches!(c.next_head(), HeadEvent::NeedMore));
    let buf = c.read_buf();
    buf.extend_from_slice(b"\r\n\r\n");
    c.received(4);
    let HeadEvent::Request(req) = c.next_head() else {
        panic!("the head survived compaction")
    };
    assert_eq!(req.head.target, b"/second");
    assert_eq!(req.head.header(b"host").unwrap().len(), n);
}

// --- 100-continue -----------------------------------------------------------

const EXPECT: &[u8] = b"POST /up HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";

#[test]
fn continue_sent_once_when_the_app_reads_and_nothing_is_buffered() {
    let mut d = Driver::new(&[EXPECT, b"he", b"llo"], false);
    d.run();
    let out = d.out();
    assert!(
        out.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"),
        "{out}"
    );
    assert_eq!(count(&out, "100 Continue"), 1);
    assert_eq!(d.seen[0].body, b"hello");
}

#[test]
fn no_continue_when_the_body_came_with_the_head() {
    let mut all = EXPECT.to_vec();
    all.extend_from_slice(b"hello");
    let mut d = Driver::new(&[&all], false);
    d.run();
    assert!(!d.out().contains("100 Continue"));
    assert_eq!(d.seen[0].body, b"hello");
}

#[test]
fn continue_when_part_of_the_body_came_with_the_head_at_the_first_wait() {
    let mut all = EXPECT.to_vec();
    all.extend_from_slice(b"he");
    let mut d = Driver::new(&[&all, b"llo"], false);
    d.run();
    assert_eq!(count(&d.out(), "100 Continue"), 1);
    assert_eq!(d.seen[0].body, b"hello");
}

#[test]
fn no_continue_when_the_app_does_not_read() {
    let mut d = Driver::new(&[EXPECT], false);
    d.reads = Reads::Nothing;
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert!(!d.out().contains("100 Continue"));
}

#[test]
fn never_continue_on_http_1_0() {
    let req = b"POST /up HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";
    let mut d = Driver::new(&[req, b"hello"], false);
    d.run();
    assert!(!d.out().contains("100 Continue"));
    assert_eq!(d.seen[0].body, b"hello");
}

#[test]
fn take_continue_is_once_and_never_after_the_end() {
    let opts = Options::default();
    let mut b = Body::new(&BodyKind::Length(3), &opts, Vec::new(), true);
    assert!(b.continue_pending());
    assert_eq!(b.take_continue(), Some(CONTINUE));
    assert_eq!(b.take_continue(), None);
    let mut b = Body::new(&BodyKind::Length(0), &opts, Vec::new(), true);
    assert_eq!(b.take_continue(), None);
    // Buffered body bytes come first.
    let mut b = Body::new(&BodyKind::Length(3), &opts, b"ab".to_vec(), true);
    assert_eq!(b.take_continue(), None);
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"ab"));
    assert_eq!(b.take_continue(), Some(CONTINUE));
}

// --- early close --------------------------------------------------------------

#[test]
fn eof_mid_head_closes_silently() {
    let mut d = Driver::new(&[b"GET / HTTP/1.1\r\nHost"], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert!(d.out.is_empty());
    assert!(d.seen.is_empty());
}

#[test]
fn eof_before_any_byte_closes_silently() {
    let mut d = Driver::new(&[], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert!(d.out.is_empty());
}

#[test]
fn eof_after_a_complete_request_serves_it_first() {
    let mut d = Driver::new(&[GET], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(d.seen.len(), 1);
}

#[test]
fn eof_mid_body_is_an_error() {
    let mut d = Driver::new(&[b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert!(d.out().starts_with("HTTP/1.1 500"), "{}", d.out());
    let opts = Options::default();
    let mut b = Body::new(&BodyKind::Length(10), &opts, b"abc".to_vec(), false);
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"abc"));
    assert_eq!(b.received(0), Err(ferricorn_http::Error::IncompleteBody));
    assert_eq!(b.error(), Some(ferricorn_http::Error::IncompleteBody));
    let mut b = Body::new(&BodyKind::Chunked, &opts, b"3\r\nab".to_vec(), false);
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"ab"));
    assert_eq!(b.direct(), None);
    assert_eq!(b.eof(), Err(ferricorn_http::Error::IncompleteBody));
}

// --- bodies left unread -----------------------------------------------------

#[test]
fn body_left_unread_lingers_when_the_response_closes() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\nabc";
    let mut d = Driver::new(&[req], false);
    d.reads = Reads::Nothing;
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert!(d.out().contains("Connection: close"));
}

#[test]
fn small_body_left_unread_is_drained_and_the_connection_kept() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
    let mut d = Driver::new(&[req, b"hello", GET], true);
    d.reads = Reads::Nothing;
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(d.seen.len(), 2);
    assert_eq!(count(&d.out(), "Connection: keep-alive"), 2);
}

#[test]
fn large_body_left_unread_closes_after_the_drain_budget() {
    let head = b"POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n";
    let chunk = vec![b'x'; 50_000];
    let mut d = Driver::new(&[head, &chunk, &chunk, &chunk, &chunk], true);
    d.reads = Reads::Nothing;
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
}

#[test]
fn content_length_body_read_with_the_head_leaves_nothing_unread() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    let mut d = Driver::new(&[req], false);
    d.reads = Reads::Nothing;
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
}

#[test]
fn pipelined_bytes_left_at_close_linger() {
    let mut two = GET.to_vec();
    two.extend_from_slice(GET);
    let mut d = Driver::new(&[&two], false);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 1);
}

#[test]
fn unread_chunked_body_lingers() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut d = Driver::new(&[req], false);
    d.reads = Reads::Nothing;
    // Where a chunked body ends is unknown before decoding it.
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
}

#[test]
fn direct_reads_bypass_the_buffer() {
    let opts = Options::default();
    let mut b = Body::new(&BodyKind::Length(10), &opts, b"abc".to_vec(), false);
    assert_eq!(b.direct(), None);
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"abc"));
    assert_eq!(b.direct(), Some(7));
    b.direct_received(4).unwrap();
    assert_eq!(b.remaining(), Some(3));
    let (buf, want) = b.read_buf();
    assert_eq!(want, 3);
    buf.extend_from_slice(b"xyz");
    b.received(3).unwrap();
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"xyz"));
    assert_eq!(b.next_data().unwrap(), Chunk::End);
    assert!(b.is_done());
}

// --- refusals and timeouts ----------------------------------------------------

#[test]
fn a_refused_head_is_answered_then_lingers() {
    let mut d = Driver::new(&[b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert!(d.out().starts_with("HTTP/1.1 400"), "{}", d.out());
    assert!(d.out().contains("Connection: close"));
}

#[test]
fn refused_after_the_head() {
    let opts = Arc::new(Options::default());
    let mut c = Conn::new(opts.clone(), true);
    c.extend(GET);
    let (body, _) = request(&mut c);
    assert_eq!(
        c.finish(body, Response::Refused),
        Next::Close(Closing::Clean)
    );
    let mut c = Conn::new(opts, true);
    c.extend(b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab");
    let (body, _) = request(&mut c);
    assert_eq!(
        c.finish(body, Response::Refused),
        Next::Close(Closing::Unread)
    );
}

#[test]
fn header_timeout_408_only_for_a_partial_head() {
    let mut c = conn(true);
    assert_eq!(c.head_timed_out().answer, None);
    c.extend(b"GET / HT");
    assert!(matches!(c.next_head(), HeadEvent::NeedMore));
    let e = c.head_timed_out();
    assert_eq!(e.answer, Some(Answer::HeadTimeout));
    assert_eq!(e.closing, Closing::Clean);
    assert_eq!(Answer::HeadTimeout.status(), 408);
}

// --- keep-alive verdicts ----------------------------------------------------

#[test]
fn term_mid_request_answers_connection_close_then_closes() {
    let mut two = GET.to_vec();
    two.extend_from_slice(GET);
    two.extend_from_slice(GET);
    let mut d = Driver::new(&[&two], true);
    d.term_during = Some(1);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 2);
    let out = d.out();
    let second = out.rfind("HTTP/1.1 200").unwrap();
    assert!(out[..second].contains("Connection: keep-alive"));
    assert!(out[second..].contains("Connection: close"));
}

#[test]
fn retiring_and_draining_never_keep_alive() {
    for lc in [
        Lifecycle::Retiring,
        Lifecycle::Draining,
        Lifecycle::Quitting,
    ] {
        let mut d = Driver::new(&[GET], true);
        d.lifecycle = lc;
        assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
        assert!(d.out().contains("Connection: close"), "{lc:?}");
    }
    assert!(Lifecycle::Running.allows_keep_alive());
    assert!(!Lifecycle::Running.is_stopping());
    assert!(Lifecycle::Draining.is_stopping());
}

#[test]
fn keep_alive_off_closes_every_response() {
    let mut d = Driver::new(&[&[GET, GET].concat()], false);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 1);
    assert!(d.out().contains("Connection: close"));
}

#[test]
fn keep_alive_off_single_request_closes_clean() {
    // The sync worker's case: one read, one write, a plain close.
    let mut d = Driver::new(&[GET], false);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(count(&d.out(), "HTTP/1.1 "), 1);
}

#[test]
fn http_1_0_keep_alive_only_when_asked() {
    let plain: &[u8] = b"GET / HTTP/1.0\r\n\r\n";
    let mut d = Driver::new(&[&[plain, plain].concat()], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 1);
    assert!(d.out().contains("Connection: close"));

    let ka: &[u8] = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let mut d = Driver::new(&[ka, ka], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(d.seen.len(), 2);
    assert_eq!(count(&d.out(), "Connection: keep-alive"), 2);
}

#[test]
fn connection_close_from_the_client() {
    let req = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
    let mut d = Driver::new(&[req], true);
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert!(d.out().contains("Connection: close"));
}

#[test]
fn connection_close_from_the_app() {
    let mut d = Driver::new(&[&[GET, GET].concat()], true);
    d.reply = Reply::ok(b"x").with_length().header("Connection", "close");
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 1);
    assert!(d.out().contains("Connection: close"));
}

#[test]
fn response_without_length_chunked_on_1_1_close_on_1_0() {
    let mut d = Driver::new(&[GET, GET], true);
    d.reply = Reply::ok(b"hello");
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(d.seen.len(), 2);
    assert_eq!(count(&d.out(), "Transfer-Encoding: chunked"), 2);
    assert!(d.out().contains("5\r\nhello\r\n0\r\n\r\n"));

    let ka: &[u8] = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
    let mut d = Driver::new(&[&[ka, ka].concat()], true);
    d.reply = Reply::ok(b"hello");
    assert_eq!(d.run(), Some(Next::Close(Closing::Unread)));
    assert_eq!(d.seen.len(), 1);
    let out = d.out();
    assert!(
        out.contains("Connection: close") && !out.contains("chunked"),
        "{out}"
    );
    assert!(out.ends_with("\r\n\r\nhello"));
}

#[test]
fn head_responses_keep_alive_without_a_body() {
    let req = b"HEAD / HTTP/1.1\r\n\r\n";
    let mut d = Driver::new(&[req, req], true);
    d.reply = Reply::ok(b"hello");
    assert_eq!(d.run(), Some(Next::Close(Closing::Clean)));
    assert_eq!(d.seen.len(), 2);
    let out = d.out();
    assert!(!out.contains("hello") && !out.contains("chunked"), "{out}");
    assert_eq!(count(&out, "Connection: keep-alive"), 2);
}

#[test]
fn no_body_statuses_keep_alive_without_length() {
    for status in ["204 No Content", "304 Not Modified"] {
        let mut d = Driver::new(&[GET, GET], true);
        d.reply = Reply {
            status,
            headers: vec![],
            body: b"ignored",
        };
        assert_eq!(d.run(), Some(Next::Close(Closing::Clean)), "{status}");
        assert_eq!(d.seen.len(), 2);
        let out = d.out();
        assert!(
            !out.contains("ignored") && !out.contains("chunked"),
            "{out}"
        );
    }
    // A 1xx final status from an app: no body either.
    let mut d = Driver::new(&[GET], true);
    d.reply = Reply {
        status: "101 Switching Protocols",
        headers: vec![("Connection", "upgrade"), ("Upgrade", "websocket")],
        body: b"",
    };
    d.run();
    assert!(d.out().contains("Connection: upgrade"));
}

#[test]
fn interim_responses_only_on_1_1() {
    let mut c = conn(true);
    c.extend(b"GET / HTTP/1.0\r\n\r\n");
    let (_, exchange) = request(&mut c);
    assert!(!exchange.interim_allowed());
    let mut c = conn(true);
    c.extend(GET);
    let (_, exchange) = request(&mut c);
    assert!(exchange.interim_allowed());
}

#[test]
fn a_failed_app_closes() {
    let mut c = conn(true);
    c.extend(GET);
    let (body, _) = request(&mut c);
    assert_eq!(
        c.finish(body, Response::Failed),
        Next::Close(Closing::Clean)
    );
}

#[test]
fn reset_serves_a_new_connection() {
    let mut c = conn(false);
    c.extend(b"GET / HT");
    c.eof();
    assert!(matches!(c.next_head(), HeadEvent::End(_)));
    c.reset();
    assert!(c.is_idle() && !c.is_eof() && c.served() == 0);
    c.extend(GET);
    assert!(matches!(c.next_head(), HeadEvent::Request(_)));
}

#[test]
fn proxy_header_bytes_are_consumed_by_the_driver() {
    let mut c = conn(true);
    let mut bytes = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec();
    let n = bytes.len();
    bytes.extend_from_slice(GET);
    c.extend(&bytes);
    assert!(c.buffered().starts_with(b"PROXY"));
    c.consume(n);
    assert!(matches!(c.next_head(), HeadEvent::Request(_)));
}

// --- deadlines and lingering ------------------------------------------------

#[test]
fn wait_until_by_state_and_stop() {
    let now = Instant::now();
    let waits = Waits {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(5),
    };
    let mut c = conn(true);
    // New.
    assert_eq!(c.wait_until(now, waits, None), now + waits.header);
    let stop = now + STOP_LINGER;
    assert_eq!(c.wait_until(now, waits, Some(stop)), now + STOP_LINGER);
    // After a response.
    c.extend(GET);
    let (body, _) = request(&mut c);
    assert_eq!(c.finish(body, Response::Complete(KEEP)), Next::KeepAlive);
    assert_eq!(c.wait_until(now, waits, None), now + waits.keepalive);
    assert_eq!(c.wait_until(now, waits, Some(stop)), stop);
    assert_eq!(c.stop_deadline(now + waits.keepalive, stop), stop);
    // A head begun: its header time, stop or not.
    assert!(c.extend(b"GET"));
    assert_eq!(c.wait_until(now, waits, Some(stop)), now + waits.header);
    assert_eq!(
        c.stop_deadline(now + waits.header, stop),
        now + waits.header
    );
}

#[test]
fn linger_steps() {
    let t0 = Instant::now();
    let mut l = Linger::start(t0);
    assert_eq!(
        l.wait(t0, Lifecycle::Running),
        LingerStep::WaitUntil(t0 + LINGER_IDLE)
    );
    assert_eq!(l.wait(t0, Lifecycle::Quitting), LingerStep::Close);
    let t1 = t0 + Duration::from_millis(300);
    assert_eq!(l.received(100, t1), LingerStep::WaitUntil(t1 + LINGER_IDLE));
    assert_eq!(
        l.wait(t1 + LINGER_IDLE, Lifecycle::Running),
        LingerStep::Close
    );
    assert_eq!(l.received(0, t1), LingerStep::Close);
    assert_eq!(l.received(1, t0 + LINGER_FOR), LingerStep::Close);
    assert_eq!(l.until(), t0 + LINGER_FOR);
    assert!(Closing::Unread.lingers(Lifecycle::Draining));
    assert!(!Closing::Unread.lingers(Lifecycle::Quitting));
    assert!(!Closing::Clean.lingers(Lifecycle::Running));
}

#[test]
fn buffers_are_reused_across_requests() {
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    let mut reqs = Vec::new();
    for _ in 0..50 {
        reqs.extend_from_slice(req);
    }
    let mut d = Driver::new(&[&reqs], true);
    d.run();
    assert_eq!(d.seen.len(), 50);
    assert!(d.seen.iter().all(|s| s.body == b"abc"));
}

#[test]
fn no_buffer_is_reallocated_per_request() {
    // Keep-alive requests with bodies on one connection: after the first,
    // the read buffer and the body buffer are the same allocations.
    let req: &[u8] = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody";
    let mut c = conn(true);
    let mut seen: Option<(*const u8, *const u8)> = None;
    for _ in 0..20 {
        let buf = c.read_buf();
        buf.reserve(READ_CHUNK);
        buf.extend_from_slice(req);
        let read_ptr = buf.as_ptr();
        c.received(req.len());
        let HeadEvent::Request(r) = c.next_head() else {
            panic!()
        };
        let mut body = r.body;
        assert_eq!(body.next_data().unwrap(), Chunk::Data(b"body"));
        let body_ptr = body.read_buf().0.as_ptr();
        assert_eq!(c.finish(body, Response::Complete(KEEP)), Next::KeepAlive);
        match seen {
            None => seen = Some((read_ptr, body_ptr)),
            Some(ptrs) => assert_eq!(ptrs, (read_ptr, body_ptr)),
        }
    }
}

/// `readline()` as `wsgi.input` does it: look at the decoded bytes, take
/// up to and including the first `\n`, leave the rest.
fn readline(body: &mut Body, client: &mut Client, out: &mut Vec<u8>) -> Vec<u8> {
    let mut line = Vec::new();
    loop {
        match body.data().unwrap() {
            Chunk::Data(d) => {
                let take = d
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(d.len(), |i| i + 1);
                line.extend_from_slice(&d[..take]);
                let done = d[take - 1] == b'\n';
                body.consume(take);
                if done {
                    return line;
                }
            }
            Chunk::End => return line,
            Chunk::NeedRead => fill(body, client, out).unwrap(),
        }
    }
}

#[test]
fn lines_of_a_chunked_body_split_at_every_offset() {
    let wire: &[u8] = b"5\r\nab\ncd\r\n4\r\n\nef\n\r\n3\r\nxyz\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    for at in 0..wire.len() {
        let opts = Options::default();
        let mut body = Body::new(&BodyKind::Chunked, &opts, wire[..at].to_vec(), false);
        let mut client = Client::new(&[&wire[at..]]);
        let mut out = Vec::new();
        let mut lines = Vec::new();
        loop {
            let l = readline(&mut body, &mut client, &mut out);
            if l.is_empty() {
                break;
            }
            lines.push(String::from_utf8(l).unwrap());
        }
        assert_eq!(lines, ["ab\n", "cd\n", "ef\n", "xyz"], "split at {at}");
        assert!(body.is_done());
        assert_eq!(body.available(), 0);
    }
}

#[test]
fn partial_reads_leave_the_rest_in_place() {
    let opts = Options::default();
    let mut b = Body::new(&BodyKind::Length(6), &opts, b"abcd".to_vec(), false);
    assert_eq!(b.known_len(), Some(6));
    assert_eq!(b.data().unwrap(), Chunk::Data(b"abcd"));
    b.consume(1);
    assert_eq!(b.known_len(), Some(5));
    assert_eq!(b.available(), 3);
    assert_eq!(b.direct(), None, "decoded bytes wait");
    // A read while decoded bytes wait keeps them, in front.
    let (buf, want) = b.read_buf();
    assert_eq!(want, 2);
    buf.extend_from_slice(b"ef");
    b.received(2).unwrap();
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"bcd"));
    assert_eq!(b.next_data().unwrap(), Chunk::Data(b"ef"));
    assert_eq!(b.next_data().unwrap(), Chunk::End);
}

#[test]
fn conn_and_body_move_between_threads() {
    // gthread hands connections to app threads; a body goes to Python
    // objects that any thread may use.
    fn send<T: Send + 'static>() {}
    send::<Conn>();
    send::<Body>();
    send::<Exchange>();
}

// --- heads read in a poller ------------------------------------------------

#[test]
fn a_head_is_ready_once_its_empty_line_came() {
    let head = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for cut in 1..head.len() {
        let mut c = conn(true);
        c.extend(&head[..cut]);
        assert!(!c.head_ready(), "ready after {cut} bytes");
        c.extend(&head[cut..]);
        assert!(c.head_ready(), "not ready with the whole head (cut {cut})");
    }
    // Bare LF line ends count too (the parser decides what to accept).
    let mut c = conn(true);
    c.extend(b"GET / HTTP/1.1\nHost: x\n\n");
    assert!(c.head_ready());
    // The client closed: hand it over (the parser says what becomes of it).
    let mut c = conn(true);
    c.extend(b"GET / HT");
    c.eof();
    assert!(c.head_ready());
    // More than a head may be: hand it over to be refused.
    let mut c = Conn::new(
        Arc::new(Options {
            limit_request_line: 100,
            limit_request_fields: 2,
            limit_request_field_size: 100,
            ..Options::default()
        }),
        true,
    );
    c.extend(&[b'a'; 1200]);
    assert!(c.head_ready());
    // A served request's leftovers: only a whole next head is ready.
    let mut c = conn(true);
    c.extend(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\n");
    let _ = request(&mut c);
    assert!(!c.head_ready());
}
