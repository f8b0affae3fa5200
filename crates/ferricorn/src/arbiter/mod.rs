//! The master's state machine: events in, actions out, no syscalls.
//!
//! `shell.rs` turns signals, child exits and clock ticks into calls here and
//! carries out the returned `Action`s (fork, kill, log, exit, re-exec,
//! reload). Keeping the decisions here makes every signal's behaviour
//! unit-testable with a fake clock.
//!
//! Invariant (beyond gunicorn): a worker retired on purpose (HUP,
//! `--max-requests`, `--max-worker-memory`) is first marked for replacement;
//! it keeps serving and gets `TERM` only while at least `num_workers` other
//! booted workers remain. Only `TTOU`/`WINCH` shrink capacity.
//!
//! gunicorn counterpart: `gunicorn/arbiter.py` (`Arbiter.run`, `handle_*`,
//! `reap_workers`, `murder_workers`, `manage_workers`, `reexec`,
//! `maybe_promote_master`, `stop`, `halt`).

pub mod shell;

use std::collections::BTreeMap;

use nix::sys::signal::Signal;

use serde_json::{Value as Json, json};

use crate::control::Command;
use crate::errors::{APP_LOAD_ERROR, WORKER_BOOT_ERROR};
use crate::glogging::Level;
use crate::workers::heartbeat::SlotState;

/// How a child ended (from `waitpid`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signaled(Signal),
}

#[derive(Debug, PartialEq)]
pub enum Action {
    /// Fork a worker into heartbeat slot `slot` with age `age`; the shell
    /// reports the PID back with `Arbiter::spawned`.
    Spawn {
        slot: usize,
        age: u64,
    },
    Kill {
        pid: i32,
        signal: Signal,
    },
    /// Tell the worker in heartbeat slot `slot` that the `TERM` that comes
    /// next is a restart (`SlotState::Restarting`): it has been replaced.
    Restarting {
        slot: usize,
    },
    Log {
        level: Level,
        msg: String,
    },
    ReopenLogs,
    /// Stop listening (close the master's listeners; unlink unix sockets
    /// only when no other master shares them).
    CloseListeners {
        unlink: bool,
    },
    /// `HUP`: reload the configuration; the shell reports back with
    /// `Arbiter::reloaded`.
    Reload,
    /// `USR2`: fork and exec a new master; the shell reports the child's PID
    /// with `Arbiter::reexec_started`.
    Reexec,
    /// Send a StatsD gauge (`gunicorn.workers`).
    Gauge {
        name: &'static str,
        value: i64,
    },
    /// Call the `nworkers_changed` hook.
    NworkersChanged {
        new: usize,
        old: usize,
    },
    /// Call the `child_exit` hook for a reaped worker.
    ChildExit {
        pid: i32,
        age: u64,
    },
    /// Exit the master with this code (after removing the pidfile).
    Exit {
        code: i32,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub num_workers: usize,
    /// 0 disables the heartbeat timeout.
    pub timeout_ms: u64,
    pub graceful_timeout_ms: u64,
    pub daemon: bool,
    /// Started by systemd socket activation: never unlink its sockets.
    pub systemd: bool,
}

/// What the master sees of a worker's slot on a tick.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub last_beat: u64,
    pub state: SlotState,
}

#[derive(Debug)]
struct Worker {
    slot: usize,
    age: u64,
    /// When it was sent `ABRT` for a timeout (`KILL` follows `ABORT_GRACE_MS` later).
    aborted: Option<u64>,
    /// Booted (its app is loaded and it serves).
    ready: bool,
    /// Marked for replacement: not counted toward capacity, still serving.
    replace: bool,
    /// Replaced ahead of its request budget (`SlotState::ReplaceAhead`),
    /// since this time: its replacement boots meanwhile, and it gets `TERM`
    /// once it says its budget is spent, or `HOLD_MAX_MS` later (traffic
    /// stopped short of the budget: no worker beyond `-w` stays for good).
    held_since: Option<u64>,
    /// `TERM` sent on purpose: on its way out.
    retiring: bool,
}

#[derive(Debug, PartialEq)]
enum Phase {
    Running,
    Stopping {
        deadline: u64,
        code: i32,
        reason: Option<String>,
        killed: bool,
    },
    Done,
}

pub struct Arbiter {
    cfg: Config,
    num_workers: usize,
    workers: BTreeMap<i32, Worker>,
    /// Slots of spawns requested but not yet reported (so a tick does not double-spawn).
    pending_slots: Vec<usize>,
    next_age: u64,
    phase: Phase,
    slot_capacity: usize,
    /// PID of the master forked by `USR2` while it lives (gunicorn's `reexec_pid`).
    reexec_pid: i32,
    /// PID of the master that re-executed us, until we are promoted (`master_pid`).
    parent_master: i32,
    /// The worker count last reported (gunicorn's `_last_logged_active_worker_count`).
    last_worker_count: Option<usize>,
}

/// What the shell knows and the state machine does not, for control replies.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub pid: i32,
    /// Seconds since the master started (wall clock, as gunicorn's `uptime`).
    pub uptime_s: f64,
    pub workers_spawned: u64,
    /// `TERM` or `KILL` sent to a worker (gunicorn's `workers_killed`).
    pub workers_killed: u64,
    pub reloads: u64,
    /// `show config`: the settings gunicorn lists, as JSON.
    pub config: Json,
    /// `show listeners`: one object per bound socket.
    pub listeners: Vec<Json>,
}

/// How long a worker sent `ABRT` for a timeout gets to log its stacks and
/// exit before it is `KILL`ed (gunicorn's master checks once a second).
pub const ABORT_GRACE_MS: u64 = 1_000;

/// The longest a worker replaced ahead of its budget is kept beside its
/// replacement; past it, it is retired with budget left.
pub const HOLD_MAX_MS: u64 = 10_000;

fn log(level: Level, msg: impl Into<String>) -> Action {
    Action::Log {
        level,
        msg: msg.into(),
    }
}

/// `SIGTERM` → `term`, as gunicorn names signals in "Handling signal: term".
fn signal_name(sig: Signal) -> String {
    sig.as_str().trim_start_matches("SIG").to_ascii_lowercase()
}

impl Arbiter {
    pub fn new(cfg: Config, slot_capacity: usize) -> Arbiter {
        Arbiter {
            num_workers: cfg.num_workers,
            cfg,
            workers: BTreeMap::new(),
            pending_slots: Vec::new(),
            next_age: 0,
            phase: Phase::Running,
            slot_capacity,
            reexec_pid: 0,
            parent_master: 0,
            last_worker_count: None,
        }
    }

    /// We were started by `USR2` from the master `pid` (`GUNICORN_PID`).
    pub fn set_parent_master(&mut self, pid: i32) {
        self.parent_master = pid;
    }

    pub fn parent_master(&self) -> i32 {
        self.parent_master
    }

    /// "Master", or "Master.2" while a re-executed master's parent lives.
    pub fn master_name(&self) -> &'static str {
        if self.parent_master != 0 {
            "Master.2"
        } else {
            "Master"
        }
    }

    /// The parent master is gone: we are the master now.
    pub fn promoted(&mut self) -> Vec<Action> {
        self.parent_master = 0;
        vec![log(Level::Info, "Master has been promoted.")]
    }

    pub fn reexec_started(&mut self, pid: i32) {
        self.reexec_pid = pid;
    }

    /// PID of the master forked by `USR2` while it lives, else 0.
    pub fn reexec_pid(&self) -> i32 {
        self.reexec_pid
    }

    /// A hook raised in the master's loop (gunicorn's "Unhandled exception in
    /// main loop"): stop quickly and exit 255.
    pub fn abort(&mut self, now: u64) -> Vec<Action> {
        self.stop(false, now, 255, None)
    }

    pub fn num_workers(&self) -> usize {
        self.num_workers
    }

    pub fn worker_pids(&self) -> Vec<i32> {
        self.workers.keys().copied().collect()
    }

    /// `(pid, age)` of every live worker.
    pub fn worker_ages(&self) -> Vec<(i32, u64)> {
        self.workers.iter().map(|(p, w)| (*p, w.age)).collect()
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The first actions: spawn the initial workers.
    pub fn start(&mut self) -> Vec<Action> {
        self.manage()
    }

    /// The shell forked the worker requested by `Action::Spawn`.
    pub fn spawned(&mut self, slot: usize, age: u64, pid: i32) {
        self.pending_slots.retain(|s| *s != slot);
        self.workers.insert(
            pid,
            Worker {
                slot,
                age,
                aborted: None,
                ready: false,
                replace: false,
                held_since: None,
                retiring: false,
            },
        );
    }

    /// The shell could not fork the worker requested for `slot`.
    pub fn spawn_failed(&mut self, slot: usize) {
        self.pending_slots.retain(|s| *s != slot);
    }

    /// Slot of a live worker (heartbeat lookups).
    pub fn slot_of(&self, pid: i32) -> Option<usize> {
        self.workers.get(&pid).map(|w| w.slot)
    }

    pub fn on_signal(&mut self, sig: Signal, now: u64) -> Vec<Action> {
        if sig == Signal::SIGCHLD {
            // gunicorn logs the child signal at debug from its main loop
            // (while stopping it reaps without that loop).
            return match self.phase {
                Phase::Running => vec![log(Level::Debug, "Handling signal: cld")],
                _ => Vec::new(),
            };
        }
        let mut out = vec![log(
            Level::Info,
            format!("Handling signal: {}", signal_name(sig)),
        )];
        match sig {
            Signal::SIGTERM => out.extend(self.stop(true, now, 0, None)),
            Signal::SIGINT | Signal::SIGQUIT => out.extend(self.stop(false, now, 0, None)),
            Signal::SIGHUP if self.phase == Phase::Running => {
                out.push(log(Level::Info, format!("Hang up: {}", self.master_name())));
                out.push(Action::Reload);
            }
            Signal::SIGTTIN if self.phase == Phase::Running => {
                out.extend(self.set_num_workers(self.num_workers + 1));
            }
            Signal::SIGTTOU if self.phase == Phase::Running && self.num_workers > 1 => {
                out.extend(self.set_num_workers(self.num_workers - 1));
            }
            Signal::SIGUSR1 => {
                out.push(Action::ReopenLogs);
                out.extend(self.signal_all(Signal::SIGUSR1));
            }
            Signal::SIGUSR2 if self.phase == Phase::Running => {
                if self.reexec_pid != 0 {
                    out.push(log(Level::Warning, "USR2 signal ignored. Child exists."));
                } else if self.parent_master != 0 {
                    out.push(log(Level::Warning, "USR2 signal ignored. Parent exists."));
                } else {
                    out.push(Action::Reexec);
                }
            }
            Signal::SIGWINCH => {
                if self.cfg.daemon {
                    out.push(log(Level::Info, "graceful stop of workers"));
                    self.num_workers = 0;
                    for w in self.workers.values_mut() {
                        w.retiring = true;
                    }
                    out.extend(self.signal_all(Signal::SIGTERM));
                } else {
                    out.push(log(Level::Debug, "SIGWINCH ignored. Not daemonized"));
                }
            }
            _ => {}
        }
        out
    }

    /// A control-socket command (gunicorn's `CommandHandlers`): the reply's
    /// `data` and what to do. `probe` gives a slot's
    /// heartbeat as on a tick. Commands that gunicorn carries out by
    /// signalling itself (reload, reopen, shutdown) are handled exactly as
    /// that signal.
    pub fn on_command(
        &mut self,
        cmd: &Command,
        now: u64,
        facts: &Facts,
        probe: &dyn Fn(usize) -> Probe,
    ) -> (Json, Vec<Action>) {
        let mut out = Vec::new();
        let workers = |kind: Option<&str>| -> Vec<Json> {
            let mut list: Vec<(u64, Json)> = self
                .workers
                .iter()
                .map(|(pid, w)| {
                    let since = now.saturating_sub(probe(w.slot).last_beat);
                    let beat = (since as f64 / 10.0).round() / 100.0;
                    let mut o = json!({"pid": pid});
                    if let Some(kind) = kind {
                        o["type"] = json!(kind);
                    }
                    o["age"] = json!(w.age);
                    o["booted"] = json!(w.ready);
                    if kind.is_none() {
                        o["aborted"] = json!(w.aborted.is_some());
                    }
                    o["last_heartbeat"] = json!(beat);
                    (w.age, o)
                })
                .collect();
            list.sort_by_key(|(age, _)| *age);
            list.into_iter().map(|(_, o)| o).collect()
        };
        let no_pool = || json!({"success": false, "error": "Dirty arbiter not running: no dirty-app pool is configured"});
        let data = match cmd {
            Command::ShowWorkers => {
                let list = workers(None);
                json!({"count": list.len(), "workers": list})
            }
            Command::ShowAll => {
                let list = workers(Some("web"));
                json!({
                    "arbiter": {"pid": facts.pid, "type": "arbiter", "role": "master"},
                    "web_worker_count": list.len(),
                    "web_workers": list,
                    "dirty_arbiter": null,
                    "dirty_workers": [],
                    "dirty_worker_count": 0,
                })
            }
            Command::ShowDirty => {
                json!({"enabled": false, "pid": null, "workers": [], "apps": []})
            }
            Command::ShowConfig => facts.config.clone(),
            Command::ShowStats => json!({
                "uptime": (facts.uptime_s * 100.0).round() / 100.0,
                "pid": facts.pid,
                "workers_current": self.workers.len(),
                "workers_target": self.num_workers,
                "workers_spawned": facts.workers_spawned,
                "workers_killed": facts.workers_killed,
                "reloads": facts.reloads,
                "dirty_arbiter_pid": null,
            }),
            Command::ShowListeners => {
                json!({"listeners": facts.listeners, "count": facts.listeners.len()})
            }
            Command::WorkerAdd(n) => {
                let old = self.num_workers;
                if self.phase == Phase::Running {
                    out.extend(self.set_num_workers(old + n));
                }
                json!({"added": n, "previous": old, "total": self.num_workers})
            }
            Command::WorkerRemove(n) => {
                let old = self.num_workers;
                let new = old.saturating_sub(*n).max(1);
                if self.phase == Phase::Running {
                    out.extend(self.set_num_workers(new));
                }
                json!({"removed": old - new, "previous": old, "total": new})
            }
            // Not marked `retiring`: it still counts, so its replacement is
            // forked when it exits, as for any worker that dies.
            Command::WorkerKill(pid) if self.workers.contains_key(pid) => {
                out.push(Action::Kill {
                    pid: *pid,
                    signal: Signal::SIGTERM,
                });
                json!({"success": true, "killed": pid})
            }
            Command::WorkerKill(pid) => {
                json!({"success": false, "error": format!("Worker {pid} not found")})
            }
            Command::DirtyAdd | Command::DirtyRemove => no_pool(),
            Command::Reload => {
                out.extend(self.on_signal(Signal::SIGHUP, now));
                json!({"status": "reloading"})
            }
            Command::Reopen => {
                out.extend(self.on_signal(Signal::SIGUSR1, now));
                json!({"status": "reopening"})
            }
            Command::Shutdown { quick, mode } => {
                let sig = if *quick {
                    Signal::SIGINT
                } else {
                    Signal::SIGTERM
                };
                out.extend(self.on_signal(sig, now));
                json!({"status": "shutting_down", "mode": mode})
            }
            Command::Help => crate::control::help(),
        };
        (data, out)
    }

    fn set_num_workers(&mut self, new: usize) -> Vec<Action> {
        let old = self.num_workers;
        self.num_workers = new;
        let mut out = vec![Action::NworkersChanged { new, old }];
        out.extend(self.manage());
        out
    }

    /// The shell reloaded the configuration (`HUP`): apply it and replace
    /// every current worker, new ones first.
    pub fn reloaded(&mut self, cfg: Config) -> Vec<Action> {
        // gunicorn calls `nworkers_changed` on every reload, even for an unchanged count.
        let mut out = vec![Action::NworkersChanged {
            new: cfg.num_workers,
            old: self.num_workers,
        }];
        self.num_workers = cfg.num_workers;
        self.cfg = cfg;
        for w in self.workers.values_mut() {
            if !w.retiring {
                w.replace = true;
                w.held_since = None;
            }
        }
        out.extend(self.manage());
        out
    }

    /// A child exited (from a non-blocking `waitpid` loop).
    pub fn on_exit(&mut self, pid: i32, status: ExitStatus, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        if pid == self.reexec_pid && pid != 0 {
            self.reexec_pid = 0;
            out.push(log(
                Level::Warning,
                format!("Re-executed master (pid:{pid}) exited; this master stays in charge"),
            ));
            return out;
        }
        let Some(worker) = self.workers.remove(&pid) else {
            return out;
        };
        match status {
            ExitStatus::Code(0) => {}
            ExitStatus::Code(code) => {
                out.push(log(
                    Level::Error,
                    format!("Worker (pid:{pid}) exited with code {code}."),
                ));
                let reason = match code {
                    WORKER_BOOT_ERROR => Some("Worker failed to boot."),
                    APP_LOAD_ERROR => Some("App failed to load."),
                    _ => None,
                };
                if let Some(reason) = reason {
                    if self.phase == Phase::Running {
                        // No `child_exit` here: gunicorn halts before calling it.
                        out.extend(self.stop(true, now, code, Some(reason.to_string())));
                        return out;
                    }
                }
            }
            ExitStatus::Signaled(sig) => {
                let mut msg = format!("Worker (pid:{pid}) was sent {}!", sig.as_str());
                if sig == Signal::SIGKILL {
                    msg.push_str(" Perhaps out of memory?");
                }
                out.push(log(Level::Error, msg));
            }
        }
        out.push(Action::ChildExit {
            pid,
            age: worker.age,
        });
        out.extend(self.after_change(now));
        out
    }

    /// Periodic check: boot/retire states, heartbeat timeouts, worker
    /// count, stop deadline. `probe(slot)` gives the slot's last heartbeat
    /// (same clock as `now`) and state.
    pub fn on_tick(&mut self, now: u64, probe: &dyn Fn(usize) -> Probe) -> Vec<Action> {
        let mut out = Vec::new();
        if self.phase == Phase::Running {
            for (pid, w) in self.workers.iter_mut() {
                let p = probe(w.slot);
                if p.state.booted() {
                    w.ready = true;
                }
                if p.state == SlotState::ReplaceAhead && !w.replace && !w.retiring {
                    w.replace = true;
                    w.held_since = Some(now);
                    out.push(log(
                        Level::Info,
                        format!("Starting a replacement for worker (pid:{pid}): max requests near"),
                    ));
                }
                if w.held_since
                    .is_some_and(|since| now.saturating_sub(since) > HOLD_MAX_MS)
                {
                    w.held_since = None;
                    out.push(log(
                        Level::Info,
                        format!("Replacing worker (pid:{pid}): max requests near, traffic slowed"),
                    ));
                }
                if p.state.wants_retirement()
                    && (!w.replace || w.held_since.is_some())
                    && !w.retiring
                {
                    w.replace = true;
                    w.held_since = None;
                    let why = match p.state {
                        SlotState::RetireMemory => "memory limit exceeded",
                        _ => "max requests reached",
                    };
                    out.push(log(
                        Level::Info,
                        format!("Replacing worker (pid:{pid}): {why}"),
                    ));
                }
                if self.cfg.timeout_ms == 0
                    || now.saturating_sub(p.last_beat) <= self.cfg.timeout_ms
                {
                    continue;
                }
                match w.aborted {
                    None => {
                        out.push(log(Level::Critical, format!("WORKER TIMEOUT (pid:{pid})")));
                        w.aborted = Some(now);
                        out.push(Action::Kill {
                            pid: *pid,
                            signal: Signal::SIGABRT,
                        });
                    }
                    // Time to log its stacks (`workers::abort`), then KILL.
                    Some(at) if now.saturating_sub(at) < ABORT_GRACE_MS => {}
                    Some(_) => out.push(Action::Kill {
                        pid: *pid,
                        signal: Signal::SIGKILL,
                    }),
                }
            }
        }
        out.extend(self.after_change(now));
        out
    }

    fn after_change(&mut self, now: u64) -> Vec<Action> {
        match &mut self.phase {
            Phase::Running => self.manage(),
            Phase::Stopping {
                deadline, killed, ..
            } => {
                let mut out = Vec::new();
                if !self.workers.is_empty() && now >= *deadline && !*killed {
                    *killed = true;
                    out.extend(self.signal_all(Signal::SIGKILL));
                    // Killed workers are reaped by the shell before it exits.
                    self.workers.clear();
                }
                if self.workers.is_empty() {
                    out.extend(self.finish());
                }
                out
            }
            Phase::Done => Vec::new(),
        }
    }

    /// Spawn or retire workers to match `num_workers` (oldest retired
    /// first); then retire workers marked for replacement as long as at
    /// least `num_workers` booted workers stay.
    fn manage(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        let counted: Vec<(u64, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| !w.replace && !w.retiring)
            .map(|(p, w)| (w.age, *p))
            .collect();
        let counted_n = counted.len();
        let live = counted_n + self.pending_slots.len();
        if live < self.num_workers {
            for _ in live..self.num_workers {
                let Some(slot) = self.free_slot() else {
                    out.push(log(Level::Error, "No free worker slot; not spawning"));
                    break;
                };
                self.next_age += 1;
                self.pending_slots.push(slot);
                out.push(Action::Spawn {
                    slot,
                    age: self.next_age,
                });
            }
        } else if counted.len() > self.num_workers {
            let mut by_age = counted;
            by_age.sort_unstable();
            let excess = by_age.len() - self.num_workers;
            for (_, pid) in by_age.into_iter().take(excess) {
                if let Some(w) = self.workers.get_mut(&pid) {
                    w.retiring = true;
                }
                out.push(Action::Kill {
                    pid,
                    signal: Signal::SIGTERM,
                });
            }
        }
        // Retire marked workers, oldest first, only while enough booted
        // workers remain to keep `num_workers` serving.
        let mut booted = self
            .workers
            .values()
            .filter(|w| w.ready && !w.retiring)
            .count();
        let mut marked: Vec<(u64, i32)> = self
            .workers
            .iter()
            .filter(|(_, w)| w.replace && w.held_since.is_none() && !w.retiring)
            .map(|(p, w)| (w.age, *p))
            .collect();
        marked.sort_unstable();
        for (_, pid) in marked {
            let Some(w) = self.workers.get_mut(&pid) else {
                continue;
            };
            let remaining = if w.ready { booted - 1 } else { booted };
            if remaining < self.num_workers {
                break;
            }
            booted = remaining;
            w.retiring = true;
            out.push(Action::Restarting { slot: w.slot });
            out.push(Action::Kill {
                pid,
                signal: Signal::SIGTERM,
            });
        }
        // gunicorn's `N workers` debug line and `gunicorn.workers` gauge,
        // sent when the count changes.
        let active = (counted_n + self.pending_slots.len()).min(self.num_workers);
        if self.last_worker_count != Some(active) {
            self.last_worker_count = Some(active);
            out.push(log(Level::Debug, format!("{active} workers")));
            out.push(Action::Gauge {
                name: "gunicorn.workers",
                value: active as i64,
            });
        }
        out
    }

    fn free_slot(&self) -> Option<usize> {
        (0..self.slot_capacity).find(|s| {
            !self.pending_slots.contains(s) && !self.workers.values().any(|w| w.slot == *s)
        })
    }

    fn signal_all(&self, signal: Signal) -> Vec<Action> {
        self.workers
            .keys()
            .map(|&pid| Action::Kill { pid, signal })
            .collect()
    }

    /// gunicorn's `stop()` followed by `halt()`: close listeners, signal the
    /// workers (TERM when graceful, QUIT otherwise), wait up to the graceful
    /// timeout, then KILL.
    fn stop(&mut self, graceful: bool, now: u64, code: i32, reason: Option<String>) -> Vec<Action> {
        if self.phase != Phase::Running {
            // A second stop signal while stopping: escalate a graceful stop to a quick one.
            if !graceful {
                return self.signal_all(Signal::SIGQUIT);
            }
            return Vec::new();
        }
        self.phase = Phase::Stopping {
            deadline: now + self.cfg.graceful_timeout_ms,
            code,
            reason,
            killed: false,
        };
        let unlink = self.reexec_pid == 0 && self.parent_master == 0 && !self.cfg.systemd;
        let mut out = vec![Action::CloseListeners { unlink }];
        out.extend(self.signal_all(if graceful {
            Signal::SIGTERM
        } else {
            Signal::SIGQUIT
        }));
        out.extend(self.after_change(now));
        out
    }

    fn finish(&mut self) -> Vec<Action> {
        let Phase::Stopping { code, reason, .. } = std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return Vec::new();
        };
        // gunicorn's `halt`: ERROR when the master exits with a failure.
        let level = if code == 0 { Level::Info } else { Level::Error };
        let mut out = vec![log(level, format!("Shutting down: {}", self.master_name()))];
        if let Some(reason) = reason {
            out.push(log(level, format!("Reason: {reason}")));
        }
        out.push(Action::Exit { code });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: usize) -> Config {
        Config {
            num_workers: n,
            timeout_ms: 30_000,
            graceful_timeout_ms: 30_000,
            daemon: false,
            systemd: false,
        }
    }

    /// Every slot booted and last beating at `t`.
    fn ready_at(t: u64) -> impl Fn(usize) -> Probe {
        move |_| Probe {
            last_beat: t,
            state: SlotState::Ready,
        }
    }

    /// Start an arbiter and "fork" its initial workers with PIDs 100, 101, ...
    fn running(n: usize) -> Arbiter {
        let mut a = Arbiter::new(cfg(n), 64);
        let acts = a.start();
        fork_all(&mut a, acts, 100);
        a
    }

    fn fork_all(a: &mut Arbiter, acts: Vec<Action>, first_pid: i32) -> Vec<i32> {
        let mut pids = Vec::new();
        for act in acts {
            if let Action::Spawn { slot, age } = act {
                let pid = first_pid + pids.len() as i32;
                a.spawned(slot, age, pid);
                pids.push(pid);
            }
        }
        pids
    }

    fn kills(acts: &[Action]) -> Vec<(i32, Signal)> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Kill { pid, signal } => Some((*pid, *signal)),
                _ => None,
            })
            .collect()
    }

    fn spawns(acts: &[Action]) -> usize {
        acts.iter()
            .filter(|a| matches!(a, Action::Spawn { .. }))
            .count()
    }

    fn logs(acts: &[Action]) -> Vec<String> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Log { msg, .. } => Some(msg.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn start_spawns_configured_workers_in_distinct_slots() {
        let mut a = Arbiter::new(cfg(3), 64);
        let acts = a.start();
        let slots: Vec<usize> = acts
            .iter()
            .filter_map(|a| match a {
                Action::Spawn { slot, .. } => Some(*slot),
                _ => None,
            })
            .collect();
        assert_eq!(slots, vec![0, 1, 2]);
        // A tick before the shell reports the forks does not spawn again.
        assert_eq!(spawns(&a.on_tick(0, &ready_at(0))), 0);
    }

    #[test]
    fn dead_worker_is_replaced_and_logged() {
        let mut a = running(2);
        let acts = a.on_exit(100, ExitStatus::Signaled(Signal::SIGKILL), 1);
        assert!(
            logs(&acts)
                .contains(&"Worker (pid:100) was sent SIGKILL! Perhaps out of memory?".to_string())
        );
        assert_eq!(spawns(&acts), 1);
        let acts = a.on_exit(101, ExitStatus::Code(1), 1);
        assert!(logs(&acts).contains(&"Worker (pid:101) exited with code 1.".to_string()));
        assert_eq!(spawns(&acts), 1);
    }

    #[test]
    fn boot_error_halts_instead_of_fork_loop() {
        let mut a = running(2);
        let acts = a.on_exit(100, ExitStatus::Code(WORKER_BOOT_ERROR), 5);
        assert_eq!(spawns(&acts), 0);
        assert!(acts.contains(&Action::CloseListeners { unlink: true }));
        assert_eq!(kills(&acts), vec![(101, Signal::SIGTERM)]);
        let acts = a.on_exit(101, ExitStatus::Code(0), 6);
        let l = logs(&acts);
        assert!(l.contains(&"Shutting down: Master".to_string()));
        assert!(l.contains(&"Reason: Worker failed to boot.".to_string()));
        assert_eq!(
            acts.last(),
            Some(&Action::Exit {
                code: WORKER_BOOT_ERROR
            })
        );
        assert!(a.is_done());
    }

    #[test]
    fn app_load_error_exit_code_4() {
        let mut a = running(1);
        let acts = a.on_exit(100, ExitStatus::Code(APP_LOAD_ERROR), 5);
        assert!(logs(&acts).contains(&"Reason: App failed to load.".to_string()));
        assert_eq!(
            acts.last(),
            Some(&Action::Exit {
                code: APP_LOAD_ERROR
            })
        );
    }

    #[test]
    fn term_is_graceful_then_kill_after_deadline() {
        let mut a = running(2);
        let acts = a.on_signal(Signal::SIGTERM, 1_000);
        assert_eq!(logs(&acts)[0], "Handling signal: term");
        assert!(acts.contains(&Action::CloseListeners { unlink: true }));
        assert_eq!(
            kills(&acts),
            vec![(100, Signal::SIGTERM), (101, Signal::SIGTERM)]
        );
        // Before the deadline nothing more happens.
        assert!(kills(&a.on_tick(20_000, &ready_at(20_000))).is_empty());
        // A worker that exits is not replaced while stopping.
        assert_eq!(spawns(&a.on_exit(100, ExitStatus::Code(0), 21_000)), 0);
        // After graceful_timeout the rest is killed and the master exits 0.
        let acts = a.on_tick(31_001, &ready_at(31_001));
        assert_eq!(kills(&acts), vec![(101, Signal::SIGKILL)]);
        assert_eq!(acts.last(), Some(&Action::Exit { code: 0 }));
    }

    #[test]
    fn int_and_quit_send_quit() {
        for sig in [Signal::SIGINT, Signal::SIGQUIT] {
            let mut a = running(1);
            let acts = a.on_signal(sig, 0);
            assert_eq!(kills(&acts), vec![(100, Signal::SIGQUIT)]);
            let acts = a.on_exit(100, ExitStatus::Code(0), 1);
            assert_eq!(acts.last(), Some(&Action::Exit { code: 0 }));
        }
    }

    #[test]
    fn timeout_sends_abrt_then_kill() {
        let mut a = running(1);
        let acts = a.on_tick(30_000, &ready_at(0));
        assert!(kills(&acts).is_empty());
        let acts = a.on_tick(30_001, &ready_at(0));
        assert!(logs(&acts).contains(&"WORKER TIMEOUT (pid:100)".to_string()));
        assert_eq!(kills(&acts), vec![(100, Signal::SIGABRT)]);
        // It gets ABORT_GRACE_MS to log its stacks before the KILL.
        assert!(kills(&a.on_tick(30_500, &ready_at(0))).is_empty());
        let acts = a.on_tick(31_001, &ready_at(0));
        assert_eq!(kills(&acts), vec![(100, Signal::SIGKILL)]);
    }

    #[test]
    fn timeout_zero_disables() {
        let mut a = Arbiter::new(
            Config {
                timeout_ms: 0,
                ..cfg(1)
            },
            4,
        );
        let acts = a.start();
        fork_all(&mut a, acts, 100);
        assert!(kills(&a.on_tick(10_000_000, &ready_at(0))).is_empty());
    }

    fn gauges(acts: &[Action]) -> Vec<i64> {
        acts.iter()
            .filter_map(|a| match a {
                Action::Gauge {
                    name: "gunicorn.workers",
                    value,
                } => Some(*value),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn workers_gauge_sent_when_the_count_changes() {
        let mut a = Arbiter::new(cfg(2), 8);
        let acts = a.start();
        assert_eq!(gauges(&acts), vec![2]);
        assert!(logs(&acts).contains(&"2 workers".to_string()));
        fork_all(&mut a, acts, 100);
        assert!(gauges(&a.on_tick(1, &ready_at(1))).is_empty());
        let acts = a.on_signal(Signal::SIGTTIN, 2);
        assert_eq!(gauges(&acts), vec![3]);
        fork_all(&mut a, acts, 200);
        assert_eq!(gauges(&a.on_signal(Signal::SIGTTOU, 3)), vec![2]);
        // A reaped child is logged at debug while running.
        assert_eq!(
            logs(&a.on_signal(Signal::SIGCHLD, 4)),
            vec!["Handling signal: cld".to_string()]
        );
    }

    #[test]
    fn ttin_ttou_adjust_and_never_below_one() {
        let mut a = running(1);
        let acts = a.on_signal(Signal::SIGTTIN, 0);
        assert_eq!(spawns(&acts), 1);
        fork_all(&mut a, acts, 200);
        assert_eq!(a.num_workers(), 2);
        let acts = a.on_signal(Signal::SIGTTOU, 0);
        // The oldest worker is retired.
        assert_eq!(kills(&acts), vec![(100, Signal::SIGTERM)]);
        a.on_exit(100, ExitStatus::Code(0), 0);
        let acts = a.on_signal(Signal::SIGTTOU, 0);
        assert!(kills(&acts).is_empty());
        assert_eq!(a.num_workers(), 1);
    }

    #[test]
    fn usr1_reopens_and_forwards() {
        let mut a = running(2);
        let acts = a.on_signal(Signal::SIGUSR1, 0);
        assert!(acts.contains(&Action::ReopenLogs));
        assert_eq!(
            kills(&acts),
            vec![(100, Signal::SIGUSR1), (101, Signal::SIGUSR1)]
        );
    }

    #[test]
    fn winch_ignored_unless_daemon() {
        let mut a = running(1);
        assert!(kills(&a.on_signal(Signal::SIGWINCH, 0)).is_empty());
        let mut d = Arbiter::new(
            Config {
                daemon: true,
                ..cfg(1)
            },
            4,
        );
        let acts = d.start();
        fork_all(&mut d, acts, 100);
        let acts = d.on_signal(Signal::SIGWINCH, 0);
        assert_eq!(kills(&acts), vec![(100, Signal::SIGTERM)]);
        assert_eq!(spawns(&d.on_exit(100, ExitStatus::Code(0), 1)), 0);
    }

    #[test]
    fn unknown_child_ignored() {
        let mut a = running(1);
        assert!(a.on_exit(999, ExitStatus::Code(3), 0).is_empty());
    }

    #[test]
    fn max_requests_replacement_starts_before_retiring() {
        let mut a = running(2);
        a.on_tick(0, &ready_at(0));
        // Worker 100 asks to be retired: a replacement is spawned, nobody killed yet.
        let probe = |slot: usize| Probe {
            last_beat: 0,
            state: if slot == 0 {
                SlotState::RetireMaxRequests
            } else {
                SlotState::Ready
            },
        };
        let acts = a.on_tick(10, &probe);
        assert_eq!(spawns(&acts), 1);
        assert!(kills(&acts).is_empty());
        let new = fork_all(&mut a, acts, 300);
        // The replacement has not booted: still no kill.
        let booting = |slot: usize| Probe {
            last_beat: 0,
            state: match slot {
                0 => SlotState::RetireMaxRequests,
                1 => SlotState::Ready,
                _ => SlotState::Booting,
            },
        };
        assert!(kills(&a.on_tick(20, &booting)).is_empty());
        // Booted: the old worker gets TERM, once.
        let acts = a.on_tick(30, &probe);
        assert_eq!(kills(&acts), vec![(100, Signal::SIGTERM)]);
        assert!(kills(&a.on_tick(40, &probe)).is_empty());
        assert_eq!(spawns(&a.on_exit(100, ExitStatus::Code(0), 50)), 0);
        assert_eq!(a.worker_pids(), vec![101, new[0]]);
    }

    #[test]
    fn a_replacement_started_ahead_waits_for_the_spent_budget() {
        let mut a = running(1);
        a.on_tick(0, &ready_at(0));
        let state_of = |old: SlotState| {
            move |slot: usize| Probe {
                last_beat: 0,
                state: if slot == 0 { old } else { SlotState::Ready },
            }
        };
        // Close to its budget: a replacement is spawned, nobody killed.
        let acts = a.on_tick(10, &state_of(SlotState::ReplaceAhead));
        assert_eq!(spawns(&acts), 1);
        assert!(kills(&acts).is_empty());
        assert!(logs(&acts).iter().any(|l| l.contains("max requests near")));
        fork_all(&mut a, acts, 300);
        // The replacement booted, the old worker still has budget: held.
        let acts = a.on_tick(20, &state_of(SlotState::ReplaceAhead));
        assert!(kills(&acts).is_empty() && spawns(&acts) == 0);
        // Spent: TERM at once (the replacement is ready), no new spawn.
        let acts = a.on_tick(30, &state_of(SlotState::RetireMaxRequests));
        assert_eq!(kills(&acts), vec![(100, Signal::SIGTERM)]);
        assert_eq!(spawns(&acts), 0);
        assert!(
            logs(&acts)
                .iter()
                .any(|l| l.contains("Replacing worker (pid:100): max requests reached"))
        );
    }

    #[test]
    fn a_worker_replaced_ahead_is_not_kept_for_good_when_traffic_stops() {
        let mut a = running(1);
        a.on_tick(0, &ready_at(0));
        let ahead = |slot: usize| Probe {
            last_beat: 0,
            state: if slot == 0 {
                SlotState::ReplaceAhead
            } else {
                SlotState::Ready
            },
        };
        let acts = a.on_tick(10, &ahead);
        fork_all(&mut a, acts, 300);
        // Budget never spent: held while HOLD_MAX_MS lasts, then retired.
        assert!(kills(&a.on_tick(10 + HOLD_MAX_MS, &ahead)).is_empty());
        let acts = a.on_tick(11 + HOLD_MAX_MS, &ahead);
        assert_eq!(kills(&acts), vec![(100, Signal::SIGTERM)]);
        assert_eq!(spawns(&acts), 0);
    }

    #[test]
    fn reload_reports_the_worker_count_even_unchanged() {
        let mut a = running(2);
        let acts = a.reloaded(cfg(2));
        assert_eq!(
            acts.first(),
            Some(&Action::NworkersChanged { new: 2, old: 2 })
        );
    }

    #[test]
    fn abort_stops_quickly_with_status_255() {
        let mut a = running(2);
        let acts = a.abort(5);
        assert!(acts.contains(&Action::CloseListeners { unlink: true }));
        assert_eq!(
            kills(&acts),
            vec![(100, Signal::SIGQUIT), (101, Signal::SIGQUIT)]
        );
        a.on_exit(100, ExitStatus::Code(0), 6);
        let acts = a.on_exit(101, ExitStatus::Code(0), 7);
        assert_eq!(acts.last(), Some(&Action::Exit { code: 255 }));
    }

    #[test]
    fn hup_replaces_all_workers_new_first() {
        let mut a = running(2);
        a.on_tick(0, &ready_at(0));
        let acts = a.on_signal(Signal::SIGHUP, 0);
        assert!(logs(&acts).contains(&"Hang up: Master".to_string()));
        assert!(acts.contains(&Action::Reload));
        let acts = a.reloaded(Config {
            num_workers: 3,
            ..cfg(3)
        });
        assert!(acts.contains(&Action::NworkersChanged { new: 3, old: 2 }));
        assert_eq!(spawns(&acts), 3);
        assert!(kills(&acts).is_empty());
        fork_all(&mut a, acts, 200);
        let acts = a.on_tick(10, &|slot| Probe {
            last_beat: 10,
            state: if slot < 2 {
                SlotState::Ready
            } else {
                SlotState::Booting
            },
        });
        assert!(kills(&acts).is_empty());
        let acts = a.on_tick(20, &ready_at(20));
        assert_eq!(
            kills(&acts),
            vec![(100, Signal::SIGTERM), (101, Signal::SIGTERM)]
        );
        // Each old worker hears that its TERM is a restart, just before it.
        let marks: Vec<&Action> = acts
            .iter()
            .filter(|a| matches!(a, Action::Restarting { .. } | Action::Kill { .. }))
            .collect();
        assert_eq!(
            marks,
            vec![
                &Action::Restarting { slot: 0 },
                &Action::Kill {
                    pid: 100,
                    signal: Signal::SIGTERM
                },
                &Action::Restarting { slot: 1 },
                &Action::Kill {
                    pid: 101,
                    signal: Signal::SIGTERM
                },
            ]
        );
    }

    #[test]
    fn usr2_guard_and_reexec_child_exit() {
        let mut a = running(1);
        let acts = a.on_signal(Signal::SIGUSR2, 0);
        assert!(acts.contains(&Action::Reexec));
        a.reexec_started(555);
        let acts = a.on_signal(Signal::SIGUSR2, 0);
        assert!(!acts.contains(&Action::Reexec));
        assert!(logs(&acts).contains(&"USR2 signal ignored. Child exists.".to_string()));
        // While the child master lives, a stop keeps the unix sockets.
        let acts = a.on_exit(555, ExitStatus::Code(0), 0);
        assert!(logs(&acts).iter().any(|l| l.contains("stays in charge")));
        assert_eq!(spawns(&acts), 0);
        assert!(a.on_signal(Signal::SIGUSR2, 0).contains(&Action::Reexec));
        a.reexec_started(556);
        let acts = a.on_signal(Signal::SIGTERM, 0);
        assert!(acts.contains(&Action::CloseListeners { unlink: false }));

        let mut child = running(1);
        child.set_parent_master(42);
        let acts = child.on_signal(Signal::SIGUSR2, 0);
        assert!(logs(&acts).contains(&"USR2 signal ignored. Parent exists.".to_string()));
        assert_eq!(child.master_name(), "Master.2");
        child.promoted();
        assert!(
            child
                .on_signal(Signal::SIGUSR2, 0)
                .contains(&Action::Reexec)
        );
    }

    fn command(a: &mut Arbiter, cmd: Command, now: u64) -> (Json, Vec<Action>) {
        let facts = Facts {
            pid: 1,
            uptime_s: 12.345,
            workers_spawned: 3,
            workers_killed: 1,
            reloads: 2,
            config: json!({"workers": 2}),
            listeners: vec![json!({"address": "http://127.0.0.1:8000", "fd": 3, "type": "tcp"})],
        };
        a.on_command(&cmd, now, &facts, &ready_at(1_000))
    }

    #[test]
    fn control_show_commands_report_workers_stats_and_facts() {
        let mut a = running(2);
        a.on_tick(1_000, &ready_at(1_000));
        let (data, acts) = command(&mut a, Command::ShowWorkers, 2_500);
        assert!(acts.is_empty());
        assert_eq!(data["count"], json!(2));
        assert_eq!(
            data["workers"][0],
            json!({"pid": 100, "age": 1, "booted": true, "aborted": false, "last_heartbeat": 1.5})
        );
        let (data, _) = command(&mut a, Command::ShowAll, 1_000);
        assert_eq!(data["arbiter"]["pid"], json!(1));
        assert_eq!(data["web_workers"][1]["type"], json!("web"));
        assert_eq!(data["web_worker_count"], json!(2));
        assert_eq!(data["dirty_arbiter"], Json::Null);
        let (data, _) = command(&mut a, Command::ShowStats, 1_000);
        assert_eq!(
            data,
            json!({"uptime": 12.35, "pid": 1, "workers_current": 2, "workers_target": 2,
                   "workers_spawned": 3, "workers_killed": 1, "reloads": 2,
                   "dirty_arbiter_pid": null})
        );
        assert_eq!(
            command(&mut a, Command::ShowListeners, 0).0["count"],
            json!(1)
        );
        assert_eq!(
            command(&mut a, Command::ShowConfig, 0).0,
            json!({"workers": 2})
        );
        assert_eq!(
            command(&mut a, Command::ShowDirty, 0).0["enabled"],
            json!(false)
        );
        assert!(command(&mut a, Command::Help, 0).0["commands"]["worker kill <PID>"].is_string());
    }

    #[test]
    fn control_worker_add_remove_and_kill() {
        let mut a = running(2);
        let (data, acts) = command(&mut a, Command::WorkerAdd(2), 0);
        assert_eq!(data, json!({"added": 2, "previous": 2, "total": 4}));
        assert_eq!(spawns(&acts), 2);
        assert!(acts.contains(&Action::NworkersChanged { new: 4, old: 2 }));
        fork_all(&mut a, acts, 200);
        // Never below one worker; the oldest go first.
        let (data, acts) = command(&mut a, Command::WorkerRemove(10), 0);
        assert_eq!(data, json!({"removed": 3, "previous": 4, "total": 1}));
        assert_eq!(
            kills(&acts),
            vec![
                (100, Signal::SIGTERM),
                (101, Signal::SIGTERM),
                (200, Signal::SIGTERM)
            ]
        );
        let (data, acts) = command(&mut a, Command::WorkerKill(201), 0);
        assert_eq!(data, json!({"success": true, "killed": 201}));
        assert_eq!(kills(&acts), vec![(201, Signal::SIGTERM)]);
        // Its exit brings a replacement.
        let acts = a.on_exit(201, ExitStatus::Code(0), 0);
        assert_eq!(spawns(&acts), 1);
        let (data, acts) = command(&mut a, Command::WorkerKill(9999), 0);
        assert_eq!(
            data,
            json!({"success": false, "error": "Worker 9999 not found"})
        );
        assert!(acts.is_empty());
        let (data, _) = command(&mut a, Command::DirtyAdd, 0);
        assert_eq!(
            data,
            json!({"success": false, "error": "Dirty arbiter not running: no dirty-app pool is configured"})
        );
    }

    #[test]
    fn control_reload_reopen_shutdown_act_as_their_signals() {
        let mut a = running(1);
        let (data, acts) = command(&mut a, Command::Reload, 0);
        assert_eq!(data, json!({"status": "reloading"}));
        assert!(acts.contains(&Action::Reload));
        let (data, acts) = command(&mut a, Command::Reopen, 0);
        assert_eq!(data, json!({"status": "reopening"}));
        assert!(acts.contains(&Action::ReopenLogs));
        assert_eq!(kills(&acts), vec![(100, Signal::SIGUSR1)]);
        let quick = Command::Shutdown {
            quick: true,
            mode: "quick".into(),
        };
        let (data, acts) = command(&mut a, quick, 0);
        assert_eq!(data, json!({"status": "shutting_down", "mode": "quick"}));
        assert_eq!(kills(&acts), vec![(100, Signal::SIGQUIT)]);
        assert!(!a.is_running());
        // While stopping, the worker count no longer changes.
        let (_, acts) = command(&mut a, Command::WorkerAdd(1), 0);
        assert_eq!(spawns(&acts), 0);
    }
}
