//! The evloop worker: one thread serves many keep-alive connections with a
//! readiness loop (mio) and calls the app inline, on that same thread.
//!
//! The thread holds the GIL for its whole life and releases it only while
//! it waits in the poller (and where the shared request path releases it
//! around blocking socket calls), so there is no hand-off between threads
//! per request: for a fast, CPU-bound app this is the cheapest way to serve
//! keep-alive clients. The price: while the app runs, every other connection
//! of the worker waits, so an app that blocks on I/O belongs on `gthread`.
//!
//! Loop: wait for readiness (listeners, connections, the signal pipe); read
//! what a ready connection has without blocking (`MSG_DONTWAIT`, until a
//! short read: registrations are edge-triggered); as soon as a request head
//! is complete (the connection's `h1::Conn` says), serve it through
//! `conn::serve_request` (the path every worker shares); serve every complete pipelined request already read, at most
//! `FAIR_SHARE` in a row before the other connections get a turn. Responses
//! are held back until the batch of ready connections has had its turn (or
//! `HOLD` after the first one was held), then released together, so a
//! sleeping client is woken once per batch rather than once per response
//! (docs/profile.md). They wait in memory (`wsgi::Held`), at no syscall: a
//! response made in one piece (a list or tuple body) under 64 KiB always; a
//! streamed one while other connections of the batch wait and its chunks
//! come quickly.
//!
//! Invariants:
//! - what a connection holds (`wsgi::Held`) is sent before anything else is
//!   written to it (its next request, an error answer) and before it is
//!   shut down;
//! - sockets stay in blocking mode with `SO_RCVTIMEO`/`SO_SNDTIMEO` set to
//!   `--timeout`: the loop itself only reads with `MSG_DONTWAIT`, while the
//!   app's `wsgi.input` reads and the response writes block on that one
//!   connection (bounded by `--timeout`), as in the sync worker;
//! - `active` counts open connections and is capped by `--worker-connections`
//!   (the listeners are not accepted from while at the cap);
//! - with other workers, new connections are taken in turns
//!   (`workers::accepts`): a worker with open connections waits a little,
//!   then takes only its share of the accept queue, so keep-alive
//!   connections spread over the workers;
//! - every connection has one deadline: its first request head within
//!   `--header-timeout` of the connection (408 if part of it came, a silent
//!   close if nothing did), the next one within `--keep-alive` of the last
//!   response, a started head within `--header-timeout` of its first byte;
//!   a sweep closes expired ones every `SWEEP`;
//! - the heartbeat is beaten every loop turn and after every request; the
//!   poll waits at most half `--timeout`, so only a stuck app call (or a
//!   write to a client that stopped reading) lets the master's timeout fire;
//! - a connection closed with request bytes unread lingers without blocking
//!   the loop (`Turn::Linger`, `discard`: FIN, then what comes is discarded
//!   until EOF, `conn::LINGER_IDLE` without data or `conn::LINGER_FOR`);
//! - TERM: stop accepting (what the listen backlog holds is still taken,
//!   as the cap allows), answer requests already read with
//!   `Connection: close`, keep connections that have sent nothing since
//!   their last response (idle keep-alive, or new) for `conn::STOP_LINGER`
//!   and answer what comes on them with `Connection: close`, give partial
//!   heads their header timeout (within `--graceful-timeout`);
//!   QUIT/INT: leave now. Once `--max-requests` is reached (replacement asked
//!   for) the worker accepts no more and responses carry
//!   `Connection: close`, so clients reconnect to whichever worker accepts,
//!   and the master's TERM finds nothing to cut.
//!
//! gunicorn counterpart: none (gunicorn's nearest is its gevent/eventlet
//! workers); the lifecycle follows `workers/base.py` like the others.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ferricorn_http::h1::{self, Closing, HeadEvent, Next};
use ferricorn_http::parse::Options;
use mio::{Events, Interest, Poll, Token};
use pyo3::prelude::*;

use super::Worker;
use super::accepts::Accepts;
use super::conn;
use super::listening::Listening;
use super::polled::{self, Core, Read};
use super::slab::Slab;
use crate::glogging;
use crate::stream::Stream;
use crate::wsgi;
use crate::wsgi::environ::AppContext;

const SIGNAL_PIPE: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// Connection tokens start here (listener tokens sit below).
const CONN_BASE: usize = 1 << 20;
/// Pipelined requests served in a row on one connection before the others get a turn.
const FAIR_SHARE: u32 = 16;
/// A batch's held responses go out once a turn ends this long after the
/// first was held (the same bound as a streamed body's, `wsgi::HOLD_FOR`).
const HOLD: Duration = wsgi::HOLD_FOR;
/// How often deadlines are checked.
const SWEEP: Duration = Duration::from_millis(100);

/// A client connection and what was read of its next request.
struct Connection {
    /// The socket, its HTTP/1 state, its deadline (shared with asgi).
    core: Core,
    /// Requests served on it.
    served: u64,
    /// Complete requests were left buffered for the next turn (fairness).
    more: bool,
    /// Its `gunicorn.socket`, made at its first request and closed with it.
    socket: wsgi::extras::SocketSlot,
    /// Its responses held back for the batch (see the module's header).
    held: wsgi::Held,
    /// Closing with request bytes unread: its write side is shut down and
    /// what comes is discarded until EOF or this instant (`conn::close`).
    lingering: Option<Instant>,
}

/// What a turn on a connection left it as.
#[derive(Debug, PartialEq, Eq)]
enum Turn {
    /// Wait for the next readiness event.
    Wait,
    /// More may be readable: serve it again after the other ready ones.
    Again,
    /// Close it.
    Close,
    /// Close it, lingering first: request bytes may remain unread.
    Linger,
}

/// Per-worker settings and state the connection turns need.
struct Ctx<'a> {
    app: &'a AppContext,
    /// The parser's settings, shared by every connection's HTTP/1 state.
    parser_options: Arc<Options>,
    servers: Vec<(String, String)>,
    policy: conn::Policy,
    keepalive: bool,
    keepalive_for: Duration,
    header_for: Duration,
    /// What each non-blocking read lands in before it is appended to a connection's buffer.
    scratch: Vec<u8>,
}

pub fn run(py: Python<'_>, worker: &mut Worker<'_>, app: &AppContext) {
    if worker.setup.settings.threads() > 1 {
        glogging::warning!("--threads has no effect on the evloop worker: it serves on one thread");
    }
    if let Err(e) = serve(py, worker, app) {
        glogging::error!("Exception in worker process: {e}");
    }
}

fn serve(py: Python<'_>, worker: &mut Worker<'_>, app: &AppContext) -> io::Result<()> {
    let setup = worker.setup;
    let settings = setup.settings;
    let timeout = settings.timeout();
    let io_timeout = super::io_timeout(timeout);
    let policy = conn::Policy::from_settings(settings);
    let header_for = policy
        .timeouts
        .header
        .or(io_timeout)
        .unwrap_or(Duration::from_secs(30));
    let keepalive = settings.keepalive();
    let mut ctx = Ctx {
        app,
        parser_options: Arc::new(app.parser_options().clone()),
        servers: setup
            .listeners
            .iter()
            .map(|l| l.server_name_port())
            .collect(),
        policy,
        keepalive: keepalive > 0.0,
        keepalive_for: Duration::from_secs_f64(keepalive.max(0.0)),
        header_for,
        scratch: vec![0; h1::READ_CHUNK],
    };

    let poll = Poll::new()?;
    super::register_sources(poll.registry(), worker, SIGNAL_PIPE, LISTENER_BASE)?;
    let mut lp = Loop {
        poll,
        events: Events::with_capacity(256),
        conns: Slab::default(),
        ready: Vec::new(),
        todo: Vec::new(),
        held: Vec::new(),
        held_since: Instant::now(),
        listening: Listening::new(setup.listeners),
        accepts: Accepts::new(settings.workers()),
        next_sweep: Instant::now() + SWEEP,
        wait: super::loop_wait(timeout),
        io_timeout,
        max_conns: settings.get("worker_connections").as_int().max(1) as usize,
        graceful: Duration::from_secs_f64(settings.graceful_timeout().max(0.0)),
    };
    let mut signalled = true;
    loop {
        worker.notify();
        if (std::mem::take(&mut signalled) && worker.handle_signals()) || worker.quitting() {
            return Ok(()); // QUIT/INT: leave now, connections and all.
        }
        lp.stop_if_stopping(py, &mut ctx, worker);
        let drain = lp.listening.draining_backlog(lp.conns.len(), lp.max_conns);
        if lp
            .listening
            .end(lp.conns.len(), lp.max_conns, Instant::now())
            .is_some()
        {
            return Ok(());
        }
        signalled = lp.wait(py, drain)?;
        lp.serve_ready(py, &mut ctx, worker);
        if worker.quitting() {
            // QUIT/INT interrupted an app call: its answer goes, then we do.
            lp.send_held(py);
            return Ok(());
        }
        lp.accept(py, &mut ctx, worker);
        lp.send_held(py);
        lp.sweep(py, worker);
    }
}

/// The worker's connections, its listeners, and what their turns leave to do.
struct Loop<'a> {
    poll: Poll,
    events: Events,
    conns: Slab<Connection>,
    /// Connections to give a turn without waiting (`Turn::Again`, lingering).
    ready: Vec<usize>,
    /// This pass's connections with a turn due.
    todo: Vec<usize>,
    /// Connections holding responses of this batch. Each response sent on
    /// loopback wakes the client if it sleeps (an inter-processor
    /// interrupt, costly in a VM: ~6 us of system time per response for a
    /// Flask app, docs/profile.md); sent together, they wake it once.
    held: Vec<usize>,
    held_since: Instant,
    listening: Listening<'a>,
    /// An idle worker takes a connection at once; see `Accepts`.
    accepts: Accepts,
    next_sweep: Instant,
    /// The longest wait for events (the heartbeat's pace).
    wait: Duration,
    io_timeout: Option<Duration>,
    /// `--worker-connections`.
    max_conns: usize,
    graceful: Duration,
}

impl Loop<'_> {
    /// Graceful stop: no new connections; serve what was already sent with
    /// `Connection: close`; one with nothing in progress (idle keep-alive,
    /// or new and silent) is kept for a request that may be on its way
    /// (`conn::STOP_LINGER`).
    fn stop_if_stopping(&mut self, py: Python<'_>, ctx: &mut Ctx<'_>, worker: &mut Worker<'_>) {
        let registry = self.poll.registry();
        let Some(stop) = self
            .listening
            .stop_if_stopping(worker, registry, self.graceful)
        else {
            return;
        };
        for i in self.conns.indices() {
            self.give_turn(py, ctx, worker, i, false, |c, t| match t {
                Turn::Wait => {
                    // Nothing sent since the last response (or at all): a
                    // request may be on its way, until the stop's linger.
                    c.core.stopping(stop.linger_until);
                    Turn::Wait
                }
                t => t,
            });
        }
        self.send_held(py);
    }

    /// Wait for events (not while turns or the backlog are due) and note
    /// what they make due. Returns whether the signal pipe was readable.
    fn wait(&mut self, py: Python<'_>, drain: bool) -> io::Result<bool> {
        let now = Instant::now();
        // A connection waiting to be accepted: now (next turn) or once a
        // deferral ends (see `Accepts`).
        let accept_at = (self.listening.accepting()
            && self.conns.len() < self.max_conns
            && self.listening.any_waiting())
        .then(|| {
            self.accepts
                .wait_until(self.conns.len(), now)
                .unwrap_or(now)
        });
        let poll_for = if self.ready.is_empty() && !drain {
            let wake = accept_at.map_or(self.next_sweep, |t| t.min(self.next_sweep));
            wake.saturating_duration_since(now).min(self.wait)
        } else {
            Duration::ZERO
        };
        let (poll, events) = (&mut self.poll, &mut self.events);
        if let Err(e) = py.detach(|| poll.poll(events, Some(poll_for))) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.todo.clear();
        self.todo.append(&mut self.ready);
        let mut signalled = false;
        for ev in &self.events {
            match ev.token() {
                SIGNAL_PIPE => signalled = true,
                Token(t) if t >= CONN_BASE => self.todo.push(t - CONN_BASE),
                Token(t) => self.listening.ready(t - LISTENER_BASE),
            }
        }
        Ok(signalled)
    }

    /// A turn for each connection with one due. Their responses are held
    /// and go together after the batch (see `held`), at most `HOLD` after
    /// the first.
    fn serve_ready(&mut self, py: Python<'_>, ctx: &mut Ctx<'_>, worker: &mut Worker<'_>) {
        let todo = std::mem::take(&mut self.todo);
        let last = todo.len().saturating_sub(1);
        for (n, &i) in todo.iter().enumerate() {
            if worker.quitting() {
                break;
            }
            self.give_turn(py, ctx, worker, i, n < last, |_, t| t);
            if !self.held.is_empty() && self.held_since.elapsed() >= HOLD {
                self.send_held(py);
            }
        }
        self.todo = todo;
    }

    /// Accept while under the connection cap (with other workers: in
    /// turns, see `Accepts`); once stopping, what the backlog still holds.
    /// A new connection's request often came with it, so it gets a turn at
    /// once.
    fn accept(&mut self, py: Python<'_>, ctx: &mut Ctx<'_>, worker: &mut Worker<'_>) {
        self.listening
            .pause_if_retiring(worker, self.poll.registry());
        let accepting = self.listening.accepting();
        for li in 0..self.listening.listeners().len() {
            if accepting && !worker.takes_new() {
                continue;
            }
            let (open, max) = (self.conns.len(), self.max_conns);
            let mut budget = self.listening.budget(li, &mut self.accepts, open, max);
            while self.listening.may_take(li, budget, self.conns.len(), max)
                && (!accepting || worker.takes_new())
            {
                budget -= 1;
                if let Some(new) = self.listening.accept(li) {
                    let core = Core::accepted(
                        new,
                        li,
                        &ctx.parser_options,
                        ctx.keepalive,
                        self.io_timeout,
                        ctx.header_for,
                        accepting,
                    );
                    let Some(i) = self.admit(core) else {
                        continue;
                    };
                    self.give_turn(py, ctx, worker, i, false, |_, t| t);
                }
                // Served and closed already: still idle.
                budget = budget.max(self.accepts.free(self.conns.len()));
            }
        }
    }

    /// Every `SWEEP`: check the master is still there, and close the
    /// connections past their deadline (a partial head gets its 408).
    fn sweep(&mut self, py: Python<'_>, worker: &mut Worker<'_>) {
        let now = Instant::now();
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now + SWEEP;
        worker.stop_if_orphaned();
        for i in self.conns.indices() {
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            if !c.core.expired(now) {
                continue;
            }
            // A 408 when part of a head came (after what is held), a
            // silent close when nothing did.
            if let Some(ending) = c.core.timed_out() {
                if send_out(py, c) {
                    c.core.end(py, ending);
                }
            }
            self.settle(py, i, Turn::Close);
        }
    }

    /// A connection just accepted, registered with the poller; `None`
    /// when the poller refused it (it is closed then).
    fn admit(&mut self, core: Core) -> Option<usize> {
        let c = Connection {
            core,
            served: 0,
            more: false,
            socket: Default::default(),
            held: Default::default(),
            lingering: None,
        };
        let registry = self.poll.registry();
        polled::admit(
            &mut self.conns,
            c,
            |c| &c.core,
            registry,
            CONN_BASE,
            Interest::READABLE,
        )
    }

    /// Give connection `i` a turn (`others_follow`: more of the batch wait
    /// after it), let `adjust` see what the turn decided, note what it
    /// holds, and apply the decision.
    fn give_turn(
        &mut self,
        py: Python<'_>,
        ctx: &mut Ctx<'_>,
        worker: &mut Worker<'_>,
        i: usize,
        others_follow: bool,
        adjust: impl FnOnce(&mut Connection, Turn) -> Turn,
    ) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        c.held.others_follow.store(others_follow, Ordering::Relaxed);
        let t = turn(py, ctx, worker, c);
        c.held.others_follow.store(false, Ordering::Relaxed);
        let t = adjust(c, t);
        // Note that the connection holds responses back, if it does.
        if c.held.out.get_mut().map_or(true, |o| !o.is_empty()) {
            if self.held.is_empty() {
                self.held_since = Instant::now();
            }
            self.held.push(i);
        }
        self.settle(py, i, t);
    }

    /// Send every held response; a connection whose send fails is closed.
    fn send_held(&mut self, py: Python<'_>) {
        let held = std::mem::take(&mut self.held);
        for &i in &held {
            // (A closed connection's slot may hold a newer one: it then holds nothing or its own.)
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            if !send_out(py, c) {
                self.settle(py, i, Turn::Close);
            }
        }
        self.held = held;
        self.held.clear();
    }

    /// Apply what a turn decided: requeue, or deregister and close.
    fn settle(&mut self, py: Python<'_>, i: usize, turn: Turn) {
        match turn {
            Turn::Wait => {}
            Turn::Again => self.ready.push(i),
            Turn::Close => {
                if let Some(mut c) = self.conns.remove(i) {
                    send_out(py, &mut c);
                    // FIN after the response, before the fd goes.
                    c.core.close(self.poll.registry());
                }
            }
            Turn::Linger => {
                let Some(c) = self.conns.get_mut(i) else {
                    return;
                };
                if !send_out(py, c) {
                    return self.settle(py, i, Turn::Close);
                }
                // FIN after the response; then `discard` reads what comes
                // (this turn's reads already emptied the socket or the next
                // turn comes at once) until EOF or the sweep's deadline.
                c.core.stream.shutdown_write();
                let now = Instant::now();
                c.lingering = Some(now + conn::LINGER_FOR);
                c.core.deadline = now + conn::LINGER_IDLE;
                self.ready.push(i);
            }
        }
    }
}

/// Send what the connection holds: without blocking while the socket takes
/// it, then (a client slow to read) waiting without the GIL, bounded by the
/// socket's send timeout. False when the connection failed.
fn send_out(py: Python<'_>, c: &mut Connection) -> bool {
    send_pending(py, &c.core.stream, &mut c.held)
}

fn send_pending(py: Python<'_>, stream: &Arc<Stream>, held: &mut wsgi::Held) -> bool {
    let out = held.out.get_mut().unwrap_or_else(|e| e.into_inner());
    if out.is_empty() {
        return true;
    }
    let ok = match stream.send_nowait(out) {
        Ok(n) if n == out.len() => true,
        Ok(n) => {
            let rest = &out[n..];
            py.detach(|| io::Write::write_all(&mut &**stream, rest))
                .is_ok()
        }
        Err(_) => false,
    };
    out.clear();
    ok
}

/// A lingering connection's turn: read and discard what the client sends
/// (at most `LINGER_TURN` bytes before the others get a turn); EOF, an
/// error or the end of the linger closes it, an idle client is closed by
/// the sweep at its deadline (`conn::LINGER_IDLE` after its last data).
fn discard(ctx: &mut Ctx<'_>, c: &mut Connection, end: Instant) -> Turn {
    let mut got = 0;
    let turn = loop {
        match c.core.stream.read_nowait(&mut ctx.scratch) {
            Ok(0) => return Turn::Close,
            Ok(n) => {
                got += n;
                if got >= LINGER_TURN {
                    break Turn::Again;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Turn::Wait,
            Err(_) => return Turn::Close,
        }
    };
    let now = Instant::now();
    if now >= end {
        return Turn::Close;
    }
    if got > 0 {
        c.core.deadline = end.min(now + conn::LINGER_IDLE);
    }
    turn
}

/// Bytes a lingering connection's turn discards before the others get a turn.
const LINGER_TURN: usize = 256 * 1024;

/// Serve every complete request buffered on the connection, then read what
/// it has without blocking, until a short read says its socket is drained.
fn turn(py: Python<'_>, ctx: &mut Ctx<'_>, worker: &mut Worker<'_>, c: &mut Connection) -> Turn {
    if let Some(end) = c.lingering {
        return discard(ctx, c, end);
    }
    let mut served_now = 0u32;
    // Requests left over from the last turn (`Turn::Again`) come first.
    let mut read_first = !std::mem::take(&mut c.more);
    loop {
        if read_first {
            // (A TLS connection's handshake comes before its first read.)
            let proxy = ctx.policy.proxy.as_ref();
            match c.core.read(py, &mut ctx.scratch, proxy, ctx.app.trust()) {
                Read::Data { more } => read_first = more,
                Read::Empty => return Turn::Wait,
                Read::Eof | Read::Failed => return Turn::Close,
            }
        } else {
            read_first = true;
        }
        if let Some(t) = serve_buffered(py, ctx, worker, c, &mut served_now) {
            return t;
        }
        if !read_first {
            return Turn::Wait;
        }
    }
}

/// Serve the complete requests the connection has buffered (up to
/// `FAIR_SHARE` in a turn, counted in `served_now`). `None`: read more;
/// else what the turn ends as.
fn serve_buffered(
    py: Python<'_>,
    ctx: &mut Ctx<'_>,
    worker: &mut Worker<'_>,
    c: &mut Connection,
    served_now: &mut u32,
) -> Option<Turn> {
    while !c.core.http.is_idle() {
        if *served_now >= FAIR_SHARE {
            c.more = true;
            return Some(Turn::Again);
        }
        let core = &mut c.core;
        match core.http.next_head() {
            HeadEvent::Request(h1::Request {
                head,
                body,
                exchange,
            }) => {
                // A response of this turn still waits: it goes first.
                if !send_pending(py, &core.stream, &mut c.held) {
                    return Some(Turn::Close);
                }
                let busy = Some((worker.setup.heartbeats, worker.setup.slot));
                let on = conn::Connection {
                    stream: &core.stream,
                    peer: &core.peer,
                    server: &ctx.servers[core.server],
                    trusted: core.trusted,
                    body_within: None,
                };
                let kept = Some((&c.socket, &c.held));
                let started = Instant::now();
                let served = conn::serve_request(
                    py, ctx.app, &on, &head, body, exchange, busy, started, kept,
                );
                drop(head);
                let next = served.finish(&mut core.http);
                worker.request_done();
                c.served += 1;
                *served_now += 1;
                match next {
                    Next::KeepAlive => core.kept_alive(ctx.keepalive_for),
                    Next::Close(Closing::Clean) => return Some(Turn::Close),
                    Next::Close(Closing::Unread) => return Some(Turn::Linger),
                }
            }
            HeadEvent::NeedMore => {
                core.head_incomplete(ctx.header_for);
                return None;
            }
            HeadEvent::End(ending) => {
                // A refused head (after what is held).
                let closing = ending.closing;
                if send_out(py, c) {
                    c.core.end(py, ending);
                }
                return Some(match closing {
                    Closing::Clean => Turn::Close,
                    Closing::Unread => Turn::Linger,
                });
            }
        }
    }
    None
}
