//! Reading from a socket straight into a `Vec`'s spare capacity.
//!
//! Safe Rust can only `read` into initialised memory, so a buffer must be
//! zero-filled before every read (`resize(len + n, 0)`): for the 8 KiB head
//! reads and 64 KiB body reads of the request path that memset was the largest
//! single cost of a small request (see docs/profile.md). This reads into the
//! reserved, uninitialised tail instead and only extends the length over the
//! bytes the kernel wrote.
//!
//! Same semantics as `std::io::Read::read`: `Ok(0)` at EOF, `Interrupted`
//! for EINTR, `WouldBlock` when a receive timeout expires.

use std::io;
use std::os::fd::RawFd;

/// Append at most `max` bytes read from `fd` to `buf`; returns how many.
/// `buf` keeps its old contents; on error it is unchanged.
pub fn read_append(fd: RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    buf.reserve(max);
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: `spare` is the vector's allocated but unused tail, valid for
    // writes of `spare.len()` bytes, and `want <= spare.len()`; read(2) writes
    // only into that range and reads nothing from it. An invalid `fd` yields
    // EBADF, not undefined behaviour.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast::<libc::c_void>(), want) };
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
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn appends_what_was_read_and_reports_eof() {
        let (mut a, b) = UnixStream::pair().expect("pair");
        a.write_all(b"hello world").expect("write");
        let mut buf = b"> ".to_vec();
        let n = read_append(b.as_raw_fd(), &mut buf, 5).expect("read");
        assert_eq!(n, 5);
        assert_eq!(buf, b"> hello");
        let n = read_append(b.as_raw_fd(), &mut buf, 1024).expect("read");
        assert_eq!(n, 6);
        assert_eq!(buf, b"> hello world");
        drop(a);
        assert_eq!(read_append(b.as_raw_fd(), &mut buf, 1024).expect("eof"), 0);
        assert_eq!(buf, b"> hello world");
    }

    #[test]
    fn errors_leave_the_buffer_alone() {
        let (_a, b) = UnixStream::pair().expect("pair");
        b.set_nonblocking(true).expect("nonblocking");
        let mut buf = b"kept".to_vec();
        let err = read_append(b.as_raw_fd(), &mut buf, 16).expect_err("nothing to read");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert_eq!(buf, b"kept");
    }
}
