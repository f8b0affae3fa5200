//! Process-level primitives.

/// Exit immediately without running atexit handlers or unwinding: what a
/// forked worker does after its own cleanup (gunicorn: `os._exit`).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) is always safe to call; it never returns.
    unsafe { libc::_exit(code) }
}
