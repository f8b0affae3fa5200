//! Worker processes: the lifecycle every worker class shares (signals,
//! heartbeat, app loading, exit codes) and the classes themselves.
//!
//! A worker starts in the child right after the master's fork, holding the
//! GIL, and never returns: it ends with `_exit`.
//!
//! gunicorn counterpart: `workers/base.py` (`Worker.init_process`,
//! `init_signals`, `load_wsgi`) and `Arbiter.spawn_worker`'s child branch.

pub mod abort;
pub mod accepts;
pub mod asgi;
pub mod conn;
pub mod evloop;
pub mod gthread;
pub mod heartbeat;
pub mod listening;
pub mod polled;
mod slab;
pub mod sync;

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::signal::Signal;
use pyo3::prelude::*;

use crate::app::loader::{self, LoadError};
use crate::config::Settings;
use crate::errors::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::glogging::{self, Level};
use crate::lifecycle::{self, Phase};
use crate::sock::Listener;
pub(crate) use crate::sys::signals;
use crate::wsgi::environ::AppContext;
use heartbeat::Heartbeats;

/// How long a worker's loop may wait for events: half of `--timeout` so the
/// heartbeat stays fresh (gunicorn: timeout / 2), between 10 ms and 1 s.
pub(crate) fn loop_wait(timeout: f64) -> std::time::Duration {
    std::time::Duration::from_millis(if timeout > 0.0 {
        ((timeout * 500.0) as u64).clamp(10, 1000)
    } else {
        1000
    })
}

/// `--timeout` as a socket I/O timeout (`None` when 0 disables it).
pub(crate) fn io_timeout(timeout: f64) -> Option<std::time::Duration> {
    (timeout > 0.0).then(|| std::time::Duration::from_secs_f64(timeout))
}

/// Register the worker's signal wake pipe (as `signal`) and every listener
/// (as `Token(listener_base + i)`) with a mio poller, readable: the start of
/// the gthread and evloop loops.
pub(crate) fn register_sources(
    registry: &mio::Registry,
    worker: &Worker<'_>,
    signal: mio::Token,
    listener_base: usize,
) -> std::io::Result<()> {
    use mio::unix::SourceFd;
    use std::os::fd::AsRawFd;
    let wake_fd = worker.wake.0.as_raw_fd();
    registry.register(&mut SourceFd(&wake_fd), signal, mio::Interest::READABLE)?;
    for (i, l) in worker.setup.listeners.iter().enumerate() {
        l.register(registry, mio::Token(listener_base + i))?;
    }
    Ok(())
}

/// Name the calling thread in Python's `threading` (the name
/// `threading.current_thread().name`, log formats' `%(threadName)s` and
/// profilers show). gthread's request threads take the names gunicorn's
/// `ThreadPoolExecutor` gives its threads, `ThreadPoolExecutor-0_N`.
pub fn name_python_thread(name: &str) {
    Python::attach(|py| {
        let named = py
            .import("threading")
            .and_then(|t| t.call_method0("current_thread"))
            .and_then(|t| t.setattr("name", name));
        if let Err(e) = named {
            glogging::debug!("Cannot name the thread {name}: {e}");
        }
    });
}

/// The worker classes ferricorn implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Sync,
    Gthread,
    /// One thread, a readiness loop over many keep-alive connections, the app called inline.
    Evloop,
    /// An ASGI app on an asyncio loop per worker, fed by Rust I/O.
    Asgi,
}

/// Resolve `--worker-class` (any spelling gunicorn accepts) and `--threads`
/// to a class: `sync` with more than one thread becomes `gthread`, as in gunicorn.
pub fn resolve_class(name: &str, threads: usize) -> Result<Class, String> {
    let class = match crate::config::validate::worker_class(name)? {
        "gthread" => Class::Gthread,
        "evloop" => Class::Evloop,
        "asgi" => return Ok(Class::Asgi),
        _ => Class::Sync,
    };
    Ok(if class == Class::Sync && threads > 1 {
        Class::Gthread
    } else {
        class
    })
}

/// Signals the master handles; a worker resets them to their defaults.
pub const MASTER_SIGNALS: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCHLD,
];

/// Where the worker's app comes from.
pub enum AppSource<'a> {
    /// `--preload`: loaded in the master before fork.
    Preloaded(&'a Py<PyAny>),
    /// Imported in the worker from this spec.
    Spec(&'a str),
}

/// What the master hands a freshly forked worker.
pub struct Setup<'a> {
    pub slot: usize,
    pub age: u64,
    pub master_pid: i32,
    pub listeners: &'a [Listener],
    pub heartbeats: &'static Heartbeats,
    pub settings: &'a Settings,
    pub app: AppSource<'a>,
}

/// Shared state of a running worker, whatever its class.
pub struct Worker<'a> {
    pub setup: &'a Setup<'a>,
    pub pid: u32,
    /// Wakes the worker's poll when a signal arrives.
    pub wake: (OwnedFd, OwnedFd),
    /// Requests served so far.
    pub served: u64,
    /// `--max-requests` plus jitter (0 = unlimited).
    pub budget: u64,
    /// `--max-worker-memory` in MiB (0 = unlimited), read once: a settings
    /// lookup hashes its name, which showed in the per-request profile.
    pub memory_limit_mb: u64,
    /// When `parent_check_due` next asks the kernel for the parent pid.
    pub next_parent_check: std::time::Instant,
    /// How long this worker took from fork to ready (ms): what its
    /// replacement will take, about.
    pub boot_ms: u64,
    /// The request pace: when requests were last counted (monotonic ms),
    /// and the mean time between two of them (µs, a moving average).
    pub pace: Pace,
}

/// A worker's request pace, to start its replacement ahead of its budget.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pace {
    last_ms: u64,
    interval_us: u64,
}

impl Pace {
    /// `n` requests were done at `now_ms`.
    pub fn record(&mut self, n: u64, now_ms: u64) {
        if self.last_ms != 0 && n > 0 {
            let sample = now_ms.saturating_sub(self.last_ms) * 1000 / n;
            self.interval_us = if self.interval_us == 0 {
                sample.max(1)
            } else {
                (self.interval_us * 7 + sample) / 8
            };
        }
        self.last_ms = now_ms;
    }

    /// Requests likely served while a replacement boots for `boot_ms`,
    /// doubled (the master's reaction, a slower boot), and at most a
    /// quarter of `budget`: how early to ask for it.
    pub fn lead(&self, boot_ms: u64, budget: u64) -> u64 {
        let cap = budget / 4;
        if self.interval_us == 0 {
            return 0; // no pace known yet
        }
        (boot_ms * 2000).div_ceil(self.interval_us).min(cap)
    }
}

/// How often a worker loop checks that its master is still its parent.
const PARENT_CHECK: std::time::Duration = std::time::Duration::from_millis(100);

impl Worker<'_> {
    pub fn notify(&self) {
        self.setup.heartbeats.beat(self.setup.slot);
    }

    /// Apply pending signals: TERM stops gracefully, QUIT/INT quickly,
    /// USR1 reopens logs. Returns true when the worker must exit now.
    pub fn handle_signals(&mut self) -> bool {
        let mut quick = false;
        for sig in signals::take_pending() {
            match sig {
                Signal::SIGTERM => {
                    lifecycle::advance(Phase::Draining);
                }
                Signal::SIGQUIT | Signal::SIGINT => {
                    quick = true;
                    // Once: an app call it interrupted ran it already (`quit`).
                    if lifecycle::advance(Phase::Quitting) {
                        worker_int();
                    }
                }
                Signal::SIGUSR1 => {
                    if let Err(e) = glogging::reopen() {
                        glogging::error!("{e}");
                    }
                }
                // A timeout: log the stacks and exit 1 (no return).
                Signal::SIGABRT => abort::run_pending(),
                _ => {}
            }
        }
        // Drain the wake pipe.
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.0.as_fd(), &mut buf), Ok(n) if n > 0) {}
        quick
    }

    /// `handle_signals` for a loop's every pass: does nothing (no syscall)
    /// unless a signal is pending or the loop's wait reported the wake pipe
    /// readable (`pipe_ready`; a byte whose signal an earlier pass already
    /// took must still be drained, or a level-triggered wait would spin).
    pub fn handle_signals_if(&mut self, pipe_ready: bool) -> bool {
        if !pipe_ready && !signals::any_pending() {
            return false;
        }
        self.handle_signals()
    }

    /// After each request: count it and, at `--max-requests` or above
    /// `--max-worker-memory`, retire: take no new connection and no new
    /// request on a kept one (`Phase::Retiring`), finish what is in
    /// progress, and ask the master (at once, see `heartbeat`) for a
    /// replacement; the master sends `TERM` once that one has booted.
    /// Shortly before the budget is spent (as many requests before as the
    /// current pace serves in two boot times, at most a quarter of the
    /// budget) the worker asks for its replacement ahead, so that it is
    /// ready when the budget runs out.
    pub fn request_done(&mut self) {
        self.requests_done(1);
    }

    /// `request_done` for `n` requests at once (gthread counts a batch).
    pub fn requests_done(&mut self, n: u64) {
        self.served += n;
        self.notify();
        if lifecycle::phase() != Phase::Running {
            return; // already retiring, or stopping
        }
        let (heartbeats, slot) = (self.setup.heartbeats, self.setup.slot);
        let state = if self.budget > 0 && self.served >= self.budget {
            glogging::info!("Autorestarting worker after current request.");
            Some(heartbeat::SlotState::RetireMaxRequests)
        } else if over_memory_limit(self.memory_limit_mb) {
            glogging::info!(
                "Worker (pid:{}) exceeds --max-worker-memory; retiring it after its replacement boots.",
                self.pid
            );
            Some(heartbeat::SlotState::RetireMemory)
        } else {
            if self.budget > 0 {
                self.pace.record(n, crate::util::monotonic_ms());
                let left = self.budget - self.served;
                if left <= self.pace.lead(self.boot_ms, self.budget)
                    && heartbeats.state(slot) == heartbeat::SlotState::Ready
                {
                    heartbeats.set_state(slot, heartbeat::SlotState::ReplaceAhead);
                }
            }
            None
        };
        if let Some(state) = state {
            lifecycle::advance(Phase::Retiring);
            heartbeats.set_state(slot, state);
        }
    }

    /// QUIT/INT taken (by the loop or by the handler that interrupted the
    /// app, `quick_stop`): leave now.
    pub fn quitting(&self) -> bool {
        lifecycle::phase() == Phase::Quitting
    }

    /// Taking new connections and new requests: `Running` (not retiring,
    /// not stopping).
    pub fn takes_new(&self) -> bool {
        lifecycle::phase() == Phase::Running
    }

    /// This worker was replaced: it asked to be retired (budget spent,
    /// memory cap), or the master marked it `Restarting` before its `TERM`
    /// (a `HUP` reload). Its stop is no stop of the server: the listeners
    /// stay served by the others and its replacement.
    fn replaced(&self) -> bool {
        let state = self.setup.heartbeats.state(self.setup.slot);
        state.wants_retirement() || state == heartbeat::SlotState::Restarting
    }

    /// A graceful stop (TERM) of the server drains connections already
    /// waiting in the listen backlog before exiting, within
    /// `--graceful-timeout`. A replaced worker leaves the backlog to the
    /// others: draining it under steady traffic would keep it taking new
    /// connections, with the old configuration and code, long after a `HUP`.
    pub fn should_drain(&self) -> bool {
        lifecycle::phase() == Phase::Draining && !self.replaced() && !self.parent_changed()
    }

    /// Not stopping: the worker takes new connections (its phase is
    /// `Running` or `Retiring`; see [`crate::lifecycle`]).
    pub fn alive(&self) -> bool {
        !lifecycle::phase().is_stopping()
    }

    /// The master went away (looked at most every `PARENT_CHECK`): say so
    /// and begin a graceful stop. True when that happened now.
    pub fn stop_if_orphaned(&mut self) -> bool {
        if !self.alive() || !self.parent_check_due() {
            return false;
        }
        glogging::info!("Parent changed, shutting down: worker {}", self.pid);
        self.stop();
        true
    }

    /// Begin a graceful stop (as TERM does).
    pub fn stop(&self) {
        lifecycle::advance(Phase::Draining);
    }

    /// Asked the master for its replacement (or stopping): responses close
    /// their connections.
    pub fn retiring(&self) -> bool {
        lifecycle::phase() >= Phase::Retiring
    }

    /// The master went away (re-parented): stop.
    pub fn parent_changed(&self) -> bool {
        nix::unistd::getppid().as_raw() != self.setup.master_pid
    }

    /// `parent_changed` at most every `PARENT_CHECK` (a `getppid` per loop
    /// pass showed in the per-request syscall count); false in between.
    pub fn parent_check_due(&mut self) -> bool {
        let now = std::time::Instant::now();
        if now < self.next_parent_check {
            return false;
        }
        self.next_parent_check = now + PARENT_CHECK;
        self.parent_changed()
    }
}

/// Whether this process's private memory (USS) exceeds `limit_mb` (0 = off).
fn over_memory_limit(limit_mb: u64) -> bool {
    if limit_mb == 0 {
        return false;
    }
    private_memory_bytes().is_some_and(|b| b > limit_mb * 1024 * 1024)
}

/// Private_Clean + Private_Dirty of this process, from `/proc/self/smaps_rollup`.
pub fn private_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let mut kb = 0u64;
    let mut found = false;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("Private_Clean:")
            .or_else(|| line.strip_prefix("Private_Dirty:"))
        {
            kb += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?;
            found = true;
        }
    }
    found.then_some(kb * 1024)
}

/// Parser options from the settings.
pub fn parser_options(s: &Settings) -> ferricorn_http::parse::Options {
    use ferricorn_http::parse::HeaderMap;
    let flag = |name: &str| s.get(name).as_bool();
    ferricorn_http::parse::Options {
        limit_request_line: s.limit_request_line(),
        limit_request_fields: s.limit_request_fields(),
        limit_request_field_size: s.limit_request_field_size(),
        casefold_http_method: flag("casefold_http_method"),
        permit_unconventional_http_method: flag("permit_unconventional_http_method"),
        permit_unconventional_http_version: flag("permit_unconventional_http_version"),
        permit_obsolete_folding: flag("permit_obsolete_folding"),
        strip_header_spaces: flag("strip_header_spaces"),
        header_map: match s.get("header_map").as_str() {
            Some("refuse") => HeaderMap::Refuse,
            Some("dangerous") => HeaderMap::Dangerous,
            _ => HeaderMap::Drop,
        },
        forwarder_headers: s
            .get("forwarder_headers")
            .as_list()
            .iter()
            .map(|h| h.to_ascii_uppercase())
            .collect(),
    }
}

fn flush_python_stdio(py: Python<'_>) {
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
}

/// The `worker_int` hook on QUIT/INT (and before a `--reload` restart); one
/// that raises ends the worker with status 255, as an exception escaping
/// gunicorn's signal handler does.
pub(crate) fn worker_int() {
    if !crate::hooks::is_set("worker_int") {
        return;
    }
    Python::attach(|py| {
        if let Err(tb) = crate::hooks::worker(py, "worker_int") {
            glogging::error!("Exception in worker process\n{tb}");
            glogging::info!("Worker exiting (pid: {})", std::process::id());
            exit_worker(py, 255);
        }
    });
}

/// `QUIT`/`INT` in a worker whose app runs on its main thread (sync,
/// evloop): a Python-level handler, run by CPython in the main thread at its
/// next bytecode boundary (a `time.sleep` or a blocking call in the app is
/// interrupted: the signal has no `SA_RESTART`), moves the worker to
/// `Quitting`, runs `worker_int` (once), and, when the main thread is
/// serving a request, raises `SystemExit` in the app, as gunicorn's
/// `handle_quit` does: the request fails (a 500 where nothing was sent,
/// with `Connection: close`) and the worker's loop, seeing `Quitting`,
/// exits at once. Outside a request the loop takes the signal as before.
/// gthread needs none of this: its main thread leaves at once, the app
/// threads with it.
pub mod quick_stop {
    use nix::sys::signal::Signal;
    use pyo3::prelude::*;

    use crate::lifecycle::{self, Phase};
    use crate::sys::signals;

    /// Route `QUIT` and `INT` through the Python-level handler. Call in the
    /// worker's main thread.
    pub fn install(py: Python<'_>) -> PyResult<()> {
        let handler = wrap_pyfunction!(on_quit, py)?;
        let signal = py.import("signal")?;
        for sig in [Signal::SIGQUIT, Signal::SIGINT] {
            signal.call_method1("signal", (sig as i32, &handler))?;
            signals::via_python(sig)
                .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        }
        Ok(())
    }

    #[pyfunction]
    fn on_quit(_signum: i32, _frame: Bound<'_, PyAny>) -> PyResult<()> {
        if lifecycle::advance(Phase::Quitting) {
            super::worker_int();
        }
        if signals::serving_here() {
            return Err(pyo3::exceptions::PySystemExit::new_err(0));
        }
        Ok(())
    }
}

/// A boot-time hook (`post_fork`, `post_worker_init`) raised: the worker
/// failed to boot (exit 3), as in gunicorn.
fn boot_hook(py: Python<'_>, name: &'static str) {
    if let Err(tb) = crate::hooks::worker(py, name) {
        glogging::log_always(Level::Error, &format!("Exception in worker process\n{tb}"));
        let reason = tb.lines().last().unwrap_or_default().to_string();
        boot_failed(py, WORKER_BOOT_ERROR, &reason);
    }
}

/// The worker cannot boot: say why on stderr too (gunicorn prints the
/// exception's message there, so a shell user sees the reason even when the
/// error log is a file), then exit with `code` (3 or 4).
fn boot_failed(py: Python<'_>, code: i32, reason: &str) -> ! {
    glogging::info!("Worker exiting (pid: {})", std::process::id());
    eprintln!("{reason}");
    exit_worker(py, code)
}

fn exit_worker(py: Python<'_>, code: i32) -> ! {
    crate::hooks::worker_exit(py);
    flush_python_stdio(py);
    crate::sys::process::exit_now(code)
}

/// The child side of a fork: set up, load the app, serve, exit. Never returns.
pub fn main(py: Python<'_>, setup: &Setup<'_>, master_fds: &[std::os::fd::RawFd]) -> ! {
    let forked_at = crate::util::monotonic_ms();
    let pid = std::process::id();
    let wake = take_over_process(py, master_fds);
    setup.heartbeats.beat(setup.slot);
    glogging::info!("Booting worker with pid: {pid}");
    enter_worker(py, setup);
    let settings = setup.settings;
    let class = resolve_class(settings.worker_class(), settings.threads()).unwrap_or(Class::Sync);
    let (callable, reload) = load_app(py, setup, class == Class::Asgi);
    if let Some(also) = reload {
        start_reloader(setup, also);
    }
    let ctx = app_context(py, settings, callable, class);
    boot_hook(py, "post_worker_init");
    let mut worker = Worker {
        setup,
        pid,
        wake,
        next_parent_check: std::time::Instant::now(),
        served: 0,
        budget: sync::request_budget(
            settings.max_requests(),
            settings.max_requests_jitter(),
            u64::from(pid) ^ crate::util::monotonic_ms(),
        ),
        memory_limit_mb: settings.max_worker_memory(),
        boot_ms: crate::util::monotonic_ms().saturating_sub(forked_at),
        pace: Pace::default(),
    };
    if class != Class::Gthread {
        installed_or_fail(py, "QUIT", quick_stop::install(py));
    }
    setup
        .heartbeats
        .set_state(setup.slot, heartbeat::SlotState::Ready);
    match class {
        Class::Sync => sync::run(py, &mut worker, &ctx),
        Class::Gthread => gthread::run(py, &mut worker, &ctx),
        Class::Evloop => evloop::run(py, &mut worker, &ctx),
        Class::Asgi => asgi::run(py, &mut worker, &ctx),
    }
    glogging::info!("Worker exiting (pid: {pid})");
    exit_worker(py, 0)
}

/// The forked child becomes a worker process: the master's signal handlers
/// and wake pipe go, the worker's own come (QUIT/INT interrupt, TERM/USR1
/// restart reads), fatal signals dump the Python stacks. Returns the wake
/// pipe.
fn take_over_process(py: Python<'_>, master_fds: &[std::os::fd::RawFd]) -> (OwnedFd, OwnedFd) {
    // The master's signal handlers and wake pipe are not ours.
    signals::set_wake_fd(None);
    for &fd in master_fds {
        let _ = nix::unistd::close(fd);
    }
    let _ = signals::reset_default(MASTER_SIGNALS);
    let _ = signals::take_pending();

    let wake =
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK) {
            Ok(p) => p,
            Err(e) => {
                glogging::error!("Exception in worker process: cannot create pipe: {e}");
                boot_failed(py, WORKER_BOOT_ERROR, &format!("cannot create pipe: {e}"));
            }
        };
    signals::set_wake_fd(Some(&wake.1));
    let installed = signals::install(&[Signal::SIGQUIT, Signal::SIGINT], false)
        .and_then(|()| signals::install(&[Signal::SIGTERM, Signal::SIGUSR1], true))
        .and_then(|()| signals::ignore(&[Signal::SIGWINCH, Signal::SIGPIPE]))
        .and_then(|()| signals::unblock_all());
    if let Err(e) = installed {
        glogging::error!("Exception in worker process: cannot install signal handlers: {e}");
        boot_failed(
            py,
            WORKER_BOOT_ERROR,
            &format!("cannot install signal handlers: {e}"),
        );
    }
    // Fatal signals (SEGV...) dump the Python stacks to stderr; the master's
    // ABRT (timeout) is handled by `abort`, which logs them to the error log.
    if let Err(e) = py.import("faulthandler").and_then(|fh| {
        let stderr = py.import("sys")?.getattr("stderr")?;
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item("file", stderr)?;
        kwargs.set_item("all_threads", true)?;
        fh.call_method("enable", (), Some(&kwargs))
    }) {
        glogging::debug!("faulthandler unavailable: {e}");
    }
    installed_or_fail(py, "ABRT", abort::install(py));
    wake
}

/// A Python-level signal handler (`signal`'s) could not be installed: the
/// worker cannot boot.
fn installed_or_fail(py: Python<'_>, signal: &str, installed: PyResult<()>) {
    if let Err(e) = installed {
        glogging::error!("Exception in worker process: cannot install the {signal} handler: {e}");
        boot_failed(
            py,
            WORKER_BOOT_ERROR,
            &format!("cannot install the {signal} handler: {e}"),
        );
    }
}

/// The worker's set-up before its app: request-time imports, the worker
/// object for hooks, `post_fork`, `--user`/`--group`, `--spew`.
fn enter_worker(py: Python<'_>, setup: &Setup<'_>) {
    if let Err(e) = crate::wsgi::extras::prepare(py) {
        glogging::log_always(Level::Error, &format!("Exception in worker process: {e}"));
        boot_failed(py, WORKER_BOOT_ERROR, &e.to_string());
    }
    crate::hooks::worker_started(py, setup.master_pid);
    boot_hook(py, "post_fork");
    // gunicorn's `set_owner_process`: --user / --group / --initgroups.
    let (uid, gid) = (setup.settings.get("user"), setup.settings.get("group"));
    if let Err(e) = crate::sys::privileges::set_owner(
        uid.as_int() as u32,
        gid.as_int() as u32,
        setup.settings.get("initgroups").as_bool(),
    ) {
        glogging::log_always(Level::Error, &format!("Exception in worker process: {e}"));
        boot_failed(py, WORKER_BOOT_ERROR, &e.to_string());
    }

    if setup.settings.get("spew").as_bool() {
        if let Err(e) = py
            .import("ferricorn._spew")
            .and_then(|m| m.call_method0("install"))
        {
            glogging::warning!("--spew: cannot install the line tracer: {e}");
        }
    }
}

/// The app: preloaded, or imported now. With `--reload` (not with
/// `--preload`) also the extra files to watch (`Some`), and an app that
/// cannot be imported is served as its traceback until the next change.
fn load_app(py: Python<'_>, setup: &Setup<'_>, asgi: bool) -> (Py<PyAny>, Option<Vec<String>>) {
    // `--reload` (not with `--preload`: a new worker would get the same
    // preloaded code; the master said so at start-up).
    let reload = setup.settings.get("reload").as_bool() && matches!(setup.app, AppSource::Spec(_));
    if reload {
        glogging::warning!("Reloader is on. Use in development only!");
    }
    let mut reload_also: Vec<String> = Vec::new();
    let callable = match &setup.app {
        AppSource::Preloaded(app) => (*app).clone_ref(py),
        AppSource::Spec(spec) => match loader::load(py, spec, asgi) {
            Ok(app) => app,
            Err(LoadError::App(msg)) => {
                glogging::debug!("Exception while loading the application: {msg}");
                glogging::log_always(Level::Error, &msg);
                boot_failed(py, APP_LOAD_ERROR, &msg);
            }
            // With `--reload` an app that cannot be imported (an edit in
            // progress) does not stop the server: the worker answers 500
            // with the traceback until the next change replaces it.
            Err(LoadError::Boot {
                traceback, files, ..
            }) if reload => {
                glogging::exception(&format!("Exception in worker process\n{traceback}"));
                reload_also = files;
                match py.import("ferricorn._reload").and_then(|m| {
                    let fail = if asgi { "fail_asgi_app" } else { "fail_app" };
                    m.call_method1(fail, (traceback,))
                }) {
                    Ok(app) => app.unbind(),
                    Err(e) => boot_failed(py, WORKER_BOOT_ERROR, &e.to_string()),
                }
            }
            Err(LoadError::Boot {
                message, traceback, ..
            }) => {
                glogging::log_always(
                    Level::Error,
                    &format!("Exception in worker process\n{traceback}"),
                );
                boot_failed(py, WORKER_BOOT_ERROR, &message);
            }
        },
    };
    (callable, reload.then_some(reload_also))
}

/// Watch the app's files and `--reload-extra-file` (and `also`: files an
/// import that failed was reading).
fn start_reloader(setup: &Setup<'_>, also: Vec<String>) {
    let settings = setup.settings;
    let watch = crate::reloader::Watch {
        engine: crate::reloader::engine(settings.get("reload_engine").as_str().unwrap_or("auto")),
        extra: settings.get("reload_extra_files").as_list().to_vec(),
        also,
    };
    if let Err(e) = crate::reloader::start(watch) {
        glogging::error!("Cannot start the reloader: {e}");
    }
}

/// What the worker needs to call its app, from the settings.
fn app_context(
    py: Python<'_>,
    settings: &Settings,
    callable: Py<PyAny>,
    class: Class,
) -> AppContext {
    match AppContext::new(
        py,
        callable,
        settings.workers() > 1,
        class == Class::Gthread,
        parser_options(settings),
    ) {
        Ok(ctx) => ctx
            .with_sendfile(!matches!(
                settings.get("sendfile"),
                crate::config::Value::Bool(false)
            ))
            .with_proxy_trust(
                settings.get("forwarded_allow_ips").as_list(),
                settings.get("secure_scheme_headers").as_map(),
            ),
        Err(e) => {
            glogging::log_always(
                Level::Error,
                &format!(
                    "Exception in worker process\n{}",
                    crate::app::format_traceback(py, &e)
                ),
            );
            boot_failed(py, WORKER_BOOT_ERROR, &e.value(py).to_string());
        }
    }
}

#[cfg(test)]
mod class_tests {
    use super::{Class, resolve_class};

    #[test]
    fn worker_class_names() {
        assert_eq!(resolve_class("sync", 1), Ok(Class::Sync));
        assert_eq!(
            resolve_class("gunicorn.workers.sync.SyncWorker", 1),
            Ok(Class::Sync)
        );
        assert_eq!(resolve_class("sync", 4), Ok(Class::Gthread));
        assert_eq!(resolve_class("evloop", 4), Ok(Class::Evloop));
        assert_eq!(
            resolve_class("gunicorn.workers.gthread.ThreadWorker", 1),
            Ok(Class::Gthread)
        );
        let gevent = resolve_class("gevent", 1).unwrap_err();
        assert!(
            gevent.contains("gevent") && gevent.contains("gthread"),
            "{gevent}"
        );
        for asgi in [
            "uvicorn.workers.UvicornWorker",
            "uvicorn_worker.UvicornWorker",
            "asgi",
            "gunicorn.workers.gasgi.ASGIWorker",
        ] {
            assert_eq!(resolve_class(asgi, 1), Ok(Class::Asgi));
            assert_eq!(resolve_class(asgi, 4), Ok(Class::Asgi));
        }
        let why = resolve_class("myproject.AsgiThing", 1).unwrap_err();
        assert!(why.contains("-k asgi"), "{why}");
    }
}

#[cfg(test)]
mod pace_tests {
    use super::Pace;

    #[test]
    fn the_lead_covers_two_boots_at_the_current_pace() {
        let mut p = Pace::default();
        assert_eq!(p.lead(300, 1000), 0, "no pace yet");
        // A request every 10 ms, a 300 ms boot: 60 requests ahead.
        for t in 0..50 {
            p.record(1, 1_000 + t * 10);
        }
        assert_eq!(p.lead(300, 1000), 60);
        // Never more than a quarter of the budget.
        assert_eq!(p.lead(300, 100), 25);
        // A batch of 4 in 10 ms counts as 4 requests.
        let mut b = Pace::default();
        for t in 0..50 {
            b.record(4, 1_000 + t * 10);
        }
        assert_eq!(b.lead(300, 10_000), 240);
    }
}
