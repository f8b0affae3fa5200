//! `--daemon`: detach from the terminal before the master starts, as
//! gunicorn's `util.daemonize` does: fork (the launching process exits 0),
//! `setsid`, fork again (the daemon can never reacquire a terminal), umask
//! `022`, stdin/stdout/stderr onto `/dev/null` — or, with
//! `--enable-stdio-inheritance`, only stdin and whichever of stdout/stderr is
//! a terminal, so `ferricorn -D ... > out.log 2>&1` keeps writing there.
//! The working directory is kept (gunicorn does not `chdir("/")`). A master
//! re-executed by `USR2` (`GUNICORN_FD` set) is already detached and skips it.
//!
//! Invariant: runs in the single-threaded master before logging, sockets and
//! the pidfile exist, so every later PID is the daemon's. Forks go through
//! Python's `os.fork` so CPython's own fork handling runs.
//!
//! gunicorn counterpart: `util.daemonize`, its call in `BaseApplication.run`.

use pyo3::prelude::*;

/// Detach; returns in the daemon (the intermediate processes exit 0).
pub fn daemonize(py: Python<'_>, inherit_stdio: bool) -> Result<(), String> {
    let os = py.import("os").map_err(|e| e.to_string())?;
    let environ = os.getattr("environ").map_err(|e| e.to_string())?;
    if environ.contains("GUNICORN_FD").unwrap_or(false) {
        return Ok(());
    }
    if environ.contains("NOTIFY_SOCKET").unwrap_or(false) {
        eprintln!(
            "Warning: you shouldn't specify `daemon = True` when launching by systemd with `Type = notify`"
        );
    }
    if let Ok(sys) = py.import("sys") {
        for name in ["stdout", "stderr"] {
            if let Ok(stream) = sys.getattr(name) {
                let _ = stream.call_method0("flush");
            }
        }
    }
    let fork = || -> Result<i32, String> {
        os.call_method0("fork")
            .and_then(|p| p.extract::<i32>())
            .map_err(|e| format!("fork failed: {e}"))
    };
    if fork()? != 0 {
        crate::sys::process::exit_now(0);
    }
    nix::unistd::setsid().map_err(|e| format!("setsid failed: {e}"))?;
    if fork()? != 0 {
        crate::sys::process::exit_now(0);
    }
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("cannot open /dev/null: {e}"))?;
    let redirect = |res: nix::Result<()>| res.map_err(|e| format!("cannot redirect stdio: {e}"));
    redirect(nix::unistd::dup2_stdin(&null))?;
    if !inherit_stdio || nix::unistd::isatty(std::io::stdout()).unwrap_or(false) {
        redirect(nix::unistd::dup2_stdout(&null))?;
    }
    if !inherit_stdio || nix::unistd::isatty(std::io::stderr()).unwrap_or(false) {
        redirect(nix::unistd::dup2_stderr(&null))?;
    }
    Ok(())
}
