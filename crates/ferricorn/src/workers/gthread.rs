//! The gthread worker: `--threads N` threads call the app, while the
//! worker's main thread runs a poller (mio) that accepts connections, holds
//! idle keep-alive connections, reads request heads without blocking, and
//! hands a connection to the pool only once a whole head is buffered
//! (`h1::Conn::head_ready`): a slow client (slowloris) holds no thread, and
//! its header deadline runs in the poller, from the accept for a new
//! connection (`--header-timeout`, else `--timeout`), from the head's first
//! byte on a kept one; a partial head past it gets a 408.
//!
//! Invariants:
//! - the threads exist only in the worker, after fork; they block every
//!   signal, so signals land on the main thread, which never needs the GIL
//!   and so beats the heartbeat at least every `timeout / 2` (at most every
//!   second) even while every app thread is busy;
//! - a connection is either idle in the poller (registered) or owned by one
//!   thread (deregistered), never both; `active` counts both kinds and is
//!   capped by `--worker-connections`;
//! - TERM stops accepting (what the listen backlog holds is still taken,
//!   as the cap allows), lets queued and in-flight requests finish
//!   (answering them with `Connection: close`), keeps connections that
//!   have sent nothing since their last response (idle keep-alive) or at
//!   all (new) for `conn::STOP_LINGER` and answers a request that comes on
//!   one meanwhile (with `Connection: close`), then joins the threads;
//!   past `--graceful-timeout` it exits without them; QUIT/INT exit at once;
//! - at `--max-requests` (or above `--max-worker-memory`) the worker does
//!   not stop by itself: it marks its slot for retirement, accepts no more,
//!   and answers what comes on the connections it has with
//!   `Connection: close` (so those clients move to another worker), until
//!   the master, once the replacement has booted, sends `TERM`.
//!
//! gunicorn counterpart: `workers/gthread.py` (`ThreadWorker`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferricorn_http::h1;
use ferricorn_http::parse::Options;
use mio::{Events, Interest, Poll, Token, Waker};
use pyo3::prelude::*;

use super::Worker;
use super::conn::{self, Next};
use super::listening::{End, Listening};
use crate::glogging;
use crate::sock::Peer;
use crate::stream::Stream;
use crate::wsgi::environ::AppContext;

const WAKER: Token = Token(0);
const SIGNAL_PIPE: Token = Token(1);
const LISTENER_BASE: usize = 2;
/// Connection tokens start here (listener tokens sit below).
const CONN_BASE: usize = 1 << 20;

/// A client connection and what was read of its next request.
struct Connection {
    stream: Arc<Stream>,
    peer: Peer,
    /// Index of the listener it came from (for SERVER_NAME/PORT).
    server: usize,
    /// Its HTTP/1 state: buffer, parser, pipelining, verdicts.
    http: h1::Conn,
    /// No request read yet (a PROXY header may come first).
    fresh: bool,
    /// `wsgi::extras::dups_made()` when accepted: for `conn::close`.
    dups_before: u64,
    /// Its read timeout is the header timeout (`conn::serve_one`).
    header_armed: bool,
}

impl Connection {
    /// One just accepted from listener `server`.
    fn new(stream: Stream, peer: Peer, server: usize, http: h1::Conn) -> Self {
        Connection {
            stream: Arc::new(stream),
            peer,
            server,
            http,
            fresh: true,
            dups_before: crate::wsgi::extras::dups_made(),
            header_armed: false,
        }
    }
}

/// What a thread hands back to the poller when it is done with a connection.
struct Done {
    /// `Some` to keep the connection alive, `None` when it was closed.
    conn: Option<Box<Connection>>,
    /// Requests served while the thread held it.
    served: u64,
}

/// State shared by the poller and the threads.
struct Shared<'a> {
    app: &'a AppContext,
    servers: Vec<(String, String)>,
    jobs: Mutex<Receiver<Box<Connection>>>,
    done: Mutex<Sender<Done>>,
    waker: Waker,
    policy: conn::Policy,
    /// Per listener: its connections start with their deadlines (`conn::arm_listeners`).
    inherited: Vec<bool>,
}

pub fn run(py: Python<'_>, worker: &mut Worker<'_>, app: &AppContext) {
    let threads = worker.setup.settings.threads();
    let result = py.detach(|| serve(worker, app, threads));
    if let Err(e) = result {
        glogging::error!("Exception in worker process: {e}");
    }
}

/// One app thread: take connections, serve requests on them while the
/// client pipelines, hand them back to the poller (or close them).
fn thread_main(shared: &Shared<'_>) {
    // Signals are for the main thread.
    let _ = nix::sys::signal::SigSet::all().thread_block();
    loop {
        let job = {
            let rx = shared.jobs.lock().unwrap_or_else(|e| e.into_inner());
            rx.recv()
        };
        let Ok(mut c) = job else { return };
        if c.fresh {
            c.header_armed = conn::arm(
                &c.stream,
                shared.policy.timeouts,
                shared.policy.proxy.is_some(),
                shared.inherited[c.server],
            );
        }
        // Counted whether the connection then stays open or closes.
        let started = super::signals::requests_started();
        // `None`: keep the connection; else how to close it.
        let closing = Python::attach(|py| {
            if std::mem::take(&mut c.fresh) {
                if let Some(proxy) = &shared.policy.proxy {
                    if !conn::read_proxy_header(py, &c.stream, &mut c.peer, &mut c.http, proxy) {
                        return Some(conn::Closing::Clean);
                    }
                }
            }
            loop {
                let next = conn::serve_one(
                    py,
                    shared.app,
                    &c.stream,
                    &c.peer,
                    &shared.servers[c.server],
                    &mut c.http,
                    None,
                    shared.policy.timeouts,
                    &mut c.header_armed,
                );
                if let Next::Close(closing) = next {
                    return Some(closing);
                }
                // A whole pipelined head already read (or bytes held by
                // the stream): serve it now; else (nothing, or part of a
                // head) wait in the poller.
                if !c.http.head_ready() && !c.stream.has_buffered() {
                    return None;
                }
            }
        });
        let served = super::signals::requests_started() - started;
        let conn = match closing {
            None => Some(c),
            Some(closing) => {
                // A lingering close holds this thread, bounded by
                // `conn::LINGER_FOR`; the main thread beats and handles signals.
                conn::close(c.stream, c.dups_before, closing, None);
                None
            }
        };
        let sent = shared
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Done { conn, served });
        if sent.is_err() {
            return;
        }
        let _ = shared.waker.wake();
    }
}

/// Exit at once, without joining the app threads (requests still running
/// on them are cut).
fn leave_now(worker: &Worker<'_>) -> ! {
    glogging::info!("Worker exiting (pid: {})", worker.pid);
    crate::sys::process::exit_now(0)
}

/// An idle connection waiting in the poller, and when it expires.
struct Idle {
    conn: Box<Connection>,
    deadline: Instant,
}

/// The worker's settings the poller works with.
struct Limits {
    /// The longest wait for events (the heartbeat's pace).
    wait: Duration,
    graceful: Duration,
    /// How long an idle keep-alive connection is kept.
    keepalive_for: Duration,
    /// How long a fresh connection may take to send its first request
    /// head, and a kept one its next head once it began.
    header_for: Duration,
    /// `--worker-connections`.
    max_conns: usize,
    /// `--workers`: with others, new connections are taken in shares.
    workers: usize,
    /// `--timeout` (s; 0: off): a request running longer is reported.
    timeout: f64,
    /// `--threads`.
    threads: usize,
}

/// The main thread's side: idle connections wait in the poller until they
/// have something to read (then a thread takes them), expire, or the stop
/// lets them go; new connections are accepted as the cap allows.
struct Poller<'a> {
    poll: Poll,
    events: Events,
    idle: HashMap<usize, Idle>,
    /// Idle connections' deadlines, soonest first (stale entries are
    /// skipped: an entry counts only while it matches its connection's).
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    next_token: usize,
    /// Connections open: idle, queued for a thread, or on one.
    active: usize,
    /// Connections handed to the threads (a request head ready on each)
    /// and not back yet: requests `--max-requests` counts before their
    /// threads report them (`budget_spent`).
    handed: u64,
    listening: Listening<'a>,
    /// Connections left waiting when the last turn's share was taken.
    more_waiting: bool,
    jobs: &'a Sender<Box<Connection>>,
    done: Receiver<Done>,
    limits: Limits,
    /// The parser's settings, shared by every connection's HTTP/1 state.
    parser_options: Arc<Options>,
    /// What the poller reads a head into before the connection's buffer.
    scratch: Vec<u8>,
    /// When `watch` next looks at the requests in progress.
    next_watch: Instant,
    /// Every app thread runs a request past `--timeout` (`watch`).
    stuck: bool,
}

/// How often the main thread looks for requests past `--timeout`.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// What reading a parked connection without blocking found.
enum HeadRead {
    /// A whole head (or the client's EOF, or too much): hand it to a thread.
    Ready,
    /// Part of a head, or nothing yet; true when its first byte came now.
    More(bool),
    /// The client went away with nothing to answer, or the read failed.
    Gone,
}

/// Read what `c` has without blocking (until a short read says its socket
/// is drained, as edge-triggered readiness needs).
fn read_head(c: &mut Connection, scratch: &mut [u8]) -> HeadRead {
    let mut began = false;
    loop {
        match c.stream.read_nowait(scratch) {
            Ok(0) => {
                c.http.eof();
                break;
            }
            Ok(n) => {
                began |= c.http.extend(&scratch[..n]);
                if c.http.head_ready() {
                    return HeadRead::Ready;
                }
                if n < scratch.len() && !c.stream.has_buffered() {
                    return HeadRead::More(began);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeadRead::More(began),
            Err(_) => return HeadRead::Gone,
        }
    }
    // EOF: a partial head is answered by nobody (the client left).
    if c.http.is_idle() {
        HeadRead::Gone
    } else {
        HeadRead::Ready
    }
}

impl Poller<'_> {
    /// Wait in the poller for `conn` to have something to read, until
    /// `until`; a connection the poller refuses is closed (and uncounted).
    fn park(&mut self, conn: Box<Connection>, until: Instant) {
        let token = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(CONN_BASE);
        if conn
            .stream
            .register(self.poll.registry(), Token(token), Interest::READABLE)
            .is_err()
        {
            self.active -= 1;
            return;
        }
        self.idle.insert(
            token,
            Idle {
                conn,
                deadline: until,
            },
        );
        self.deadlines.push(Reverse((until, token)));
    }

    /// Graceful stop: no new connections; what comes on the open ones is
    /// answered with `Connection: close`. One that has sent nothing since
    /// its last response (idle keep-alive) or at all (new) stays in the
    /// poller until the stop's linger: its client may be sending a request
    /// already; a thread answers it.
    fn stop_if_stopping(&mut self, worker: &Worker<'_>) {
        let registry = self.poll.registry();
        let Some(stop) = self
            .listening
            .stop_if_stopping(worker, registry, self.limits.graceful)
        else {
            return;
        };
        for (t, i) in self.idle.iter_mut() {
            let until = i.conn.http.stop_deadline(i.deadline, stop.linger_until);
            if until != i.deadline {
                i.deadline = until;
                self.deadlines.push(Reverse((until, *t)));
            }
        }
    }

    /// Wait for events (not at all while the backlog drains or others had
    /// their turn) and hand connections with something to read to the
    /// threads. Returns whether the signal pipe was readable.
    fn wait(&mut self, drain: bool) -> io::Result<bool> {
        let now = Instant::now();
        let poll_for = if drain {
            Duration::ZERO
        } else if self.more_waiting {
            // Others' turn first (see `accept`), then ours again.
            std::thread::yield_now();
            Duration::ZERO
        } else {
            let next_deadline = self.deadlines.peek().map(|Reverse((d, _))| *d);
            let wake = next_deadline
                .into_iter()
                .chain(self.listening.stop().map(|s| s.by))
                .min();
            let wait = self.limits.wait;
            wake.map_or(wait, |d| d.saturating_duration_since(now).min(wait))
        };
        if let Err(e) = self.poll.poll(&mut self.events, Some(poll_for)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut pipe_ready = false;
        for ev in &self.events {
            let Token(t) = ev.token();
            if t >= CONN_BASE {
                let Some(mut i) = self.idle.remove(&t) else {
                    continue;
                };
                // A TLS handshake goes on here first, without waiting for
                // the client (at once `Some(true)` for a plain connection).
                match conn::handshake_step(&i.conn.stream, &i.conn.peer) {
                    Some(true) => {}
                    Some(false) => {
                        self.idle.insert(t, i);
                        continue;
                    }
                    None => {
                        let _ = i.conn.stream.deregister(self.poll.registry());
                        self.active -= 1;
                        continue;
                    }
                }
                match read_head(&mut i.conn, &mut self.scratch) {
                    HeadRead::Ready => {
                        let _ = i.conn.stream.deregister(self.poll.registry());
                        if self.jobs.send(i.conn).is_ok() {
                            self.handed += 1;
                        } else {
                            self.active -= 1;
                        }
                    }
                    HeadRead::More(began) => {
                        // A kept connection's next head: its header
                        // deadline starts with its first byte (a new
                        // connection's ran from the accept).
                        if began && i.conn.http.served() > 0 {
                            i.deadline = Instant::now() + self.limits.header_for;
                            self.deadlines.push(Reverse((i.deadline, t)));
                        }
                        self.idle.insert(t, i);
                    }
                    HeadRead::Gone => {
                        let _ = i.conn.stream.deregister(self.poll.registry());
                        self.active -= 1;
                    }
                }
            } else if t >= LISTENER_BASE {
                self.listening.ready(t - LISTENER_BASE);
            } else if ev.token() == SIGNAL_PIPE {
                pipe_ready = true;
            }
            // WAKER: it only ends the wait; `take_back` follows.
        }
        Ok(pipe_ready)
    }

    /// Take back the connections the threads are done with; returns how
    /// many requests they served.
    fn take_back(&mut self) -> u64 {
        let mut served = 0;
        while let Ok(d) = self.done.try_recv() {
            served += d.served;
            self.handed -= 1;
            match d.conn {
                Some(c) => {
                    // Kept alive (a response begun before TERM, then
                    // only until the stop's linger ends); part of a next
                    // head already read gets its header timeout.
                    let waits = h1::Waits {
                        header: self.limits.header_for,
                        keepalive: self.limits.keepalive_for,
                    };
                    let linger = self.listening.stop().map(|s| s.linger_until);
                    let until = c.http.wait_until(Instant::now(), waits, linger);
                    self.park(c, until);
                }
                None => self.active -= 1,
            }
        }
        served
    }

    /// Accept while under the connection cap; once stopping, what the
    /// backlog still holds. With other workers, a share of what waits per
    /// turn (then the cpu is offered to them): a keep-alive connection
    /// stays with the worker that took it, and one that took a whole burst
    /// would serve it alone.
    fn accept(&mut self, worker: &Worker<'_>) {
        self.more_waiting = false;
        let accepting = self.listening.accepting();
        if accepting && self.budget_spent(worker) {
            return;
        }
        let (workers, max_conns) = (self.limits.workers, self.limits.max_conns);
        // Stopping: one that stays silent goes as an idle one does.
        let first_wait = if accepting {
            self.limits.header_for
        } else {
            self.limits.header_for.min(conn::STOP_LINGER)
        };
        for (i, l) in self.listening.listeners().iter().enumerate() {
            let mut budget = if accepting && workers > 1 && self.listening.waiting(i) {
                super::accepts::share(l, workers, self.active)
            } else {
                usize::MAX
            };
            while budget > 0 && self.active < max_conns && self.listening.waiting(i) {
                budget -= 1;
                if let Some((stream, peer)) = self.listening.accept(i) {
                    self.active += 1;
                    self.park(
                        Box::new(Connection::new(stream, peer, i, self.new_http())),
                        Instant::now() + first_wait,
                    );
                }
            }
            self.more_waiting |=
                accepting && budget == 0 && self.listening.waiting(i) && self.active < max_conns;
        }
    }

    /// The requests served and those on their way to a thread reach
    /// `--max-requests`: take no new connection. A thread reports what it
    /// served only after its connection closed, so a client that moves on
    /// at the close would otherwise find the next one taken first (a
    /// sequential client got 2 past the budget). Once the threads report,
    /// the worker retires (`Worker::requests_done`), or, when a request
    /// came to nothing (a client gone, a bad head), accepts again.
    fn budget_spent(&self, worker: &Worker<'_>) -> bool {
        worker.budget > 0 && worker.served + self.handed >= worker.budget
    }

    /// A new connection's HTTP/1 state.
    fn new_http(&self) -> h1::Conn {
        h1::Conn::new(
            self.parser_options.clone(),
            !self.limits.keepalive_for.is_zero(),
        )
    }

    /// Close idle connections past their deadline.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((d, t))) = self.deadlines.peek().copied() {
            if d > now {
                break;
            }
            self.deadlines.pop();
            if self.idle.get(&t).is_some_and(|i| i.deadline == d) {
                if let Some(mut i) = self.idle.remove(&t) {
                    let _ = i.conn.stream.deregister(self.poll.registry());
                    self.active -= 1;
                    // Part of a head came: a 408, offered without
                    // blocking (a client that reads nothing loses it).
                    if i.conn.http.head_timed_out().answer.is_some() {
                        glogging::debug!(
                            "Request head from ip={} not complete in time",
                            i.conn.peer.addr
                        );
                        let _ = i.conn.stream.send_nowait(&conn::head_timeout_answer());
                    }
                }
            }
        }
    }
}

fn serve(worker: &mut Worker<'_>, app: &AppContext, threads: usize) -> io::Result<()> {
    let setup = worker.setup;
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    super::register_sources(poll.registry(), worker, SIGNAL_PIPE, LISTENER_BASE)?;

    // Connections travel boxed: its HTTP/1 state makes one a few hundred
    // bytes, copied at every hand-over otherwise (and the channel's blocks
    // would be allocated, zeroed, at that size).
    let (job_tx, job_rx) = mpsc::channel::<Box<Connection>>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let mut policy = conn::Policy::from_settings(setup.settings);
    // The main thread beats on while a thread reads a body: bound it here.
    policy.timeouts.body = policy.timeouts.io;
    let shared = Shared {
        app,
        servers: setup
            .listeners
            .iter()
            .map(|l| l.server_name_port())
            .collect(),
        jobs: Mutex::new(job_rx),
        done: Mutex::new(done_tx),
        waker,
        inherited: conn::arm_listeners(setup.listeners, policy.timeouts, policy.proxy.is_some()),
        policy,
    };

    std::thread::scope(|scope| -> io::Result<()> {
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = &shared;
            let h = std::thread::Builder::new()
                .name(format!("ferricorn-{i}"))
                .spawn_scoped(scope, move || {
                    crate::app::keep_thread_state(|| {
                        super::name_python_thread(&format!("ThreadPoolExecutor-0_{i}"));
                        thread_main(shared)
                    })
                })?;
            handles.push(h);
        }

        let mut p = Poller {
            poll,
            events: Events::with_capacity(256),
            idle: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_token: CONN_BASE,
            active: 0,
            handed: 0,
            listening: Listening::new(setup.listeners),
            more_waiting: false,
            jobs: &job_tx,
            done: done_rx,
            parser_options: Arc::new(app.parser_options().clone()),
            limits: Limits::from_settings(setup.settings),
            scratch: vec![0; h1::READ_CHUNK],
            next_watch: Instant::now(),
            stuck: false,
        };
        p.run(worker)?;
        // Let the threads finish what is queued, then stop them.
        drop(job_tx);
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    })
}

impl Limits {
    fn from_settings(settings: &crate::config::Settings) -> Self {
        let timeout = settings.timeout();
        Limits {
            wait: super::loop_wait(timeout),
            graceful: Duration::from_secs_f64(settings.graceful_timeout().max(0.0)),
            keepalive_for: Duration::from_secs_f64(settings.keepalive().max(0.0)),
            header_for: conn::Timeouts::from_settings(settings)
                .header
                .or(super::io_timeout(timeout))
                .unwrap_or(Duration::from_secs(30)),
            max_conns: settings.get("worker_connections").as_int().max(1) as usize,
            workers: settings.workers().max(1),
            timeout,
            threads: settings.threads().max(1),
        }
    }
}

impl Poller<'_> {
    /// Every `WATCH_EVERY`: report each request running past `--timeout`
    /// (once, with its thread's stack: the master cannot see it, since
    /// this thread beats for the worker); returns whether every app thread
    /// is stuck in one.
    fn watch(&mut self, pid: u32) -> bool {
        let now = Instant::now();
        if self.limits.timeout <= 0.0 || now < self.next_watch {
            return self.stuck;
        }
        self.next_watch = now + WATCH_EVERY;
        let limit_ms = (self.limits.timeout * 1000.0) as u64;
        let (count, fresh) = super::signals::overdue(crate::util::monotonic_ms(), limit_ms);
        if !fresh.is_empty() {
            Python::attach(|py| super::abort::report_overdue(py, &fresh, self.limits.timeout));
        }
        let stuck = count >= self.limits.threads;
        if stuck && !self.stuck {
            glogging::warning!(
                "Worker (pid:{pid}): all {} threads run requests past --timeout; no longer beating, so the master times it out",
                self.limits.threads
            );
        }
        self.stuck = stuck;
        stuck
    }

    /// The main thread's loop, until the worker has stopped (an immediate
    /// exit leaves from inside).
    fn run(&mut self, worker: &mut Worker<'_>) -> io::Result<()> {
        let p = self;
        // Whether the last wait reported the wake pipe (true at start: a
        // signal may have come before the loop).
        let mut pipe_ready = true;
        loop {
            // A worker whose every thread is stuck past --timeout serves
            // nothing: it stops beating, and the master times it out
            // (ABRT: every stack logged, then a replacement).
            if !p.watch(worker.pid) {
                worker.notify();
            }
            if worker.handle_signals_if(std::mem::take(&mut pipe_ready)) {
                // QUIT/INT: stop now, in-flight requests included.
                leave_now(worker);
            }
            worker.stop_if_orphaned();
            p.stop_if_stopping(worker);
            let drain = p.listening.draining_backlog(p.active, p.limits.max_conns);
            match p
                .listening
                .end(p.active, p.limits.max_conns, Instant::now())
            {
                Some(End::Done) => return Ok(()),
                // `--graceful-timeout` is over and requests still run: a
                // live master KILLs us about now anyway; without one (it
                // died) nobody would, and a stuck app thread would keep this
                // process and its listening sockets forever.
                Some(End::TimedOut) => leave_now(worker),
                None => {}
            }
            pipe_ready = p.wait(drain)?;
            let served = p.take_back();
            if served > 0 {
                // At --max-requests / --max-worker-memory the worker
                // retires: no new connection, and its kept ones close
                // after their current request, until the master's TERM.
                worker.requests_done(served);
            }
            p.listening.pause_if_retiring(worker, p.poll.registry());
            p.accept(worker);
            p.expire();
        }
    }
}
