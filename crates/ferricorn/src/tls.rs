//! TLS with rustls: the server configuration built from gunicorn's SSL
//! settings (files read and checked in the master, before any fork and
//! before `--user` takes effect), and one connection's TLS session, which
//! `stream::Stream`'s TLS variant drives over its socket.
//!
//! Invariants:
//! - the configuration a worker serves with is the one [`install`]ed in the
//!   master when it forked: a `HUP` builds a new one (a bad file keeps the
//!   old configuration, see `arbiter::shell`) and the new workers take it;
//! - session tickets: one ticket key per configuration, made in the master,
//!   so a ticket from any worker of that generation resumes on any other;
//! - ALPN: `http/1.1` is chosen when the client offers it; a client that
//!   offers only protocols we do not speak gets no ALPN answer and is
//!   served HTTP/1.1 (rustls alone would refuse it);
//! - a session reads the socket only while it holds no plaintext, and
//!   writes what it encrypts before it returns, except
//!   [`Session::send_nowait`] (see there).
//!
//! gunicorn counterpart: `sock.ssl_context`, `sock.ssl_wrap_socket` and the
//! `SSL` section of its settings (`certfile`, `keyfile`, `ca_certs`,
//! `cert_reqs`, `ciphers`, `suppress_ragged_eofs`, `do_handshake_on_connect`,
//! `ssl_version`).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{Acceptor, ServerConfig, ServerConnection, WebPkiClientVerifier};
use rustls::{RootCertStore, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What ALPN offers.
const HTTP11: &[u8] = b"http/1.1";

/// A TLS server configuration: one for clients that offer `http/1.1` (or
/// no ALPN at all), one without ALPN for those that offer only others.
pub struct Server {
    alpn: Arc<ServerConfig>,
    no_alpn: Arc<ServerConfig>,
    /// `suppress_ragged_eofs`: a close without `close_notify` reads as EOF.
    ragged_ok: bool,
}

static CURRENT: RwLock<Option<Arc<Server>>> = RwLock::new(None);

/// Serve new connections with `server` (`None`: plain TCP); the master
/// calls it before forking, at start and after a reload.
pub fn install(server: Option<Arc<Server>>) {
    *CURRENT.write().unwrap_or_else(|e| e.into_inner()) = server;
}

/// The configuration new connections are served with, if TLS is on.
pub fn current() -> Option<Arc<Server>> {
    CURRENT.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The SSL settings, as plain values.
#[derive(Clone, Debug, Default)]
pub struct Files {
    pub certfile: Option<String>,
    pub keyfile: Option<String>,
    pub ca_certs: Option<String>,
    /// 0 none, 1 optional, 2 required (the `ssl` module's `CERT_*`).
    pub cert_reqs: i64,
    pub ciphers: Option<String>,
    pub suppress_ragged_eofs: bool,
}

impl Files {
    pub fn from_settings(s: &crate::config::Settings) -> Self {
        let text = |n: &str| {
            s.get(n)
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Files {
            certfile: text("certfile"),
            keyfile: text("keyfile"),
            ca_certs: text("ca_certs"),
            cert_reqs: s.get("cert_reqs").as_int(),
            ciphers: text("ciphers"),
            suppress_ragged_eofs: s.get("suppress_ragged_eofs").as_bool(),
        }
    }

    /// TLS is on (gunicorn's `is_ssl`: a certificate or a key is set).
    pub fn enabled(&self) -> bool {
        self.certfile.is_some() || self.keyfile.is_some()
    }
}

/// Build the server configuration the settings ask for (`None` when TLS is
/// off). `Err`: one line that names the setting and the file at fault.
pub fn load(s: &crate::config::Settings) -> Result<Option<Arc<Server>>, String> {
    build(&Files::from_settings(s))
}

/// [`load`] from plain values.
pub fn build(f: &Files) -> Result<Option<Arc<Server>>, String> {
    if !f.enabled() {
        return Ok(None);
    }
    let Some(certfile) = f.certfile.as_deref() else {
        return Err(
            "keyfile is set without certfile: set certfile to the certificate (chain) file".into(),
        );
    };
    let certs = read_certs("certfile", certfile)?;
    let keyfile = f.keyfile.as_deref().unwrap_or(certfile);
    let key = read_key(
        if f.keyfile.is_some() {
            "keyfile"
        } else {
            "certfile"
        },
        keyfile,
    )?;
    // ring: builds with zig for manylinux2014 (aws-lc-rs would need cmake
    // and a C toolchain there); it lacks only the post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(CryptoProvider {
        cipher_suites: suites(f.ciphers.as_deref())?,
        ..rustls::crypto::ring::default_provider()
    });
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match f.cert_reqs {
        0 => builder.with_no_client_auth(),
        1 | 2 => {
            let Some(ca) = f.ca_certs.as_deref() else {
                return Err(format!(
                    "cert_reqs {} needs ca_certs: the file of CA certificates that client certificates are verified against",
                    f.cert_reqs
                ));
            };
            let mut roots = RootCertStore::empty();
            for c in read_certs("ca_certs", ca)? {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_certs {ca}: unusable CA certificate: {e}"))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let v = if f.cert_reqs == 1 {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("ca_certs {ca}: cannot verify clients with it: {e}"))?,
            )
        }
        n => {
            return Err(format!(
                "cert_reqs must be 0 (none), 1 (optional) or 2 (required), not {n}"
            ));
        }
    };
    if f.cert_reqs == 0 {
        if let Some(ca) = f.ca_certs.as_deref() {
            // Read and checked as gunicorn loads it, though unused without cert_reqs.
            read_certs("ca_certs", ca)?;
        }
    }
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            format!("keyfile {keyfile} does not match certfile {certfile}")
        }
        e => format!("certfile {certfile}: unusable certificate or key: {e}"),
    })?;
    // The server's order (strongest first), as testssl.sh asks.
    config.ignore_client_order = true;
    config.ticketer =
        rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS session tickets: {e}"))?;
    let no_alpn = Arc::new(config.clone());
    config.alpn_protocols = vec![HTTP11.to_vec()];
    Ok(Some(Arc::new(Server {
        alpn: Arc::new(config),
        no_alpn,
        ragged_ok: f.suppress_ragged_eofs,
    })))
}

fn read_file(setting: &str, path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(Path::new(path)).map_err(|e| format!("{setting} {path}: cannot read it: {e}"))
}

fn read_certs(setting: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(setting, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{setting} {path}: not a PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{setting} {path}: no PEM certificate in it"));
    }
    Ok(certs)
}

fn read_key(setting: &str, path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(setting, path)?;
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
        || pem
            .windows(b"Proc-Type: 4,ENCRYPTED".len())
            .any(|w| w == b"Proc-Type: 4,ENCRYPTED")
    {
        return Err(format!(
            "{setting} {path}: the private key is encrypted and no passphrase can be given: decrypt it (openssl pkey -in KEY -out PLAIN_KEY)"
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            format!("{setting} {path}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")
        }
        e => format!("{setting} {path}: unreadable private key: {e}"),
    })
}

// --- ciphers -------------------------------------------------------------

/// The TLS 1.2 suites rustls offers, by OpenSSL name, with the OpenSSL
/// cipher-string words that select each (beyond [`TLS12_COMMON`]).
fn tls12_suites() -> Vec<(SupportedCipherSuite, String, Vec<&'static str>)> {
    use rustls::crypto::ring::cipher_suite as cs;
    let by_auth = [
        (
            ["ECDSA", "aECDSA"],
            [
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
        ),
        (
            ["RSA", "aRSA"],
            [
                cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            ],
        ),
    ];
    // In the order of each row above.
    let ciphers: [(&str, &[&'static str]); 3] = [
        ("AES256-GCM-SHA384", &["AESGCM", "AES", "AES256", "SHA384"]),
        ("AES128-GCM-SHA256", &["AESGCM", "AES", "AES128", "SHA256"]),
        ("CHACHA20-POLY1305", &["CHACHA20", "SHA256"]),
    ];
    let mut out = Vec::new();
    for (auth, suites) in by_auth {
        for (suite, (enc, words)) in suites.into_iter().zip(ciphers) {
            let mut words = words.to_vec();
            words.extend(auth);
            out.push((suite, format!("ECDHE-{}-{enc}", auth[0]), words));
        }
    }
    out
}

/// Words every TLS 1.2 suite of [`tls12_suites`] answers to.
const TLS12_COMMON: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "TLSv1.2", "ECDHE", "EECDH", "ECDH", "kECDHE", "kEECDH", "AEAD",
    "SSLv3", // OpenSSL's alias for the TLS 1.2 suite class in cipher strings
];

/// The suites a cipher string selects, as OpenSSL reads one: `:`, `,` or
/// space separated words; `!W` removes for good, `-W` removes, `+W` only
/// reorders (ignored: the client's order is followed), `A+B` is both, `@...`
/// directives are ignored, as are words for suites rustls does not have
/// (an OpenSSL string names many). TLS 1.3 suites are always on, as in
/// OpenSSL, where the cipher string does not touch them. `None`: rustls's.
pub fn suites(ciphers: Option<&str>) -> Result<Vec<SupportedCipherSuite>, String> {
    let all13: Vec<SupportedCipherSuite> = rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .collect();
    let table = tls12_suites();
    let Some(text) = ciphers else {
        let mut v = all13;
        v.extend(table.iter().map(|t| t.0));
        return Ok(v);
    };
    let matches = |i: usize, word: &str| {
        let (_, name, tags) = &table[i];
        word.split('+')
            .all(|w| w == name.as_str() || tags.contains(&w) || TLS12_COMMON.contains(&w))
    };
    let mut chosen = vec![false; table.len()];
    let mut killed = vec![false; table.len()];
    for word in text
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
    {
        let (op, word) = match word.as_bytes()[0] {
            b'!' => ('!', &word[1..]),
            b'-' => ('-', &word[1..]),
            b'+' => ('+', &word[1..]),
            _ => (' ', word),
        };
        if word.starts_with('@') || op == '+' {
            continue;
        }
        for i in 0..table.len() {
            if matches(i, word) {
                match op {
                    '!' => {
                        killed[i] = true;
                        chosen[i] = false;
                    }
                    '-' => chosen[i] = false,
                    _ => chosen[i] = !killed[i],
                }
            }
        }
    }
    let picked: Vec<SupportedCipherSuite> = (0..table.len())
        .filter(|&i| chosen[i])
        .map(|i| table[i].0)
        .collect();
    if picked.is_empty() {
        let names: Vec<&str> = table.iter().map(|t| t.1.as_str()).collect();
        return Err(format!(
            "ciphers {text:?} selects no TLS 1.2 suite ferricorn offers; those are {} (TLS 1.3's TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384 and TLS_CHACHA20_POLY1305_SHA256 are always on)",
            names.join(":")
        ));
    }
    let mut v = all13;
    v.extend(picked);
    Ok(v)
}

// --- one connection ------------------------------------------------------

/// One connection's TLS session: the rustls state and the plaintext it
/// holds for the reader.
pub struct Session {
    server: Arc<Server>,
    state: Mutex<State>,
    /// Readers take this across their socket read and its decryption, so
    /// that records are fed in the order they came.
    reading: Mutex<()>,
}

thread_local! {
    /// Where a socket read lands before it is decrypted: one per thread,
    /// not one per connection (idle keep-alive connections hold none).
    static RAW: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

enum Phase {
    /// Waiting for the client hello.
    Hello(Box<Acceptor>),
    Open(Box<ServerConnection>),
    /// The handshake failed or the peer broke the protocol.
    Failed,
}

struct State {
    phase: Phase,
    /// Decrypted bytes not read yet: `plain[pos..]`.
    plain: Vec<u8>,
    pos: usize,
    /// The peer closed: with `close_notify` (`Some(true)`) or without.
    eof: Option<bool>,
    /// The last socket read filled the read buffer: more may wait in the kernel.
    maybe_more: bool,
    /// Plaintext bytes at the start of the next write that were already
    /// encrypted by a `send_nowait` whose records did not all go out.
    credit: usize,
}

/// Bytes one socket read takes in (a little over one full TLS record).
const RAW_CHUNK: usize = 32 * 1024;

/// What a handshake step left.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Done,
    /// Wait for the socket to be readable, then step again.
    WantRead,
}

/// A TLS failure, as an `io::Error` of kind `InvalidData`.
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Plain `send(2)` on the socket (blocking as the socket is, or not).
struct Sock<'a> {
    fd: BorrowedFd<'a>,
    nowait: bool,
}

impl Write for Sock<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, send};
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if self.nowait {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        send(self.fd.as_raw_fd(), buf, flags).map_err(io::Error::from)
    }
    /// Every queued record in one `sendmsg` (rustls hands them all over).
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, sendmsg};
        let mut flags = MsgFlags::MSG_NOSIGNAL;
        if self.nowait {
            flags |= MsgFlags::MSG_DONTWAIT;
        }
        sendmsg::<()>(self.fd.as_raw_fd(), bufs, &[], flags, None).map_err(io::Error::from)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn recv(fd: BorrowedFd<'_>, buf: &mut [u8], nowait: bool) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, recv};
    let flags = if nowait {
        MsgFlags::MSG_DONTWAIT
    } else {
        MsgFlags::empty()
    };
    recv(fd.as_raw_fd(), buf, flags).map_err(io::Error::from)
}

impl Session {
    pub fn new(server: Arc<Server>) -> Self {
        Session {
            server,
            state: Mutex::new(State {
                phase: Phase::Hello(Box::default()),
                plain: Vec::new(),
                pos: 0,
                eof: None,
                maybe_more: false,
                credit: 0,
            }),
            reading: Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the handshake is still to finish.
    pub fn handshaking(&self) -> bool {
        match &self.lock().phase {
            Phase::Hello(_) => true,
            Phase::Open(c) => c.is_handshaking(),
            Phase::Failed => false,
        }
    }

    /// One step of the handshake without waiting for the peer: feed what
    /// the socket has, send what the handshake says (blocking as the
    /// socket's send timeout allows). `Err` for a failed handshake (the
    /// alert, if any, was sent) or a peer that closed.
    pub fn handshake_step(&self, fd: BorrowedFd<'_>) -> io::Result<Step> {
        loop {
            {
                let mut st = self.lock();
                st.flush(fd, false)?;
                match &st.phase {
                    Phase::Open(c) if !c.is_handshaking() => return Ok(Step::Done),
                    Phase::Failed => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS handshake failed",
                        ));
                    }
                    _ => {}
                }
            }
            match self.fill(fd, true) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed during the TLS handshake",
                    ));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::WantRead),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read the socket once (waiting as the socket does unless `nowait`)
    /// and decrypt what came. `Ok(0)`: the peer closed its side.
    fn fill(&self, fd: BorrowedFd<'_>, nowait: bool) -> io::Result<usize> {
        let _reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        RAW.with_borrow_mut(|raw| {
            raw.resize(RAW_CHUNK, 0);
            let n = recv(fd, raw, nowait)?;
            let mut st = self.lock();
            st.maybe_more = n == raw.len();
            if n == 0 {
                if st.eof.is_none() {
                    st.eof = Some(false);
                }
                return Ok(0);
            }
            st.feed(fd, &raw[..n], &self.server)?;
            Ok(n)
        })
    }

    /// Plaintext held for the reader that the kernel no longer reports,
    /// or a socket read that may have left more behind.
    pub fn has_buffered(&self, fd: BorrowedFd<'_>) -> bool {
        let st = self.lock();
        if st.pos < st.plain.len() {
            return true;
        }
        if !st.maybe_more {
            return false;
        }
        drop(st);
        let mut one = [0u8; 1];
        use nix::sys::socket::{MsgFlags, recv};
        matches!(
            recv(
                fd.as_raw_fd(),
                &mut one,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Ok(1)
        )
    }

    /// Read decrypted bytes into `out` (append at most `max` when `append`).
    /// `nowait`: `WouldBlock` instead of waiting.
    fn read_with(
        &self,
        fd: BorrowedFd<'_>,
        nowait: bool,
        take: &mut dyn FnMut(&[u8]) -> usize,
    ) -> io::Result<usize> {
        loop {
            {
                let mut st = self.lock();
                if st.pos < st.plain.len() {
                    let n = take(&st.plain[st.pos..]);
                    st.pos += n;
                    if st.pos == st.plain.len() {
                        st.pos = 0;
                        if st.plain.capacity() > 16 * 1024 {
                            // A large body went through: an idle connection keeps no buffer.
                            st.plain = Vec::new();
                        } else {
                            st.plain.clear();
                        }
                    }
                    return Ok(n);
                }
                match st.eof {
                    Some(true) => return Ok(0),
                    Some(false) if self.server.ragged_ok => return Ok(0),
                    Some(false) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "TLS connection closed without close_notify",
                        ));
                    }
                    None => {}
                }
                if matches!(st.phase, Phase::Failed) {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "TLS session failed",
                    ));
                }
            }
            self.fill(fd, nowait)?;
        }
    }

    /// Append at most `max` decrypted bytes to `buf`, waiting as the socket does.
    pub fn read_append(
        &self,
        fd: BorrowedFd<'_>,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        self.read_with(fd, false, &mut |p| {
            let n = p.len().min(max);
            buf.extend_from_slice(&p[..n]);
            n
        })
    }

    /// Decrypted bytes into `buf`: without waiting when `nowait`.
    pub fn read(&self, fd: BorrowedFd<'_>, buf: &mut [u8], nowait: bool) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.read_with(fd, nowait, &mut |p| {
            let n = p.len().min(buf.len());
            buf[..n].copy_from_slice(&p[..n]);
            n
        })
    }

    /// Encrypt and send `bufs` (what the socket's send timeout allows);
    /// returns the plaintext bytes taken.
    pub fn write_vectored(
        &self,
        fd: BorrowedFd<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> io::Result<usize> {
        let mut st = self.lock();
        st.flush(fd, false)?;
        if st.credit > 0 {
            let first = bufs.iter().find(|b| !b.is_empty()).map_or(0, |b| b.len());
            let n = st.credit.min(first);
            st.credit -= n;
            return Ok(n);
        }
        let Phase::Open(c) = &mut st.phase else {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "no TLS session",
            ));
        };
        let n = c.writer().write_vectored(bufs)?;
        st.flush(fd, false)?;
        Ok(n)
    }

    /// Send `buf` as far as the socket takes it without waiting; returns
    /// the plaintext bytes taken. A record the socket took only part of
    /// stays queued: then the count returned is one short of what was
    /// encrypted, so that the caller's next write (of the rest, as the
    /// caller of any `send_nowait` does) sends the queue first.
    pub fn send_nowait(&self, fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        let mut st = self.lock();
        if !st.flush(fd, true)? {
            return Ok(0);
        }
        let mut done = st.credit.min(buf.len());
        st.credit -= done;
        while done < buf.len() {
            let Phase::Open(c) = &mut st.phase else {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "no TLS session",
                ));
            };
            done += c.writer().write(&buf[done..])?;
            if !st.flush(fd, true)? {
                if done == buf.len() {
                    st.credit = 1;
                    done -= 1;
                }
                return Ok(done);
            }
        }
        Ok(done)
    }

    /// Send `close_notify` (best effort, without waiting; a second call
    /// sends nothing).
    pub fn close_notify(&self, fd: BorrowedFd<'_>) {
        let mut st = self.lock();
        if let Phase::Open(c) = &mut st.phase {
            if !c.is_handshaking() {
                c.send_close_notify();
                let _ = st.flush(fd, true);
            }
        }
    }

    /// The negotiated protocol version and cipher suite, as their IANA
    /// numbers (`0x0304` for TLS 1.3; `0x1301` for TLS_AES_128_GCM_SHA256),
    /// once the handshake is done.
    pub fn negotiated(&self) -> Option<(u16, u16)> {
        match &self.lock().phase {
            Phase::Open(c) => Some((
                u16::from(c.protocol_version()?),
                u16::from(c.negotiated_cipher_suite()?.suite()),
            )),
            _ => None,
        }
    }

    /// The verified client certificate chain's first certificate (DER).
    pub fn peer_certificate(&self) -> Option<Vec<u8>> {
        match &self.lock().phase {
            Phase::Open(c) => c
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec()),
            _ => None,
        }
    }
}

impl State {
    /// Send what the session has queued; `nowait`: only what the socket
    /// takes now. `Ok(false)` when some stays queued.
    fn flush(&mut self, fd: BorrowedFd<'_>, nowait: bool) -> io::Result<bool> {
        let Phase::Open(c) = &mut self.phase else {
            return Ok(true);
        };
        let mut sock = Sock { fd, nowait };
        while c.wants_write() {
            match c.write_tls(&mut sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if nowait && e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Decrypt `raw` (as it came from the socket); answer what the
    /// handshake asks for.
    fn feed(&mut self, fd: BorrowedFd<'_>, mut raw: &[u8], server: &Server) -> io::Result<()> {
        while !raw.is_empty() {
            if let Phase::Hello(acceptor) = &mut self.phase {
                acceptor.read_tls(&mut raw)?;
                let accepted = match acceptor.accept() {
                    Ok(None) => continue,
                    Ok(Some(a)) => a,
                    Err((e, mut alert)) => {
                        self.phase = Phase::Failed;
                        let _ = alert.write_all(&mut Sock { fd, nowait: true });
                        return Err(tls_error(e));
                    }
                };
                let speaks_ours = accepted
                    .client_hello()
                    .alpn()
                    .is_none_or(|mut offered| offered.any(|p| p == HTTP11));
                let config = if speaks_ours {
                    server.alpn.clone()
                } else {
                    server.no_alpn.clone()
                };
                match accepted.into_connection(config) {
                    Ok(c) => self.phase = Phase::Open(Box::new(c)),
                    Err((e, mut alert)) => {
                        self.phase = Phase::Failed;
                        let _ = alert.write_all(&mut Sock { fd, nowait: true });
                        return Err(tls_error(e));
                    }
                }
                self.process(fd)?;
                continue;
            }
            let Phase::Open(c) = &mut self.phase else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS session failed",
                ));
            };
            c.read_tls(&mut raw)?;
            self.process(fd)?;
        }
        Ok(())
    }

    /// Process the records fed so far: keep their plaintext, note a
    /// `close_notify`, send what they call for (alerts included).
    fn process(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Phase::Open(c) = &mut self.phase else {
            return Ok(());
        };
        let io_state = match c.process_new_packets() {
            Ok(s) => s,
            Err(e) => {
                let _ = self.flush(fd, true);
                self.phase = Phase::Failed;
                return Err(tls_error(e));
            }
        };
        let closed = io_state.peer_has_closed();
        if io_state.plaintext_bytes_to_read() > 0 {
            if self.pos == self.plain.len() {
                self.plain.clear();
                self.pos = 0;
            }
            match c.reader().read_to_end(&mut self.plain) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                Err(e) => return Err(e),
            }
        }
        if closed {
            self.eof = Some(true);
        }
        if c.wants_write() && !c.is_handshaking() {
            let _ = self.flush(fd, true);
        }
        Ok(())
    }
}

// --- the client certificate for the app -----------------------------------

/// A verified client certificate as the app sees it.
#[derive(Clone, Debug)]
pub struct PeerCert {
    /// PEM text of the certificate.
    pub pem: String,
    /// Its subject as an RFC 4514 string (`CN=client,O=Example`).
    pub subject: String,
}

impl PeerCert {
    pub fn from_der(der: &[u8]) -> Self {
        PeerCert {
            pem: pem("CERTIFICATE", der),
            subject: subject_of(der).unwrap_or_default(),
        }
    }
}

/// `der` as PEM text.
fn pem(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let v = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One DER element at the start of `b`: `(tag, content, rest)`.
fn der(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, mut b) = b.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        b = &b[n..];
        len
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The subject name of a DER certificate, RFC 4514 style (last RDN first).
fn subject_of(cert: &[u8]) -> Option<String> {
    let (_, cert, _) = der(cert)?; // Certificate
    let (_, tbs, _) = der(cert)?; // TBSCertificate
    let mut rest = tbs;
    let mut fields = Vec::new();
    while let Some((tag, body, r)) = der(rest) {
        fields.push((tag, body));
        rest = r;
    }
    // [0] version is optional; then serial, signature, issuer, validity, subject.
    let skip = usize::from(fields.first()?.0 == 0xa0);
    let (_, name) = *fields.get(skip + 4)?;
    let mut rdns = Vec::new();
    let mut rest = name;
    while let Some((_, set, r)) = der(rest) {
        rest = r;
        let mut parts = Vec::new();
        let mut atvs = set;
        while let Some((_, atv, r2)) = der(atvs) {
            atvs = r2;
            let (_, oid, v) = der(atv)?;
            let (_, value, _) = der(v)?;
            let key = match oid {
                [0x55, 0x04, 0x03] => "CN".to_string(),
                [0x55, 0x04, 0x06] => "C".into(),
                [0x55, 0x04, 0x07] => "L".into(),
                [0x55, 0x04, 0x08] => "ST".into(),
                [0x55, 0x04, 0x0a] => "O".into(),
                [0x55, 0x04, 0x0b] => "OU".into(),
                [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19] => "DC".into(),
                [0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01] => "UID".into(),
                [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01] => "emailAddress".into(),
                other => oid_text(other),
            };
            let text = String::from_utf8_lossy(value);
            let mut escaped = String::with_capacity(text.len());
            for (i, ch) in text.chars().enumerate() {
                if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
                    || (i == 0 && (ch == '#' || ch == ' '))
                {
                    escaped.push('\\');
                }
                escaped.push(ch);
            }
            parts.push(format!("{key}={escaped}"));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

/// An OID's dotted text.
fn oid_text(oid: &[u8]) -> String {
    let Some((&first, rest)) = oid.split_first() else {
        return String::new();
    };
    let mut out = format!("{}.{}", first / 40, first % 40);
    let mut v: u64 = 0;
    for &b in rest {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            out.push_str(&format!(".{v}"));
            v = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_strings_select_as_openssl_would() {
        let names = |s: &str| -> Vec<String> {
            suites(Some(s))
                .unwrap()
                .iter()
                .filter(|s| s.version() == &rustls::version::TLS12)
                .map(|s| format!("{:?}", s.suite()))
                .collect()
        };
        assert_eq!(names("ECDHE-RSA-AES128-GCM-SHA256").len(), 1);
        assert_eq!(names("ECDHE+AESGCM").len(), 4);
        assert_eq!(names("HIGH:!aECDSA").len(), 3);
        assert_eq!(names("ALL:!CHACHA20:-AES256").len(), 2);
        // Python's default string.
        assert_eq!(
            names("@SECLEVEL=2:ECDH+AESGCM:ECDH+CHACHA20:ECDH+AES:DHE+AES:!aNULL:!eNULL:!aDSS:!SHA1:!AESCCM").len(),
            6
        );
        // Suites rustls lacks are passed over; nothing left is refused.
        assert_eq!(names("AES128-SHA:ECDHE-ECDSA-CHACHA20-POLY1305").len(), 1);
        let err = suites(Some("AES128-SHA:DES-CBC3-SHA")).unwrap_err();
        assert!(err.contains("ECDHE-RSA-AES128-GCM-SHA256"), "{err}");
        assert_eq!(suites(None).unwrap().len(), 9);
    }

    #[test]
    fn pem_wraps_base64() {
        assert_eq!(
            pem("X", b"hello world"),
            "-----BEGIN X-----\naGVsbG8gd29ybGQ=\n-----END X-----\n"
        );
    }

    #[test]
    fn subject_reads_last_rdn_first() {
        let pem = include_str!("../testdata/tls-server.pem");
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let c = PeerCert::from_der(&der);
        assert_eq!(c.subject, "O=ferricorn tests,CN=localhost");
        assert_eq!(
            CertificateDer::from_pem_slice(c.pem.as_bytes()).unwrap(),
            der
        );
    }

    #[test]
    fn oids_read_as_dotted_text() {
        assert_eq!(
            oid_text(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.pem").display().to_string();
        let f = Files {
            certfile: Some(missing.clone()),
            ..Default::default()
        };
        let err = build(&f).err().unwrap();
        assert!(
            err.starts_with(&format!("certfile {missing}: cannot read it")),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing\n").unwrap();
        let f = Files {
            certfile: Some(empty.display().to_string()),
            ..Default::default()
        };
        assert!(build(&f).err().unwrap().contains("no PEM certificate"));
        let enc = dir.path().join("enc.pem");
        std::fs::write(
            &enc,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = read_key("keyfile", &enc.display().to_string()).unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
        let f = Files {
            keyfile: Some("k.pem".into()),
            ..Default::default()
        };
        assert!(build(&f).err().unwrap().contains("without certfile"));
    }
}
