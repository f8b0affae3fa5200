//! Signal delivery without running code in signal context: the handler sets a
//! bit in `PENDING` and writes one byte to the wake pipe (if any). The main
//! loop drains the pipe and takes the mask.
//!
//! Invariant: the handler only performs atomic operations and `write(2)`,
//! both async-signal-safe; `errno` is saved and restored around the write.

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

/// Block every signal in this thread; returns the previous mask for
/// `restore_mask`. Around a fork, a signal sent to the new child before it
/// installed its own handlers stays pending instead of reaching (and being
/// lost in) the master's handler copy; the child unblocks with `unblock_all`.
pub fn block_all() -> Option<SigSet> {
    let old = SigSet::thread_get_mask().ok()?;
    SigSet::all().thread_block().ok()?;
    Some(old)
}

/// Restore a mask saved by `block_all`.
pub fn restore_mask(old: Option<SigSet>) {
    if let Some(old) = old {
        let _ = old.thread_set_mask();
    }
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

/// Whether `sig` is pending, without clearing the others.
pub fn peek(sig: Signal) -> bool {
    PENDING.load(Ordering::SeqCst) & (1u64 << (sig as i32)) != 0
}

/// Clear one pending signal and report whether it was set.
pub fn take(sig: Signal) -> bool {
    let bit = 1u64 << (sig as i32);
    PENDING.fetch_and(!bit, Ordering::SeqCst) & bit != 0
}

/// The request line being served, for the timeout report (written from
/// signal context, so a fixed array of atomics rather than a `String`).
const REQUEST_MAX: usize = 512;
static REQUEST_LINE: [std::sync::atomic::AtomicU8; REQUEST_MAX] =
    [const { std::sync::atomic::AtomicU8::new(0) }; REQUEST_MAX];
static REQUEST_LEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Remember the request line in flight (empty: none).
pub fn set_current_request(line: &[u8]) {
    let n = line.len().min(REQUEST_MAX);
    REQUEST_LEN.store(0, Ordering::SeqCst);
    for (slot, b) in REQUEST_LINE.iter().zip(&line[..n]) {
        slot.store(*b, Ordering::Relaxed);
    }
    REQUEST_LEN.store(n, Ordering::SeqCst);
}

extern "C" fn exit_on_signal(_sig: libc::c_int) {
    const PREFIX: &[u8] = b"Worker timed out while serving: ";
    let n = REQUEST_LEN.load(Ordering::SeqCst).min(REQUEST_MAX);
    let mut buf = [0u8; PREFIX.len() + REQUEST_MAX + 1];
    buf[..PREFIX.len()].copy_from_slice(PREFIX);
    for i in 0..n {
        buf[PREFIX.len() + i] = REQUEST_LINE[i].load(Ordering::Relaxed);
    }
    buf[PREFIX.len() + n] = b'\n';
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is a
    // valid stack array of the given length.
    unsafe {
        if n > 0 {
            libc::write(2, buf.as_ptr().cast(), PREFIX.len() + n + 1);
        }
        // A `worker_abort` hook is waiting on this pipe: it exits the process.
        let abort_fd = ABORT_FD.load(Ordering::SeqCst);
        if abort_fd >= 0 {
            let byte = 1u8;
            if libc::write(abort_fd, (&byte as *const u8).cast(), 1) == 1 {
                return;
            }
        }
        libc::_exit(1)
    }
}

static ABORT_FD: AtomicI32 = AtomicI32::new(-1);

/// Hand the `exit_on` signal to a thread reading `fd` instead of exiting at
/// once (the `worker_abort` hook); the fd stays open for the process's life.
pub fn set_abort_fd(fd: OwnedFd) {
    use std::os::fd::IntoRawFd;
    ABORT_FD.store(fd.into_raw_fd(), Ordering::SeqCst);
}

/// Make `sig` end the process at once with status 1 (a worker's SIGABRT after
/// a timeout: gunicorn's `handle_abort` exits 1).
pub fn exit_on(sig: Signal) -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(exit_on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: `exit_on_signal` only calls _exit, which is async-signal-safe.
    unsafe { sigaction(sig, &action)? };
    Ok(())
}

/// A quick-exit signal (QUIT or INT) is pending: blocking reads interrupted
/// by it must give up instead of retrying.
pub fn peek_quit() -> bool {
    peek(Signal::SIGQUIT) || peek(Signal::SIGINT)
}
