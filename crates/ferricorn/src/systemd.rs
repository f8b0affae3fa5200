//! systemd integration: socket activation (`LISTEN_FDS`/`LISTEN_PID`) and
//! `sd_notify` (`READY=1`, `STOPPING=1`, `MAINPID=` after a `USR2` hand-over).
//!
//! Layer L1: no Python; the caller unsets the environment variables.
//!
//! gunicorn counterpart: `gunicorn/systemd.py` (`listen_fds`, `sd_notify`).

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The first inherited descriptor under socket activation.
pub const LISTEN_FDS_START: i32 = 3;

/// How many sockets systemd passed to *this* process: `LISTEN_FDS` when
/// `LISTEN_PID` names `pid`, else 0.
pub fn listen_fds(listen_pid: Option<&str>, listen_fds: Option<&str>, pid: u32) -> usize {
    match (listen_pid, listen_fds) {
        (Some(p), Some(n)) if p.trim().parse::<u32>().ok() == Some(pid) => {
            n.trim().parse().unwrap_or(0)
        }
        _ => 0,
    }
}

/// Send `state` to the service manager if `NOTIFY_SOCKET` is set; errors
/// are ignored (as `sd_notify` callers usually do), but logged at debug.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let addr = match path.strip_prefix('@') {
            Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
            None => SocketAddr::from_pathname(&path)?,
        };
        sock.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    })();
    if let Err(e) = sent {
        crate::glogging::debug!("sd_notify({state}) to {path} failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_fds_only_for_our_pid() {
        assert_eq!(listen_fds(Some("42"), Some("2"), 42), 2);
        assert_eq!(listen_fds(Some("41"), Some("2"), 42), 0);
        assert_eq!(listen_fds(None, Some("2"), 42), 0);
        assert_eq!(listen_fds(Some("42"), Some("x"), 42), 0);
    }
}
