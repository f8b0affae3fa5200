//! `wsgi.input`: the request body, streamed from the socket on demand.
//!
//! Reads release the GIL while waiting for the client. The body's state is
//! `ferricorn_http::h1::Body`: it never takes bytes past the end of the
//! body (a pipelined next request stays with the connection), and it says
//! when `Expect: 100-continue` is answered (at the first read that must
//! wait, so an app that refuses the request early never makes the client
//! send the body).
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
use std::time::Instant;

use ferricorn_http::h1::{Body, Chunk, Drain};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::stream::Stream;

/// Largest single read straight into a growing result (`read()` of a body
/// too large for [`DIRECT_MAX`]).
const BIG_READ: usize = 1024 * 1024;
/// `read()` results up to this size are allocated once, at their final
/// size, as Python `bytes` and filled from the socket with no copy; larger
/// ones grow as the data arrives, so a client announcing a huge
/// Content-Length does not make the worker allocate it up front.
const DIRECT_MAX: usize = 4 * 1024 * 1024;

/// The body source: the request's `h1::Body` (its framing, 100-continue and
/// buffered bytes: every decision is there) read through the connection's
/// stream.
pub struct BodyReader {
    stream: Arc<Stream>,
    /// The request's body; the worker takes it back when the request ends
    /// (`take_body`), so a `wsgi.input` kept past its request reads nothing.
    body: Option<Body>,
    /// Reads of the body fail from then on (`set_deadline`).
    deadline: Option<Instant>,
}

impl BodyReader {
    pub fn new(stream: Arc<Stream>, body: Body) -> Self {
        BodyReader {
            stream,
            body: Some(body),
            deadline: None,
        }
    }

    /// The body must be in by `by`: each read waits at most until then,
    /// and one past it fails with `TimedOut` (a slow upload cannot hold a
    /// gthread thread past `--timeout`).
    pub fn set_deadline(&mut self, by: Instant) {
        self.deadline = Some(by);
    }

    /// Before a read from the client (see [`before_read`]).
    fn before_read(&self) -> io::Result<()> {
        before_read(&self.stream, self.deadline)
    }

    /// The body, back to the connection (`h1::Conn::finish`).
    pub fn take_body(&mut self) -> Option<Body> {
        self.body.take()
    }

    /// A framing error met while decoding (the server answers with its status).
    pub fn error(&self) -> Option<ferricorn_http::Error> {
        self.body.as_ref().and_then(Body::error)
    }

    /// The next decoded bytes, reading from the client as needed (`None`:
    /// the end of the body). Not consumed: take them with `Body::consume`.
    fn next_chunk(&mut self) -> io::Result<Option<&mut Body>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(None);
            };
            match body.data().map_err(invalid)? {
                Chunk::Data(_) => break,
                Chunk::End => return Ok(None),
                Chunk::NeedRead => {
                    before_read(&self.stream, self.deadline)?;
                    fill(&self.stream, body)?
                }
            }
        }
        Ok(self.body.as_mut())
    }

    /// The exact length `read(limit)` will return, when it is known before
    /// reading: Content-Length bodies (`None` for chunked ones, or after an error).
    pub fn known_len(&self, limit: Option<usize>) -> Option<usize> {
        let total = usize::try_from(self.body.as_ref()?.known_len()?).ok()?;
        Some(limit.map_or(total, |l| l.min(total)))
    }

    /// Fill `dst` with body bytes; fewer only at the end of the body.
    /// Content-Length bodies go from the socket straight into `dst`.
    pub fn read_into(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        let mut pos = 0;
        while pos < dst.len() {
            if let Some(rest) = self.direct()? {
                let want = clamp(rest, dst.len() - pos);
                let target = &mut dst[pos..pos + want];
                self.before_read()?;
                let n = retry(|| (&*self.stream).read(target))?;
                self.direct_received(n)?;
                pos += n;
                continue;
            }
            let Some(body) = self.next_chunk()? else {
                break;
            };
            let Ok(Chunk::Data(avail)) = body.data() else {
                break;
            };
            let n = avail.len().min(dst.len() - pos);
            dst[pos..pos + n].copy_from_slice(&avail[..n]);
            body.consume(n);
            pos += n;
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
                if let Some(rest) = self.direct()? {
                    // Content-Length body, nothing buffered: straight into `out`.
                    let max = clamp(rest, want.min(BIG_READ));
                    self.before_read()?;
                    let n = retry(|| self.stream.read_append(&mut out, max))?;
                    self.direct_received(n)?;
                    continue;
                }
            }
            let Some(body) = self.next_chunk()? else {
                break;
            };
            let Ok(Chunk::Data(avail)) = body.data() else {
                break;
            };
            let window = &avail[..avail.len().min(want)];
            let newline = if line {
                window.iter().position(|&b| b == b'\n')
            } else {
                None
            };
            let take = newline.map_or(window.len(), |nl| nl + 1);
            out.extend_from_slice(&window[..take]);
            body.consume(take);
            if newline.is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// When the next body bytes may be read straight into the caller's
    /// buffer (a Content-Length body, nothing buffered): how many remain,
    /// with `100 Continue` sent first if it is owed.
    fn direct(&mut self) -> io::Result<Option<u64>> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        let Some(rest) = body.direct() else {
            return Ok(None);
        };
        if let Some(interim) = body.take_continue() {
            (&*self.stream).write_all(interim)?;
        }
        Ok(Some(rest))
    }

    fn direct_received(&mut self, n: usize) -> io::Result<()> {
        if n == 0 {
            return Err(disconnected());
        }
        if let Some(body) = self.body.as_mut() {
            body.direct_received(n).map_err(invalid)?;
        }
        Ok(())
    }

    /// Read and discard the rest of the body, at most `max` bytes (before
    /// reusing the connection): true when the body is complete.
    pub fn drain(&mut self, max: u64) -> io::Result<bool> {
        let mut budget = max;
        let Some(body) = self.body.as_mut() else {
            return Ok(true);
        };
        loop {
            match body.drain(&mut budget).map_err(invalid)? {
                Drain::Done => return Ok(true),
                Drain::OverBudget => return Ok(false),
                Drain::NeedRead => {
                    before_read(&self.stream, self.deadline)?;
                    fill(&self.stream, body)?
                }
            }
        }
    }

    /// `100 Continue` is still owed: the client waits for it before it
    /// sends the body.
    pub fn continue_pending(&self) -> bool {
        self.body.as_ref().is_some_and(Body::continue_pending)
    }

    /// The body is complete on the wire (nothing more to read for it).
    pub fn is_done(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_done)
    }
}

/// Before a read from the client with a body deadline `by`: the time left
/// becomes the read's timeout; none left fails the read.
fn before_read(stream: &Stream, by: Option<Instant>) -> io::Result<()> {
    let Some(by) = by else {
        return Ok(());
    };
    let left = by.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "request body not received within --timeout",
        ));
    }
    stream.set_read_timeout(Some(left))
}

/// Read more of `body` from the client, `100 Continue` first if it is owed.
/// The client leaving is an error (not a framing one: nothing to answer).
fn fill(stream: &Stream, body: &mut Body) -> io::Result<()> {
    if let Some(interim) = body.take_continue() {
        (&*stream).write_all(interim)?;
    }
    let (buf, want) = body.read_buf();
    let n = retry(|| stream.read_append(buf, want))?;
    if n == 0 {
        return Err(disconnected());
    }
    body.received(n).map_err(invalid)
}

/// A framing error as the app sees it (the worker answers with its status).
fn invalid(e: ferricorn_http::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
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
    //! The body source without Python: a body framed by a parsed head
    //! (`h1::Body`), its bytes scripted on the other end of a socket pair.
    //! What the body decides (100-continue, unread bytes) is tested with
    //! `h1` itself; these test the reads through the stream.
    use super::BodyReader;
    use crate::stream::Stream;
    use ferricorn_http::h1::Body;
    use ferricorn_http::parse::{BodyKind, Options};
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    fn reader(kind: BodyKind, buffered: &[u8], expect: bool) -> (BodyReader, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let body = Body::new(&kind, &Options::default(), buffered.to_vec(), expect);
        (BodyReader::new(Arc::new(Stream::from(a)), body), b)
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
    fn a_body_that_came_with_the_head_is_read_without_the_socket() {
        let (mut r, _peer) = reader(BodyKind::Length(5), b"hello", false);
        assert_eq!(r.known_len(None), Some(5));
        assert_eq!(r.known_len(Some(2)), Some(2));
        assert_eq!(r.read(None).unwrap(), b"hello");
        assert!(r.is_done());
        assert_eq!(r.read(None).unwrap(), b"", "the end of the body");
    }

    #[test]
    fn continue_is_sent_once_at_the_first_read_that_waits() {
        let (mut r, mut peer) = reader(BodyKind::Length(6), b"", true);
        assert!(
            written(&mut peer).is_empty(),
            "nothing before the app reads"
        );
        peer.write_all(b"abc").unwrap();
        let mut dst = [0u8; 3];
        assert_eq!(
            r.read_into(&mut dst).unwrap(),
            3,
            "straight into the caller's buffer"
        );
        assert_eq!(&dst, b"abc");
        assert_eq!(written(&mut peer), b"HTTP/1.1 100 Continue\r\n\r\n");
        peer.write_all(b"def").unwrap();
        assert_eq!(r.read(None).unwrap(), b"def");
        assert!(written(&mut peer).is_empty(), "only once");
    }

    #[test]
    fn a_chunked_body_is_decoded_across_reads() {
        let (mut r, mut peer) = reader(BodyKind::Chunked, b"3\r\nabc\r\n", false);
        peer.write_all(b"2\r\nd\n\r\n0\r\n\r\n").unwrap();
        assert_eq!(r.readline(None).unwrap(), b"abcd\n");
        assert_eq!(r.readline(None).unwrap(), b"");
        assert!(r.is_done());
    }

    #[test]
    fn a_body_is_drained_within_the_bound_only() {
        let (mut r, mut peer) = reader(BodyKind::Length(10), b"12345", false);
        peer.write_all(b"67890").unwrap();
        assert!(r.drain(64).unwrap(), "drained within the bound");
        assert!(r.is_done());
        let (mut big, mut peer) = reader(BodyKind::Length(100), b"", false);
        peer.write_all(&[b'x'; 100]).unwrap();
        assert!(
            !big.drain(10).unwrap(),
            "more than the bound: the connection cannot be kept"
        );
    }

    #[test]
    fn the_client_leaving_mid_body_is_an_error_not_a_framing_one() {
        let (mut r, peer) = reader(BodyKind::Length(10), b"123", false);
        drop(peer);
        let err = r.read(None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(r.error().is_none(), "nothing to answer: the client is gone");
    }

    #[test]
    fn a_bad_chunk_is_a_framing_error_the_worker_answers() {
        let (mut r, _peer) = reader(BodyKind::Chunked, b"zz\r\n", false);
        let err = r.read(None).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(r.error().map(|e| e.status()), Some(400));
    }

    #[test]
    fn an_input_kept_past_its_request_reads_nothing() {
        let (mut r, mut peer) = reader(BodyKind::Length(4), b"", false);
        assert!(r.take_body().is_some());
        peer.write_all(b"next").unwrap();
        assert_eq!(
            r.read(None).unwrap(),
            b"",
            "the connection's bytes are not the app's"
        );
        assert!(r.is_done());
    }
}
