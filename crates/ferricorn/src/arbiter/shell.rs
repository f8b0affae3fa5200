//! The master's thin shell around the state machine: the signal self-pipe,
//! the `poll` loop with a one-second tick, `waitpid`, `kill`, and forking
//! workers through CPython's `os.fork()` (so at-fork handlers run).
//!
//! Invariant: the master is single-threaded and holds the GIL only while
//! forking (and, later, running hooks).
//!
//! gunicorn counterpart: `Arbiter.run`, `sleep`, `wakeup`, `reap_workers`,
//! `kill_worker`, `spawn_worker`.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use pyo3::prelude::*;

use super::{Action, Arbiter, ExitStatus};
use crate::config::Settings;
use crate::glogging;
use crate::sock::Listener;
use crate::sys::signals;
use crate::util::monotonic_ms;
use crate::workers::{self, AppSource, Setup, heartbeat::Heartbeats};

/// Signals the master listens to.
const SIGNALS: &[Signal] = workers::MASTER_SIGNALS;

pub struct Shell<'a> {
    pub arbiter: Arbiter,
    pub listeners: Vec<Listener>,
    pub heartbeats: Heartbeats,
    pub settings: &'a Settings,
    pub preloaded: Option<Py<PyAny>>,
    pub app_spec: String,
    wake: (OwnedFd, OwnedFd),
    master_pid: i32,
    exit_code: Option<i32>,
}

impl<'a> Shell<'a> {
    pub fn new(
        arbiter: Arbiter,
        listeners: Vec<Listener>,
        heartbeats: Heartbeats,
        settings: &'a Settings,
        preloaded: Option<Py<PyAny>>,
        app_spec: String,
    ) -> std::io::Result<Self> {
        let wake =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)?;
        signals::set_wake_fd(Some(&wake.1));
        signals::install(SIGNALS, false)?;
        Ok(Shell {
            arbiter,
            listeners,
            heartbeats,
            settings,
            preloaded,
            app_spec,
            wake,
            master_pid: std::process::id() as i32,
            exit_code: None,
        })
    }

    /// Run until the arbiter decides to exit; returns the exit code.
    /// Call without the GIL.
    pub fn run(&mut self) -> i32 {
        let first = self.arbiter.start();
        self.execute(first);
        loop {
            for sig in signals::take_pending() {
                if sig == Signal::SIGCHLD {
                    continue;
                }
                let actions = self.arbiter.on_signal(sig, monotonic_ms());
                self.execute(actions);
            }
            self.reap();
            if let Some(code) = self.exit_code {
                return code;
            }
            self.sleep();
            let now = monotonic_ms();
            let heartbeats = &self.heartbeats;
            let mut actions = self.arbiter.on_tick(now, &|slot| heartbeats.last(slot));
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
        }
    }

    /// Wait for a signal or the tick (1 s; 100 ms while stopping).
    fn sleep(&self) {
        let timeout = if self.listeners.is_empty() {
            100u16
        } else {
            1000u16
        };
        if signals::peek(Signal::SIGCHLD) || has_pending() {
            return;
        }
        let mut fds = [PollFd::new(self.wake.0.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(timeout));
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.0.as_fd(), &mut buf), Ok(n) if n > 0) {}
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
            let actions = self
                .arbiter
                .on_exit(status.0.as_raw(), status.1, monotonic_ms());
            self.execute(actions);
        }
    }

    fn execute(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Spawn { slot, age } => self.spawn(slot, age),
                Action::Kill { pid, signal } => match kill(Pid::from_raw(pid), signal) {
                    Ok(()) | Err(Errno::ESRCH) => {}
                    Err(e) => {
                        glogging::error!("Failed to send {} to worker {pid}: {e}", signal.as_str())
                    }
                },
                Action::Log { level, msg } => glogging::log(level, &msg),
                Action::ReopenLogs => {
                    if let Err(e) = glogging::reopen() {
                        glogging::error!("{e}");
                    }
                }
                Action::CloseListeners => {
                    for l in self.listeners.drain(..) {
                        l.unlink();
                    }
                }
                Action::Exit { code } => {
                    // Reap workers that were just killed so none is left as a zombie.
                    loop {
                        match waitpid(Pid::from_raw(-1), None) {
                            Err(Errno::EINTR) => continue,
                            Err(_) => break,
                            Ok(_) => {}
                        }
                    }
                    self.exit_code = Some(code);
                }
            }
        }
    }

    fn spawn(&mut self, slot: usize, age: u64) {
        self.heartbeats.reset(slot, monotonic_ms());
        let setup = Setup {
            slot,
            age,
            master_pid: self.master_pid,
            listeners: &self.listeners,
            heartbeats: &self.heartbeats,
            settings: self.settings,
            app: match &self.preloaded {
                Some(app) => AppSource::Preloaded(app),
                None => AppSource::Spec(&self.app_spec),
            },
        };
        let master_fds = [self.wake.0.as_raw_fd(), self.wake.1.as_raw_fd()];
        let forked = Python::attach(|py| -> PyResult<i32> {
            let pid: i32 = py.import("os")?.call_method0("fork")?.extract()?;
            if pid == 0 {
                workers::main(py, &setup, &master_fds);
            }
            Ok(pid)
        });
        match forked {
            Ok(pid) => self.arbiter.spawned(slot, age, pid),
            Err(e) => {
                glogging::error!("Unable to fork a worker: {e}");
                self.arbiter.spawn_failed(slot);
            }
        }
    }
}

fn has_pending() -> bool {
    SIGNALS
        .iter()
        .any(|s| *s != Signal::SIGCHLD && signals::peek(*s))
}
