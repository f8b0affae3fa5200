//! The byte stream of one accepted connection: every read, write,
//! `writev`, `sendfile`, shutdown, timeout and readiness question about a
//! client connection goes through [`Stream`]. Outside this module and
//! `sys/`, no code touches a connection's file descriptor.
//!
//! Variants: plain TCP and Unix-domain sockets, and TLS over either
//! (`crate::tls::Session`: reads decrypt, writes encrypt). A TLS stream
//! holds decrypted bytes the kernel no longer reports as readable, so
//! whether more can be read without waiting is [`Stream::has_buffered`]'s
//! answer, not the poller's: every driver asks it before it parks a
//! connection in a poller or waits on the socket. Its handshake is the
//! driver's first step ([`Stream::handshake_step`]), before the first read.
//!
//! Semantics follow `std::io::Read`/`Write` on a blocking socket with the
//! timeouts the worker armed: `Ok(0)` at EOF, `Interrupted` for EINTR (the
//! caller decides whether a pending quick exit ends the wait),
//! `WouldBlock`/`TimedOut` when a timeout expires. The `_nowait` calls never
//! block (`MSG_DONTWAIT`), whatever the socket's mode, and are safe to make
//! holding the GIL.
//!
//! gunicorn counterpart: the `socket.socket` a worker hands to
//! `http.parser`/`http.wsgi` (and `ssl.SSLSocket` under TLS).

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// An accepted client connection.
pub struct Stream {
    inner: Inner,
}

enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// TLS over a plain stream (never over another TLS one).
    Tls(Box<Tls>),
}

struct Tls {
    sock: Stream,
    session: crate::tls::Session,
}

impl Drop for Tls {
    /// A TLS connection ends with `close_notify` (without waiting; once),
    /// so that clients see a clean end rather than a truncation.
    fn drop(&mut self) {
        self.session.close_notify(self.sock.fd());
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream {
            inner: Inner::Tcp(s),
        }
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Self {
        Stream {
            inner: Inner::Unix(s),
        }
    }
}

impl Stream {
    /// A connection just accepted: served over TLS when a TLS
    /// configuration is installed (`crate::tls::install`), else as it is.
    pub fn accepted(self) -> Self {
        match crate::tls::current() {
            Some(server) => self.secured(server),
            None => self,
        }
    }

    /// This stream under a TLS session of `server` (handshake to come).
    pub fn secured(self, server: std::sync::Arc<crate::tls::Server>) -> Self {
        Stream {
            inner: Inner::Tls(Box::new(Tls {
                sock: self,
                session: crate::tls::Session::new(server),
            })),
        }
    }

    /// The socket under the stream, for this module's own syscalls.
    fn fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            Inner::Tcp(s) => s.as_fd(),
            Inner::Unix(s) => s.as_fd(),
            Inner::Tls(t) => t.sock.fd(),
        }
    }

    /// A Unix-domain connection (`gunicorn.socket`'s family, no port).
    pub fn is_unix(&self) -> bool {
        match &self.inner {
            Inner::Tls(t) => t.sock.is_unix(),
            inner => matches!(inner, Inner::Unix(_)),
        }
    }

    /// A TLS connection (`wsgi.url_scheme` is `https`).
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls(_))
    }

    // --- the TLS handshake ---------------------------------------------

    /// One step of the TLS handshake without waiting for the client
    /// (what it must send waits as the send timeout allows): `Done` at
    /// once for a plain stream or a finished handshake; `WantRead`: wait
    /// until the socket is readable, then step again. `Err`: the handshake
    /// failed (the TLS alert, if any, was sent) or the client closed.
    pub fn handshake_step(&self) -> io::Result<crate::tls::Step> {
        match &self.inner {
            Inner::Tls(t) => t.session.handshake_step(t.sock.fd()),
            _ => Ok(crate::tls::Step::Done),
        }
    }

    /// A TLS stream whose handshake has not finished.
    pub fn handshaking(&self) -> bool {
        match &self.inner {
            Inner::Tls(t) => t.session.handshaking(),
            _ => false,
        }
    }

    /// The whole handshake, waiting for the client at most `limit`
    /// (`TimedOut` past it; `None`: no limit).
    pub fn handshake(&self, limit: Option<Duration>) -> io::Result<()> {
        let end = limit.map(|l| std::time::Instant::now() + l);
        loop {
            if self.handshake_step()? == crate::tls::Step::Done {
                return Ok(());
            }
            let left = match end {
                Some(end) => end.saturating_duration_since(std::time::Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() || !self.wait_readable(left)? {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not complete in time",
                ));
            }
        }
    }

    /// The client's verified certificate, on a TLS connection that asked
    /// for one (`cert_reqs` 1 or 2) and got it.
    pub fn peer_cert(&self) -> Option<crate::tls::PeerCert> {
        match &self.inner {
            Inner::Tls(t) => t
                .session
                .peer_certificate()
                .map(|der| crate::tls::PeerCert::from_der(&der)),
            _ => None,
        }
    }

    /// A TLS stream's protocol version and cipher suite (IANA numbers).
    pub fn tls_negotiated(&self) -> Option<(u16, u16)> {
        match &self.inner {
            Inner::Tls(t) => t.session.negotiated(),
            _ => None,
        }
    }

    // --- reading -------------------------------------------------------

    /// Append at most `max` bytes to `buf`, waiting as the socket's read
    /// timeout allows. Reads into `buf`'s spare capacity: no zero-fill.
    pub fn read_append(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match &self.inner {
            Inner::Tls(t) => t.session.read_append(t.sock.fd(), buf, max),
            _ => crate::sys::fd::read_append(self.fd(), buf, max),
        }
    }

    /// Read what is there now into `buf`, without waiting: `WouldBlock`
    /// when nothing is.
    pub fn read_nowait(&self, buf: &mut [u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, recv};
        use std::os::fd::AsRawFd;
        if let Inner::Tls(t) = &self.inner {
            return t.session.read(t.sock.fd(), buf, true);
        }
        recv(self.fd().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }

    /// Bytes the stream already holds for the reader that the kernel no
    /// longer reports (decrypted TLS records): a driver must not wait for
    /// readiness while this is true. Plain sockets hold none.
    #[inline]
    pub fn has_buffered(&self) -> bool {
        match &self.inner {
            Inner::Tcp(_) | Inner::Unix(_) => false,
            Inner::Tls(t) => t.session.has_buffered(t.sock.fd()),
        }
    }

    /// Wait up to `timeout` for something to read (or EOF): `Ok(false)`
    /// when the time ran out. A signal ends the wait early (`Ok(true)`:
    /// the caller reads and finds out).
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        use nix::errno::Errno;
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        if self.has_buffered() {
            return Ok(true);
        }
        let wait = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        match poll(&mut fds, wait) {
            Ok(0) => Ok(false),
            Ok(_) | Err(Errno::EINTR) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    // --- writing -------------------------------------------------------

    /// Send `buf` as far as the socket takes it without blocking; returns
    /// how much went out (all of it unless the socket is full).
    pub fn send_nowait(&self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd;
        if let Inner::Tls(t) = &self.inner {
            return t.session.send_nowait(t.sock.fd(), buf);
        }
        let fd = self.fd().as_raw_fd();
        let mut done = 0;
        while done < buf.len() {
            match send(
                fd,
                &buf[done..],
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        Ok(done)
    }

    /// Whether [`Self::send_file`] can send from a file descriptor (not
    /// through an encrypting layer: TLS sends files with reads and writes).
    pub fn can_sendfile(&self) -> bool {
        match self.inner {
            Inner::Tcp(_) | Inner::Unix(_) => true,
            Inner::Tls(_) => false,
        }
    }

    /// Send `count` bytes of `file` from `offset` (advanced by what went
    /// out) with sendfile(2); retries EINTR. `UnexpectedEof` when the file
    /// ends first.
    pub fn send_file(
        &self,
        file: BorrowedFd<'_>,
        offset: &mut i64,
        count: usize,
    ) -> io::Result<()> {
        let mut left = count;
        while left > 0 {
            match nix::sys::sendfile::sendfile(self.fd(), file, Some(offset), left) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than announced",
                    ));
                }
                Ok(k) => left -= k,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Send the FIN (no more writes; under TLS, `close_notify` first);
    /// errors (a peer already gone) are moot.
    pub fn shutdown_write(&self) {
        let _ = match &self.inner {
            Inner::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            Inner::Unix(s) => s.shutdown(std::net::Shutdown::Write),
            Inner::Tls(t) => {
                t.session.close_notify(t.sock.fd());
                t.sock.shutdown_write();
                Ok(())
            }
        };
    }

    // --- deadlines and modes -----------------------------------------

    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        self.set_write_timeout(t)
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(s) => s.set_read_timeout(t),
            Inner::Unix(s) => s.set_read_timeout(t),
            Inner::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(s) => s.set_write_timeout(t),
            Inner::Unix(s) => s.set_write_timeout(t),
            Inner::Tls(s) => s.sock.set_write_timeout(t),
        }
    }

    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(s) => s.set_nonblocking(on),
            Inner::Unix(s) => s.set_nonblocking(on),
            Inner::Tls(s) => s.sock.set_nonblocking(on),
        }
    }

    /// Make the read timeout what the write timeout is (`--timeout`, on
    /// every worker class): for the app's own reads on `gunicorn.socket`
    /// after the worker left the header timeout in place.
    pub fn read_timeout_as_write(&self) -> io::Result<()> {
        let t = match &self.inner {
            Inner::Tcp(s) => s.write_timeout()?,
            Inner::Unix(s) => s.write_timeout()?,
            Inner::Tls(t) => return t.sock.read_timeout_as_write(),
        };
        self.set_read_timeout(t)
    }

    // --- handing the connection on -----------------------------------

    /// A close-on-exec duplicate of the connection for the app's
    /// `gunicorn.socket` (a plain socket only: under TLS the app cannot
    /// speak on the raw socket).
    pub fn dup_socket(&self) -> io::Result<OwnedFd> {
        if self.is_tls() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "gunicorn.socket is not available on a TLS connection",
            ));
        }
        self.fd().try_clone_to_owned()
    }

    /// Register the connection with a mio poller.
    pub fn register(
        &self,
        registry: &mio::Registry,
        token: mio::Token,
        interest: mio::Interest,
    ) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        registry.register(
            &mut mio::unix::SourceFd(&self.fd().as_raw_fd()),
            token,
            interest,
        )
    }

    /// Take the connection out of a mio poller.
    pub fn deregister(&self, registry: &mio::Registry) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        registry.deregister(&mut mio::unix::SourceFd(&self.fd().as_raw_fd()))
    }

    /// The socket's options, for tests of what a connection inherits.
    #[cfg(test)]
    pub(crate) fn sock_ref(&self) -> socket2::SockRef<'_> {
        match &self.inner {
            Inner::Tcp(s) => socket2::SockRef::from(s),
            Inner::Unix(s) => socket2::SockRef::from(s),
            Inner::Tls(t) => t.sock.sock_ref(),
        }
    }
}

impl io::Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(s) => (&*s).read(buf),
            Inner::Unix(s) => (&*s).read(buf),
            Inner::Tls(t) => t.session.read(t.sock.fd(), buf, false),
        }
    }
}

impl io::Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(s) => (&*s).write(buf),
            Inner::Unix(s) => (&*s).write(buf),
            Inner::Tls(t) => t
                .session
                .write_vectored(t.sock.fd(), &[io::IoSlice::new(buf)]),
        }
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &self.inner {
            Inner::Tcp(s) => (&*s).write_vectored(bufs),
            Inner::Unix(s) => (&*s).write_vectored(bufs),
            Inner::Tls(t) => t.session.write_vectored(t.sock.fd(), bufs),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::Stream;
    use std::io::{self, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    fn pair() -> (Stream, UnixStream) {
        let (a, b) = UnixStream::pair().expect("pair");
        (Stream::from(a), b)
    }

    #[test]
    fn reads_append_and_report_eof() {
        let (s, mut peer) = pair();
        peer.write_all(b"hello world").unwrap();
        let mut buf = b"> ".to_vec();
        assert_eq!(s.read_append(&mut buf, 5).unwrap(), 5);
        assert_eq!(buf, b"> hello");
        let mut rest = [0u8; 32];
        assert_eq!(s.read_nowait(&mut rest).unwrap(), 6);
        let err = s.read_nowait(&mut rest).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        drop(peer);
        assert_eq!(s.read_append(&mut buf, 8).unwrap(), 0);
        assert_eq!((&s).read(&mut rest).unwrap(), 0);
    }

    #[test]
    fn readiness_and_plain_streams_hold_nothing() {
        let (s, mut peer) = pair();
        assert!(!s.has_buffered());
        assert!(!s.wait_readable(Duration::from_millis(10)).unwrap());
        peer.write_all(b"x").unwrap();
        assert!(s.wait_readable(Duration::from_secs(5)).unwrap());
    }

    #[test]
    fn writes_and_shutdown_reach_the_peer() {
        let (s, mut peer) = pair();
        assert_eq!(s.send_nowait(b"abc").unwrap(), 3);
        (&s).write_all(b"def").unwrap();
        s.shutdown_write();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abcdef");
    }

    #[test]
    fn send_nowait_stops_when_the_socket_is_full() {
        let (s, _peer) = pair();
        let big = vec![0u8; 16 << 20];
        let n = s.send_nowait(&big).unwrap();
        assert!(n > 0 && n < big.len(), "sent {n}");
    }

    #[test]
    fn sendfile_sends_the_range_and_reports_a_short_file() {
        let (s, mut peer) = pair();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        let mut offset = 2;
        s.send_file(std::os::fd::AsFd::as_fd(&f), &mut offset, 5)
            .unwrap();
        assert_eq!(offset, 7);
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"23456");
        let err = s
            .send_file(std::os::fd::AsFd::as_fd(&f), &mut offset, 10)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_duplicate_speaks_on_the_same_connection() {
        let (s, mut peer) = pair();
        let dup = UnixStream::from(s.dup_socket().unwrap());
        (&dup).write_all(b"via dup").unwrap();
        let mut got = [0u8; 7];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"via dup");
    }

    // --- the TLS variant ---------------------------------------------

    /// A self-signed certificate (and its key) for `localhost`, valid for a century.
    const PEM: &str = include_str!("../testdata/tls-server.pem");

    fn tls_pair(
        alpn: &[&[u8]],
    ) -> (
        Stream,
        rustls::StreamOwned<rustls::ClientConnection, UnixStream>,
    ) {
        use rustls_pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.pem");
        std::fs::write(&path, PEM).unwrap();
        let server = crate::tls::build(&crate::tls::Files {
            certfile: Some(path.display().to_string()),
            suppress_ragged_eofs: true,
            ..Default::default()
        })
        .unwrap()
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_pki_types::CertificateDer::pem_slice_iter(PEM.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let client = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let (a, b) = UnixStream::pair().expect("pair");
        b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let s = Stream::from(a).secured(server);
        s.set_timeouts(Some(Duration::from_secs(10))).unwrap();
        (s, rustls::StreamOwned::new(client, b))
    }

    /// Run the client side in a thread while the server side handshakes.
    fn handshake(
        s: &Stream,
        mut client: rustls::StreamOwned<rustls::ClientConnection, UnixStream>,
    ) -> rustls::StreamOwned<rustls::ClientConnection, UnixStream> {
        let t = std::thread::spawn(move || {
            while client.conn.is_handshaking() {
                client.conn.complete_io(&mut client.sock).unwrap();
            }
            client
        });
        assert!(s.handshaking());
        s.handshake(Some(Duration::from_secs(10))).unwrap();
        assert!(!s.handshaking());
        t.join().unwrap()
    }

    #[test]
    fn tls_reads_decrypt_and_writes_encrypt() {
        let (s, client) = tls_pair(&[b"h2", b"http/1.1"]);
        assert!(s.is_tls() && !s.can_sendfile());
        let mut client = handshake(&s, client);
        assert_eq!(client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        client.flush().unwrap();
        let mut buf = Vec::new();
        assert_eq!(s.read_append(&mut buf, 4).unwrap(), 4);
        // The rest of the record is held in the stream, not the kernel.
        assert!(s.has_buffered());
        assert!(s.wait_readable(Duration::ZERO).unwrap());
        let mut rest = [0u8; 64];
        let n = s.read_nowait(&mut rest).unwrap();
        assert_eq!([&buf[..], &rest[..n]].concat(), b"GET / HTTP/1.1\r\n\r\n");
        assert!(!s.has_buffered());
        assert_eq!(
            s.read_nowait(&mut rest).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        (&s).write_all(b"HTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(s.send_nowait(b"\r\n").unwrap(), 2);
        let mut got = [0u8; 19];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 200 OK\r\n\r\n");
        // close_notify, then EOF on both sides.
        s.shutdown_write();
        assert_eq!(client.read(&mut got).unwrap(), 0);
        client.conn.send_close_notify();
        client.flush().unwrap();
        drop(client);
        assert_eq!(s.read_append(&mut buf, 8).unwrap(), 0);
        assert!(s.dup_socket().is_err());
    }

    #[test]
    fn tls_send_nowait_on_a_full_socket_leaves_the_rest_to_the_next_write() {
        let (s, client) = tls_pair(&[]);
        let mut client = handshake(&s, client);
        let big: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
        let n = s.send_nowait(&big).unwrap();
        assert!(n < big.len(), "took {n}");
        let want = big.len();
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; want];
            client.read_exact(&mut got).unwrap();
            got
        });
        (&s).write_all(&big[n..]).unwrap();
        assert_eq!(reader.join().unwrap(), big);
    }

    #[test]
    fn tls_client_offering_only_other_protocols_is_served_without_alpn() {
        let (s, client) = tls_pair(&[b"h2"]);
        let client = handshake(&s, client);
        assert_eq!(client.conn.alpn_protocol(), None);
    }

    #[test]
    fn tls_plain_http_fails_the_handshake() {
        let (s, client) = tls_pair(&[]);
        let mut raw = client.sock;
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let err = s.handshake(Some(Duration::from_secs(5))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn tls_silent_client_times_out() {
        let (s, _client) = tls_pair(&[]);
        let err = s.handshake(Some(Duration::from_millis(50))).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
