//! Socket state the kernel reports: the accept-queue length of a listening
//! TCP socket (`--enable-backlog-metric`).
//!
//! gunicorn counterpart: `TCPSocket.get_backlog` in `gunicorn/sock.py`
//! (`TCP_INFO`, field `tcpi_unacked`, which the kernel fills with the accept
//! queue length for a socket in the LISTEN state).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Connections waiting in a listening TCP socket's accept queue.
pub fn tcp_accept_queue(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: tcp_info is plain old data; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `fd` is a live descriptor borrowed for the call; the kernel
    // writes at most `len` bytes into `info`, which is that large.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info.tcpi_unacked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn counts_unaccepted_connections() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(tcp_accept_queue(l.as_fd()).unwrap(), 0);
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(tcp_accept_queue(l.as_fd()).unwrap(), 2);
        let _ = l.accept().unwrap();
        assert_eq!(tcp_accept_queue(l.as_fd()).unwrap(), 1);
    }
}
