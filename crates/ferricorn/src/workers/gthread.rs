//! The gthread worker: `--threads N` threads call the app, while the
//! worker's main thread runs a poller (mio) that accepts connections, holds
//! idle keep-alive connections, and hands a connection to the pool when it
//! becomes readable.
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
//!   not stop by itself: it marks its slot for retirement and keeps serving,
//!   with `Connection: close` so that its keep-alive clients move to another
//!   worker, until the master, once the replacement has booted, sends `TERM`.
//!
//! gunicorn counterpart: `workers/gthread.py` (`ThreadWorker`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferricorn_http::parse::Parser;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use pyo3::prelude::*;

use super::Worker;
use super::conn::{self, Next};
use super::sync::is_transient_accept_error;
use crate::glogging;
use crate::sock::{Peer, Stream};
use crate::wsgi::{self, environ::AppContext};

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
    buf: Vec<u8>,
    /// No request read yet (a PROXY header may come first).
    fresh: bool,
    /// `wsgi::extras::dups_made()` when accepted: for `conn::close`.
    dups_before: u64,
    /// Its read timeout is the header timeout (`conn::serve_one`).
    header_armed: bool,
}

impl Connection {
    /// One just accepted from listener `server`.
    fn new(stream: Stream, peer: Peer, server: usize) -> Self {
        Connection {
            stream: Arc::new(stream),
            peer,
            server,
            buf: Vec::new(),
            fresh: true,
            dups_before: crate::wsgi::extras::dups_made(),
            header_armed: false,
        }
    }
}

/// What a thread hands back to the poller when it is done with a connection.
struct Done {
    /// `Some` to keep the connection alive, `None` when it was closed.
    conn: Option<Connection>,
    /// Requests served while the thread held it.
    served: u64,
}

/// State shared by the poller and the threads.
struct Shared<'a> {
    app: &'a AppContext,
    servers: Vec<(String, String)>,
    jobs: Mutex<Receiver<Connection>>,
    done: Mutex<Sender<Done>>,
    waker: Waker,
    /// Cleared on graceful shutdown: in-flight responses then close.
    alive: AtomicBool,
    /// Set once the worker asked for its replacement (`--max-requests`,
    /// `--max-worker-memory`): responses then close.
    retiring: AtomicBool,
    keepalive: bool,
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
    let mut parser = Parser::new(shared.app.parser_options().clone());
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
                    if !conn::read_proxy_header(py, &c.stream, &mut c.peer, &mut c.buf, proxy) {
                        return Some(conn::Closing::Clean);
                    }
                }
            }
            loop {
                let allow = shared.keepalive
                    && shared.alive.load(Ordering::Relaxed)
                    && !shared.retiring.load(Ordering::Relaxed);
                let next = conn::serve_one(
                    py,
                    shared.app,
                    &c.stream,
                    &c.peer,
                    &shared.servers[c.server],
                    &mut parser,
                    &mut c.buf,
                    allow,
                    None,
                    shared.policy.timeouts,
                    &mut c.header_armed,
                );
                if let Next::Close(closing) = next {
                    return Some(closing);
                }
                // Pipelined bytes already read: serve them now, else wait in the poller.
                if c.buf.is_empty() {
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
    conn: Connection,
    deadline: Instant,
}

fn serve(worker: &mut Worker<'_>, app: &AppContext, threads: usize) -> io::Result<()> {
    let setup = worker.setup;
    let settings = setup.settings;
    let timeout = settings.timeout();
    let wait = super::loop_wait(timeout);
    let io_timeout = super::io_timeout(timeout);
    let keepalive = settings.keepalive();
    let graceful = Duration::from_secs_f64(settings.graceful_timeout().max(0.0));
    let keepalive_for = Duration::from_secs_f64(keepalive.max(0.0));
    // How long a fresh connection may take to send its first request.
    let first_request_for = io_timeout.unwrap_or(Duration::from_secs(30));
    let max_conns = settings.get("worker_connections").as_int().max(1) as usize;

    let mut poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    super::register_sources(poll.registry(), worker, SIGNAL_PIPE, LISTENER_BASE)?;

    let (job_tx, job_rx) = mpsc::channel::<Connection>();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let policy = conn::Policy::from_settings(setup.settings);
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
        alive: AtomicBool::new(true),
        retiring: AtomicBool::new(false),
        keepalive: keepalive > 0.0,
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
                    wsgi::keep_thread_state(|| {
                        super::name_python_thread(&format!("ThreadPoolExecutor-0_{i}"));
                        thread_main(shared)
                    })
                })?;
            handles.push(h);
        }

        let mut events = Events::with_capacity(256);
        let mut idle: HashMap<usize, Idle> = HashMap::new();
        let mut deadlines: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
        let mut next_token = CONN_BASE;
        let mut active: usize = 0;
        let mut pending_accept = vec![true; setup.listeners.len()];
        let mut accepting = true;
        // Set at TERM: when idle keep-alive connections are let go.
        let mut linger_until: Option<Instant> = None;
        // Set at TERM: when the stop gives up on requests still running.
        let mut stop_by: Option<Instant> = None;
        // Connections left waiting when the last turn's share was taken.
        let mut more_waiting = false;
        let workers = settings.workers().max(1);

        let registry = poll.registry().try_clone()?;
        let mut park = |conn: Connection,
                        until: Instant,
                        idle: &mut HashMap<usize, Idle>,
                        deadlines: &mut BinaryHeap<Reverse<(Instant, usize)>>|
         -> bool {
            let token = next_token;
            next_token = next_token.wrapping_add(1).max(CONN_BASE);
            let fd = conn.stream.raw_fd();
            if registry
                .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
                .is_err()
            {
                return false;
            }
            idle.insert(
                token,
                Idle {
                    conn,
                    deadline: until,
                },
            );
            deadlines.push(Reverse((until, token)));
            true
        };

        // Whether the last wait reported the wake pipe (true at start: a
        // signal may have come before the loop).
        let mut pipe_ready = true;
        loop {
            worker.notify();
            if worker.handle_signals_if(std::mem::take(&mut pipe_ready)) {
                // QUIT/INT: stop now, in-flight requests included.
                leave_now(worker);
            }
            if worker.alive && worker.parent_check_due() {
                glogging::info!("Parent changed, shutting down: worker {}", worker.pid);
                worker.alive = false;
            }
            if !worker.alive && accepting {
                // Graceful stop: no new connections; what comes on the
                // open ones is answered with `Connection: close`.
                accepting = false;
                stop_by = Some(Instant::now() + graceful);
                shared.alive.store(false, Ordering::Relaxed);
                crate::wsgi::response::DRAINING.store(true, Ordering::Relaxed);
                // Connections already in the listen backlog are served (with
                // `Connection: close`) as the cap allows, not left to be
                // reset when the worker exits (docs/signals.md): accepted
                // below until a listener has none left (no readiness event
                // sets the flags again once the listeners are deregistered).
                pending_accept.fill(worker.should_drain());
                for l in setup.listeners {
                    let fd = l.raw_fd();
                    let _ = poll.registry().deregister(&mut SourceFd(&fd));
                }
                // A connection that has sent nothing since its last response
                // (idle keep-alive) or at all (new) stays in the poller a
                // little longer: its client may be sending a request
                // already; a thread answers it when it comes.
                let linger = Instant::now() + conn::STOP_LINGER;
                linger_until = Some(linger);
                for (t, i) in idle.iter_mut() {
                    if i.deadline > linger {
                        i.deadline = linger;
                        deadlines.push(Reverse((linger, *t)));
                    }
                }
            }
            let drain = !accepting && active < max_conns && pending_accept.contains(&true);
            if !accepting && active == 0 && !drain {
                break;
            }
            if stop_by.is_some_and(|t| Instant::now() >= t) {
                // `--graceful-timeout` is over and requests still run: a
                // live master KILLs us about now anyway; without one (it
                // died) nobody would, and a stuck app thread would keep this
                // process and its listening sockets forever.
                leave_now(worker);
            }

            let now = Instant::now();
            let poll_for = if drain {
                Duration::ZERO
            } else if more_waiting {
                // Others' turn first (see the accept below), then ours again.
                std::thread::yield_now();
                Duration::ZERO
            } else {
                let next_deadline = deadlines.peek().map(|Reverse((d, _))| *d);
                let wake = next_deadline.into_iter().chain(stop_by).min();
                wake.map_or(wait, |d| d.saturating_duration_since(now).min(wait))
            };
            if let Err(e) = poll.poll(&mut events, Some(poll_for)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            for ev in &events {
                let Token(t) = ev.token();
                if t >= CONN_BASE {
                    if let Some(i) = idle.remove(&t) {
                        let fd = i.conn.stream.raw_fd();
                        let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        if job_tx.send(i.conn).is_err() {
                            active -= 1;
                        }
                    }
                } else if t >= LISTENER_BASE {
                    if let Some(p) = pending_accept.get_mut(t - LISTENER_BASE) {
                        *p = true;
                    }
                } else if ev.token() == SIGNAL_PIPE {
                    pipe_ready = true;
                }
                // WAKER: handled below; SIGNAL_PIPE at the top of the loop.
            }

            // Connections the threads are done with.
            let mut served = 0;
            while let Ok(d) = done_rx.try_recv() {
                served += d.served;
                match d.conn {
                    Some(c) => {
                        // Kept alive (a response begun before TERM, then
                        // only until the stop's linger ends).
                        let until = Instant::now() + keepalive_for;
                        let until = linger_until.map_or(until, |l| until.min(l));
                        if !park(c, until, &mut idle, &mut deadlines) {
                            active -= 1;
                        }
                    }
                    None => active -= 1,
                }
            }
            if served > 0 {
                // At --max-requests / --max-worker-memory this asks the master
                // for a replacement; we keep serving until its TERM.
                worker.requests_done(served);
                if worker.retire_requested {
                    shared.retiring.store(true, Ordering::Relaxed);
                }
            }

            // Accept while under the connection cap; once stopping, what
            // the backlog still holds. With other workers, a share of what
            // waits per turn (then the cpu is offered to them): a keep-alive
            // connection stays with the worker that took it, and one that
            // took a whole burst would serve it alone.
            more_waiting = false;
            for (i, l) in setup.listeners.iter().enumerate() {
                let mut budget = if accepting && workers > 1 && pending_accept[i] {
                    super::accepts::share(l, workers, active)
                } else {
                    usize::MAX
                };
                while budget > 0 && active < max_conns && pending_accept[i] {
                    budget -= 1;
                    match l.accept() {
                        Ok((stream, peer)) => {
                            let c = Connection::new(stream, peer, i);
                            active += 1;
                            // Stopping: one that stays silent goes as an idle one does.
                            let wait = if accepting {
                                first_request_for
                            } else {
                                first_request_for.min(conn::STOP_LINGER)
                            };
                            if !park(c, Instant::now() + wait, &mut idle, &mut deadlines) {
                                active -= 1;
                            }
                        }
                        Err(e) if is_transient_accept_error(&e) => {
                            if e.kind() == io::ErrorKind::WouldBlock {
                                pending_accept[i] = false;
                            }
                        }
                        Err(e) => {
                            glogging::error!("Error accepting a connection: {e}");
                            pending_accept[i] = false;
                        }
                    }
                }
                more_waiting |= accepting && budget == 0 && pending_accept[i] && active < max_conns;
            }

            // Idle connections past their deadline.
            let now = Instant::now();
            while let Some(Reverse((d, t))) = deadlines.peek().copied() {
                if d > now {
                    break;
                }
                deadlines.pop();
                if idle.get(&t).is_some_and(|i| i.deadline == d) {
                    if let Some(i) = idle.remove(&t) {
                        let fd = i.conn.stream.raw_fd();
                        let _ = poll.registry().deregister(&mut SourceFd(&fd));
                        active -= 1;
                    }
                }
            }
        }
        // Let the threads finish what is queued, then stop them.
        drop(job_tx);
        for h in handles {
            let _ = h.join();
        }
        Ok(())
    })
}
