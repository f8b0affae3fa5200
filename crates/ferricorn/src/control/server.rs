//! The control socket's I/O in the master: a non-blocking unix listener and
//! its clients, driven by the master's `poll` loop (no thread).
//!
//! Invariants: nothing here blocks; each client holds at most one request
//! (`MAX_FRAME` bytes) and one reply in memory; at most `MAX_CLIENTS` are
//! connected; a client that leaves a request half-sent for `FRAME_DEADLINE_MS`,
//! sends nothing for `IDLE_MS`, or does not read its reply within
//! `FRAME_DEADLINE_MS` is dropped. A socket file another live server owns is
//! never unlinked; a stale one (nobody accepts on it) is replaced; on exit
//! the file is removed only if it is still the one this master bound.
//!
//! gunicorn counterpart: `ControlSocketServer` in `gunicorn/ctl/server.py`
//! (which runs asyncio in a thread of the master, and unlinks whatever is at
//! the path: a second instance silently takes the first one's socket).

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::poll::{PollFd, PollFlags};
use serde_json::Value;

use super::{MAX_FRAME, Request, decode, error_reply, frame, frame_len};

/// Connected clients at once; more are answered with an error and closed.
pub const MAX_CLIENTS: usize = 16;
/// A started request (or an unread reply) must complete within this.
pub const FRAME_DEADLINE_MS: u64 = 10_000;
/// A client that sends nothing for this long is closed (gunicorn: 5 minutes).
pub const IDLE_MS: u64 = 300_000;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("control socket {0} is in use by another running server")]
    InUse(PathBuf),
    #[error("control socket {0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("cannot open control socket {path}: {err}")]
    Io { path: PathBuf, err: io::Error },
}

struct Client {
    stream: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    /// Close once `outbuf` is flushed.
    closing: bool,
    last_activity: u64,
    /// When the first byte of the request being read, or of the reply not
    /// yet flushed, arrived.
    pending_since: Option<u64>,
    /// Connection number, to route a reply back.
    id: u64,
}

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    /// `(dev, ino)` of the socket file we bound.
    identity: (u64, u64),
    clients: Vec<Client>,
    next_id: u64,
}

/// Whether a server accepts on the unix socket at `path`.
pub fn is_live(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

impl Server {
    /// Bind `path` with permissions `mode`. A live socket there is left
    /// alone (`InUse`) unless `take_over` (a re-executed master replacing
    /// its parent); a stale one is replaced. Creates the parent directory
    /// (mode 0700) when missing, as gunicorn does for `~/.gunicorn`.
    pub fn open(path: &Path, mode: u32, take_over: bool) -> Result<Server, OpenError> {
        let io_err = |err| OpenError::Io {
            path: path.to_path_buf(),
            err,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err)?;
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(OpenError::NotASocket(path.to_path_buf()));
            }
            Ok(_) => {
                if is_live(path) && !take_over {
                    return Err(OpenError::InUse(path.to_path_buf()));
                }
                std::fs::remove_file(path).map_err(io_err)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(e)),
        }
        // No window in which the file has looser permissions than `mode`:
        // the master is single-threaded, so the umask change is ours alone.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(io_err)?;
        Ok(Server {
            listener,
            path: path.to_path_buf(),
            identity: (meta.dev(), meta.ino()),
            clients: Vec::new(),
            next_id: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every descriptor the server holds (a forked worker closes them).
    pub fn raw_fds(&self) -> Vec<RawFd> {
        let mut fds = vec![self.listener.as_raw_fd()];
        fds.extend(self.clients.iter().map(|c| c.stream.as_raw_fd()));
        fds
    }

    /// What the master's `poll` should wait on for this server.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let mut fds = vec![PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        for c in &self.clients {
            let mut flags = PollFlags::POLLIN;
            if !c.outbuf.is_empty() {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        fds
    }

    /// Accept, read and write whatever is ready without blocking, drop
    /// clients past their deadlines, and return the complete requests
    /// (with the connection to answer) in arrival order.
    pub fn service(&mut self, now: u64) -> Vec<(u64, Request)> {
        // Drop first what is finished or overdue: a client that half-closed
        // after its request is kept until the reply to it is flushed.
        for c in &mut self.clients {
            flush(c, now);
        }
        self.clients.retain(|c| {
            let flushed = c.outbuf.is_empty();
            let overdue = c
                .pending_since
                .is_some_and(|t| now.saturating_sub(t) > FRAME_DEADLINE_MS);
            let idle = now.saturating_sub(c.last_activity) > IDLE_MS;
            let done = c.closing && flushed;
            !(done || overdue || idle)
        });
        self.accept(now);
        let mut requests = Vec::new();
        for c in &mut self.clients {
            if !c.closing {
                read(c, now, &mut requests);
            }
        }
        requests
    }

    /// Queue `reply` for connection `client` and try to send it now.
    pub fn reply(&mut self, client: u64, reply: &Value, now: u64) {
        if let Some(c) = self.clients.iter_mut().find(|c| c.id == client) {
            queue(c, reply, now);
            flush(c, now);
        }
    }

    fn accept(&mut self, now: u64) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.next_id += 1;
            let mut client = Client {
                stream,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                closing: false,
                last_activity: now,
                pending_since: None,
                id: self.next_id,
            };
            if self.clients.len() >= MAX_CLIENTS {
                queue(
                    &mut client,
                    &error_reply(&Value::from(0), "Too many control clients"),
                    now,
                );
                client.closing = true;
                // One best-effort write; the client is not kept.
                let _ = client.stream.write(&client.outbuf);
                continue;
            }
            self.clients.push(client);
        }
    }

    /// Close every client and remove the socket file if it is still ours
    /// (a re-executed master may have replaced it).
    pub fn close(self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|m| (m.dev(), m.ino()) == self.identity)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn queue(c: &mut Client, reply: &Value, now: u64) {
    if c.outbuf.is_empty() {
        c.pending_since = Some(now);
    }
    c.outbuf.extend_from_slice(&frame(reply));
}

fn flush(c: &mut Client, now: u64) {
    while !c.outbuf.is_empty() {
        match c.stream.write(&c.outbuf) {
            Ok(0) => break,
            Ok(n) => {
                c.outbuf.drain(..n);
                c.last_activity = now;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                // The client is gone: drop what it will never read.
                c.outbuf.clear();
                c.closing = true;
            }
        }
    }
    if c.outbuf.is_empty() && c.inbuf.is_empty() {
        c.pending_since = None;
    }
}

/// Read what is available; every complete frame becomes a request. A frame
/// over the limit or a payload that is not JSON is answered with an error
/// and the connection closed (the stream cannot be resynchronised).
fn read(c: &mut Client, now: u64, requests: &mut Vec<(u64, Request)>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        // Never hold more than one frame's worth.
        let want = match c.inbuf.len() {
            n if n < 4 => 4 - n,
            n => (4 + frame_len([c.inbuf[0], c.inbuf[1], c.inbuf[2], c.inbuf[3]])) - n,
        };
        let want = want.min(buf.len());
        let n = match c.stream.read(&mut buf[..want]) {
            Ok(0) => {
                c.closing = true;
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(_) => {
                c.closing = true;
                c.outbuf.clear();
                return;
            }
        };
        if c.inbuf.is_empty() {
            c.pending_since = Some(now);
        }
        c.last_activity = now;
        c.inbuf.extend_from_slice(&buf[..n]);
        if c.inbuf.len() < 4 {
            continue;
        }
        let len = frame_len([c.inbuf[0], c.inbuf[1], c.inbuf[2], c.inbuf[3]]);
        if len > MAX_FRAME {
            let msg = format!("Message too large: {len} bytes (limit {MAX_FRAME})");
            queue(c, &error_reply(&Value::from(0), &msg), now);
            c.closing = true;
            c.inbuf.clear();
            return;
        }
        if c.inbuf.len() < 4 + len {
            continue;
        }
        let payload = std::mem::take(&mut c.inbuf);
        match decode(&payload[4..]) {
            Ok(request) => requests.push((c.id, request)),
            Err(msg) => {
                queue(c, &error_reply(&Value::from(0), &msg), now);
                c.closing = true;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("gunicorn.ctl")
    }

    fn read_frame(s: &mut UnixStream) -> Value {
        let mut prefix = [0u8; 4];
        s.read_exact(&mut prefix).unwrap();
        let mut payload = vec![0u8; frame_len(prefix)];
        s.read_exact(&mut payload).unwrap();
        serde_json::from_slice(&payload).unwrap()
    }

    /// Service until a request arrives or `tries` rounds pass.
    fn pump(server: &mut Server, now: u64) -> Vec<(u64, Request)> {
        for _ in 0..200 {
            let got = server.service(now);
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Vec::new()
    }

    #[test]
    fn request_reply_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let mut server = Server::open(&path, 0o600, false).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .write_all(&frame(&json!({"id": 7, "command": "help"})))
            .unwrap();
        let got = pump(&mut server, 0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.command, Ok(super::super::Command::Help));
        server.reply(got[0].0, &json!({"id": 7, "status": "ok", "data": {}}), 0);
        assert_eq!(read_frame(&mut client)["id"], json!(7));
        server.close();
        assert!(!path.exists());
    }

    #[test]
    fn live_socket_is_not_taken_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let first = Server::open(&path, 0o600, false).unwrap();
        assert!(matches!(
            Server::open(&path, 0o600, false),
            Err(OpenError::InUse(_))
        ));
        // A stale file (its server gone without unlinking) is replaced.
        drop(first.listener);
        let second = Server::open(&path, 0o600, false).unwrap();
        // A re-executed master takes over a live one, and the old one's
        // exit leaves the new file alone.
        let third = Server::open(&path, 0o600, true).unwrap();
        second.close();
        assert!(path.exists());
        third.close();
        assert!(!path.exists());
        std::fs::write(&path, b"").unwrap();
        assert!(matches!(
            Server::open(&path, 0o600, false),
            Err(OpenError::NotASocket(_))
        ));
    }

    #[test]
    fn oversized_and_garbage_frames_get_an_error_and_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let mut server = Server::open(&path, 0o600, false).unwrap();
        let mut big = UnixStream::connect(&path).unwrap();
        big.write_all(&(u32::MAX).to_be_bytes()).unwrap();
        let mut junk = UnixStream::connect(&path).unwrap();
        junk.write_all(&[0, 0, 0, 3, b'x', b'y', b'z']).unwrap();
        for _ in 0..50 {
            assert!(server.service(0).is_empty());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let err = read_frame(&mut big);
        assert!(
            err["error"].as_str().unwrap().contains("too large"),
            "{err}"
        );
        let err = read_frame(&mut junk);
        assert!(
            err["error"].as_str().unwrap().contains("Invalid JSON"),
            "{err}"
        );
        // Both are closed after the error.
        let mut rest = Vec::new();
        assert_eq!(big.read_to_end(&mut rest).unwrap(), 0);
        assert_eq!(junk.read_to_end(&mut rest).unwrap(), 0);
        server.close();
    }

    #[test]
    fn silent_and_half_sent_clients_are_dropped_at_their_deadlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let mut server = Server::open(&path, 0o600, false).unwrap();
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(&[0, 0, 0, 10, b'{']).unwrap();
        let _silent = UnixStream::connect(&path).unwrap();
        for _ in 0..20 {
            server.service(0);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(server.clients.len(), 2);
        server.service(FRAME_DEADLINE_MS + 1);
        assert_eq!(server.clients.len(), 1, "the half-sent request is dropped");
        server.service(IDLE_MS + 1);
        assert!(server.clients.is_empty(), "the silent client is dropped");
        server.close();
    }

    #[test]
    fn clients_beyond_the_limit_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = socket_path(&dir);
        let mut server = Server::open(&path, 0o600, false).unwrap();
        let mut held: Vec<UnixStream> = (0..MAX_CLIENTS)
            .map(|_| UnixStream::connect(&path).unwrap())
            .collect();
        server.service(0);
        let mut extra = UnixStream::connect(&path).unwrap();
        server.service(0);
        assert_eq!(server.clients.len(), MAX_CLIENTS);
        let err = read_frame(&mut extra);
        assert!(err["error"].as_str().unwrap().contains("Too many"), "{err}");
        held.clear();
        server.close();
    }
}
