//! gunicorn's own environ entries beyond PEP 3333: `gunicorn.socket` (the
//! client connection as a Python `socket.socket`) and `wsgi.early_hints`
//! (a callable that sends `103 Early Hints`).
//!
//! `gunicorn.socket` is lazy: few apps use it, and a ready socket object
//! cost every request three syscalls (the `dup`, CPython's `getsockname`
//! check of the descriptor, the `close`) and a Python `__init__`/`close`.
//! The environ gets an instance of `LazySocket`, a `socket.socket` subclass
//! made with `__new__` alone (no descriptor yet; `isinstance(s,
//! socket.socket)` holds), and a [`SocketSource`] (the connection, kept
//! alive by its `Arc`) waits in a dict under the object's `id`. The first
//! attribute access on the object (any method, `fileno()`, `makefile`, ...)
//! takes the source, turns the object into a plain `socket.socket` in
//! place (same slots, so `__class__` can be assigned) and initialises it on
//! a duplicate of the connection's descriptor; after that it is an ordinary
//! socket object at no further cost. Making the duplicate also gives the
//! connection the I/O read timeout (the worker may have left the header
//! timeout in place, `conn::serve_one`) and counts it ([`dups_made`]), so
//! the worker knows to `shutdown` the connection before closing it.
//!
//! Invariants: the socket object owns a duplicate of the connection's
//! descriptor (same connection, its own number), so the app closing it, or
//! its garbage collection, never closes a descriptor the worker owns (which
//! could be reused by then). Without a [`SocketSlot`] (sync, gthread) each
//! request gets a fresh object and `release` ends it once the app returned:
//! an untouched one loses its source (touched later it becomes a closed
//! socket: `fileno()` is -1), a touched one has its duplicate closed; either
//! way a reference kept past the request is inert. With one (evloop) the
//! object is made at the connection's first request and handed to each
//! later request on it, as gunicorn hands every request the same
//! connection socket. An app that closed (or `detach`ed) it gets a fresh one
//! at its next request; the slot releases it when the connection ends, so a
//! reference kept past the connection is inert. Early hints go out only
//! before the response head, only to HTTP/1.1+ clients, written under the
//! response writer's lock so they never interleave with the response.
//!
//! gunicorn counterpart: `http/wsgi.py` (`default_environ`'s
//! `gunicorn.socket`, `_make_early_hints_callback`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyModule, PyTuple};

use super::response::{ResponseWriter, is_token_byte, latin1};
use crate::request::Request;
use crate::stream::Stream;

/// The `LazySocket` class, `socket.socket.__new__` and the dict of sources.
static LAZY: PyOnceLock<Lazy> = PyOnceLock::new();

/// `gunicorn.socket` duplicates made so far in this process.
static DUPS_MADE: AtomicU64 = AtomicU64::new(0);

struct Lazy {
    class: Py<PyAny>,
    new: Py<PyAny>,
    pending: Py<PyDict>,
}

/// Python side of the lazy socket. `__getattribute__` runs under a lock so
/// that two threads touching a fresh object at once make one duplicate.
/// `__class__` is answered without materialising: `isinstance(obj, str)`
/// and the like look it up.
const LAZY_SOCKET_PY: &std::ffi::CStr = cr#"
import os as _os
import socket as _socket_module
import threading as _threading

_socket = _socket_module.socket
_SOCK_STREAM = _socket_module.SOCK_STREAM
_getattribute = object.__getattribute__
_setattr = object.__setattr__
_lock = _threading.Lock()
pending = {}


class LazySocket(_socket):
    """The client connection (gunicorn.socket); set up on first use."""

    __slots__ = ()

    def __getattribute__(self, name):
        if name == "__class__":
            return type(self)
        with _lock:
            if type(self) is LazySocket:
                _materialise(self)
        return _getattribute(self, name)


# Named as the class it turns into at first use (type names in logs, reprs).
LazySocket.__module__ = "socket"
LazySocket.__name__ = LazySocket.__qualname__ = "socket"


def _materialise(sock):
    source = pending.pop(id(sock), None)
    # A closed socket.socket unless the source is still there.
    _setattr(sock, "_io_refs", 0)
    _setattr(sock, "_closed", True)
    _setattr(sock, "__class__", _socket)
    if source is None:
        return
    family, fd = source.dup()
    try:
        _socket.__init__(sock, family, _SOCK_STREAM, 0, fd)
    except BaseException:
        _os.close(fd)
        raise
    # With socket.setdefaulttimeout() in effect Python has just made the
    # descriptor non-blocking; the worker's connections block (with timeouts).
    if sock.gettimeout() is not None:
        sock.settimeout(None)
"#;

/// What a `LazySocket` needs to become a socket: the connection and its
/// address family.
#[pyclass(module = "ferricorn", name = "SocketSource", frozen)]
pub struct SocketSource {
    stream: Arc<Stream>,
    family: i32,
}

#[pymethods]
impl SocketSource {
    /// `(family, fd)`: a new duplicate of the connection's descriptor, owned
    /// by the caller; the connection's reads get the I/O timeout.
    fn dup(&self) -> PyResult<(i32, i32)> {
        // Counted first: a duplicate that exists is always counted.
        DUPS_MADE.fetch_add(1, Ordering::Relaxed);
        let dup = self
            .stream
            .dup_socket()
            .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
        let _ = self.stream.read_timeout_as_write();
        Ok((self.family, std::os::fd::IntoRawFd::into_raw_fd(dup)))
    }
}

/// How many `gunicorn.socket` duplicates this process has made (each may
/// outlive its request: a `makefile`, a `detach`).
pub fn dups_made() -> u64 {
    DUPS_MADE.load(Ordering::Relaxed)
}

/// A connection's `gunicorn.socket` object, kept across its requests.
/// Dropping it closes the object's duplicate descriptor (the connection's
/// own descriptor is the worker's).
#[derive(Default)]
pub struct SocketSlot(Mutex<Option<Py<PyAny>>>);

impl SocketSlot {
    /// The kept object if the app has not closed it, else a fresh one (kept).
    fn get<'py>(
        &self,
        py: Python<'py>,
        stream: &Arc<Stream>,
        family: i32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(sock) = slot.as_ref() {
            let sock = sock.bind(py);
            if is_lazy(py, sock)? {
                return Ok(sock.clone());
            }
            let fd: i64 = sock.call_method0(pyo3::intern!(py, "fileno"))?.extract()?;
            if fd >= 0 {
                return Ok(sock.clone());
            }
        }
        let sock = socket_object(py, stream, family)?;
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
    req: &Request<'_>,
    kept: Option<&SocketSlot>,
    writer: &Arc<Mutex<ResponseWriter>>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let stream = writer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .stream()
        .clone();
    // The listener's family is the connection's (`server` holds its address).
    let family = if stream.is_unix() {
        libc::AF_UNIX
    } else if req.server.0.contains(':') {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    let (sock, owned) = match kept {
        Some(slot) => (slot.get(py, &stream, family)?, false),
        None => (socket_object(py, &stream, family)?, true),
    };
    env.set_item(pyo3::intern!(py, "gunicorn.socket"), &sock)?;
    let hints = EarlyHints {
        writer: writer.clone(),
    };
    env.set_item(pyo3::intern!(py, "wsgi.early_hints"), Py::new(py, hints)?)?;
    Ok(owned.then_some(sock))
}

/// End the app's use of a socket object: an untouched one loses its source
/// (a no-op for the connection), a touched one has its duplicate closed (the
/// connection stays open).
pub fn release(sock: &Bound<'_, PyAny>) {
    let py = sock.py();
    match lazy(py) {
        Ok(l) if sock.get_type().is(l.class.bind(py)) => {
            let _ = l.pending.bind(py).del_item(sock.as_ptr() as usize);
        }
        _ => {
            let _ = sock.call_method0(pyo3::intern!(py, "close"));
        }
    }
}

/// Import what the extras need at request time. Called by a worker before
/// it drops privileges (`--user`), which may leave the standard library
/// unreadable.
pub fn prepare(py: Python<'_>) -> PyResult<()> {
    lazy(py).map(|_| ())
}

fn lazy(py: Python<'_>) -> PyResult<&Lazy> {
    LAZY.get_or_try_init(py, || {
        let module = PyModule::from_code(
            py,
            LAZY_SOCKET_PY,
            c"ferricorn_lazy_socket.py",
            c"ferricorn._lazy_socket",
        )?;
        let class = module.getattr("LazySocket")?;
        Ok(Lazy {
            new: class.getattr("__new__")?.unbind(),
            class: class.unbind(),
            pending: module.getattr("pending")?.cast_into::<PyDict>()?.unbind(),
        })
    })
}

/// Still waiting for its first use.
fn is_lazy(py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<bool> {
    Ok(sock.get_type().is(lazy(py)?.class.bind(py)))
}

/// A fresh `LazySocket` for the connection, its source filed under its id.
fn socket_object<'py>(
    py: Python<'py>,
    stream: &Arc<Stream>,
    family: i32,
) -> PyResult<Bound<'py, PyAny>> {
    let l = lazy(py)?;
    let sock = l.new.bind(py).call1((l.class.bind(py),))?;
    let source = SocketSource {
        stream: stream.clone(),
        family,
    };
    // `id(sock)` in Python: the object's address.
    l.pending
        .bind(py)
        .set_item(sock.as_ptr() as usize, Py::new(py, source)?)?;
    Ok(sock)
}

/// `environ['wsgi.early_hints'](headers)`: send `103 Early Hints` with these
/// `(name, value)` headers (str or bytes). Ignored once the response head was
/// sent and for HTTP/1.0 clients; may be called several times.
#[pyclass(module = "ferricorn", name = "EarlyHints", frozen, freelist = 8)]
pub struct EarlyHints {
    writer: Arc<Mutex<ResponseWriter>>,
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
        // HTTP/1.1 or later, and the final head not made yet.
        let allowed = self
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interim_allowed();
        if !allowed {
            return Ok(());
        }
        let out = encode(headers)?;
        let writer = self.writer.clone();
        py.detach(|| {
            // Holding the writer's lock: the head cannot start meanwhile
            // (its queue is empty until `headers_sent`).
            let w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if !w.interim_allowed() {
                return Ok(());
            }
            w.write_raw(&out)
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
    }
}
