//! Signal delivery without running code in signal context: the handler sets a
//! bit in `PENDING` and writes one byte to the wake pipe (if any). The main
//! loop drains the pipe and takes the mask.
//!
//! Invariant: the handler only performs atomic operations and `write(2)`,
//! both async-signal-safe; `errno` is saved and restored around the write.
//! A signal routed `via_python` additionally trips CPython's own pending
//! flag (`PyErr_SetInterruptEx`, async-signal-safe) so a Python-level
//! handler runs later in the main thread, outside signal context.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static PENDING: AtomicU64 = AtomicU64::new(0);
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    if (0..64).contains(&sig) {
        PENDING.fetch_or(1u64 << sig, Ordering::SeqCst);
    }
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno access and write(2) are async-signal-safe; the buffer
        // is a valid one-byte stack value; a full pipe (EAGAIN) is fine since
        // one pending byte already guarantees a wake-up.
        unsafe {
            let errno = *libc::__errno_location();
            let byte = 0u8;
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *libc::__errno_location() = errno;
        }
    }
}

/// Install the recording handler for `signals`. `restart` selects `SA_RESTART`
/// (interrupted blocking reads resume) — gunicorn's `siginterrupt(sig, False)`.
pub fn install(signals: &[Signal], restart: bool) -> nix::Result<()> {
    let flags = if restart {
        SaFlags::SA_RESTART
    } else {
        SaFlags::empty()
    };
    let action = SigAction::new(SigHandler::Handler(on_signal), flags, SigSet::empty());
    for &sig in signals {
        // SAFETY: `on_signal` is async-signal-safe (see module invariant).
        unsafe { sigaction(sig, &action)? };
    }
    Ok(())
}

/// Restore the default disposition of `signals` (a freshly forked worker
/// must not run the master's handlers).
pub fn reset_default(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for &sig in signals {
        // SAFETY: installing SIG_DFL runs no code of ours.
        unsafe { sigaction(sig, &action)? };
    }
    Ok(())
}

/// Ignore `signals`.
pub fn ignore(signals: &[Signal]) -> nix::Result<()> {
    let action = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for &sig in signals {
        // SAFETY: installing SIG_IGN runs no code of ours.
        unsafe { sigaction(sig, &action)? };
    }
    Ok(())
}

/// Unblock every signal (Python may leave some blocked in threads; the
/// worker's main thread must receive them).
pub fn unblock_all() -> nix::Result<()> {
    SigSet::all().thread_unblock()
}

/// Block every signal in the calling thread; returns the previous mask for
/// `restore_mask`. The master forks with signals blocked so a signal sent to
/// a new worker before it installed its own handlers stays pending in the
/// kernel (the worker unblocks once ready) instead of being lost.
pub fn block_all() -> nix::Result<SigSet> {
    SigSet::all().thread_swap_mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)
}

pub fn restore_mask(mask: &SigSet) -> nix::Result<()> {
    mask.thread_set_mask()
}

/// Set (or clear with `None`) the pipe the handler writes to.
pub fn set_wake_fd(fd: Option<&OwnedFd>) {
    WAKE_FD.store(fd.map_or(-1, |f| f.as_raw_fd()), Ordering::SeqCst);
}

pub fn wake_fd() -> RawFd {
    WAKE_FD.load(Ordering::SeqCst)
}

/// Take and clear the pending signals, in ascending signal-number order.
pub fn take_pending() -> Vec<Signal> {
    let mask = PENDING.swap(0, Ordering::SeqCst);
    (1..64)
        .filter(|n| mask & (1u64 << n) != 0)
        .filter_map(|n| Signal::try_from(n).ok())
        .collect()
}

/// Whether any signal is pending (one atomic load: no syscall, no allocation).
pub fn any_pending() -> bool {
    PENDING.load(Ordering::SeqCst) != 0
}

/// Whether `sig` is pending, without clearing the others.
pub fn peek(sig: Signal) -> bool {
    PENDING.load(Ordering::SeqCst) & (1u64 << (sig as i32)) != 0
}

/// Clear one pending signal and report whether it was set.
pub fn take(sig: Signal) -> bool {
    let bit = 1u64 << (sig as i32);
    PENDING.fetch_and(!bit, Ordering::SeqCst) & bit != 0
}

/// The request line each thread is serving, for the timeout report: a fixed
/// table of per-thread entries (a gthread worker runs several requests at
/// once), written with atomics so the request path never locks.
const REQUEST_MAX: usize = 512;
const REQUEST_THREADS: usize = 64;

struct RequestEntry {
    /// `pthread_self()` of the thread owning the entry (0: free).
    owner: AtomicU64,
    /// The owning thread's Rust name, if it has one (`ferricorn-3`).
    name: std::sync::OnceLock<String>,
    len: std::sync::atomic::AtomicUsize,
    line: [std::sync::atomic::AtomicU8; REQUEST_MAX],
    /// When its request began (monotonic ms; 0: none).
    since: AtomicU64,
    /// The `since` of the last request reported as overdue (`overdue`).
    reported: AtomicU64,
}

static REQUESTS: [RequestEntry; REQUEST_THREADS] = [const {
    RequestEntry {
        owner: AtomicU64::new(0),
        name: std::sync::OnceLock::new(),
        len: std::sync::atomic::AtomicUsize::new(0),
        line: [const { std::sync::atomic::AtomicU8::new(0) }; REQUEST_MAX],
        since: AtomicU64::new(0),
        reported: AtomicU64::new(0),
    }
}; REQUEST_THREADS];

thread_local! {
    /// This thread's entry in `REQUESTS`, claimed on first use.
    static MY_ENTRY: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
    /// Requests this thread has handed to the app so far.
    static STARTED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many requests the calling thread has handed to the app (each
/// `set_current_request` with a non-empty line counts one).
pub fn requests_started() -> u64 {
    STARTED.with(|s| s.get())
}

/// The calling thread's id as Python's `threading.get_ident()` reports it.
pub fn thread_ident() -> u64 {
    // SAFETY: pthread_self(3) has no preconditions and always succeeds.
    unsafe { libc::pthread_self() as u64 }
}

fn my_entry() -> Option<&'static RequestEntry> {
    let idx = MY_ENTRY.with(|e| {
        if e.get().is_none() {
            let me = thread_ident();
            let idx = REQUESTS.iter().position(|r| {
                r.owner
                    .compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            });
            if let (Some(i), Some(name)) = (idx, std::thread::current().name()) {
                let _ = REQUESTS[i].name.set(name.to_string());
            }
            e.set(idx);
        }
        e.get()
    })?;
    REQUESTS.get(idx)
}

/// Remember the request line the calling thread serves (empty: none).
pub fn set_current_request(line: &[u8]) {
    set_current_request_parts(&[line]);
}

/// `set_current_request` with the line given in pieces (method, SP,
/// target, …), copied in place: no joined copy per request.
pub fn set_current_request_parts(parts: &[&[u8]]) {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    if total > 0 {
        STARTED.with(|s| s.set(s.get() + 1));
    }
    let Some(entry) = my_entry() else { return };
    let n = total.min(REQUEST_MAX);
    entry.len.store(0, Ordering::SeqCst);
    let since = if total > 0 {
        crate::util::monotonic_ms().max(1)
    } else {
        0
    };
    entry.since.store(since, Ordering::SeqCst);
    let mut slots = entry.line.iter();
    for part in parts {
        // The part first: an exhausted part takes no slot.
        for (b, slot) in part.iter().zip(slots.by_ref()) {
            slot.store(*b, Ordering::Relaxed);
        }
    }
    entry.len.store(n, Ordering::SeqCst);
}

/// Whether the calling thread is serving a request (between the
/// `set_current_request` that names it and the one that clears it: the
/// request hooks, the app call, its response).
pub fn serving_here() -> bool {
    my_entry().is_some_and(|e| e.len.load(Ordering::SeqCst) > 0)
}

/// A request running past a limit (`overdue`).
#[derive(Debug)]
pub struct Overdue {
    /// The thread serving it, as `threading.get_ident()` says.
    pub ident: u64,
    /// Its request line.
    pub line: String,
    /// How long it has run (ms).
    pub running_ms: u64,
}

/// Requests running for longer than `limit_ms` at `now_ms` (monotonic):
/// how many, and those not reported before (each request is returned once).
pub fn overdue(now_ms: u64, limit_ms: u64) -> (usize, Vec<Overdue>) {
    let mut count = 0;
    let mut fresh = Vec::new();
    for entry in &REQUESTS {
        let ident = entry.owner.load(Ordering::SeqCst);
        let since = entry.since.load(Ordering::SeqCst);
        if ident == 0 || since == 0 || now_ms.saturating_sub(since) <= limit_ms {
            continue;
        }
        count += 1;
        if entry.reported.swap(since, Ordering::SeqCst) != since {
            fresh.push(Overdue {
                ident,
                line: current_request(ident).1.unwrap_or_default(),
                running_ms: now_ms - since,
            });
        }
    }
    (count, fresh)
}

/// What the request table knows of thread `ident`: its Rust name (if any)
/// and the request line it is serving (if any).
pub fn current_request(ident: u64) -> (Option<String>, Option<String>) {
    let Some(entry) = REQUESTS
        .iter()
        .find(|r| ident != 0 && r.owner.load(Ordering::SeqCst) == ident)
    else {
        return (None, None);
    };
    let name = entry.name.get().cloned();
    let n = entry.len.load(Ordering::SeqCst).min(REQUEST_MAX);
    if n == 0 {
        return (name, None);
    }
    let bytes: Vec<u8> = entry.line[..n]
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    (name, Some(String::from_utf8_lossy(&bytes).into_owned()))
}

extern "C" fn on_abort(sig: libc::c_int) {
    on_signal(sig);
    // SAFETY: PyErr_SetInterruptEx is documented async-signal-safe and only
    // sets flags (and writes Python's wakeup fd); it does not need the GIL.
    unsafe {
        pyo3::ffi::PyErr_SetInterruptEx(sig);
    }
}

/// Deliver `sig` to the Python-level handler registered for it with
/// `signal.signal` (call that first): our handler records it like
/// `install` does (pending bit + wake pipe, so a loop that runs no Python
/// code notices and calls `PyErr_CheckSignals`) and trips Python's flag, so
/// the main thread runs the Python handler at its next bytecode boundary.
/// A worker's `ABRT` after a timeout goes this way: the handler logs the
/// stacks, then exits 1 (gunicorn's `handle_abort`); so do a sync or
/// evloop worker's `QUIT` and `INT`, whose handler interrupts the app
/// call (`workers::quick_stop`).
pub fn via_python(sig: Signal) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_abort),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: `on_abort` only performs async-signal-safe operations.
    unsafe { sigaction(sig, &action)? };
    Ok(())
}

/// Stop signals pending, in one look: `(TERM, QUIT or INT)`.
pub fn peek_stop() -> (bool, bool) {
    let mask = PENDING.load(Ordering::SeqCst);
    let bit = |sig: Signal| mask & (1u64 << (sig as i32)) != 0;
    (
        bit(Signal::SIGTERM),
        bit(Signal::SIGQUIT) || bit(Signal::SIGINT),
    )
}

/// A quick-exit signal (QUIT or INT) is pending: blocking reads interrupted
/// by it must give up instead of retrying.
pub fn peek_quit() -> bool {
    peek(Signal::SIGQUIT) || peek(Signal::SIGINT)
}
