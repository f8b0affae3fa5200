//! File-descriptor ownership and flags, and reading a socket straight into
//! a `Vec`'s spare capacity.
//!
//! `read_append`: safe Rust can only `read` into initialised memory, so a
//! buffer must be zero-filled before every read (`resize(len + n, 0)`); for
//! the 8 KiB head reads and the body reads of the request path that memset
//! was the largest single cost of a small request (docs/profile.md). It reads
//! into the reserved, uninitialised tail instead and extends the length over
//! the bytes the kernel wrote. Same semantics as `std::io::Read::read`:
//! `Ok(0)` at EOF, `Interrupted` for EINTR, `WouldBlock` when a receive
//! timeout expires.

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

/// Append at most `max` bytes read from `fd` to `buf`; returns how many.
/// `buf` keeps its old contents; on error it is unchanged.
pub fn read_append(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is the vector's allocated but unused tail, valid for
    // writes of `spare.len()` bytes, and `want <= spare.len()`; read(2) writes
    // only into that range and reads nothing from it. An invalid `fd` yields
    // EBADF, not undefined behaviour.
    let n = unsafe {
        libc::read(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            spare.as_mut_ptr().cast::<libc::c_void>(),
            want,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    let len = buf.len();
    // SAFETY: the kernel initialised exactly `n <= want` bytes of the spare
    // capacity right after the current length.
    unsafe { buf.set_len(len + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::read_append;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn appends_what_was_read_and_reports_eof() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        a.write_all(b"hello world").expect("write");
        let mut buf = b"> ".to_vec();
        let n = read_append(b.as_fd(), &mut buf, 5).expect("read");
        assert_eq!(n, 5);
        assert_eq!(buf, b"> hello");
        let n = read_append(b.as_fd(), &mut buf, 1024).expect("read");
        assert_eq!(n, 6);
        assert_eq!(buf, b"> hello world");
        drop(a);
        assert_eq!(read_append(b.as_fd(), &mut buf, 1024).expect("eof"), 0);
        assert_eq!(buf, b"> hello world");
    }

    #[test]
    fn errors_leave_the_buffer_alone() {
        let (_a, b) = UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut buf = b"kept".to_vec();
        let err = read_append(b.as_fd(), &mut buf, 16).expect_err("nothing to read");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(buf, b"kept");
    }
}
