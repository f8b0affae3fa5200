//! gunicorn's own environ entries beyond PEP 3333: `gunicorn.socket` (the
//! client connection as a Python `socket.socket`) and `wsgi.early_hints`
//! (a callable that sends `103 Early Hints`).
//!
//! Invariants: the socket object owns a duplicate of the connection's
//! descriptor (same connection, its own number), so the app closing it, or
//! its garbage collection, never closes a descriptor the worker owns (which
//! could be reused by then). Without a [`SocketSlot`] (sync, gthread) each
//! request gets a fresh object and `release` closes its duplicate once the
//! app returned, so a reference kept past the request is inert. With one
//! (evloop) the object is made at the connection's first request and handed
//! to each later request on it, as gunicorn hands every request the same
//! connection socket: a dup(2), a Python object and a close(2) per
//! connection instead of per request. An app that closed (or `detach`ed) it
//! gets a fresh one at its next request; the slot closes the duplicate when
//! the connection ends, so a reference kept past the connection is inert.
//! Early hints go out only
//! before the response head, only to HTTP/1.1+ clients, written under the
//! response writer's lock so they never interleave with the response.
//!
//! gunicorn counterpart: `http/wsgi.py` (`default_environ`'s
//! `gunicorn.socket`, `_make_early_hints_callback`).

use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyTuple};

use super::Conn;
use super::response::{ResponseWriter, is_token_byte, latin1};
use crate::sock::Stream;

static SOCKET_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// A connection's `gunicorn.socket` object, kept across its requests.
/// Dropping it closes the object's duplicate descriptor (the connection's
/// own descriptor is the worker's).
#[derive(Default)]
pub struct SocketSlot(Mutex<Option<Py<PyAny>>>);

impl SocketSlot {
    /// The kept object if the app has not closed it, else a fresh one (kept).
    fn get<'py>(&self, py: Python<'py>, conn: &Conn<'_>) -> PyResult<Bound<'py, PyAny>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sock) = slot.as_ref() {
            let sock = sock.bind(py);
            let fd: i64 = sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
            if fd >= 0 {
                return Ok(sock.clone());
            }
        }
        let sock = socket_object(py, conn)?;
        *slot = Some(sock.clone().unbind());
        Ok(sock)
    }
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let kept = self.0.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(sock) = kept {
            Python::attach(|py| release(sock.bind(py)));
        }
    }
}

/// Add `gunicorn.socket` and `wsgi.early_hints` to a request's environ.
/// Returns the socket object to hand to [`release`] after the app returned,
/// `None` when the connection's [`SocketSlot`] keeps it.
pub fn add<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    conn: &Conn<'_>,
    writer: &Arc<Mutex<ResponseWriter>>,
    version: (u8, u8),
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let (sock, owned) = match conn.socket {
        Some(slot) => (slot.get(py, conn)?, false),
        None => (socket_object(py, conn)?, true),
    };
    env.set_item(pyo3::intern!(py, "gunicorn.socket"), &sock)?;
    let hints = EarlyHints {
        writer: writer.clone(),
        stream: conn.stream.clone(),
        version,
    };
    env.set_item(pyo3::intern!(py, "wsgi.early_hints"), Py::new(py, hints)?)?;
    Ok(owned.then_some(sock))
}

/// Close the socket object's duplicate descriptor (the connection stays open).
pub fn release(sock: &Bound<'_, PyAny>) {
    let _ = sock.call_method0(pyo3::intern!(sock.py(), "close"));
}

/// Import what the extras need at request time. Called by a worker before
/// it drops privileges (`--user`), which may leave the standard library
/// unreadable.
pub fn prepare(py: Python<'_>) -> PyResult<()> {
    socket_class(py).map(|_| ())
}

fn socket_class(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    SOCKET_CLASS.get_or_try_init(py, || {
        py.import("socket")
            .and_then(|m| m.getattr("socket"))
            .map(Bound::unbind)
    })
}

fn socket_object<'py>(py: Python<'py>, conn: &Conn<'_>) -> PyResult<Bound<'py, PyAny>> {
    let class = socket_class(py)?;
    // The listener's family is the connection's (`server` holds its address).
    let family = match &**conn.stream {
        Stream::Unix(_) => libc::AF_UNIX,
        Stream::Tcp(_) if conn.server.0.contains(':') => libc::AF_INET6,
        Stream::Tcp(_) => libc::AF_INET,
    };
    let dup = crate::sys::fd::dup_borrowed(conn.stream.raw_fd())
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    // The socket object owns the duplicate from here on.
    let sock = class.bind(py).call1((
        family,
        libc::SOCK_STREAM,
        0,
        std::os::fd::IntoRawFd::into_raw_fd(dup),
    ))?;
    // With `socket.setdefaulttimeout()` in effect Python has just made the
    // descriptor non-blocking; the worker's connections block (with timeouts).
    if !sock
        .call_method0(pyo3::intern!(py, "gettimeout"))?
        .is_none()
    {
        sock.call_method1(pyo3::intern!(py, "settimeout"), (py.None(),))?;
    }
    Ok(sock)
}

/// `environ['wsgi.early_hints'](headers)`: send `103 Early Hints` with these
/// `(name, value)` headers (str or bytes). Ignored once the response head was
/// sent and for HTTP/1.0 clients; may be called several times.
#[pyclass(module = "ferricorn", name = "EarlyHints", frozen)]
pub struct EarlyHints {
    writer: Arc<Mutex<ResponseWriter>>,
    stream: Arc<Stream>,
    version: (u8, u8),
}

fn text_of(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<u8>> {
    match obj.cast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes().to_vec()),
        Err(_) => latin1(obj, what),
    }
}

/// The `103` response for `headers`, validated as gunicorn validates them
/// (names are tokens; values hold no control character but tab).
fn encode(headers: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = b"HTTP/1.1 103 Early Hints\r\n".to_vec();
    for item in headers.try_iter()? {
        let item = item?;
        let pair: &Bound<'_, PyTuple> = item
            .cast()
            .map_err(|_| PyTypeError::new_err("early hint must be a (name, value) tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "early hint must be a (name, value) tuple",
            ));
        }
        let name = text_of(&pair.get_item(0)?, "header name")?;
        let value = text_of(&pair.get_item(1)?, "header value")?;
        // Named as Python's repr shows it, as gunicorn's message does.
        let shown = super::environ::latin1_str(headers.py(), &name)
            .repr()
            .map(|r| r.to_string())
            .unwrap_or_default();
        if name.is_empty() || !name.iter().all(|&b| is_token_byte(b)) {
            return Err(PyValueError::new_err(format!(
                "Invalid response header name from the application: {shown}"
            )));
        }
        if value
            .iter()
            .any(|&b| b != b' ' && b != b'\t' && !(0x21..=0x7e).contains(&b) && b < 0x80)
        {
            // Only the name: the value may hold what must not leak.
            return Err(PyValueError::new_err(format!(
                "Invalid response header from the application: {shown}"
            )));
        }
        let start = value
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .unwrap_or(value.len());
        let end = value
            .iter()
            .rposition(|&b| b != b' ' && b != b'\t')
            .map_or(start, |i| i + 1);
        out.extend_from_slice(&name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value[start..end]);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

#[pymethods]
impl EarlyHints {
    fn __call__(&self, py: Python<'_>, headers: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.version < (1, 1) {
            return Ok(());
        }
        if self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .headers_sent
        {
            return Ok(());
        }
        let out = encode(headers)?;
        let (writer, stream) = (self.writer.clone(), self.stream.clone());
        py.detach(|| {
            // Holding the writer's lock: the head cannot start meanwhile
            // (its queue is empty until `headers_sent`).
            let w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if w.headers_sent {
                return Ok(());
            }
            std::io::Write::write_all(&mut &*stream, &out)
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
    }
}
