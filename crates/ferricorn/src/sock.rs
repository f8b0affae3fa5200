//! Listening sockets: parse gunicorn's bind syntax and create the listeners
//! in the master, before any worker is forked.
//!
//! Forms: `HOST`, `HOST:PORT`, `[V6]:PORT`, `tcp://HOST:PORT`, `unix:PATH`,
//! `unix://PATH`, `fd://N`. Listeners are non-blocking (workers poll them).
//!
//! Per-connection options come from the listener: on Linux, the BSDs and
//! macOS a TCP socket made by `accept` starts with its listener's
//! `TCP_NODELAY`, `SO_RCVTIMEO` and `SO_SNDTIMEO` (the kernel clones the
//! listening socket), so setting them once on the listener saves a
//! `setsockopt` per option per connection. TCP listeners get `TCP_NODELAY`
//! when bound or adopted (gunicorn sets it on its listeners too); a worker
//! sets the timeouts it wants with [`Listener::set_connection_timeouts`].
//! Unix-domain connections inherit none of these on Linux (a fresh socket is
//! made for them), so their options are set per connection. Tested below
//! (`accepted_tcp_socket_inherits_listener_options`).
//!
//! gunicorn counterpart: `gunicorn/sock.py` (`create_sockets`, `TCPSocket`,
//! `UnixSocket`) and `util.parse_address`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use crate::stream::Stream;

use socket2::{Domain, Socket, Type};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
    Fd(RawFd),
}

#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not a valid port number.")]
    Port(String),
    #[error("{0:?} is not a valid file descriptor.")]
    Fd(String),
    #[error("Invalid bind address {0:?}")]
    Invalid(String),
}

/// Parse one `--bind` value.
pub fn parse_address(raw: &str) -> Result<Address, AddressError> {
    let s = raw.trim();
    if let Some(path) = s
        .strip_prefix("unix://")
        .or_else(|| s.strip_prefix("unix:"))
    {
        if path.is_empty() {
            return Err(AddressError::Invalid(raw.to_string()));
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    if let Some(fd) = s.strip_prefix("fd://") {
        return fd
            .parse::<RawFd>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Address::Fd)
            .ok_or_else(|| AddressError::Fd(fd.to_string()));
    }
    let netloc = s.strip_prefix("tcp://").unwrap_or(s).to_ascii_lowercase();
    let (host, port) = if let Some(rest) = netloc.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::Invalid(raw.to_string()))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.to_string()),
            None if after.is_empty() => None,
            None => return Err(AddressError::Invalid(raw.to_string())),
        };
        (host.to_string(), port)
    } else if let Some((h, p)) = netloc.rsplit_once(':') {
        (h.to_string(), Some(p.to_string()))
    } else {
        (netloc.clone(), None)
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| AddressError::Port(p))?,
        None => 8000,
    };
    let host = if host.is_empty() {
        "0.0.0.0".to_string()
    } else {
        host
    };
    Ok(Address::Tcp { host, port })
}

/// A bound, listening socket.
pub enum Listener {
    Tcp { sock: TcpListener, addr: SocketAddr },
    Unix { sock: UnixListener, path: PathBuf },
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp { sock, .. } => sock.as_raw_fd(),
            Listener::Unix { sock, .. } => sock.as_raw_fd(),
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Tcp { sock, .. } => sock.as_fd(),
            Listener::Unix { sock, .. } => sock.as_fd(),
        }
    }

    /// Register the listener with a mio poller (readable: connections wait).
    pub fn register(&self, registry: &mio::Registry, token: mio::Token) -> io::Result<()> {
        let fd = self.raw_fd();
        registry.register(
            &mut mio::unix::SourceFd(&fd),
            token,
            mio::Interest::READABLE,
        )
    }

    /// Take the listener out of a mio poller.
    pub fn deregister(&self, registry: &mio::Registry) -> io::Result<()> {
        registry.deregister(&mut mio::unix::SourceFd(&self.raw_fd()))
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Listener::Unix { .. })
    }

    /// The server's `(SERVER_NAME, SERVER_PORT)` for requests on this listener.
    pub fn server_name_port(&self) -> (String, String) {
        match self {
            Listener::Tcp { addr, .. } => (addr.ip().to_string(), addr.port().to_string()),
            Listener::Unix { path, .. } => (path.display().to_string(), String::new()),
        }
    }

    /// Connections waiting to be accepted, as gunicorn's `get_backlog`:
    /// the TCP accept queue (0 when the kernel does not say), -1 for a unix
    /// socket (not measured).
    pub fn backlog(&self) -> i64 {
        match self {
            Listener::Tcp { sock, .. } => {
                crate::sys::sockinfo::tcp_accept_queue(sock.as_fd()).map_or(0, i64::from)
            }
            Listener::Unix { .. } => -1,
        }
    }

    /// Give the connections accepted from now on these read and write
    /// timeouts (`None`: none), for the whole listener: it is shared by
    /// every worker. Returns whether accepted connections inherit them (TCP);
    /// false for a unix listener, whose connections must be set one by one.
    pub fn set_connection_timeouts(
        &self,
        read: Option<std::time::Duration>,
        write: Option<std::time::Duration>,
    ) -> bool {
        match self {
            Listener::Tcp { sock, .. } => {
                let s = socket2::SockRef::from(sock);
                s.set_read_timeout(read).is_ok() && s.set_write_timeout(write).is_ok()
            }
            Listener::Unix { .. } => false,
        }
    }

    /// Remove the socket file of a unix listener (on shutdown).
    pub fn unlink(&self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `http://127.0.0.1:8000`, `http://[::1]:8000` or `unix:/path`, as gunicorn
/// logs it; `https://` when TLS is on.
impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if crate::tls::current().is_some() {
            "https"
        } else {
            "http"
        };
        match self {
            Listener::Tcp {
                addr: SocketAddr::V4(a),
                ..
            } => write!(f, "{scheme}://{}:{}", a.ip(), a.port()),
            Listener::Tcp {
                addr: SocketAddr::V6(a),
                ..
            } => write!(f, "{scheme}://[{}]:{}", a.ip(), a.port()),
            Listener::Unix { path, .. } => write!(f, "unix:{}", path.display()),
        }
    }
}

pub struct BindOptions {
    pub backlog: i32,
    pub reuse_port: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{0}")]
    Address(#[from] AddressError),
    #[error("Connection in use: {0}")]
    InUse(String),
    #[error("Can't resolve {0}: {1}")]
    Resolve(String, io::Error),
    #[error("Can't bind {0}: {1}")]
    Io(String, io::Error),
    #[error("{0} is not a socket")]
    NotSocket(String),
}

/// Create a listener for one address.
pub fn bind(addr: &Address, opts: &BindOptions) -> Result<Listener, BindError> {
    match addr {
        Address::Tcp { host, port } => {
            let label = format!("('{host}', {port})");
            let sockaddr = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(|e| BindError::Resolve(host.clone(), e))?
                .next()
                .ok_or_else(|| BindError::Resolve(host.clone(), io::Error::other("no address")))?;
            let sock = Socket::new(Domain::for_address(sockaddr), Type::STREAM, None)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            let setup = || -> io::Result<()> {
                sock.set_reuse_address(true)?;
                if opts.reuse_port {
                    sock.set_reuse_port(true)?;
                }
                // IPV6_V6ONLY is left at the system default
                // (`net.ipv6.bindv6only`), as gunicorn does: `[::]` is
                // dual-stack where that is 0, and a `0.0.0.0` bind of the
                // same port is then "Connection in use".
                Ok(())
            };
            setup().map_err(|e| BindError::Io(label.clone(), e))?;
            sock.bind(&sockaddr.into()).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    BindError::InUse(label.clone())
                } else {
                    BindError::Io(label.clone(), e)
                }
            })?;
            sock.listen(opts.backlog)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            sock.set_nonblocking(true)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            // Inherited by every accepted connection (module header).
            sock.set_tcp_nodelay(true)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            let sock: TcpListener = sock.into();
            let addr = sock.local_addr().map_err(|e| BindError::Io(label, e))?;
            Ok(Listener::Tcp { sock, addr })
        }
        Address::Unix(path) => {
            let label = path.display().to_string();
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                if !meta.file_type().is_socket() {
                    return Err(BindError::NotSocket(label));
                }
                std::fs::remove_file(path).map_err(|e| BindError::Io(label.clone(), e))?;
            }
            let sock = Socket::new(Domain::UNIX, Type::STREAM, None)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            let sa = socket2::SockAddr::unix(path).map_err(|e| BindError::Io(label.clone(), e))?;
            sock.bind(&sa)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            sock.listen(opts.backlog)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            sock.set_nonblocking(true)
                .map_err(|e| BindError::Io(label.clone(), e))?;
            let sock: UnixListener = OwnedFd::from(sock).into();
            Ok(Listener::Unix {
                sock,
                path: path.clone(),
            })
        }
        Address::Fd(fd) => adopt_fd(*fd).map_err(|e| BindError::Io(format!("fd://{fd}"), e)),
    }
}

/// Take over an inherited listening socket (`fd://N`, `GUNICORN_FD`, `LISTEN_FDS`).
pub fn adopt_fd(fd: RawFd) -> io::Result<Listener> {
    // Check it is a socket before taking ownership.
    nix::sys::socket::getsockname::<nix::sys::socket::SockaddrStorage>(fd)
        .map_err(io::Error::from)?;
    let owned = crate::sys::fd::own(fd)?;
    let sock = Socket::from(owned);
    sock.set_nonblocking(true)?;
    let local = sock.local_addr()?;
    if let Some(addr) = local.as_socket() {
        // Inherited by every accepted connection (module header).
        sock.set_tcp_nodelay(true)?;
        let sock: TcpListener = sock.into();
        return Ok(Listener::Tcp { sock, addr });
    }
    let path = local.as_pathname().map(PathBuf::from).unwrap_or_default();
    let sock: UnixListener = OwnedFd::from(sock).into();
    Ok(Listener::Unix { sock, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(h: &str, p: u16) -> Address {
        Address::Tcp {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn address_forms() {
        assert_eq!(
            parse_address("127.0.0.1:8000").unwrap(),
            tcp("127.0.0.1", 8000)
        );
        assert_eq!(parse_address("localhost").unwrap(), tcp("localhost", 8000));
        assert_eq!(parse_address("[::1]:9000").unwrap(), tcp("::1", 9000));
        assert_eq!(parse_address("[::1]").unwrap(), tcp("::1", 8000));
        assert_eq!(parse_address(":9000").unwrap(), tcp("0.0.0.0", 9000));
        assert_eq!(
            parse_address("tcp://0.0.0.0:80").unwrap(),
            tcp("0.0.0.0", 80)
        );
        assert_eq!(
            parse_address("unix:/tmp/s.sock").unwrap(),
            Address::Unix("/tmp/s.sock".into())
        );
        assert_eq!(
            parse_address("unix:///tmp/s.sock").unwrap(),
            Address::Unix("/tmp/s.sock".into())
        );
        assert_eq!(parse_address("fd://3").unwrap(), Address::Fd(3));
        assert!(parse_address("fd://x").is_err());
        assert!(parse_address("host:99999").is_err());
        assert!(parse_address("host:abc").is_err());
    }

    #[test]
    fn bind_port_zero_and_display() {
        let l = bind(
            &tcp("127.0.0.1", 0),
            &BindOptions {
                backlog: 16,
                reuse_port: false,
            },
        )
        .unwrap();
        let shown = l.to_string();
        assert!(
            shown.starts_with("http://127.0.0.1:") && !shown.ends_with(":0"),
            "{shown}"
        );
    }

    /// What the module header relies on: a TCP connection starts with the
    /// listener's TCP_NODELAY and timeouts; a unix one does not.
    #[test]
    fn accepted_tcp_socket_inherits_listener_options() {
        use std::time::Duration;
        let opts = BindOptions {
            backlog: 16,
            reuse_port: false,
        };
        let l = bind(&tcp("127.0.0.1", 0), &opts).unwrap();
        let (read, write) = (Duration::from_secs(3), Duration::from_secs(7));
        assert!(l.set_connection_timeouts(Some(read), Some(write)));
        let Listener::Tcp { addr, .. } = &l else {
            unreachable!()
        };
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = accept_blocking(&l);
        let s = stream.sock_ref();
        assert!(s.tcp_nodelay().unwrap());
        assert_eq!(s.read_timeout().unwrap(), Some(read));
        assert_eq!(s.write_timeout().unwrap(), Some(write));
        // Accepted sockets block (Linux: accept4 does not pass O_NONBLOCK on).
        assert!(!s.nonblocking().unwrap());
        // Cleared on the listener: cleared on the next connection.
        assert!(l.set_connection_timeouts(None, None));
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let (stream, _) = accept_blocking(&l);
        let s = stream.sock_ref();
        assert_eq!(s.read_timeout().unwrap(), None);
        assert_eq!(s.write_timeout().unwrap(), None);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let u = bind(&Address::Unix(path.clone()), &opts).unwrap();
        assert!(!u.set_connection_timeouts(Some(read), Some(write)));
        if let Listener::Unix { sock, .. } = &u {
            let s = socket2::SockRef::from(sock);
            s.set_read_timeout(Some(read)).unwrap();
        }
        let _client = std::os::unix::net::UnixStream::connect(&path).unwrap();
        let (stream, _) = accept_blocking(&u);
        let s = stream.sock_ref();
        // Why unix connections are armed one by one.
        #[cfg(target_os = "linux")]
        assert_eq!(s.read_timeout().unwrap(), None);
        let _ = s;
    }

    fn accept_blocking(l: &Listener) -> (Stream, Peer) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match l.accept() {
                Ok(c) => return c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(std::time::Instant::now() < deadline, "no connection");
                    let mut fds = [nix::poll::PollFd::new(l.fd(), nix::poll::PollFlags::POLLIN)];
                    let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(100u16));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn unix_socket_replaces_stale_socket_but_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let opts = BindOptions {
            backlog: 16,
            reuse_port: false,
        };
        let first = bind(&Address::Unix(path.clone()), &opts).unwrap();
        drop(first);
        let second = bind(&Address::Unix(path.clone()), &opts).unwrap();
        assert_eq!(second.to_string(), format!("unix:{}", path.display()));
        let file = dir.path().join("plain");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            bind(&Address::Unix(file), &opts),
            Err(BindError::NotSocket(_))
        ));
    }
}

/// The peer of an accepted connection, as `(REMOTE_ADDR, REMOTE_PORT)`;
/// unix sockets have no port.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: String,
    pub port: Option<u16>,
    /// Set when a PROXY protocol header named the client: the proxy side.
    pub proxy: Option<Proxied>,
}

/// What a PROXY header said about the proxied connection (gunicorn's
/// `PROXY_PROTOCOL`, `PROXY_ADDR`, `PROXY_PORT` environ keys).
#[derive(Clone, Debug)]
pub struct Proxied {
    pub protocol: &'static str,
    pub addr: String,
    pub port: u16,
}

impl Listener {
    /// Accept one connection without blocking (`WouldBlock` when none is queued).
    pub fn accept(&self) -> io::Result<(Stream, Peer)> {
        match self {
            Listener::Tcp { sock, .. } => {
                let (s, addr) = sock.accept()?;
                // Linux's accept4 never passes the listener's O_NONBLOCK on
                // (BSDs do): one ioctl per connection saved there.
                #[cfg(not(target_os = "linux"))]
                s.set_nonblocking(false)?;
                // TCP_NODELAY and the timeouts come from the listener.
                Ok((
                    Stream::from(s).accepted(),
                    Peer {
                        addr: addr.ip().to_string(),
                        port: Some(addr.port()),
                        proxy: None,
                    },
                ))
            }
            Listener::Unix { sock, .. } => {
                let (s, _) = sock.accept()?;
                #[cfg(not(target_os = "linux"))]
                s.set_nonblocking(false)?;
                Ok((
                    Stream::from(s).accepted(),
                    Peer {
                        addr: String::new(),
                        port: None,
                        proxy: None,
                    },
                ))
            }
        }
    }
}
