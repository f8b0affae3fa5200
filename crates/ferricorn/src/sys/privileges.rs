//! Who workers run as, and the file-mode mask of the files ferricorn creates.
//!
//! - `set_owner`: a worker drops privileges right after fork, before it
//!   loads the app (`--user`, `--group`, `--initgroups`). As in gunicorn, a
//!   uid or gid of 0 means "leave it", and so does the current id. Beyond
//!   gunicorn, a root master switching the group also replaces the
//!   supplementary groups (with `[gid]`, or the user's groups under
//!   `--initgroups`, which also sets the primary group), so a worker never
//!   keeps root's groups.
//! - `with_umask`: `--umask` applies while a unix socket is bound (the
//!   socket's mode), as in gunicorn; `give_to` hands the socket and the
//!   log files to `--user`/`--group` (so workers can reopen logs on `USR1`).
//!
//! gunicorn counterpart: `util.set_owner_process`, `UnixSocket.bind`, the `chown` in
//! `Logger._set_handler`.

use std::path::Path;

use nix::sys::stat::{Mode, umask};
use nix::unistd::{Gid, Uid, User};

/// Switch this process to `uid`/`gid` (0: keep). Run in a worker after fork.
pub fn set_owner(uid: u32, gid: u32, initgroups: bool) -> Result<(), String> {
    if gid != 0 {
        let target = Gid::from_raw(gid);
        let user = if uid != 0 {
            User::from_uid(Uid::from_raw(uid)).ok().flatten()
        } else {
            None
        };
        set_group_list(user, target, initgroups)?;
        if target != nix::unistd::getgid() {
            nix::unistd::setgid(target)
                .map_err(|e| format!("cannot switch to group {gid}: {e}"))?;
        }
    }
    if uid != 0 && Uid::from_raw(uid) != nix::unistd::getuid() {
        nix::unistd::setuid(Uid::from_raw(uid))
            .map_err(|e| format!("cannot switch to user {uid}: {e}"))?;
    }
    Ok(())
}

/// The supplementary groups: the user's (`--initgroups`), else just `gid`
/// when we are root (a non-root process cannot change them).
#[cfg(not(target_vendor = "apple"))]
fn set_group_list(user: Option<User>, gid: Gid, initgroups: bool) -> Result<(), String> {
    match user {
        Some(user) if initgroups => {
            let name = std::ffi::CString::new(user.name.as_bytes())
                .map_err(|_| format!("invalid user name {:?}", user.name))?;
            nix::unistd::initgroups(&name, gid)
                .map_err(|e| format!("cannot load the groups of user {}: {e}", user.name))
        }
        _ if nix::unistd::geteuid().is_root() => nix::unistd::setgroups(&[gid])
            .map_err(|e| format!("cannot set the groups to [{gid}]: {e}")),
        _ => Ok(()),
    }
}

/// macOS: `nix` offers no `setgroups`/`initgroups` there; the list is kept.
#[cfg(target_vendor = "apple")]
fn set_group_list(_user: Option<User>, _gid: Gid, _initgroups: bool) -> Result<(), String> {
    Ok(())
}

/// Run `f` with the process's umask set to `mask`, then restore it.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    let old = umask(Mode::from_bits_truncate(mask as libc::mode_t));
    let out = f();
    umask(old);
    out
}

/// Give a file ferricorn created (unix socket, log file) to `uid`/`gid`
/// when they differ from ours, as gunicorn `chown`s them.
pub fn give_to(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    if uid == nix::unistd::geteuid() && gid == nix::unistd::getegid() {
        return Ok(());
    }
    nix::unistd::chown(path, Some(uid), Some(gid))
        .map_err(|e| format!("cannot chown {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_set_inside_and_restored() {
        let orig = umask(Mode::from_bits_truncate(0o022));
        umask(orig);
        let inside = with_umask(0o077, || {
            let m = umask(Mode::from_bits_truncate(0o077));
            m.bits() as u32
        });
        assert_eq!(inside, 0o077);
        let after = umask(orig);
        assert_eq!(after, orig);
    }

    #[test]
    fn keeping_the_current_ids_is_a_no_op() {
        let me = nix::unistd::getuid().as_raw();
        assert_eq!(set_owner(me, 0, false), Ok(()));
        assert_eq!(set_owner(0, 0, true), Ok(()));
    }
}
