//! The asgi worker: an ASGI app on the worker's own asyncio loop (uvloop
//! when installed), with every byte of I/O done in Rust.
//!
//! One thread. The loop (created after fork, so `--preload` works) is the
//! only thing that blocks waiting. The worker's mio poller — the listeners
//! (duplicates of the master's), the signal wake pipe and the connections —
//! is registered once with the loop (`loop.add_reader(epoll fd)`); when it is
//! ready, one callback accepts, reads, parses (`ferricorn_http::h1::Conn`
//! decides every keep-alive, pipelining, 100-continue and close question)
//! and writes, for every ready connection in a batch. Each request runs as
//! a real `asyncio.Task` of `app(scope, receive, send)`; `receive` and
//! `send` reach the connection through `asgi::Exchange` and complete at
//! once (an `asgi::Ready`) unless they must wait for the client: then they
//! return a loop future that this worker resolves, on this thread, when the
//! poller says so. No other thread, no cross-thread wake-up.
//!
//! The Rust frame that created the loop runs it (`run_forever`) and gets
//! it back every `TICK` (a `call_later` that stops it) or when a signal
//! arrived or `--max-requests` was reached: then it beats the heartbeat,
//! applies signals, begins and ends the graceful stop — what needs the
//! worker's shared state, which the loop's callbacks do not hold.
//!
//! Invariants:
//! - a connection serves one request at a time; pipelined requests wait in
//!   its `h1::Conn` and start when the previous app call has returned;
//! - what a request reads ahead is bounded: its body up to `READ_AHEAD`
//!   beyond what the app took, then (body complete) `READ_AHEAD` of the
//!   next request, read only to notice a client that goes away;
//! - what a connection holds unsent is bounded: a `send` that leaves more
//!   than `WRITE_HIGH` waits until the client has read it down;
//! - a `send` of less than `WRITE_NOW` is written at the end of the loop's
//!   turn (a `FlushAll` scheduled once, or the end of the poller's, a
//!   task-done or the tick's callback), all connections' output together:
//!   the app's code for a batch of requests then runs back to back and the
//!   writes follow back to back, each with its caches warm (measured:
//!   Starlette's per-request Python ran at a third of its standalone speed
//!   when every response went out between two app calls);
//! - a client that goes away: a waiting `receive` gets `http.disconnect`,
//!   a `send` raises `OSError`, the task is cancelled after
//!   `--asgi-disconnect-grace-period`;
//! - every connection between requests has a deadline (header timeout,
//!   keep-alive, the stop's linger), swept every `TICK`;
//! - at most `--worker-connections` are open; with other workers, new
//!   connections are taken in turns (`workers::accepts`, as evloop does):
//!   those a turn leaves waiting are taken by a loop timer (`AcceptLater`).
//!
//! gunicorn counterpart: `workers/gasgi.py` (`ASGIWorker`) and
//! `asgi/protocol.py` (`ASGIProtocol`).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferricorn_http::h1::{self, Closing, HeadEvent, Linger, LingerStep, Next};
use ferricorn_http::parse::Options;
use mio::{Events, Interest, Poll, Token};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::Worker;
use super::accepts::Accepts;
use super::conn;
use super::listening::{End, Listening};
use super::polled::{self, Core, Read};
use super::slab::Slab;
use crate::asgi::websocket::{self, WsExchange};
use crate::asgi::{self, Exchange, Received};
use crate::config::Settings;
use crate::errors::WORKER_BOOT_ERROR;
use crate::glogging::{self, Level};
use crate::lifecycle;
use crate::request::Request;
use crate::sock::Listener;
use crate::stream::Stream;
use crate::sys::pycall;
use crate::wsgi::environ::AppContext;
use ferricorn_http::ws;

const SIGNAL_PIPE: Token = Token(0);
const LISTENER_BASE: usize = 1;
const CONN_BASE: usize = 1 << 20;
/// How often deadlines are swept, and the worker's own frame gets the loop
/// back (heartbeat, the request count, the stop) while anything happens.
const TICK: f64 = 0.1;
/// An idle worker's frame runs every this many ticks (a second): restarting
/// the loop is most of an idle worker's cost. Signals stop the loop at once.
const IDLE_FRAME_TICKS: u32 = 10;
/// Body bytes read ahead of the app, and bytes of a next request read
/// while one is served.
const READ_AHEAD: usize = 64 * 1024;
/// Unsent bytes a connection holds before `send` waits.
const WRITE_HIGH: usize = 256 * 1024;
/// Output up to this size waits for the end of the loop's turn.
const WRITE_NOW: usize = 64 * 1024;

/// The INFO line for a worker class named by one of the other servers'
/// names (the master says it once at start).
pub fn announce(settings: &Settings) {
    let name = settings.worker_class();
    if name == "asgi" {
        return;
    }
    let (applied, ignored) = crate::config::validate::worker_kwargs();
    let mut also = String::new();
    if !applied.is_empty() {
        also.push_str(&format!("; its CONFIG_KWARGS set {}", applied.join(", ")));
    }
    if !ignored.is_empty() {
        also.push_str(&format!(
            "; CONFIG_KWARGS without a ferricorn meaning, not applied: {}",
            ignored.join(", ")
        ));
    }
    glogging::info!(
        "Worker class {name} is served by ferricorn's asgi worker (an asyncio loop per worker, fed by Rust I/O){also}"
    );
}

/// One client connection.
struct Conn {
    /// The socket, its HTTP/1 state, its deadline (between requests; shared
    /// with evloop).
    core: Core,
    /// Told apart from the slot's earlier and later connections.
    generation: u64,
    /// Told apart from the connection's earlier requests (whose app call
    /// may still run: a background task after a complete response).
    request: u64,
    /// The request being served.
    ex: Option<Exchange>,
    /// The WebSocket this connection became.
    ws: Option<WsExchange>,
    task: Option<Py<PyAny>>,
    /// The request hooks' request object (see `Launch::hook`).
    hook: Option<Py<PyAny>>,
    /// Bytes to send, in order.
    out: Vec<u8>,
    /// Bytes of the next request read while this one was served.
    ahead: Vec<u8>,
    /// The client went away (or a write failed).
    gone: bool,
    /// Close this way once `out` is sent.
    closing: Option<Closing>,
    /// The socket may hold bytes not read yet (an event came after the
    /// last read that emptied it: a short read or `WouldBlock`).
    unread: bool,
    lingering: Option<Linger>,
    /// In `Server::dirty`: `out` goes at the end of the loop's turn.
    dirty: bool,
}

/// Which request a `receive`/`send`/done callback belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Id {
    slot: usize,
    generation: u64,
    /// The connection's request (`Conn::request`).
    request: u64,
}

/// A request to start once no borrow of the server is held (the app's
/// code may run at once: an eager task).
struct Launch {
    id: Id,
    scope: Py<PyDict>,
    line: String,
    /// The request object of `pre_request`/`post_request`, when set.
    hook: Option<Py<PyAny>>,
}

/// The worker's loop-side state: everything the loop's callbacks touch.
struct Server {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    listening: Listening<'static>,
    /// With other workers, new connections are taken in turns (`Accepts`).
    accepts: Accepts,
    /// `(loop.call_later, AcceptLater)`, set once the loop side is built.
    accept_later: Option<(Py<PyAny>, Py<PyAny>)>,
    /// An `AcceptLater` is in the loop's timers.
    accept_timer: bool,
    generation: u64,
    scratch: Vec<u8>,
    opts: Arc<Options>,
    policy: conn::Policy,
    trust: crate::request::proxy::Trust,
    servers: Vec<(String, String)>,
    strings: asgi::Strings,
    state: Option<Py<PyDict>>,
    keepalive: bool,
    keepalive_for: Duration,
    header_for: Duration,
    max_conns: usize,
    grace: Duration,
    io_timeout: Option<Duration>,
    /// `websocket_max_message_size` (0: no limit).
    ws_max: usize,
    /// `websocket_ping_interval`/`_timeout` (None: no pings, no cost).
    ws_ping: Option<websocket::PingPolicy>,
    /// `websocket_per_message_deflate`.
    ws_deflate: bool,
    /// Requests finished since the worker's frame last counted them.
    served: u64,
    served_total: u64,
    budget: u64,
    /// The signal pipe was readable.
    signalled: bool,
    /// When a graceful stop's `http.disconnect` goes to requests still
    /// waiting on their client.
    disconnect_at: Option<Instant>,
    /// The worker's heartbeat slot: beaten by the loop's callbacks, and
    /// naming the latest request while any runs (the master's timeout line).
    heartbeats: &'static super::heartbeat::Heartbeats,
    slot: usize,
    running: usize,
    /// Serving is over (the stop's cancellations and lifespan shutdown run
    /// the loop to completion): the tick neither stops the loop nor comes back.
    over: bool,
    /// Connections whose `out` waits for the end of the loop's turn.
    dirty: Vec<Id>,
    /// A callback of ours runs that flushes `dirty` when it ends.
    flush_at_end: bool,
    /// A `FlushAll` is in the loop's queue.
    flush_scheduled: bool,
    /// Requests whose app calls ended, finished with the writes at the
    /// end of the turn (`Call::finish`); `true`: the call failed.
    finished: Vec<(Id, bool)>,
    /// App calls still running after their request was finished early
    /// (`Server::finish_early`): the graceful stop waits for them too.
    detached: Vec<Id>,
}

/// The loop and the server, shared by the loop's callbacks.
struct Shared {
    server: RefCell<Server>,
    app: Py<PyAny>,
    aloop: Py<PyAny>,
    create_future: Py<PyAny>,
    /// `ferricorn._asgi.task_starter(loop)`: `(coro, name=) -> Task`.
    start_task: Py<PyAny>,
    /// `("name",)`: `start_task`'s keyword.
    name_kw: Py<PyTuple>,
    /// `asyncio.CancelledError`.
    cancelled: Py<PyAny>,
}

type Handle = Rc<Shared>;

pub fn run(py: Python<'_>, worker: &mut Worker<'_>, app: &AppContext) {
    let settings = worker.setup.settings;
    if settings.threads() > 1 {
        glogging::warning!(
            "ASGI worker does not use threads configuration. Use worker_connections instead."
        );
    }
    let kind = settings
        .get("asgi_loop")
        .as_str()
        .unwrap_or("auto")
        .to_string();
    let (aloop, loop_name) = match py
        .import("ferricorn._asgi")
        .and_then(|m| m.call_method1("new_loop", (kind.as_str(),)))
        .and_then(|r| r.extract::<(Py<PyAny>, String)>())
    {
        Ok(r) => r,
        Err(e) => {
            let why = e.value(py).to_string();
            glogging::log_always(Level::Error, &format!("Exception in worker process: {why}"));
            super::boot_failed(py, WORKER_BOOT_ERROR, &why);
        }
    };
    glogging::debug!("Using {loop_name} event loop");
    let state = PyDict::new(py).unbind();
    let lifespan = startup(py, settings, app, &aloop, &state);
    let handle = match build(py, worker, app, &aloop, state) {
        Ok(h) => h,
        Err(e) => {
            glogging::error!("Exception in worker process: {e}");
            return;
        }
    };
    let quick = serve(py, worker, &handle);
    if !quick {
        finish(py, &handle, lifespan.as_ref());
    }
}

/// Lifespan startup (unless `asgi_lifespan` is off): the lifespan object
/// when it runs; a failure that must stop the server exits 3 with the
/// reason, which halts the master (no fork loop).
fn startup(
    py: Python<'_>,
    settings: &Settings,
    app: &AppContext,
    aloop: &Py<PyAny>,
    state: &Py<PyDict>,
) -> Option<Py<PyAny>> {
    let mode = settings
        .get("asgi_lifespan")
        .as_str()
        .unwrap_or("auto")
        .to_string();
    if mode == "off" {
        return None;
    }
    let run = || -> PyResult<(Py<PyAny>, Option<String>)> {
        let lifespan = py
            .import("ferricorn._asgi")?
            .call_method1("Lifespan", (app.callable(), state))?;
        let coro = lifespan.call_method1("startup", (mode.as_str(),))?;
        let note: Option<String> = aloop
            .bind(py)
            .call_method1("run_until_complete", (coro,))?
            .extract()?;
        Ok((lifespan.unbind(), note))
    };
    match run() {
        Ok((lifespan, None)) => {
            glogging::debug!("ASGI lifespan startup complete");
            Some(lifespan)
        }
        Ok((_, Some(note))) => {
            glogging::debug!("{note}");
            None
        }
        Err(e) => {
            let why = e.value(py).to_string();
            glogging::log_always(Level::Error, &why);
            super::boot_failed(py, WORKER_BOOT_ERROR, &why);
        }
    }
}

/// After a graceful stop: cancel what still runs, then lifespan shutdown.
fn finish(py: Python<'_>, handle: &Handle, lifespan: Option<&Py<PyAny>>) {
    let aloop = handle.aloop.bind(py);
    let _ = aloop.call_method1(intern!(py, "remove_reader"), (poll_fd(handle),));
    handle.server.borrow_mut().over = true;
    let cancelled = py
        .import("ferricorn._asgi")
        .and_then(|m| m.call_method1("cancel_all", (1.0, lifespan)))
        .and_then(|c| aloop.call_method1("run_until_complete", (c,)))
        .and_then(|n| n.extract::<usize>());
    match cancelled {
        Ok(n) if n > 0 => glogging::debug!("Cancelled {n} task(s) still running"),
        Ok(_) => {}
        Err(e) => glogging::debug!("Cannot cancel the tasks still running: {e}"),
    }
    if let Some(l) = lifespan {
        let shut = l
            .bind(py)
            .call_method0("shutdown")
            .and_then(|c| aloop.call_method1("run_until_complete", (c,)))
            .and_then(|r| r.extract::<Option<String>>());
        match shut {
            Ok(None) => glogging::debug!("ASGI lifespan shutdown complete"),
            Ok(Some(why)) => glogging::error!("{why}"),
            Err(e) => glogging::error!("ASGI lifespan shutdown error: {e}"),
        }
    }
}

fn poll_fd(handle: &Handle) -> i32 {
    use std::os::fd::AsRawFd;
    handle.server.borrow().poll.as_raw_fd()
}

/// A duplicate of a listener, owned by the loop side.
fn duplicate(l: &Listener) -> io::Result<Listener> {
    Ok(match l {
        Listener::Tcp { sock, addr } => Listener::Tcp {
            sock: sock.try_clone()?,
            addr: *addr,
        },
        Listener::Unix { sock, path } => Listener::Unix {
            sock: sock.try_clone()?,
            path: path.clone(),
        },
    })
}

fn build(
    py: Python<'_>,
    worker: &Worker<'_>,
    app: &AppContext,
    aloop: &Py<PyAny>,
    state: Py<PyDict>,
) -> PyResult<Handle> {
    use std::os::fd::AsRawFd;
    let setup = worker.setup;
    let settings = setup.settings;
    let listeners: Vec<Listener> = setup
        .listeners
        .iter()
        .map(duplicate)
        .collect::<io::Result<_>>()?;
    // The worker process never frees its listeners before it exits.
    let listeners: &'static [Listener] = Box::leak(listeners.into_boxed_slice());
    let poll = Poll::new()?;
    let wake_fd = worker.wake.0.as_raw_fd();
    poll.registry().register(
        &mut mio::unix::SourceFd(&wake_fd),
        SIGNAL_PIPE,
        Interest::READABLE,
    )?;
    for (i, l) in listeners.iter().enumerate() {
        l.register(poll.registry(), Token(LISTENER_BASE + i))?;
    }
    let policy = conn::Policy::from_settings(settings);
    let timeout = settings.timeout();
    let header_for = policy
        .timeouts
        .header
        .or(super::io_timeout(timeout))
        .unwrap_or(Duration::from_secs(30));
    let keepalive = settings.keepalive();
    let servers: Vec<(String, String)> = listeners.iter().map(|l| l.server_name_port()).collect();
    let root_path = settings.get("root_path").as_str().unwrap_or("").to_string();
    let server = Server {
        poll,
        events: Events::with_capacity(256),
        conns: Slab::default(),
        listening: Listening::new(listeners),
        accepts: Accepts::new(settings.workers()),
        accept_later: None,
        accept_timer: false,
        generation: 0,
        scratch: vec![0; READ_AHEAD],
        opts: Arc::new(app.parser_options().clone()),
        policy,
        trust: app.trust().clone(),
        strings: asgi::Strings::new(py, &root_path, &servers)?,
        servers,
        state: Some(state),
        keepalive: keepalive > 0.0,
        keepalive_for: Duration::from_secs_f64(keepalive.max(0.0)),
        header_for,
        max_conns: settings.get("worker_connections").as_int().max(1) as usize,
        grace: Duration::from_secs(
            settings.get("asgi_disconnect_grace_period").as_int().max(0) as u64
        ),
        io_timeout: super::io_timeout(timeout),
        ws_max: match settings.get("websocket_max_message_size").as_int() {
            n if n <= 0 => usize::MAX,
            n => n as usize,
        },
        ws_ping: websocket::PingPolicy::from_secs(
            settings.get("websocket_ping_interval").as_f64(),
            settings.get("websocket_ping_timeout").as_f64(),
        ),
        ws_deflate: settings.get("websocket_per_message_deflate").as_bool(),
        served: 0,
        served_total: 0,
        budget: worker.budget,
        signalled: false,
        disconnect_at: None,
        heartbeats: setup.heartbeats,
        slot: setup.slot,
        running: 0,
        over: false,
        dirty: Vec::new(),
        flush_at_end: false,
        flush_scheduled: false,
        finished: Vec::new(),
        detached: Vec::new(),
    };
    let create_future = aloop.bind(py).getattr("create_future")?.unbind();
    let start_task = py
        .import("ferricorn._asgi")?
        .call_method1("task_starter", (aloop,))?
        .unbind();
    let handle = Rc::new(Shared {
        server: RefCell::new(server),
        app: app.callable().clone_ref(py),
        aloop: aloop.clone_ref(py),
        create_future,
        start_task,
        name_kw: PyTuple::new(py, [intern!(py, "name")])?.unbind(),
        cancelled: py.import("asyncio")?.getattr("CancelledError")?.unbind(),
    });
    let fd = poll_fd(&handle);
    let on_ready = Py::new(
        py,
        OnReady {
            handle: handle.clone(),
        },
    )?;
    aloop.bind(py).call_method1("add_reader", (fd, on_ready))?;
    let tick = Py::new(
        py,
        Tick {
            handle: handle.clone(),
            ticks: Cell::new(0),
        },
    )?;
    aloop.bind(py).call_method1("call_soon", (tick,))?;
    let later = Py::new(
        py,
        AcceptLater {
            handle: handle.clone(),
        },
    )?;
    let call_later = aloop.bind(py).getattr("call_later")?.unbind();
    handle.server.borrow_mut().accept_later = Some((call_later, later.into_any()));
    Ok(handle)
}

/// The worker's own frame: run the loop, and between its runs do what
/// needs the worker (heartbeat, signals, the stop). True on a quick exit.
fn serve(py: Python<'_>, worker: &mut Worker<'_>, handle: &Handle) -> bool {
    let graceful = Duration::from_secs_f64(worker.setup.settings.graceful_timeout().max(0.0));
    let aloop = handle.aloop.bind(py);
    let mut signalled = true;
    loop {
        worker.notify();
        let served = std::mem::take(&mut handle.server.borrow_mut().served);
        if served > 0 {
            worker.requests_done(served);
        }
        if (std::mem::take(&mut signalled) && worker.handle_signals()) || worker.quitting() {
            return true; // QUIT/INT (taken here or by its Python-level handler): leave now.
        }
        worker.stop_if_orphaned();
        {
            let mut s = handle.server.borrow_mut();
            let Server {
                listening, poll, ..
            } = &mut *s;
            // Retiring (budget spent, memory cap): no new connection.
            listening.pause_if_retiring(worker, poll.registry());
            if let Some(stop) = listening.stop_if_stopping(worker, poll.registry(), graceful) {
                s.stopping(py, stop);
            }
            // Stopping: the listeners are out of the poller; what their
            // backlog holds is taken here.
            if s.listening.draining_backlog(s.conns.len(), s.max_conns) {
                let mut launches = Vec::new();
                s.accept(py, &mut launches);
                drop(s);
                launch_all(py, handle, launches);
                s = handle.server.borrow_mut();
            }
            let (open, max) = (s.conns.len() + s.detached.len(), s.max_conns);
            match s.listening.end(open, max, Instant::now()) {
                Some(End::Done) => return false,
                Some(End::TimedOut) => {
                    glogging::warning!(
                        "Forcing close of {open} connection(s) at the graceful timeout"
                    );
                    return false;
                }
                None => {}
            }
        }
        if let Err(e) = aloop.call_method0(intern!(py, "run_forever")) {
            glogging::error!(
                "Exception in the event loop\n{}",
                crate::app::format_traceback(py, &e)
            );
        }
        signalled = std::mem::take(&mut handle.server.borrow_mut().signalled);
    }
}

fn stop_loop(py: Python<'_>, handle: &Handle) {
    let _ = handle.aloop.bind(py).call_method0(intern!(py, "stop"));
}

/// The poller is ready: `loop.add_reader`'s callback.
#[pyclass(unsendable)]
struct OnReady {
    handle: Handle,
}

#[pymethods]
impl OnReady {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        batch(py, &self.handle, || {
            let (launches, stop) = {
                let mut s = self.handle.server.try_borrow_mut().map_err(busy)?;
                let launches = s.on_ready(py);
                (launches, s.signalled)
            };
            if stop {
                stop_loop(py, &self.handle);
            }
            launch_all(py, &self.handle, launches);
            Ok(())
        })
    }
}

/// When connections wait while the worker defers (see `Accepts`): take
/// them once the wait is over, on a loop timer (the listeners are
/// edge-triggered: no new event comes for them).
#[pyclass(unsendable)]
struct AcceptLater {
    handle: Handle,
}

#[pymethods]
impl AcceptLater {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        batch(py, &self.handle, || {
            let launches = {
                let mut s = self.handle.server.try_borrow_mut().map_err(busy)?;
                s.accept_timer = false;
                let mut launches = Vec::new();
                if !s.over {
                    s.accept(py, &mut launches);
                }
                launches
            };
            launch_all(py, &self.handle, launches);
            Ok(())
        })
    }
}

/// Every `TICK`: deadlines, and the loop back to the worker's frame (when
/// idle, every `IDLE_FRAME_TICKS`).
#[pyclass(unsendable)]
struct Tick {
    handle: Handle,
    ticks: Cell<u32>,
}

#[pymethods]
impl Tick {
    fn __call__(slf: PyRef<'_, Self>, py: Python<'_>) -> PyResult<()> {
        let handle = slf.handle.clone();
        let ticks = slf.ticks.get().wrapping_add(1);
        slf.ticks.set(ticks);
        let step = batch(py, &handle, || {
            let (launches, frame) = {
                let mut s = handle.server.try_borrow_mut().map_err(busy)?;
                if s.over {
                    return Ok(None);
                }
                // The master's `--timeout` watch hears from an idle worker
                // every tick too, not only when its frame runs.
                s.heartbeats.beat(s.slot);
                let active = s.served > 0
                    || s.conns.len() > 0
                    || !s.detached.is_empty()
                    || !s.listening.accepting()
                    || lifecycle::phase() != lifecycle::Phase::Running;
                (s.sweep(py), active || ticks % IDLE_FRAME_TICKS == 0)
            };
            launch_all(py, &handle, launches);
            Ok(Some(frame))
        })?;
        let Some(frame) = step else {
            return Ok(());
        };
        let aloop = handle.aloop.bind(py);
        aloop.call_method1(intern!(py, "call_later"), (TICK, slf))?;
        if frame {
            stop_loop(py, &handle);
        }
        Ok(())
    }
}

/// A request's app call, as the coroutine its task runs: it steps the
/// app's coroutine and sees it end in the task's own step, so no done
/// callback goes through the loop's queue per request. Its
/// other attributes (`cr_frame`, `cr_running`, `__qualname__`...) are the
/// app coroutine's, for asyncio's reprs and `inspect.getcoroutinestate`.
#[pyclass(unsendable)]
struct Call {
    handle: Handle,
    id: Id,
    coro: Py<PyAny>,
    /// The app's coroutine has ended (its request's finish is queued).
    over: Cell<bool>,
}

#[pymethods]
impl Call {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// What the task's step calls (`PyIter_Send` with `None`).
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let sent = pycall::send_none(self.coro.bind(py));
        self.resumed(py, sent)
    }

    fn send(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let coro = self.coro.bind(py);
        let sent = if value.is_none() {
            pycall::send_none(coro)
        } else {
            by_method(py, coro.call_method1(intern!(py, "send"), (value,)))
        };
        self.resumed(py, sent)?
            .ok_or_else(|| pyo3::exceptions::PyStopIteration::new_err(()))
    }

    #[pyo3(signature = (kind, value=None, traceback=None))]
    fn throw(
        &self,
        py: Python<'_>,
        kind: &Bound<'_, PyAny>,
        value: Option<&Bound<'_, PyAny>>,
        traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let coro = self.coro.bind(py);
        let thrown = match (value, traceback) {
            (None, _) => coro.call_method1(intern!(py, "throw"), (kind,)),
            (Some(v), None) => coro.call_method1(intern!(py, "throw"), (kind, v)),
            (Some(v), Some(t)) => coro.call_method1(intern!(py, "throw"), (kind, v, t)),
        };
        self.resumed(py, by_method(py, thrown))?
            .ok_or_else(|| pyo3::exceptions::PyStopIteration::new_err(()))
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.coro
            .bind(py)
            .call_method0(intern!(py, "close"))
            .map(drop)
    }

    fn __getattr__(&self, py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        self.coro.bind(py).getattr(name).map(Bound::unbind)
    }
}

impl Call {
    /// After a step of the app's coroutine: what it waits on (`Some`), or
    /// its end, which finishes the request. Its exception is logged; a
    /// cancellation (and what is not an `Exception`: `SystemExit`...) goes
    /// on to the task.
    fn resumed(
        &self,
        py: Python<'_>,
        sent: PyResult<pycall::Sent<'_>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        match sent {
            Ok(pycall::Sent::Yielded(v)) => Ok(Some(v.unbind())),
            Ok(pycall::Sent::Returned(_)) => {
                self.finish(py, false);
                Ok(None)
            }
            Err(e) => {
                let cancelled = e.is_instance(py, self.handle.cancelled.bind(py));
                if !cancelled {
                    glogging::exception(&format!(
                        "Error in ASGI application\n{}",
                        crate::app::format_traceback(py, &e)
                    ));
                }
                self.finish(py, true);
                if cancelled || !e.is_instance_of::<pyo3::exceptions::PyException>(py) {
                    Err(e)
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// The request is finished at the end of the loop's turn, after the
    /// output of every call that ran in it is written (`flush_all`): its
    /// connection's next steps (a keep-alive read, a close) then cost no
    /// syscall between the apps' Python.
    fn finish(&self, py: Python<'_>, failed: bool) {
        if self.over.replace(true) {
            return;
        }
        match self.handle.server.try_borrow_mut() {
            Ok(mut s) => s.finished.push((self.id, failed)),
            Err(_) => {
                glogging::error!("asgi worker re-entered: a request's end was not recorded");
                return;
            }
        }
        if let Err(e) = schedule_flush(py, &self.handle) {
            glogging::error!("Cannot schedule the asgi worker's writes: {e}");
        }
    }
}

/// A coroutine method's outcome (`send`, `throw`) as a step's.
fn by_method<'py>(py: Python<'py>, r: PyResult<Bound<'py, PyAny>>) -> PyResult<pycall::Sent<'py>> {
    match r {
        Ok(v) => Ok(pycall::Sent::Yielded(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
            let value = e.value(py).getattr(intern!(py, "value"))?;
            Ok(pycall::Sent::Returned(value))
        }
        Err(e) => Err(e),
    }
}

/// Queue a `FlushAll` for what `send`s left, unless one is queued or one
/// of our callbacks flushes when it ends.
fn schedule_flush(py: Python<'_>, handle: &Handle) -> PyResult<()> {
    if !handle.server.try_borrow_mut().map_err(busy)?.flush_wanted() {
        return Ok(());
    }
    let flush = Py::new(
        py,
        FlushAll {
            handle: handle.clone(),
        },
    )?;
    handle
        .aloop
        .bind(py)
        .call_method1(intern!(py, "call_soon"), (flush,))
        .map(drop)
}

/// Run one of our loop callbacks: what its sends leave waits until it
/// ends, then goes out with every other connection's.
fn batch<R>(py: Python<'_>, handle: &Handle, f: impl FnOnce() -> PyResult<R>) -> PyResult<R> {
    handle.server.try_borrow_mut().map_err(busy)?.flush_at_end = true;
    let r = f();
    if let Ok(mut s) = handle.server.try_borrow_mut() {
        s.flush_at_end = false;
    }
    flush_all(py, handle, false)?;
    r
}

/// Write every connection's waiting output (and start what that lets start).
fn flush_all(py: Python<'_>, handle: &Handle, scheduled: bool) -> PyResult<()> {
    let (launches, stop) = {
        let mut s = handle.server.try_borrow_mut().map_err(busy)?;
        if scheduled {
            s.flush_scheduled = false;
        }
        let mut launches = s.finish_calls(py);
        launches.extend(s.flush_dirty(py));
        (launches, s.budget > 0 && s.served_total >= s.budget)
    };
    if stop {
        stop_loop(py, handle);
    }
    launch_all(py, handle, launches);
    Ok(())
}

/// The end of the loop's turn for the output `send` left (scheduled by
/// the first such `send` outside our own callbacks).
#[pyclass(unsendable)]
struct FlushAll {
    handle: Handle,
}

#[pymethods]
impl FlushAll {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        flush_all(py, &self.handle, true)
    }
}

fn busy(_: std::cell::BorrowMutError) -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("asgi worker re-entered")
}

/// The app's `receive`.
#[pyclass(unsendable)]
struct Receive {
    handle: Handle,
    id: Id,
}

#[pymethods]
impl Receive {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut s = self.handle.server.try_borrow_mut().map_err(busy)?;
        s.receive(py, self.id, &self.handle.create_future)
    }
}

/// The app's `send`.
#[pyclass(unsendable)]
struct Send {
    handle: Handle,
    id: Id,
}

#[pymethods]
impl Send {
    fn __call__(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let sent = {
            let mut s = self.handle.server.try_borrow_mut().map_err(busy)?;
            s.send(py, self.id, message, &self.handle.create_future)
        };
        schedule_flush(py, &self.handle)?;
        sent
    }
}

/// A request's task name, `ferricorn: GET /path HTTP/1.1` (the timeout
/// report's line: `_asgi.request_line`).
fn task_name(req: &Request<'_>) -> String {
    let (method, target) = (
        String::from_utf8_lossy(req.method()),
        String::from_utf8_lossy(req.raw_target()),
    );
    let protocol = req.protocol();
    let mut line = String::with_capacity(13 + method.len() + target.len() + protocol.len());
    for part in ["ferricorn: ", &method, " ", &target, " ", &protocol] {
        line.push_str(part);
    }
    line
}

/// Start the requests: `app(scope, receive, send)` as a task each.
fn launch_all(py: Python<'_>, handle: &Handle, launches: Vec<Launch>) {
    for l in launches {
        if let Err(e) = launch(py, handle, &l) {
            glogging::exception(&format!(
                "Error in ASGI application\n{}",
                crate::app::format_traceback(py, &e)
            ));
            let more = handle.server.borrow_mut().done(py, l.id, true);
            launch_all(py, handle, more);
        }
    }
}

fn launch(py: Python<'_>, handle: &Handle, l: &Launch) -> PyResult<()> {
    if let Some(hook) = &l.hook {
        crate::hooks::asgi_pre(py, hook)?;
    }
    let receive = Py::new(
        py,
        Receive {
            handle: handle.clone(),
            id: l.id,
        },
    )?;
    let send = Py::new(
        py,
        Send {
            handle: handle.clone(),
            id: l.id,
        },
    )?;
    let coro = handle
        .app
        .bind(py)
        .call1((l.scope.bind(py), receive, send))?;
    let call = Py::new(
        py,
        Call {
            handle: handle.clone(),
            id: l.id,
            coro: coro.unbind(),
            over: Cell::new(false),
        },
    )?;
    // Named by its request (asyncio's reprs, the timeout report).
    let task = pycall::call_with_keyword(
        handle.start_task.bind(py),
        call.bind(py).as_any(),
        PyString::new(py, &l.line).as_any(),
        handle.name_kw.bind(py),
    )?;
    // An eager first step may have ended the call already.
    if !call.borrow(py).over.get() {
        if let Some(c) = handle.server.borrow_mut().conn(l.id) {
            c.task = Some(task.unbind());
        }
    }
    Ok(())
}

impl Server {
    fn conn(&mut self, id: Id) -> Option<&mut Conn> {
        conn_of(&mut self.conns, id)
    }

    fn remove(&mut self, i: usize) {
        if let Some(c) = self.conns.remove(i) {
            let _ = c.core.stream.deregister(self.poll.registry());
        }
    }

    /// Poll the ready sources, accept, and give ready connections a turn.
    fn on_ready(&mut self, py: Python<'_>) -> Vec<Launch> {
        let mut launches = Vec::new();
        self.heartbeats.beat(self.slot);
        if let Err(e) = self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            if e.kind() != io::ErrorKind::Interrupted {
                glogging::error!("Cannot poll: {e}");
            }
            return launches;
        }
        let mut todo = Vec::new();
        for ev in &self.events {
            match ev.token() {
                SIGNAL_PIPE => self.signalled = true,
                Token(t) if t >= CONN_BASE => todo.push(t - CONN_BASE),
                Token(t) => self.listening.ready(t - LISTENER_BASE),
            }
        }
        for i in todo {
            self.turn(py, i, &mut launches);
        }
        self.accept(py, &mut launches);
        launches
    }

    /// Accept while under `--worker-connections` (with other workers: in
    /// turns, see `Accepts`; connections left waiting then are taken by
    /// `AcceptLater`); once stopping, what the backlog still holds. A new
    /// connection's request often came with it: it gets a turn at once.
    fn accept(&mut self, py: Python<'_>, launches: &mut Vec<Launch>) {
        if !self.listening.any_waiting() {
            return; // (most events: a connection's)
        }
        let accepting = self.listening.accepting();
        let takes_new = || !accepting || lifecycle::phase() == lifecycle::Phase::Running;
        for li in 0..self.listening.listeners().len() {
            if !takes_new() {
                continue;
            }
            let (open, max) = (self.conns.len(), self.max_conns);
            let mut budget = self.listening.budget(li, &mut self.accepts, open, max);
            while self.listening.may_take(li, budget, self.conns.len(), max) && takes_new() {
                budget -= 1;
                let Some(new) = self.listening.accept(li) else {
                    continue;
                };
                self.generation += 1;
                let (opts, keepalive) = (&self.opts, self.keepalive);
                let c = Conn {
                    core: Core::accepted(
                        new,
                        li,
                        opts,
                        keepalive,
                        self.io_timeout,
                        self.header_for,
                        accepting,
                    ),
                    generation: self.generation,
                    request: 0,
                    ex: None,
                    ws: None,
                    task: None,
                    hook: None,
                    out: Vec::new(),
                    ahead: Vec::new(),
                    gone: false,
                    closing: None,
                    unread: true,
                    lingering: None,
                    dirty: false,
                };
                let registry = self.poll.registry();
                let both = Interest::READABLE | Interest::WRITABLE;
                let admitted =
                    polled::admit(&mut self.conns, c, |c| &c.core, registry, CONN_BASE, both);
                let Some(i) = admitted else {
                    continue;
                };
                self.turn(py, i, launches);
                budget = budget.max(self.accepts.free(self.conns.len()));
            }
        }
        // Some wait that this turn left (by the accept queue's length,
        // unknown for a unix socket): take them when the wait is over.
        let left = |(li, l): (usize, &Listener)| self.listening.waiting(li) && l.backlog() != 0;
        if accepting
            && takes_new()
            && self.conns.len() < self.max_conns
            && self.listening.listeners().iter().enumerate().any(left)
        {
            self.accept_later(py);
        }
    }

    /// Arm the `AcceptLater` timer for the end of this worker's wait (see
    /// `Accepts`), unless it is armed.
    fn accept_later(&mut self, py: Python<'_>) {
        let Some((call_later, later)) = &self.accept_later else {
            return;
        };
        if self.accept_timer || self.over {
            return;
        }
        let now = Instant::now();
        let at = self
            .accepts
            .wait_until(self.conns.len(), now)
            .unwrap_or(now);
        let delay = at.saturating_duration_since(now).as_secs_f64();
        match call_later.call1(py, (delay, later.clone_ref(py))) {
            Ok(_) => self.accept_timer = true,
            Err(e) => glogging::debug!("Cannot arm the accept timer: {e}"),
        }
    }

    /// A readiness event for connection `i`: its turn, with its socket
    /// possibly holding bytes.
    fn turn(&mut self, py: Python<'_>, i: usize, launches: &mut Vec<Launch>) {
        if let Some(c) = self.conns.get_mut(i) {
            c.unread = true;
        }
        self.work(py, i, launches);
    }

    /// A connection's turn: send what it holds, read what it has, start
    /// the next request when idle.
    fn work(&mut self, py: Python<'_>, i: usize, launches: &mut Vec<Launch>) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if let Some(linger) = &mut c.lingering {
            if discard(&c.core.stream, &mut self.scratch, linger) {
                self.remove(i);
            }
            return;
        }
        if !flush(py, c) {
            return self.lost(py, i);
        }
        if let Some(closing) = c.closing {
            if c.out.is_empty() {
                return self.close(i, closing);
            }
            return;
        }
        if c.ws.is_some() {
            return self.read_for_ws(py, i);
        }
        if c.ex.is_some() {
            return self.read_for_request(py, i);
        }
        self.serve_idle(py, i, launches);
    }

    /// Read for the request in flight: body bytes for a waiting receive
    /// (or ahead of it, bounded), else watch for the client going away.
    fn read_for_request(&mut self, py: Python<'_>, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let Some(ex) = c.ex.as_mut() else { return };
        if ex.is_disconnected() {
            return;
        }
        if !ex.body.is_done() {
            if ex.receiver.is_some() || ex.body.available() == 0 {
                match read_body(&c.core.stream, ex, &mut self.scratch) {
                    Ok(()) => {}
                    Err(_) => return self.lost(py, i),
                }
                self.wake_receiver(py, i);
            }
            return;
        }
        // The body is complete: what comes is the next request's (kept),
        // or the client's end.
        while c.ahead.len() < READ_AHEAD {
            match c.core.stream.read_nowait(&mut self.scratch) {
                Ok(0) => return self.lost(py, i),
                Ok(n) => c.ahead.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.unread = false;
                    return;
                }
                Err(_) => return self.lost(py, i),
            }
        }
    }

    /// Read for a WebSocket (bounded: one read beyond what the app has not
    /// received), and give a waiting receive its message.
    fn read_for_ws(&mut self, py: Python<'_>, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let Some(w) = c.ws.as_mut() else { return };
        loop {
            let mut drained = false;
            while !w.eof && w.inbuf.len() < READ_AHEAD {
                match c.core.stream.read_nowait(&mut self.scratch) {
                    Ok(0) => w.eof = true,
                    Ok(n) => w.inbuf.extend_from_slice(&self.scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        drained = true;
                        break;
                    }
                    Err(_) => w.eof = true,
                }
            }
            // Nobody waits: what was read waits for the next receive
            // (which reads the rest itself), unless a ping waits for its pong.
            if w.receiver.is_none() {
                w.look_for_pong(&mut c.out);
                break;
            }
            match w.receive(py, &mut c.out) {
                Ok(websocket::Received::Message(m)) => {
                    if let Some(f) = w.receiver.take() {
                        asgi::resolve(py, &f, m);
                    }
                    break;
                }
                Ok(websocket::Received::NeedRead) if !drained && !w.eof => {}
                Ok(websocket::Received::NeedRead) => break,
                Err(e) => {
                    if let Some(f) = w.receiver.take() {
                        asgi::fail(py, &f, e);
                    }
                    break;
                }
            }
        }
        let eof = w.eof;
        if !flush(py, c) || (eof && c.ws.as_ref().is_some_and(|w| w.receiver.is_none())) {
            self.lost(py, i);
        }
    }

    /// A receive waits: give it the next message when there is one.
    fn wake_receiver(&mut self, py: Python<'_>, i: usize) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        let Some(ex) = c.ex.as_mut() else { return };
        if !ex.wants_body() {
            return;
        }
        match ex.receive(py) {
            Ok(Received::Message(m)) => {
                if let Some(f) = ex.receiver.take() {
                    asgi::resolve(py, &f, m);
                }
            }
            Ok(Received::NeedRead | Received::WaitDisconnect) => {}
            Err(e) => {
                if let Some(f) = ex.receiver.take() {
                    asgi::fail(py, &f, e);
                }
            }
        }
    }

    /// The client went away (EOF, reset, a failed write).
    fn lost(&mut self, py: Python<'_>, i: usize) {
        let grace = self.grace;
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        c.gone = true;
        c.out.clear();
        if let Some(w) = c.ws.as_mut() {
            // What the client sent before its end is still received (its
            // close frame's code), then 1006.
            if !w.holds_input() {
                w.dropped(py);
            } else {
                w.eof = true;
            }
        } else if let Some(ex) = c.ex.as_mut() {
            ex.disconnect(py);
        } else {
            return self.remove(i);
        }
        if let Some(task) = &c.task {
            let task = task.bind(py);
            let cancelled = if grace.is_zero() {
                task.call_method0(intern!(py, "cancel")).map(drop)
            } else {
                task.getattr(intern!(py, "cancel")).and_then(|cancel| {
                    task.call_method0(intern!(py, "get_loop"))?
                        .call_method1(intern!(py, "call_later"), (grace.as_secs_f64(), cancel))
                        .map(drop)
                })
            };
            if let Err(e) = cancelled {
                glogging::debug!("Cannot schedule the cancel of a request: {e}");
            }
        }
        let _ = c.core.stream.deregister(self.poll.registry());
    }

    /// Read and serve what an idle connection has: start its next request.
    fn serve_idle(&mut self, py: Python<'_>, i: usize, launches: &mut Vec<Launch>) {
        loop {
            let Some(c) = self.conns.get_mut(i) else {
                return;
            };
            if !c.core.http.is_idle() || c.core.http.is_eof() {
                match self.next_request(py, i, launches) {
                    Step::Read => {}
                    Step::Stop => return,
                }
            }
            let Some(c) = self.conns.get_mut(i) else {
                return;
            };
            if c.ex.is_some() || c.ws.is_some() || c.closing.is_some() {
                return;
            }
            if !c.unread && c.core.http.is_idle() {
                return; // the next event brings more
            }
            // (A TLS connection's handshake comes before its first read.)
            let scratch = &mut self.scratch[..h1::READ_CHUNK];
            match c
                .core
                .read(py, scratch, self.policy.proxy.as_ref(), &self.trust)
            {
                Read::Data { more } => c.unread = more,
                Read::Eof => c.core.http.eof(),
                Read::Empty => {
                    c.unread = false;
                    return;
                }
                Read::Failed => return self.remove(i),
            }
        }
    }

    /// Parse the next head an idle connection holds and start its request.
    fn next_request(&mut self, py: Python<'_>, i: usize, launches: &mut Vec<Launch>) -> Step {
        let ws_ping = self.ws_ping;
        let Server {
            conns,
            strings,
            state,
            servers,
            trust,
            header_for,
            ws_max,
            ws_deflate,
            heartbeats,
            slot,
            running,
            ..
        } = self;
        let Some(c) = conns.get_mut(i) else {
            return Step::Stop;
        };
        let core = &mut c.core;
        match core.http.next_head() {
            HeadEvent::Request(h1::Request {
                head,
                body,
                exchange,
            }) => {
                let scheme = match trust.scheme(&head.headers, core.trusted) {
                    Ok(s) => s.unwrap_or(if core.stream.is_tls() {
                        "https"
                    } else {
                        "http"
                    }),
                    Err(_) => {
                        drop(head);
                        glogging::warning!(
                            "Invalid request from ip={}: Contradictory scheme headers",
                            core.peer.addr
                        );
                        c.out.extend_from_slice(&crate::app::error_response(
                            400,
                            "Bad Request",
                            "Contradictory scheme headers",
                        ));
                        let next = core.http.finish(body, h1::Response::Refused);
                        return self.after(py, i, next, launches);
                    }
                };
                let req = Request::new(&head, scheme, &servers[core.server], &core.peer, b"");
                if ws::is_upgrade(|n| head.header(n).map(<[u8]>::to_vec)) {
                    let hs = ws::handshake(&head.method, head.version >= (1, 1), |n| {
                        head.header(n).map(<[u8]>::to_vec)
                    });
                    c.request += 1;
                    let id = Id {
                        slot: i,
                        generation: c.generation,
                        request: c.request,
                    };
                    let line = format!(
                        "ferricorn: WEBSOCKET {}",
                        String::from_utf8_lossy(req.raw_target())
                    );
                    let scope = hs.as_ref().ok().map(|hs| {
                        websocket::scope(py, &req, hs, strings, core.server, state.as_ref())
                            .and_then(|s| asgi::add_tls(py, s, &core.stream))
                    });
                    drop(req);
                    drop(head);
                    drop(body);
                    return match (hs, scope) {
                        (Ok(hs), Some(Ok(scope))) => {
                            // What came after the head is the first frames.
                            let rest = core.http.buffered().to_vec();
                            core.http.consume(rest.len());
                            c.ws = Some(WsExchange::new(hs, *ws_max, *ws_deflate, rest));
                            if let Some(w) = c.ws.as_mut() {
                                w.pings = ws_ping;
                            }
                            *running += 1;
                            launches.push(Launch {
                                id,
                                scope: scope.unbind(),
                                line,
                                hook: None,
                            });
                            Step::Stop
                        }
                        (Err(e), _) => {
                            glogging::debug!("{e}");
                            refuse_handshake(&e, &mut c.out);
                            c.closing = Some(Closing::Unread);
                            if flush(py, c) && c.out.is_empty() {
                                self.close(i, Closing::Unread);
                            }
                            Step::Stop
                        }
                        (Ok(_), _) => {
                            c.out.extend_from_slice(&crate::app::error_response(
                                500,
                                "Internal Server Error",
                                "",
                            ));
                            c.closing = Some(Closing::Unread);
                            if flush(py, c) && c.out.is_empty() {
                                self.close(i, Closing::Unread);
                            }
                            Step::Stop
                        }
                    };
                }
                let scope = asgi::http_scope(py, &req, strings, core.server, state.as_ref())
                    .and_then(|s| asgi::add_tls(py, s, &core.stream));
                let log = glogging::access_enabled().then(|| asgi::AccessFacts::of(&req));
                let hook = crate::hooks::asgi_request(py, &req);
                let line = task_name(&req);
                if scope.is_ok() {
                    heartbeats.begin_request(*slot, req.method(), req.raw_target());
                }
                drop(req);
                drop(head);
                let scope = match scope {
                    Ok(s) => s.unbind(),
                    Err(e) => {
                        glogging::exception(&format!(
                            "Cannot build the ASGI scope\n{}",
                            crate::app::format_traceback(py, &e)
                        ));
                        c.out.extend_from_slice(&crate::app::error_response(
                            500,
                            "Internal Server Error",
                            "",
                        ));
                        let next = core.http.finish(body, h1::Response::Failed);
                        return self.after(py, i, next, launches);
                    }
                };
                c.ex = Some(Exchange::new(body, exchange, log, hook.is_some()));
                c.hook = hook.as_ref().map(|h| h.clone_ref(py));
                *running += 1;
                c.request += 1;
                launches.push(Launch {
                    id: Id {
                        slot: i,
                        generation: c.generation,
                        request: c.request,
                    },
                    scope,
                    line,
                    hook,
                });
                Step::Stop
            }
            HeadEvent::NeedMore => {
                core.head_incomplete(*header_for);
                Step::Read
            }
            HeadEvent::End(ending) => {
                let closing = ending.closing;
                if ending.answer.is_some() {
                    flush(py, c);
                    c.core.end(py, ending);
                }
                self.close(i, closing);
                Step::Stop
            }
        }
    }

    /// Apply a request's verdict to its connection.
    fn after(&mut self, py: Python<'_>, i: usize, next: Next, launches: &mut Vec<Launch>) -> Step {
        let keepalive_for = self.keepalive_for;
        let Some(c) = self.conns.get_mut(i) else {
            return Step::Stop;
        };
        let ahead = std::mem::take(&mut c.ahead);
        match next {
            Next::KeepAlive if !c.gone => {
                if !ahead.is_empty() {
                    c.core.http.extend(&ahead);
                }
                c.core.kept_alive(keepalive_for);
                self.work(py, i, launches);
            }
            Next::KeepAlive => self.remove(i),
            Next::Close(closing) => {
                if c.gone {
                    return {
                        self.remove(i);
                        Step::Stop
                    };
                }
                c.closing = Some(closing);
                if !flush(py, c) {
                    self.remove(i);
                } else if c.out.is_empty() {
                    self.close(i, closing);
                }
            }
        }
        Step::Stop
    }

    /// Close connection `i` (its output sent): lingering when request
    /// bytes may remain unread.
    fn close(&mut self, i: usize, closing: Closing) {
        let Some(c) = self.conns.get_mut(i) else {
            return;
        };
        if closing.lingers(lifecycle::current()) {
            c.core.stream.shutdown_write();
            let linger = Linger::start(Instant::now());
            c.core.deadline = linger.until();
            c.lingering = Some(linger);
            if discard(
                &c.core.stream,
                &mut self.scratch,
                c.lingering.as_mut().expect("set"),
            ) {
                self.remove(i);
            }
        } else {
            c.core.close(self.poll.registry());
            self.conns.remove(i);
        }
    }

    fn receive(
        &mut self,
        py: Python<'_>,
        id: Id,
        create_future: &Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let Some(c) = conn_of(&mut self.conns, id) else {
            return asgi::ready(py, asgi::disconnect_message(py)?);
        };
        if c.ws.is_some() {
            return ws_receive(py, c, &mut self.scratch, create_future);
        }
        let Conn {
            ex,
            core: Core { stream, .. },
            out,
            gone,
            ..
        } = c;
        let Some(ex) = ex.as_mut() else {
            return asgi::ready(py, asgi::disconnect_message(py)?);
        };
        if ex.receiver.is_some() {
            return Err(pyo3::exceptions::PyRuntimeError::new_err(
                "receive() called while another receive() waits",
            ));
        }
        loop {
            match ex.receive(py)? {
                Received::Message(m) => return asgi::ready(py, m),
                Received::WaitDisconnect => break,
                Received::NeedRead => {
                    if let Some(cont) = ex.take_continue() {
                        out.extend_from_slice(cont);
                        if !flush_parts(py, stream, out, Some(&mut ex.writer)) {
                            *gone = true;
                        }
                    }
                    if *gone {
                        ex.disconnect(py);
                        continue;
                    }
                    match read_body(stream, ex, &mut self.scratch) {
                        Ok(()) if ex.body.available() > 0 || ex.body.is_done() => continue,
                        Ok(()) => break,
                        Err(_) => {
                            ex.disconnect(py);
                            continue;
                        }
                    }
                }
            }
        }
        let fut = create_future.call0(py)?;
        ex.receiver = Some(fut.clone_ref(py));
        ex.waiting_since = Some(Instant::now());
        Ok(fut)
    }

    fn send(
        &mut self,
        py: Python<'_>,
        id: Id,
        message: &Bound<'_, PyAny>,
        create_future: &Py<PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let gone = || pyo3::exceptions::PyOSError::new_err("client disconnected");
        let Some(c) = conn_of(&mut self.conns, id) else {
            return Err(gone());
        };
        let now = match (c.ws.as_mut(), c.ex.as_mut()) {
            (Some(w), _) => w.send(py, message, &mut c.out).map(|()| true)?,
            (None, Some(ex)) if !c.gone => ex.send(py, message, &mut c.out)?,
            _ => return Err(gone()),
        };
        if !now {
            return asgi::ready_none(py);
        }
        // At the end of the turn: the output, and whether the app's call
        // may go on while the connection serves its next request.
        if !c.dirty {
            c.dirty = true;
            self.dirty.push(id);
        }
        if c.out.len() < WRITE_NOW {
            return asgi::ready_none(py);
        }
        if !flush(py, c) {
            self.lost(py, id.slot);
            return Err(gone());
        }
        if c.out.len() <= WRITE_HIGH {
            return asgi::ready_none(py);
        }
        let fut = create_future.call0(py)?;
        if let Some(writer) = writer_of(c) {
            *writer = Some(fut.clone_ref(py));
        }
        if let Some(ex) = c.ex.as_mut() {
            ex.waiting_since = Some(Instant::now());
        }
        Ok(fut)
    }

    /// Whether a `FlushAll` must be scheduled for what `send` left: not
    /// when one is queued or one of our callbacks flushes at its end.
    fn flush_wanted(&mut self) -> bool {
        if (self.dirty.is_empty() && self.finished.is_empty())
            || self.flush_at_end
            || self.flush_scheduled
        {
            return false;
        }
        self.flush_scheduled = true;
        true
    }

    /// Finish the requests whose app calls ended in this turn (`Call::finish`).
    fn finish_calls(&mut self, py: Python<'_>) -> Vec<Launch> {
        let mut launches = Vec::new();
        let mut finished = std::mem::take(&mut self.finished);
        for (id, failed) in finished.drain(..) {
            launches.extend(self.done(py, id, failed));
        }
        if self.finished.is_empty() {
            self.finished = finished; // keep the allocation
        }
        launches
    }

    /// Write what the connections' `send`s left; a request whose response
    /// is complete while its app call goes on is finished (see
    /// [`Server::finish_early`]). The requests that starts are returned.
    fn flush_dirty(&mut self, py: Python<'_>) -> Vec<Launch> {
        let mut launches = Vec::new();
        let mut dirty = std::mem::take(&mut self.dirty);
        for id in dirty.drain(..) {
            // The connection's output, whichever of its requests is
            // current now (the flag must not outlive the entry).
            let Some(c) = self
                .conns
                .get_mut(id.slot)
                .filter(|c| c.generation == id.generation)
            else {
                continue;
            };
            c.dirty = false;
            if !flush(py, c) {
                self.lost(py, id.slot);
                continue;
            }
            // Not while output or a waiting send or receive remains: they
            // belong to the call, which finishes the usual way then.
            let early = c.request == id.request
                && c.hook.is_none()
                && !c.gone
                && c.out.is_empty()
                && c.ex.as_ref().is_some_and(|ex| {
                    ex.may_finish_early() && ex.writer.is_none() && ex.receiver.is_none()
                })
                // Its call goes on (its end takes `ex`: `Call::finish`).
                && c.task.is_some();
            if early {
                self.finish_early(py, id, &mut launches);
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty; // keep the allocation
        }
        launches
    }

    /// The app's call goes on after a complete response (Starlette's
    /// background tasks): the request is over for the connection, which
    /// serves its next request meanwhile, as gunicorn 27's asgi worker
    /// does. The call's later `receive` gets `http.disconnect`, a `send`
    /// raises, its end is only logged when it fails, and the client going
    /// away no longer cancels it.
    fn finish_early(&mut self, py: Python<'_>, id: Id, launches: &mut Vec<Launch>) {
        let Some(c) = conn_of(&mut self.conns, id) else {
            return;
        };
        c.task = None;
        c.request += 1; // the call's callbacks no longer reach this connection
        self.detached.push(id);
        let Some(ex) = c.ex.take() else { return };
        let ended = ex.end(py, false, &mut c.out);
        let next = c.core.http.finish(ended.body, ended.response);
        self.request_over();
        self.after(py, id.slot, next, launches);
    }

    /// A request is over: the heartbeat's and `--max-requests`' counts.
    fn request_over(&mut self) {
        self.running = self.running.saturating_sub(1);
        if self.running == 0 {
            self.heartbeats.end_request(self.slot);
        }
        self.served += 1;
        self.served_total += 1;
    }

    /// A request's task is done: finish its exchange, log it, and go on
    /// with the connection as `h1::Conn` says.
    fn done(&mut self, py: Python<'_>, id: Id, failed: bool) -> Vec<Launch> {
        let mut launches = Vec::new();
        if let Some(k) = self.detached.iter().position(|d| *d == id) {
            self.detached.swap_remove(k);
            return launches;
        }
        let Some(c) = conn_of(&mut self.conns, id) else {
            return launches;
        };
        c.task = None;
        if c.ws.is_none() && c.ex.is_none() {
            return launches;
        }
        self.request_over();
        let Some(c) = conn_of(&mut self.conns, id) else {
            return launches;
        };
        if let Some(mut w) = c.ws.take() {
            w.end(py, failed, &mut c.out);
            if c.gone {
                self.remove(id.slot);
            } else {
                c.closing = Some(Closing::Unread);
                if !flush(py, c) {
                    self.remove(id.slot);
                } else if c.out.is_empty() {
                    self.close(id.slot, Closing::Unread);
                }
            }
            return launches;
        }
        let Some(ex) = c.ex.take() else {
            return launches;
        };
        let ended = ex.end(py, failed, &mut c.out);
        if let Some(hook) = c.hook.take() {
            crate::hooks::asgi_post(
                py,
                &hook,
                ended.status,
                &ended.response_headers,
                ended.sent,
                ended.version,
            );
        }
        let mut body = ended.body;
        if matches!(ended.response, h1::Response::Complete(f) if f.keep_alive) && !c.gone {
            drain(&c.core.stream, &mut body, &mut self.scratch);
        }
        let next = c.core.http.finish(body, ended.response);
        self.after(py, id.slot, next, &mut launches);
        launches
    }

    /// The graceful stop began: idle connections wait at most until the
    /// stop's linger; requests still waiting on their client get
    /// `http.disconnect` after the disconnect grace period.
    fn stopping(&mut self, _py: Python<'_>, stop: super::listening::Stop) {
        // The master marks a worker it has replaced (a HUP, a retirement)
        // before its TERM: WebSockets then hear "service restart".
        let restart = self.heartbeats.state(self.slot) == super::heartbeat::SlotState::Restarting;
        for c in self.conns.iter_mut() {
            if let Some(w) = c.ws.as_mut() {
                if w.going_away(&mut c.out, restart) {
                    flush(_py, c);
                }
            } else if c.ex.is_none() && c.lingering.is_none() {
                c.core.stopping(stop.linger_until);
            }
        }
        self.disconnect_at = Some(Instant::now() + self.grace);
    }

    /// Every `TICK`: close the connections past their deadline (a partial
    /// head gets its 408); once stopping, disconnect waiting requests.
    fn sweep(&mut self, py: Python<'_>) -> Vec<Launch> {
        let now = Instant::now();
        let io_timeout = self.io_timeout;
        let mut stalled = Vec::new();
        let disconnect = self.disconnect_at.is_some_and(|t| now >= t);
        let pings = self.ws_ping.is_some();
        let mut ws_gone = Vec::new();
        for i in self.conns.indices() {
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            // WebSocket keepalive: a ping due, or its pong missed (close
            // 1011 sent, then the connection dropped, as when a write fails).
            if let (true, Some(w)) = (pings, c.ws.as_mut()) {
                let timed_out = w.keepalive(py, now, &mut c.out);
                if !flush(py, c) || timed_out {
                    if timed_out {
                        glogging::debug!("WebSocket ping not answered in time");
                        c.core.stream.shutdown_write();
                    }
                    ws_gone.push(i);
                }
            }
            if c.ws.is_some() {
                continue;
            }
            if let Some(ex) = c.ex.as_mut() {
                if disconnect && !ex.is_disconnected() && ex.receiver.is_some() {
                    ex.disconnect(py);
                }
                // A body that does not come, a client that does not read:
                // `--timeout` (gunicorn's asgi worker bounds the body wait
                // the same way).
                let waited = ex
                    .waiting_since
                    .zip(io_timeout)
                    .is_some_and(|(since, limit)| now.duration_since(since) >= limit);
                if waited && ex.writer.is_some() {
                    stalled.push(i);
                } else if waited && ex.wants_body() {
                    glogging::debug!("Request body not received in time");
                    ex.disconnect(py);
                }
                continue;
            }
            if c.closing.is_some() && c.lingering.is_none() {
                continue; // sending its last response
            }
            if !c.core.expired(now) && c.lingering.is_none() {
                continue;
            }
            match &c.lingering {
                Some(l) => {
                    if l.wait(now, lifecycle::current()) == LingerStep::Close {
                        self.remove(i);
                    }
                }
                None => {
                    if let Some(ending) = c.core.timed_out() {
                        c.core.end(py, ending);
                    }
                    self.remove(i);
                }
            }
        }
        for i in stalled {
            glogging::debug!("Client not reading the response in time");
            self.lost(py, i);
        }
        for i in ws_gone {
            self.lost(py, i);
        }
        // Connections left waiting while at `--worker-connections` bring
        // no new event (edge-triggered): take them once there is room.
        let mut launches = Vec::new();
        if self.conns.len() < self.max_conns && self.listening.any_waiting() {
            self.accept(py, &mut launches);
        }
        launches
    }
}

fn conn_of(conns: &mut Slab<Conn>, id: Id) -> Option<&mut Conn> {
    conns
        .get_mut(id.slot)
        .filter(|c| c.generation == id.generation && c.request == id.request)
}

enum Step {
    Read,
    Stop,
}

/// Send what the connection holds without blocking; false when the
/// client is gone.
fn flush(py: Python<'_>, c: &mut Conn) -> bool {
    let Conn {
        ex,
        ws,
        core: Core { stream, .. },
        out,
        ..
    } = c;
    flush_parts(py, stream, out, writer_in(ex, ws))
}

/// Where a send waiting for room on the connection is kept.
fn writer_of(c: &mut Conn) -> Option<&mut Option<Py<PyAny>>> {
    writer_in(&mut c.ex, &mut c.ws)
}

fn writer_in<'a>(
    ex: &'a mut Option<Exchange>,
    ws: &'a mut Option<WsExchange>,
) -> Option<&'a mut Option<Py<PyAny>>> {
    match (ex.as_mut(), ws.as_mut()) {
        (Some(ex), _) => Some(&mut ex.writer),
        (None, Some(w)) => Some(&mut w.writer),
        (None, None) => None,
    }
}

/// [`flush`] on a connection's parts; a send waiting for room goes on
/// once `out` is down to `WRITE_HIGH`.
fn flush_parts(
    py: Python<'_>,
    stream: &Stream,
    out: &mut Vec<u8>,
    writer: Option<&mut Option<Py<PyAny>>>,
) -> bool {
    if out.is_empty() {
        return true;
    }
    match stream.send_nowait(out) {
        Ok(n) => {
            out.drain(..n);
            if out.len() <= WRITE_HIGH {
                if let Some(f) = writer.and_then(Option::take) {
                    asgi::resolve(py, &f, py.None());
                }
            }
            true
        }
        Err(_) => false,
    }
}

/// Read body bytes until some are decoded (one read ahead of the app at
/// most: `READ_AHEAD`). Err: the client is gone (or the body is cut).
fn read_body(stream: &Stream, ex: &mut Exchange, scratch: &mut [u8]) -> io::Result<()> {
    while !ex.body.is_done() && ex.body.available() == 0 {
        let (buf, want) = ex.body.read_buf();
        let want = want.min(scratch.len());
        match stream.read_nowait(&mut scratch[..want]) {
            Ok(0) => {
                let _ = ex.body.received(0);
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                let _ = ex.body.received(n);
                // Decode what came, so `available` counts it.
                if ex.body.data().is_err() {
                    return Err(io::ErrorKind::InvalidData.into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Discard the body the app left unread, as far as it is there now and
/// within `h1::DRAIN_MAX`: a body not read to its end closes the
/// connection instead (`h1::Conn::finish` sees it).
fn drain(stream: &Stream, body: &mut h1::Body, scratch: &mut [u8]) {
    let mut budget = h1::DRAIN_MAX;
    loop {
        match body.drain(&mut budget) {
            Ok(h1::Drain::NeedRead) => {}
            _ => return,
        }
        let (buf, want) = body.read_buf();
        let want = want.min(scratch.len());
        match stream.read_nowait(&mut scratch[..want]) {
            Ok(0) => {
                let _ = body.received(0);
                return;
            }
            Ok(n) => {
                buf.extend_from_slice(&scratch[..n]);
                let _ = body.received(n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// A lingering connection's turn: discard what came. True when it is over.
fn discard(stream: &Stream, scratch: &mut [u8], linger: &mut Linger) -> bool {
    loop {
        match stream.read_nowait(scratch) {
            Ok(n) => {
                if linger.received(n, Instant::now()) == LingerStep::Close {
                    return true;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return linger.wait(Instant::now(), lifecycle::current()) == LingerStep::Close;
            }
            Err(_) => return true,
        }
    }
}

/// Answer a refused WebSocket handshake (400, or 426 naming the version).
fn refuse_handshake(e: &ws::HandshakeError, out: &mut Vec<u8>) {
    let mut headers: Vec<(&[u8], &[u8])> = e
        .extra_headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    headers.push((b"Content-Type", b"text/plain"));
    let len = e.reason.len().to_string();
    headers.push((b"Content-Length", len.as_bytes()));
    let head = websocket::closing_head(out, e.status, &headers);
    if head.is_ok() {
        out.extend_from_slice(e.reason.as_bytes());
    }
}

/// A WebSocket's `receive`: the next message now, or a future resolved
/// when the client sent it.
fn ws_receive(
    py: Python<'_>,
    c: &mut Conn,
    scratch: &mut [u8],
    create_future: &Py<PyAny>,
) -> PyResult<Py<PyAny>> {
    let Conn {
        ws,
        core: Core { stream, .. },
        out,
        ..
    } = c;
    let Some(w) = ws.as_mut() else {
        return Err(pyo3::exceptions::PyOSError::new_err("client disconnected"));
    };
    if w.receiver.is_some() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "receive() called while another receive() waits",
        ));
    }
    loop {
        match w.receive(py, out)? {
            websocket::Received::Message(m) => {
                let _ = flush_parts(py, stream, out, None);
                return asgi::ready(py, m);
            }
            websocket::Received::NeedRead => {
                let _ = flush_parts(py, stream, out, None);
                if w.eof {
                    break;
                }
                match stream.read_nowait(scratch) {
                    Ok(0) => w.eof = true,
                    Ok(n) => w.inbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => w.eof = true,
                }
            }
        }
    }
    let fut = create_future.call0(py)?;
    w.receiver = Some(fut.clone_ref(py));
    Ok(fut)
}
