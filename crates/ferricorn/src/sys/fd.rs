//! File-descriptor ownership and flags.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Take ownership of an inherited descriptor after checking it is open.
pub fn own(fd: RawFd) -> io::Result<OwnedFd> {
    nix::fcntl::fcntl(
        // SAFETY: fcntl(F_GETFD) on an arbitrary integer only reads flags; an
        // invalid descriptor yields EBADF.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .map_err(io::Error::from)?;
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process to own (inherited listener); nothing else in the process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Set or clear FD_CLOEXEC.
pub fn set_cloexec(fd: std::os::fd::BorrowedFd<'_>, on: bool) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let mut flags =
        FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?);
    flags.set(FdFlag::FD_CLOEXEC, on);
    fcntl(fd, FcntlArg::F_SETFD(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// A close-on-exec duplicate of a descriptor the caller does not own (a
/// Python file's `fileno()`), so it stays valid even if Python closes the
/// original meanwhile.
pub fn dup_borrowed(fd: RawFd) -> io::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(
        // SAFETY: F_DUPFD_CLOEXEC on an arbitrary integer only creates a new
        // descriptor; an invalid one yields EBADF. The borrow ends here.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(0),
    )
    .map_err(io::Error::from)?;
    // SAFETY: `new` is a fresh descriptor fcntl just created for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
