//! `start_response`, the legacy `write()` callable, and the writer that
//! frames and sends the response.
//!
//! Invariants: headers go out with the first non-empty body chunk (or at the
//! end for an empty body); once they are sent, `start_response` with
//! `exc_info` re-raises; writes that may block release the GIL (a small
//! response is first offered to the socket without blocking, holding it:
//! a send that cannot wait needs no hand-off). Body chunks of
//! [`DIRECT_WRITE`] bytes or more are sent with writev from the app's
//! `bytes` (held, immutable) rather than copied behind the head.
//!
//! gunicorn counterpart: `http.wsgi.Response` (`start_response`, `write`,
//! `process_headers`, `close`).

use std::io::{self, IoSlice, Write};
use std::sync::{Arc, Mutex};

use ferricorn_http::date::DATE_LEN;
use ferricorn_http::h1::Exchange;
use ferricorn_http::response::{BodyEncoder, Framing, encode_head};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::stream::Stream;

/// Body chunks at least this large are not copied behind the head: they go
/// out with one writev of (queued bytes, chunk) straight from the
/// application's `bytes`. Smaller ones are copied so that a head and a small
/// body leave in one plain write.
pub const DIRECT_WRITE: usize = 16 * 1024;

/// The application's response headers, validated, as (name, value) bytes.
/// Shared (not copied) when an app passes the same header tuples again.
pub type Headers = Arc<Vec<(Vec<u8>, Vec<u8>)>>;

/// Header lists of at most this many tuples are remembered per thread.
const HEADER_CACHE_MAX: usize = 32;

/// The last header list `start_response` validated on this thread: its
/// tuples (held, so no other object can take their identity) and what
/// they parsed to. A tuple and the `str`s in it are immutable, so the same
/// tuple objects in the same order mean the same validated headers.
#[derive(Default)]
struct HeaderCache {
    items: Vec<Py<PyAny>>,
    parsed: Headers,
    /// Lookups that missed in a row: an app that builds a new list per
    /// response (most frameworks) is only sampled now and then.
    misses: u32,
}

/// After this many misses in a row, remember one list in [`SAMPLE_EVERY`].
const MISSES_BEFORE_SAMPLING: u32 = 16;
const SAMPLE_EVERY: u32 = 64;

impl Drop for HeaderCache {
    /// At thread (or process) exit the interpreter may be gone: the few
    /// references are leaked rather than released without it.
    fn drop(&mut self) {
        for item in self.items.drain(..) {
            std::mem::forget(item);
        }
    }
}

thread_local! {
    static HEADER_CACHE: std::cell::RefCell<HeaderCache> = std::cell::RefCell::default();
    /// A response buffer left by the previous request on this thread.
    static SPARE_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Response buffers at most this large are kept for the next request.
const SPARE_BUF_MAX: usize = 64 * 1024;

pub struct ResponseWriter {
    stream: Arc<Stream>,
    /// The request facts the framing depends on (`ferricorn_http::h1`).
    exchange: Exchange,
    pub status: Option<String>,
    pub headers: Headers,
    pub headers_sent: bool,
    framing: Option<Framing>,
    encoder: Option<BodyEncoder>,
    buf: Vec<u8>,
    /// Body bytes written to the socket.
    pub sent: u64,
}

impl ResponseWriter {
    pub fn new(stream: Arc<Stream>, exchange: Exchange) -> Self {
        ResponseWriter {
            stream,
            exchange,
            status: None,
            headers: Headers::default(),
            headers_sent: false,
            framing: None,
            encoder: None,
            buf: {
                let buf = SPARE_BUF.with(std::cell::Cell::take);
                if buf.capacity() == 0 {
                    Vec::with_capacity(1024)
                } else {
                    buf
                }
            },
            sent: 0,
        }
    }

    /// The three-digit status code as bytes ("200"), if a status was set.
    pub fn status_code(&self) -> Option<&[u8]> {
        self.status
            .as_deref()
            .map(|s| s.as_bytes().get(..3).unwrap_or(s.as_bytes()))
    }

    /// The connection's stream (what `gunicorn.socket` duplicates).
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Write bytes outside this response's framing: an interim `103`, or a
    /// complete error response in place of it. Call without the GIL.
    pub fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        (&*self.stream).write_all(bytes)
    }

    /// How the response head framed it (once made): what
    /// `h1::Conn::finish` decides the connection's fate by.
    pub fn framing(&self) -> Option<Framing> {
        self.framing
    }

    /// An interim response (`103 Early Hints`) may still go out: HTTP/1.1
    /// or later, and the final head not made yet.
    pub fn interim_allowed(&self) -> bool {
        self.exchange.interim_allowed() && !self.headers_sent
    }

    /// Encode the head into `buf` if not done yet (needs `start_response`
    /// to have been called; no I/O).
    pub fn ensure_head(&mut self) -> io::Result<()> {
        if self.headers_sent {
            return Ok(());
        }
        let status = self
            .status
            .as_deref()
            .ok_or_else(|| io::Error::other("the application did not call start_response"))?;
        // Keep-alive as the worker stands now: a stop that began while the
        // app ran closes this connection.
        let ctx = self
            .exchange
            .response_context(crate::lifecycle::current(), crate::util::server_header());
        let key = HeadKey {
            head: self.exchange.head_method,
            version: ctx.version,
            request_keep_alive: ctx.request_keep_alive,
            server_allows_keep_alive: ctx.server_allows_keep_alive,
        };
        let buf = &mut self.buf;
        let framing = match cached_head(&self.headers, status, key, buf) {
            Some(framing) => framing,
            None => {
                let start = buf.len();
                let headers = &self.headers[..];
                let framing = crate::app::with_date(|date| {
                    encode_head(buf, status.as_bytes(), headers, &ctx, date)
                })
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                remember_head(&self.headers, status, key, &buf[start..], framing);
                framing
            }
        };
        self.encoder = Some(BodyEncoder::new(&framing));
        self.framing = Some(framing);
        self.headers_sent = true;
        Ok(())
    }

    /// Queue a body chunk (and the head before the first one).
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() && !self.headers_sent {
            return Ok(());
        }
        self.ensure_head()?;
        if let Some(enc) = self.encoder.as_mut() {
            enc.chunk(data, &mut self.buf);
        }
        Ok(())
    }

    /// Queue a small body chunk, or send a large one at once with what is
    /// queued (see [`DIRECT_WRITE`]). Call without the GIL.
    pub fn write_body(&mut self, data: &[u8]) -> io::Result<()> {
        if data.len() < DIRECT_WRITE {
            return self.push(data);
        }
        self.ensure_head()?;
        let n = match self.encoder.as_mut() {
            Some(enc) => enc.chunk_start(data.len(), &mut self.buf),
            None => 0,
        };
        let result = write_all_vectored(
            &self.stream,
            &mut [IoSlice::new(&self.buf), IoSlice::new(&data[..n])],
        );
        self.buf.clear();
        if let Some(enc) = self.encoder.as_mut() {
            enc.chunk_end(n, &mut self.buf);
        }
        self.sent = self.encoder.as_ref().map_or(0, |e| e.written());
        result
    }

    /// Queue the end of the body (and the head for an empty body).
    pub fn push_finish(&mut self) -> io::Result<()> {
        self.ensure_head()?;
        if let Some(enc) = self.encoder.as_mut() {
            enc.finish(&mut self.buf);
        }
        Ok(())
    }

    /// Send `src` as (the rest of) the body with sendfile(2), framed like any
    /// other chunk. Call without the GIL.
    pub fn send_file(&mut self, src: &super::file_wrapper::FileSource) -> io::Result<()> {
        self.ensure_head()?;
        let want = usize::try_from(src.len).unwrap_or(usize::MAX);
        let n = match self.encoder.as_mut() {
            Some(enc) => enc.chunk_start(want, &mut self.buf),
            None => 0,
        };
        self.flush()?;
        let mut offset = src.offset;
        self.stream
            .send_file(std::os::fd::AsFd::as_fd(&src.fd), &mut offset, n)?;
        if let Some(enc) = self.encoder.as_mut() {
            enc.chunk_end(n, &mut self.buf);
        }
        Ok(())
    }

    /// Send what is queued as far as the socket takes it without blocking
    /// (`MSG_DONTWAIT`): `Ok(true)` when all of it went out. What is left
    /// stays queued for [`Self::flush`]. Safe to call holding the GIL.
    pub fn flush_nowait(&mut self) -> io::Result<bool> {
        let result = self.stream.send_nowait(&self.buf);
        let done = *result.as_ref().unwrap_or(&0);
        self.buf.drain(..done);
        self.sent = self.encoder.as_ref().map_or(0, |e| e.written());
        result.map(|_| self.buf.is_empty())
    }

    /// Bytes queued and not sent yet.
    pub fn queued(&self) -> usize {
        self.buf.len()
    }

    /// Move what is queued to `out` for the worker to send later; it counts
    /// as sent (the access log's byte count).
    pub fn defer_into(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.buf);
        self.sent = self.encoder.as_ref().map_or(0, |e| e.written());
    }

    /// Send what is queued. Call without the GIL.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = (&*self.stream).write_all(&self.buf);
        self.sent = self.encoder.as_ref().map_or(0, |e| e.written());
        self.buf.clear();
        result
    }
}

/// The request facts a response head depends on.
#[derive(Clone, Copy, PartialEq, Eq)]
struct HeadKey {
    head: bool,
    version: (u8, u8),
    request_keep_alive: bool,
    server_allows_keep_alive: bool,
}

/// The last response head encoded on this thread for a header list that
/// `start_response` shares (see [`HeaderCache`]): a response with the same
/// status, the same shared headers (`Arc` identity: the cache holds it, so
/// no other list can take its address) and the same request facts gets the
/// same bytes, except the date.
struct HeadCache {
    headers: Headers,
    status: String,
    key: HeadKey,
    bytes: Vec<u8>,
    /// Where the date starts in `bytes`.
    date_at: usize,
    framing: Framing,
}

thread_local! {
    static HEAD_CACHE: std::cell::RefCell<Option<HeadCache>> = const { std::cell::RefCell::new(None) };
}

/// Append the remembered head (with the current date) if it fits.
fn cached_head(
    headers: &Headers,
    status: &str,
    key: HeadKey,
    out: &mut Vec<u8>,
) -> Option<Framing> {
    HEAD_CACHE.with(|cache| {
        let cache = cache.try_borrow().ok()?;
        let c = cache.as_ref()?;
        if !(Arc::ptr_eq(&c.headers, headers) && c.key == key && c.status == status) {
            return None;
        }
        let start = out.len() + c.date_at;
        out.extend_from_slice(&c.bytes);
        crate::app::with_date(|date| out[start..start + DATE_LEN].copy_from_slice(date.get()));
        Some(c.framing)
    })
}

/// Remember an encoded head whose header list is shared by the header cache.
fn remember_head(headers: &Headers, status: &str, key: HeadKey, bytes: &[u8], framing: Framing) {
    if Arc::strong_count(headers) < 2 {
        return;
    }
    const DATE: &[u8] = b"\r\nDate: ";
    let Some(at) = bytes.windows(DATE.len()).position(|w| w == DATE) else {
        return;
    };
    let date_at = at + DATE.len();
    if bytes.len() < date_at + DATE_LEN {
        return;
    }
    HEAD_CACHE.with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            let mut reused = cache.take().map(|c| c.bytes).unwrap_or_default();
            reused.clear();
            reused.extend_from_slice(bytes);
            *cache = Some(HeadCache {
                headers: headers.clone(),
                status: status.to_owned(),
                key,
                bytes: reused,
                date_at,
                framing,
            });
        }
    });
}

impl Drop for ResponseWriter {
    fn drop(&mut self) {
        if self.buf.capacity() <= SPARE_BUF_MAX {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            SPARE_BUF.with(|spare| spare.set(buf));
        }
    }
}

/// `write_all` over several buffers: writev until every byte is out.
fn write_all_vectored(stream: &Stream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match (&*stream).write_vectored(bufs) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The `start_response` callable handed to the app.
#[pyclass(module = "ferricorn", name = "StartResponse", frozen, freelist = 8)]
pub struct StartResponse {
    pub writer: Arc<Mutex<ResponseWriter>>,
}

/// The `write(data)` callable `start_response` returns.
#[pyclass(module = "ferricorn", name = "Write", frozen, freelist = 8)]
pub struct WriteCallable {
    writer: Arc<Mutex<ResponseWriter>>,
}

pub(super) fn latin1(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    let s: &Bound<'_, pyo3::types::PyString> = obj.cast().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a str, not {}", type_name(obj)))
    })?;
    // ASCII (nearly every status and header): CPython hands out its own
    // buffer, no decoding, one copy.
    if let Ok(text) = s.to_str() {
        if text.is_ascii() {
            return Ok(text.as_bytes().to_vec());
        }
    }
    let text = s.to_cow()?;
    text.chars()
        .map(|c| {
            u8::try_from(u32::from(c))
                .map_err(|_| PyValueError::new_err(format!("{what} {text:?} is not latin-1")))
        })
        .collect()
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into())
}

pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The validated headers of `headers` if it is a list or tuple of the very
/// tuples this thread validated last time.
fn cached_headers(headers: &Bound<'_, PyAny>) -> Option<Headers> {
    HEADER_CACHE.with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        let n = cache.items.len();
        let same = n > 0
            && if let Ok(list) = headers.cast_exact::<pyo3::types::PyList>() {
                list.len() == n && list.iter().zip(&cache.items).all(|(a, b)| a.is(b))
            } else if let Ok(tuple) = headers.cast_exact::<PyTuple>() {
                tuple.len() == n && tuple.iter().zip(&cache.items).all(|(a, b)| a.is(b))
            } else {
                false
            };
        if same {
            cache.misses = 0;
            Some(cache.parsed.clone())
        } else {
            cache.misses = cache.misses.saturating_add(1);
            None
        }
    })
}

/// Remember `parsed` as what `headers` validated to, when it is a short
/// list or tuple of exact tuples.
fn remember_headers(headers: &Bound<'_, PyAny>, parsed: &Headers) {
    let sampled = HEADER_CACHE.with(|cache| {
        cache
            .try_borrow()
            .is_ok_and(|c| c.misses <= MISSES_BEFORE_SAMPLING || c.misses % SAMPLE_EVERY == 0)
    });
    if !sampled {
        return;
    }
    let Some(items) = header_items(headers) else {
        return;
    };
    if items.len() > HEADER_CACHE_MAX || !items.iter().all(|i| i.is_exact_instance_of::<PyTuple>())
    {
        return;
    }
    HEADER_CACHE.with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            cache.items = items.into_iter().map(Bound::unbind).collect();
            cache.parsed = parsed.clone();
        }
    });
}

/// The items of an exact list or tuple (no Python code runs).
fn header_items<'py>(headers: &Bound<'py, PyAny>) -> Option<Vec<Bound<'py, PyAny>>> {
    if let Ok(list) = headers.cast_exact::<pyo3::types::PyList>() {
        Some(list.iter().collect())
    } else if let Ok(tuple) = headers.cast_exact::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    }
}

/// Validate the application's header list (gunicorn `process_headers`).
fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut parsed = Vec::new();
    for item in headers.try_iter()? {
        let item = item?;
        let pair: &Bound<'_, PyTuple> = item.cast().map_err(|_| {
            PyTypeError::new_err(format!(
                "header must be a (name, value) tuple, not {}",
                type_name(&item)
            ))
        })?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err("header must be a (name, value) tuple"));
        }
        let name = latin1(&pair.get_item(0)?, "header name")?;
        let value = latin1(&pair.get_item(1)?, "header value")?;
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(PyValueError::new_err(format!(
                "Invalid header name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(PyValueError::new_err(format!(
                "Invalid header value for {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        parsed.push((name, value));
    }
    Ok(parsed)
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<WriteCallable> {
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match exc_info.filter(|e| !e.is_none()) {
            Some(info) if w.headers_sent => {
                let tuple: &Bound<'_, PyTuple> = info.cast()?;
                let value = tuple.get_item(1)?;
                return Err(PyErr::from_value(value));
            }
            Some(_) => {}
            None if w.status.is_some() => {
                return Err(PyAssertionError::new_err("Response headers already set!"));
            }
            None => {}
        }
        let status_bytes = latin1(status, "status")?;
        let valid_status = status_bytes.len() >= 3
            && status_bytes[..3].iter().all(u8::is_ascii_digit)
            && (status_bytes.len() == 3 || status_bytes[3] == b' ')
            && !status_bytes
                .iter()
                .any(|&b| b == b'\r' || b == b'\n' || b == 0);
        if !valid_status {
            return Err(PyValueError::new_err(format!(
                "Invalid status {:?}",
                String::from_utf8_lossy(&status_bytes)
            )));
        }
        let parsed = match cached_headers(headers) {
            Some(parsed) => parsed,
            None => {
                let parsed = Arc::new(parse_headers(headers)?);
                remember_headers(headers, &parsed);
                parsed
            }
        };
        let _ = py;
        w.status = Some(String::from_utf8(status_bytes).unwrap_or_else(|e| {
            // Latin-1 beyond ASCII in the reason phrase: as before, lossily.
            String::from_utf8_lossy(e.as_bytes()).into_owned()
        }));
        w.headers = parsed;
        Ok(WriteCallable {
            writer: self.writer.clone(),
        })
    }
}

#[pymethods]
impl WriteCallable {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes: &Bound<'_, PyBytes> = data.cast().map_err(|_| {
            PyTypeError::new_err(format!(
                "write() argument must be bytes, not {}",
                type_name(data)
            ))
        })?;
        // `bytes` are immutable and `data` holds a reference: the slice stays
        // valid while the GIL is released.
        let chunk = bytes.as_bytes();
        let writer = &self.writer;
        py.detach(|| {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            w.write_body(chunk)?;
            w.flush()
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    //! The response sink without Python: status and headers set as
    //! `start_response` sets them, the bytes read on the other end.
    use super::{Exchange, ResponseWriter};
    use crate::stream::Stream;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn writer(side: Exchange, headers: &[(&str, &str)]) -> (ResponseWriter, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let mut w = ResponseWriter::new(Arc::new(Stream::from(a)), side);
        w.status = Some("200 OK".into());
        w.headers = Arc::new(
            headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        );
        (w, b)
    }

    fn side(version: (u8, u8), keep_alive: bool) -> Exchange {
        Exchange {
            head_method: false,
            version,
            request_keep_alive: keep_alive,
            server_keep_alive: true,
        }
    }

    /// Send `body` as the app's whole response; what the client got.
    fn respond(mut w: ResponseWriter, mut peer: UnixStream, body: &[u8]) -> (bool, String) {
        w.push(body).unwrap();
        w.push_finish().unwrap();
        assert!(
            w.flush_nowait().unwrap(),
            "a small response goes out at once"
        );
        let keep = w.framing().is_some_and(|f| f.keep_alive);
        drop(w);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        (keep, String::from_utf8(got).unwrap())
    }

    #[test]
    fn a_sized_response_keeps_the_connection() {
        let (w, peer) = writer(side((1, 1), true), &[("Content-Length", "5")]);
        let (keep, got) = respond(w, peer, b"hello");
        assert!(keep);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(!got.contains("Connection: close"), "{got}");
        assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    }

    #[test]
    fn an_unsized_response_is_chunked_on_1_1_and_closes_on_1_0() {
        let (w, peer) = writer(side((1, 1), true), &[]);
        let (keep, got) = respond(w, peer, b"hello");
        assert!(keep);
        assert!(got.contains("Transfer-Encoding: chunked"), "{got}");
        assert!(got.ends_with("5\r\nhello\r\n0\r\n\r\n"), "{got}");

        let (w, peer) = writer(side((1, 0), true), &[]);
        let (keep, got) = respond(w, peer, b"hello");
        assert!(!keep, "no length on HTTP/1.0: the close ends the body");
        assert!(got.ends_with("\r\n\r\nhello"), "{got}");
    }

    #[test]
    fn the_server_or_the_client_saying_close_closes() {
        let mut s = side((1, 1), true);
        s.server_keep_alive = false;
        let (w, peer) = writer(s, &[("Content-Length", "2")]);
        let (keep, got) = respond(w, peer, b"ok");
        assert!(!keep);
        assert!(got.contains("Connection: close"), "{got}");

        let (w, peer) = writer(side((1, 1), false), &[("Content-Length", "2")]);
        let (keep, got) = respond(w, peer, b"ok");
        assert!(!keep);
        assert!(got.contains("Connection: close"), "{got}");
    }

    #[test]
    fn a_head_request_gets_no_body() {
        let mut s = side((1, 1), true);
        s.head_method = true;
        let (w, peer) = writer(s, &[("Content-Length", "5")]);
        let (keep, got) = respond(w, peer, b"hello");
        assert!(keep);
        assert!(got.ends_with("Content-Length: 5\r\n\r\n"), "{got}");
    }

    #[test]
    fn raw_bytes_bypass_the_framing() {
        let (w, mut peer) = writer(side((1, 1), true), &[]);
        w.write_raw(b"HTTP/1.1 103 Early Hints\r\n\r\n").unwrap();
        drop(w);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"HTTP/1.1 103 Early Hints\r\n\r\n");
    }
}
