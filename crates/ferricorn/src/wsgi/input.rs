//! `wsgi.input`: the request body, streamed from the socket on demand.
//!
//! Reads release the GIL while waiting for the client. The reader never
//! consumes bytes past the end of the body, so a pipelined next request stays
//! in `leftover()`. `Expect: 100-continue` is answered at the first read, so
//! an app that refuses the request early never makes the client send the body.
//!
//! Copies: `read(n)` of a Content-Length body whose result size is known
//! (at most 4 MiB) allocates the `bytes` once and reads the socket straight
//! into it; larger reads grow a buffer by reading into its spare capacity.
//! Only bytes that arrived with the head, and chunked bodies, go through the
//! decoder's buffer. docs/profile.md has why (page faults, not parsing).
//!
//! gunicorn counterpart: `http.body.Body` (`read`, `readline`, `readlines`, `__iter__`).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use ferricorn_http::body::Decoder;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::stream::Stream;

const READ_CHUNK: usize = 64 * 1024;
/// Largest single read straight into a growing result (`read()` of a body
/// too large for [`DIRECT_MAX`]).
const BIG_READ: usize = 1024 * 1024;
/// `read()` results up to this size are allocated once, at their final
/// size, as Python `bytes` and filled from the socket with no copy; larger
/// ones grow as the data arrives, so a client announcing a huge
/// Content-Length does not make the worker allocate it up front.
const DIRECT_MAX: usize = 4 * 1024 * 1024;

pub struct BodyReader {
    stream: Arc<Stream>,
    decoder: Decoder,
    /// Raw bytes read from the socket, not yet decoded, from `raw_pos`.
    raw: Vec<u8>,
    raw_pos: usize,
    /// Decoded body bytes not yet handed to the app, from `dec_pos`.
    decoded: Vec<u8>,
    dec_pos: usize,
    send_continue: bool,
    /// A framing error met while decoding (the server answers with its status).
    pub error: Option<ferricorn_http::Error>,
}

impl BodyReader {
    pub fn new(
        stream: Arc<Stream>,
        decoder: Decoder,
        leftover: Vec<u8>,
        send_continue: bool,
    ) -> Self {
        BodyReader {
            stream,
            decoder,
            raw: leftover,
            raw_pos: 0,
            decoded: Vec::new(),
            dec_pos: 0,
            send_continue,
            error: None,
        }
    }

    fn available(&self) -> &[u8] {
        &self.decoded[self.dec_pos..]
    }

    /// Decode more body bytes; `Ok(false)` at the end of the body.
    fn fill(&mut self) -> io::Result<bool> {
        if self.dec_pos > 0 && self.dec_pos == self.decoded.len() {
            self.decoded.clear();
            self.dec_pos = 0;
        }
        loop {
            if self.decoder.is_done() {
                return Ok(false);
            }
            if self.raw_pos < self.raw.len() {
                let before = self.decoded.len();
                let used = self
                    .decoder
                    .decode(&self.raw[self.raw_pos..], &mut self.decoded)
                    .map_err(|e| {
                        let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                        self.error = Some(e);
                        err
                    })?;
                self.raw_pos += used;
                if self.decoded.len() > before {
                    return Ok(true);
                }
                if used > 0 {
                    continue;
                }
            }
            self.continue_once()?;
            // Need more raw bytes: compact and read.
            self.raw.drain(..self.raw_pos);
            self.raw_pos = 0;
            let want = match self.decoder.remaining() {
                Some(n) => clamp(n, READ_CHUNK).max(1),
                None => READ_CHUNK,
            };
            let n = retry(|| self.stream.read_append(&mut self.raw, want))?;
            if n == 0 {
                return Err(disconnected());
            }
        }
    }

    fn continue_once(&mut self) -> io::Result<()> {
        if self.send_continue {
            self.send_continue = false;
            (&*self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        Ok(())
    }

    /// Whether the next body bytes can be read from the socket straight
    /// into the caller's buffer: a Content-Length body with nothing
    /// buffered. Returns the body bytes still to come.
    fn direct(&self) -> Option<u64> {
        if self.dec_pos < self.decoded.len() || self.raw_pos < self.raw.len() {
            return None;
        }
        self.decoder.remaining().filter(|&n| n > 0)
    }

    /// The exact length `read(limit)` will return, when it is known before
    /// reading: Content-Length bodies (`None` for chunked ones, or after an error).
    pub fn known_len(&self, limit: Option<usize>) -> Option<usize> {
        let rest = self.decoder.remaining()?;
        let total = usize::try_from(rest)
            .ok()?
            .checked_add(self.available().len())?;
        Some(limit.map_or(total, |l| l.min(total)))
    }

    /// Fill `dst` with body bytes; fewer only at the end of the body.
    /// Content-Length bodies go from the socket straight into `dst`.
    pub fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let mut pos = 0;
        while pos < dst.len() {
            let avail = self.available();
            if !avail.is_empty() {
                let n = avail.len().min(dst.len() - pos);
                dst[pos..pos + n].copy_from_slice(&avail[..n]);
                self.dec_pos += n;
                pos += n;
                continue;
            }
            if let Some(rest) = self.direct() {
                self.continue_once()?;
                let want = clamp(rest, dst.len() - pos);
                let target = &mut dst[pos..pos + want];
                let n = retry(|| (&*self.stream).read(target))?;
                if n == 0 {
                    return Err(disconnected());
                }
                self.decoder.advance(n as u64);
                pos += n;
                continue;
            }
            if !self.fill()? {
                break;
            }
        }
        Ok(pos)
    }

    /// Read up to `limit` bytes (all remaining when `None`).
    pub fn read(&mut self, limit: Option<usize>) -> io::Result<Vec<u8>> {
        self.read_until(limit, false)
    }

    /// Read one line (up to and including `\n`), at most `limit` bytes.
    pub fn readline(&mut self, limit: Option<usize>) -> io::Result<Vec<u8>> {
        self.read_until(limit, true)
    }

    /// Read up to `limit` bytes, stopping after the first `\n` when `line` is set.
    fn read_until(&mut self, limit: Option<usize>, line: bool) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            if !line {
                if let Some(rest) = self.direct() {
                    // Content-Length body, nothing buffered: straight into `out`.
                    self.continue_once()?;
                    let max = clamp(rest, want.min(BIG_READ));
                    let n = retry(|| self.stream.read_append(&mut out, max))?;
                    if n == 0 {
                        return Err(disconnected());
                    }
                    self.decoder.advance(n as u64);
                    continue;
                }
            }
            if self.available().is_empty() && !self.fill()? {
                break;
            }
            let avail = self.available();
            let window = &avail[..avail.len().min(want)];
            let newline = if line {
                window.iter().position(|&b| b == b'\n')
            } else {
                None
            };
            let take = newline.map_or(window.len(), |nl| nl + 1);
            out.extend_from_slice(&window[..take]);
            self.dec_pos += take;
            if newline.is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// Read and discard the rest of the body (before reusing the connection).
    pub fn drain(&mut self, max: u64) -> io::Result<bool> {
        let mut total = 0u64;
        loop {
            total += self.available().len() as u64;
            self.dec_pos = self.decoded.len();
            if total > max {
                return Ok(false);
            }
            if !self.fill()? {
                return Ok(true);
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Bytes read from the socket after the end of the body (a pipelined request).
    pub fn leftover(&self) -> &[u8] {
        &self.raw[self.raw_pos..]
    }

    /// Whether request bytes may remain unread on the socket when the
    /// connection closes now: body bytes not read yet, or bytes after the
    /// body already read (pipelining: more may follow). A Content-Length
    /// body read whole from the socket along with the head (a small POST
    /// the app ignored) leaves nothing unread.
    pub fn unread(&self) -> bool {
        let buffered = (self.raw.len() - self.raw_pos) as u64;
        if self.decoder.is_done() {
            return buffered > 0;
        }
        match self.decoder.remaining() {
            Some(n) => buffered != n,
            None => true, // chunked: where it ends is not known before decoding it
        }
    }
}

fn clamp(n: u64, max: usize) -> usize {
    usize::try_from(n).map_or(max, |n| n.min(max))
}

fn disconnected() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "client disconnected before the end of the body",
    )
}

/// Run a read, again when a signal interrupted it.
fn retry(mut f: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

fn to_py_err(e: io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

/// The `wsgi.input` object handed to the app.
#[pyclass(module = "ferricorn", name = "Input", frozen, freelist = 8)]
pub struct Input {
    pub reader: Arc<Mutex<BodyReader>>,
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

impl Input {
    fn with_reader<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut BodyReader) -> io::Result<T> + Send,
    ) -> PyResult<T> {
        let reader = &self.reader;
        py.detach(|| {
            let mut guard = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .map_err(to_py_err)
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let known = self
            .reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .known_len(limit);
        if let Some(n) = known.filter(|&n| n > 0 && n <= DIRECT_MAX) {
            // One allocation at the final size, filled straight from the socket.
            return PyBytes::new_with(py, n, |dst| {
                let got = self.with_reader(py, |r| r.read_into(dst))?;
                if got == n {
                    Ok(())
                } else {
                    Err(to_py_err(disconnected()))
                }
            });
        }
        let data = self.with_reader(py, |r| r.read(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let data = self.with_reader(py, |r| r.readline(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|h| *h > 0);
        let list = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.with_reader(py, |r| r.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            list.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_reader(py, |r| r.readline(None))?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }
}

#[cfg(test)]
mod tests {
    //! The body source without Python: a parsed head's framing, bytes
    //! scripted on the other end of a socket pair.
    use super::BodyReader;
    use crate::stream::Stream;
    use ferricorn_http::body::Decoder;
    use ferricorn_http::parse::{BodyKind, Options};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    fn reader(kind: BodyKind, buffered: &[u8], expect: bool) -> (BodyReader, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let decoder = Decoder::new(&kind, &Options::default());
        let r = BodyReader::new(
            Arc::new(Stream::from(a)),
            decoder,
            buffered.to_vec(),
            expect,
        );
        (r, b)
    }

    /// What the server wrote to the client so far (none: empty).
    fn written(peer: &mut UnixStream) -> Vec<u8> {
        peer.set_nonblocking(true).unwrap();
        let mut out = Vec::new();
        let _ = peer.read_to_end(&mut out);
        peer.set_nonblocking(false).unwrap();
        out
    }

    #[test]
    fn a_body_read_with_the_head_leaves_the_next_request_for_the_connection() {
        let (alone, _peer) = reader(BodyKind::Length(5), b"hello", false);
        assert!(!alone.unread(), "the whole body came with the head");
        let (mut r, _peer) = reader(BodyKind::Length(5), b"helloGET / HTTP/1.1\r\n", false);
        assert!(r.unread(), "bytes past the body: more may follow");
        assert_eq!(r.read(None).unwrap(), b"hello");
        assert!(r.is_done());
        assert_eq!(r.leftover(), b"GET / HTTP/1.1\r\n");
        assert!(r.unread(), "pipelined bytes: more may follow");
    }

    #[test]
    fn continue_is_sent_once_at_the_first_read_that_waits() {
        let (mut r, mut peer) = reader(BodyKind::Length(6), b"", true);
        assert!(
            written(&mut peer).is_empty(),
            "nothing before the app reads"
        );
        peer.write_all(b"abc").unwrap();
        assert_eq!(r.read(Some(3)).unwrap(), b"abc");
        assert_eq!(written(&mut peer), b"HTTP/1.1 100 Continue\r\n\r\n");
        peer.write_all(b"def").unwrap();
        assert_eq!(r.read(None).unwrap(), b"def");
        assert!(written(&mut peer).is_empty(), "only once");
    }

    #[test]
    fn no_continue_when_the_body_is_already_here() {
        let (mut r, mut peer) = reader(BodyKind::Length(3), b"abc", true);
        assert_eq!(r.read(None).unwrap(), b"abc");
        assert!(written(&mut peer).is_empty());
    }

    #[test]
    fn a_chunked_body_is_decoded_across_reads() {
        let (mut r, mut peer) = reader(BodyKind::Chunked, b"3\r\nabc\r\n", false);
        assert!(r.unread(), "where a chunked body ends is not known yet");
        peer.write_all(b"2\r\nde\r\n0\r\n\r\nNEXT").unwrap();
        assert_eq!(r.readline(None).unwrap(), b"abcde");
        assert!(r.is_done());
        assert_eq!(r.leftover(), b"NEXT");
    }

    #[test]
    fn a_body_left_unread_is_unread_until_drained() {
        let (mut r, mut peer) = reader(BodyKind::Length(10), b"12345", false);
        assert!(r.unread());
        peer.write_all(b"67890").unwrap();
        assert!(r.drain(64).unwrap(), "drained within the bound");
        assert!(!r.unread());
        let (mut big, mut peer) = reader(BodyKind::Length(100), b"", false);
        peer.write_all(&[b'x'; 100]).unwrap();
        assert!(
            !big.drain(10).unwrap(),
            "more than the bound: the connection cannot be kept"
        );
    }

    #[test]
    fn the_client_leaving_mid_body_is_an_error() {
        let (mut r, peer) = reader(BodyKind::Length(10), b"123", false);
        drop(peer);
        let err = r.read(None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
