//! The master's thin shell around the state machine: the signal self-pipe,
//! the `poll` loop with a short tick, `waitpid`, `kill`, forking workers
//! through CPython's `os.fork()` (so at-fork handlers run), the `HUP`
//! reload, the `USR2` re-exec and the pidfile hand-over.
//!
//! Invariant: the master is single-threaded and holds the GIL only while
//! forking, reloading, re-executing and running hooks.
//!
//! gunicorn counterpart: `Arbiter.run`, `sleep`, `wakeup`, `reap_workers`,
//! `kill_worker`, `spawn_worker`, `reload`, `reexec`, `maybe_promote_master`.

use std::collections::BTreeSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::{Action, Arbiter, Config, ExitStatus, Facts, Probe};
use crate::config::Settings;
use crate::control::{self, server::Server as ControlServer};
use crate::glogging;
use crate::hooks;
use crate::pidfile::Pidfile;
use crate::sock::Listener;
use crate::sys::signals;
use crate::util::monotonic_ms;
use crate::workers::{self, AppSource, Setup, heartbeat::Heartbeats};

/// Signals the master listens to.
const SIGNALS: &[Signal] = workers::MASTER_SIGNALS;

/// What a `HUP` reload produces: the configuration loaded from scratch.
pub struct Reloaded {
    pub settings: Settings,
    pub preloaded: Option<Py<PyAny>>,
    pub app_spec: String,
    /// The TLS configuration its files make (`None`: TLS off).
    pub tls: Option<std::sync::Arc<crate::tls::Server>>,
}

/// Reload the configuration from scratch (after the shell restored the
/// original environment); provided by `run.rs`.
pub type ReloadFn = Box<dyn FnMut(Python<'_>) -> Result<Reloaded, String> + Send>;
/// Open the listeners of `settings` (`--bind`); provided by `run.rs`.
pub type BindFn = fn(&Settings) -> Result<Vec<Listener>, String>;

/// Everything the master loop needs, built by `run.rs`.
pub struct Launch {
    pub settings: Settings,
    pub listeners: Vec<Listener>,
    /// Lives as long as the master (and its workers): the asgi worker's
    /// loop callbacks hold it.
    pub heartbeats: &'static Heartbeats,
    pub preloaded: Option<Py<PyAny>>,
    pub app_spec: String,
    pub pidfile: Option<Pidfile>,
    /// `os.environ` as it was before ferricorn changed it (gunicorn's `env_orig`).
    pub env_orig: Py<PyDict>,
    /// The working directory ferricorn started in (a `USR2` child starts there).
    pub start_cwd: PathBuf,
    /// The master that re-executed us (`GUNICORN_PID`), or 0.
    pub parent_master: i32,
    /// Started by systemd socket activation.
    pub systemd: bool,
    pub reload: ReloadFn,
    pub bind: BindFn,
    /// The control socket, when open (`--control-socket`).
    pub control: Option<ControlServer>,
}

/// The arbiter's view of the settings.
pub fn arbiter_config(settings: &Settings, systemd: bool) -> Config {
    Config {
        num_workers: settings.workers(),
        timeout_ms: (settings.timeout() * 1000.0) as u64,
        graceful_timeout_ms: (settings.graceful_timeout() * 1000.0) as u64,
        daemon: settings.get("daemon").as_bool(),
        systemd,
    }
}

/// Hand the log files to `--user`/`--group`, so workers running as them can
/// reopen the logs on `USR1` (gunicorn `chown`s them too). Best effort: the
/// path may be `/dev/null`.
pub fn give_logs_to_workers(settings: &Settings) {
    let (uid, gid) = (settings.get("user"), settings.get("group"));
    for path in [Some(settings.errorlog()), settings.accesslog()]
        .into_iter()
        .flatten()
        .filter(|p| *p != "-")
    {
        let _ = crate::sys::privileges::give_to(
            std::path::Path::new(path),
            uid.as_int() as u32,
            gid.as_int() as u32,
        );
    }
}

pub struct Shell {
    pub arbiter: Arbiter,
    launch: Launch,
    wake: (OwnedFd, OwnedFd),
    master_pid: i32,
    /// Workers forked and not reaped yet.
    children: BTreeSet<i32>,
    exit_code: Option<i32>,
    /// When the next backlog metric is due (monotonic ms).
    backlog_due: u64,
    /// A hook raised in the loop: the master stops without `on_exit`.
    hook_failed: bool,
    /// Counters for `show stats` (gunicorn's `_stats`).
    started: std::time::SystemTime,
    workers_spawned: u64,
    workers_killed: u64,
    reloads: u64,
}

impl Shell {
    pub fn new(launch: Launch) -> std::io::Result<Self> {
        let mut arbiter = Arbiter::new(
            arbiter_config(&launch.settings, launch.systemd),
            launch.heartbeats.capacity(),
        );
        arbiter.set_parent_master(launch.parent_master);
        let wake =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        signals::set_wake_fd(Some(&wake.1));
        signals::install(SIGNALS, false)?;
        Ok(Shell {
            arbiter,
            launch,
            wake,
            master_pid: std::process::id() as i32,
            children: BTreeSet::new(),
            exit_code: None,
            backlog_due: 0,
            hook_failed: false,
            started: std::time::SystemTime::now(),
            workers_spawned: 0,
            workers_killed: 0,
            reloads: 0,
        })
    }

    /// gunicorn's `proc_name` as the titles show it: `--name`, else the
    /// default (the app spec or config file), `.2` while a re-executed
    /// master's parent lives.
    fn proc_name(&self) -> String {
        let s = &self.launch.settings;
        let name = s
            .proc_name()
            .or_else(|| s.get("default_proc_name").as_str())
            .unwrap_or(&self.launch.app_spec);
        if self.arbiter.parent_master() != 0 {
            format!("{name}.2")
        } else {
            name.to_string()
        }
    }

    fn set_master_title(&self) {
        hooks::set_proctitle(&format!("master [{}]", self.proc_name()));
    }

    /// Run until the arbiter decides to exit; returns the exit code.
    /// Call without the GIL.
    pub fn run(&mut self) -> i32 {
        self.set_master_title();
        let first = self.arbiter.start();
        self.execute(first);
        loop {
            for sig in signals::take_pending() {
                let actions = self.arbiter.on_signal(sig, monotonic_ms());
                self.execute(actions);
            }
            self.reap();
            self.control_io();
            self.maybe_promote();
            if let Some(code) = self.exit_code {
                return code;
            }
            self.sleep();
            let now = monotonic_ms();
            let heartbeats = &self.launch.heartbeats;
            let mut actions = self.arbiter.on_tick(now, &|slot| Probe {
                last_beat: heartbeats.last(slot),
                state: heartbeats.state(slot),
            });
            // Name the request a timed-out worker was stuck in (or that it was idle).
            for action in &mut actions {
                if let Action::Log { msg, .. } = action {
                    let pid = msg
                        .strip_prefix("WORKER TIMEOUT (pid:")
                        .and_then(|r| r.strip_suffix(')'))
                        .and_then(|p| p.parse::<i32>().ok());
                    if let Some(slot) = pid.and_then(|p| self.arbiter.slot_of(p)) {
                        msg.push(' ');
                        msg.push_str(&heartbeats.activity(slot, now));
                    }
                }
            }
            self.execute(actions);
            if let Some(code) = self.exit_code {
                return code;
            }
            self.backlog_metric(now);
        }
    }

    /// `--enable-backlog-metric`: once a second while running, the
    /// connections waiting in the listeners' accept queues, as gunicorn's
    /// `manage_workers` reports them (a debug line and a StatsD histogram;
    /// unix sockets count -1, and a negative total is not reported).
    fn backlog_metric(&mut self, now: u64) {
        if !self.arbiter.is_running()
            || now < self.backlog_due
            || !self.launch.settings.get("enable_backlog_metric").as_bool()
        {
            return;
        }
        self.backlog_due = now + 1000;
        let backlog: i64 = self.launch.listeners.iter().map(|l| l.backlog()).sum();
        if backlog >= 0 {
            glogging::debug!("socket backlog: {backlog}");
            glogging::histogram("gunicorn.backlog", backlog);
        }
    }

    /// Wait for a signal, a worker's nudge (a slot state changed:
    /// `Heartbeats::set_state`) or the tick (250 ms; 100 ms while stopping).
    fn sleep(&self) {
        let timeout = if self.arbiter.is_running() {
            250u16
        } else {
            100u16
        };
        if signals::peek(Signal::SIGCHLD) || has_pending() {
            return;
        }
        let mut fds = vec![
            PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.launch.heartbeats.nudge_fd(), PollFlags::POLLIN),
        ];
        if let Some(control) = &self.launch.control {
            fds.extend(control.poll_fds());
        }
        let _ = poll(&mut fds, PollTimeout::from(timeout));
        drop(fds);
        self.launch.heartbeats.drain_nudges();
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.0.as_fd(), &mut buf), Ok(n) if n > 0) {}
    }

    /// Serve the control socket without blocking: each complete request
    /// becomes an arbiter command, answered at once, then its actions run.
    fn control_io(&mut self) {
        let Some(control) = self.launch.control.as_mut() else {
            return;
        };
        let now = monotonic_ms();
        let requests = control.service(now);
        for (client, request) in requests {
            let (reply, actions) = match &request.command {
                Ok(cmd) => {
                    let facts = self.facts();
                    let heartbeats = &self.launch.heartbeats;
                    let (data, actions) =
                        self.arbiter
                            .on_command(cmd, monotonic_ms(), &facts, &|slot| Probe {
                                last_beat: heartbeats.last(slot),
                                state: heartbeats.state(slot),
                            });
                    (control::ok_reply(&request.id, data), actions)
                }
                Err(msg) => (control::error_reply(&request.id, msg), Vec::new()),
            };
            if let Some(control) = self.launch.control.as_mut() {
                control.reply(client, &reply, now);
            }
            self.execute(actions);
        }
    }

    /// What control replies need from the shell.
    fn facts(&self) -> Facts {
        let s = &self.launch.settings;
        let mut config = serde_json::Map::new();
        for key in [
            "bind",
            "workers",
            "worker_class",
            "threads",
            "timeout",
            "graceful_timeout",
            "keepalive",
            "max_requests",
            "max_requests_jitter",
            "worker_connections",
            "preload_app",
            "daemon",
            "pidfile",
            "proc_name",
            "reload",
            "dirty_workers",
            "dirty_apps",
            "dirty_timeout",
            "control_socket",
            "control_socket_disable",
        ] {
            config.insert(key.into(), json_of(s.get(key)));
        }
        let listeners = self
            .launch
            .listeners
            .iter()
            .map(|l| {
                let kind = match l {
                    Listener::Unix { .. } => "unix",
                    Listener::Tcp { addr, .. } if addr.is_ipv6() => "tcp6",
                    Listener::Tcp { .. } => "tcp",
                };
                serde_json::json!({"address": l.to_string(), "fd": l.raw_fd(), "type": kind})
            })
            .collect();
        Facts {
            pid: self.master_pid,
            uptime_s: self.started.elapsed().map_or(0.0, |d| d.as_secs_f64()),
            workers_spawned: self.workers_spawned,
            workers_killed: self.workers_killed,
            reloads: self.reloads,
            config: serde_json::Value::Object(config),
            listeners,
        }
    }

    /// Collect every exited child without blocking.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    glogging::error!("waitpid failed: {e}");
                    return;
                }
            };
            self.children.remove(&status.0.as_raw());
            let actions = self
                .arbiter
                .on_exit(status.0.as_raw(), status.1, monotonic_ms());
            self.execute(actions);
        }
    }

    /// A re-executed master whose parent (the old master) is gone takes
    /// over: pidfile name, environment, `MAINPID` for systemd.
    fn maybe_promote(&mut self) {
        let parent = self.arbiter.parent_master();
        if parent == 0 || nix::unistd::getppid().as_raw() == parent {
            return;
        }
        let actions = self.arbiter.promoted();
        self.execute(actions);
        self.set_master_title();
        Python::attach(|py| {
            if let Ok(environ) = py.import("os").and_then(|os| os.getattr("environ")) {
                let _ = environ.call_method1("pop", ("GUNICORN_PID", py.None()));
            }
        });
        if let (Some(pf), Some(name)) =
            (self.launch.pidfile.as_mut(), self.launch.settings.pidfile())
        {
            if let Err(e) = pf.rename(&name) {
                glogging::error!("{e}");
            }
        }
        crate::systemd::notify(&format!("MAINPID={}", self.master_pid));
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Spawn { slot, age } => self.spawn(slot, age),
                Action::Kill { pid, signal } => match kill(Pid::from_raw(pid), signal) {
                    Ok(()) => {
                        if matches!(signal, Signal::SIGTERM | Signal::SIGKILL) {
                            self.workers_killed += 1;
                        }
                    }
                    Err(Errno::ESRCH) => {}
                    Err(e) => {
                        glogging::error!("Failed to send {} to worker {pid}: {e}", signal.as_str())
                    }
                },
                Action::Log { level, msg } => glogging::log(level, &msg),
                Action::ReopenLogs => {
                    if let Err(e) = glogging::reopen() {
                        glogging::error!("{e}");
                    }
                    give_logs_to_workers(&self.launch.settings);
                }
                Action::CloseListeners { unlink } => {
                    crate::systemd::notify("STOPPING=1");
                    hooks::close_listeners();
                    for l in self.launch.listeners.drain(..) {
                        if unlink {
                            l.unlink();
                        }
                    }
                }
                Action::Reload => self.reload(),
                Action::Restarting { slot } => {
                    self.launch
                        .heartbeats
                        .set_state(slot, crate::workers::heartbeat::SlotState::Restarting);
                }
                Action::Reexec => self.reexec(),
                Action::Gauge { name, value } => glogging::gauge(name, value),
                Action::NworkersChanged { new, old } => {
                    let args = hooks::Args::Counts {
                        new,
                        old: Some(old),
                    };
                    if let Err(tb) = hooks::master("nworkers_changed", &self.hook_view(), args) {
                        self.hook_failed(&tb);
                    }
                }
                Action::ChildExit { pid, age } => {
                    if let Err(tb) = hooks::child_exit(&self.hook_view(), pid, age) {
                        self.hook_failed(&tb);
                    }
                }
                Action::Exit { code } => {
                    // Reap the workers that were just killed so none is left
                    // as a zombie; a re-executed master is not waited for.
                    for pid in std::mem::take(&mut self.children) {
                        while let Err(Errno::EINTR) = waitpid(Pid::from_raw(pid), None) {}
                    }
                    if let Some(pf) = self.launch.pidfile.take() {
                        pf.unlink();
                    }
                    if let Some(control) = self.launch.control.take() {
                        control.close();
                    }
                    let mut code = code;
                    if !self.hook_failed {
                        let view = self.hook_view();
                        if let Err(tb) = hooks::master("on_exit", &view, hooks::Args::None) {
                            glogging::error!("Exception in on_exit hook\n{tb}");
                            if code == 0 {
                                code = 1;
                            }
                        }
                    }
                    self.exit_code = Some(code);
                }
            }
        }
    }

    /// What hooks see of the master (`server.num_workers`, ...).
    fn hook_view(&self) -> hooks::MasterView {
        hooks::MasterView {
            num_workers: self.arbiter.num_workers(),
            reexec_pid: self.arbiter.reexec_pid(),
            master_pid: self.arbiter.parent_master(),
        }
    }

    /// A hook raised in the master's loop: gunicorn treats that as fatal
    /// ("Unhandled exception in main loop", quick stop, exit 255).
    fn hook_failed(&mut self, traceback: &str) {
        glogging::error!("Unhandled exception in main loop\n{traceback}");
        self.hook_failed = true;
        let actions = self.arbiter.abort(monotonic_ms());
        self.execute(actions);
    }

    fn spawn(&mut self, slot: usize, age: u64) {
        if !self.arbiter.is_running() {
            // Stopping (a hook failed while this spawn was queued).
            self.arbiter.spawn_failed(slot);
            return;
        }
        if let Err(tb) = hooks::pre_fork(&self.hook_view(), age) {
            self.arbiter.spawn_failed(slot);
            self.hook_failed(&tb);
            return;
        }
        self.launch.heartbeats.reset(slot, monotonic_ms());
        let setup = Setup {
            slot,
            age,
            master_pid: self.master_pid,
            listeners: &self.launch.listeners,
            heartbeats: self.launch.heartbeats,
            settings: &self.launch.settings,
            app: match &self.launch.preloaded {
                Some(app) => AppSource::Preloaded(app),
                None => AppSource::Spec(&self.launch.app_spec),
            },
        };
        let mut master_fds = vec![self.wake.0.as_raw_fd(), self.wake.1.as_raw_fd()];
        if let Some(control) = &self.launch.control {
            master_fds.extend(control.raw_fds());
        }
        let title = format!("worker [{}]", self.proc_name());
        // Signals stay blocked across the fork: the worker unblocks them once
        // its handlers are in place, so none sent to it meanwhile is lost.
        let mask = signals::block_all().ok();
        let forked = Python::attach(|py| -> PyResult<i32> {
            let pid: i32 = py.import("os")?.call_method0("fork")?.extract()?;
            if pid == 0 {
                hooks::set_proctitle(&title);
                workers::main(py, &setup, &master_fds);
            }
            Ok(pid)
        });
        if let Some(mask) = mask {
            let _ = signals::restore_mask(&mask);
        }
        match forked {
            Ok(pid) => {
                self.children.insert(pid);
                self.workers_spawned += 1;
                self.arbiter.spawned(slot, age, pid);
                hooks::spawned(pid);
            }
            Err(e) => {
                glogging::error!("Unable to fork a worker: {e}");
                self.arbiter.spawn_failed(slot);
            }
        }
    }

    /// `HUP`: restore the original environment, load the configuration from
    /// scratch, reopen logs, rebind if `--bind` changed, rewrite the pidfile,
    /// then let the arbiter replace every worker (new ones first).
    fn reload(&mut self) {
        let env_orig = &self.launch.env_orig;
        let reload = &mut self.launch.reload;
        let loaded = Python::attach(|py| -> Result<Reloaded, String> {
            let environ = py
                .import("os")
                .and_then(|os| os.getattr("environ"))
                .map_err(|e| e.to_string())?;
            environ.call_method0("clear").map_err(|e| e.to_string())?;
            environ
                .call_method1("update", (env_orig.bind(py),))
                .map_err(|e| e.to_string())?;
            reload(py)
        });
        let new = match loaded {
            Ok(new) => new,
            Err(e) => {
                glogging::error!("Reload failed, keeping the current configuration: {e}");
                return;
            }
        };
        glogging::debug!("Current configuration:\n{}", new.settings.render_current());
        if let Err(e) = glogging::reopen() {
            glogging::error!("{e}");
        }
        if new.settings.bind() != self.launch.settings.bind() {
            match (self.launch.bind)(&new.settings) {
                Ok(listeners) => {
                    crate::workers::conn::arm_listeners_from(&listeners, &new.settings);
                    self.launch.listeners = listeners;
                    let shown: Vec<String> = self
                        .launch
                        .listeners
                        .iter()
                        .map(|l| l.to_string())
                        .collect();
                    glogging::info!("Listening at: {}", shown.join(","));
                }
                Err(e) => glogging::error!("Keeping the old listeners: {e}"),
            }
        }
        if let Some(pf) = self.launch.pidfile.take() {
            pf.unlink();
        }
        if let Some(path) = new.settings.pidfile() {
            match Pidfile::create(&path, self.master_pid as u32) {
                Ok(pf) => self.launch.pidfile = Some(pf),
                Err(e) => glogging::error!("{e}"),
            }
        }
        // The reloaded `server` object gets the listeners now in use.
        hooks::set_listeners(&self.launch.listeners);
        let cfg = arbiter_config(&new.settings, self.launch.systemd);
        self.reloads += 1;
        self.launch.settings = new.settings;
        self.launch.preloaded = new.preloaded;
        self.launch.app_spec = new.app_spec;
        // New workers serve new connections with the files as they are now.
        crate::tls::install(new.tls);
        self.set_master_title();
        give_logs_to_workers(&self.launch.settings);
        let actions = self.arbiter.reloaded(cfg);
        // gunicorn's order: `nworkers_changed`, `on_reload`, then new workers.
        let (counts, rest): (Vec<Action>, Vec<Action>) = actions
            .into_iter()
            .partition(|a| matches!(a, Action::NworkersChanged { .. }));
        self.execute(counts);
        if self.hook_failed {
            return;
        }
        if let Err(tb) = hooks::master("on_reload", &self.hook_view(), hooks::Args::None) {
            self.hook_failed(&tb);
            return;
        }
        self.execute(rest);
    }

    /// `USR2`: fork, and in the child exec the same interpreter and
    /// arguments with the listeners inherited. As in gunicorn 27 the pidfile
    /// keeps naming this master; the new one writes `PIDFILE.2` and takes
    /// the name over when it is promoted (`maybe_promote`).
    fn reexec(&mut self) {
        let fds: Vec<i32> = self.launch.listeners.iter().map(|l| l.raw_fd()).collect();
        for l in &self.launch.listeners {
            if let Err(e) = crate::sys::fd::set_cloexec(l.fd(), false) {
                glogging::error!("Cannot pass {l} to the new master: {e}");
            }
        }
        let master_pid = self.master_pid;
        let systemd = self.launch.systemd;
        let env_orig = &self.launch.env_orig;
        let cwd = &self.launch.start_cwd;
        let view = self.hook_view();
        let forked = Python::attach(|py| -> PyResult<i32> {
            let os = py.import("os")?;
            let pid: i32 = os.call_method0("fork")?.extract()?;
            if pid == 0 {
                if let Err(tb) = hooks::master("pre_exec", &view, hooks::Args::None) {
                    glogging::error!("Exception in pre_exec hook\n{tb}");
                    crate::sys::process::exit_now(1);
                }
                let err = exec_new_master(py, env_orig, cwd, master_pid, &fds, systemd);
                glogging::error!("Cannot exec the new master: {err}");
                crate::sys::process::exit_now(1);
            }
            Ok(pid)
        });
        for l in &self.launch.listeners {
            let _ = crate::sys::fd::set_cloexec(l.fd(), true);
        }
        match forked {
            Ok(pid) => self.arbiter.reexec_started(pid),
            Err(e) => glogging::error!("Unable to fork a new master: {e}"),
        }
    }
}

/// The child side of `USR2`; returns only on failure.
fn exec_new_master(
    py: Python<'_>,
    env_orig: &Py<PyDict>,
    cwd: &std::path::Path,
    master_pid: i32,
    fds: &[i32],
    systemd: bool,
) -> PyErr {
    let run = || -> PyResult<()> {
        let os = py.import("os")?;
        let sys = py.import("sys")?;
        let environ = env_orig.bind(py).copy()?;
        environ.set_item("GUNICORN_PID", master_pid.to_string())?;
        if systemd {
            environ.set_item("LISTEN_PID", std::process::id().to_string())?;
            environ.set_item("LISTEN_FDS", fds.len().to_string())?;
        } else {
            let joined: Vec<String> = fds.iter().map(|f| f.to_string()).collect();
            environ.set_item("GUNICORN_FD", joined.join(","))?;
        }
        os.call_method1("chdir", (cwd,))?;
        let executable = sys.getattr("executable")?;
        let orig: Vec<String> = sys.getattr("orig_argv")?.extract()?;
        let mut args = vec![executable.extract::<String>()?];
        args.extend(orig.into_iter().skip(1));
        os.call_method1("execvpe", (executable, args, environ))?;
        Ok(())
    };
    match run() {
        Ok(()) => pyo3::exceptions::PyRuntimeError::new_err("execvpe returned"),
        Err(e) => e,
    }
}

/// A setting's value as JSON, as gunicorn's `show config` serialises it.
fn json_of(v: &crate::config::Value) -> serde_json::Value {
    use crate::config::Value as V;
    match v {
        V::None => serde_json::Value::Null,
        V::Bool(b) => (*b).into(),
        V::Int(i) => (*i).into(),
        V::Float(f) => (*f).into(),
        V::Str(s) | V::Object(s) => s.clone().into(),
        V::List(l) => l.clone().into(),
        V::Map(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone())))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

fn has_pending() -> bool {
    SIGNALS
        .iter()
        .any(|s| *s != Signal::SIGCHLD && signals::peek(*s))
}
