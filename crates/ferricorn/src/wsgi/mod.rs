//! The WSGI interface: the environ (rendered from the request's facts,
//! `crate::request`), `wsgi.input` (over the body source), `start_response`
//! and the body (into the response sink), `wsgi.errors`,
//! `wsgi.file_wrapper`, and calling the app for one request. The app
//! boundary, [`serve`], takes request facts and an [`Exchange`] (body
//! source, response sink), never the connection itself. Loading the app,
//! error responses and tracebacks are protocol-neutral (`crate::app`).
//!
//! `serve()` is the one place that calls the application. Invariants: the
//! iterable's `close()` is called exactly once whatever happens; an exception
//! before the headers went out becomes a 500 and a logged traceback; after the
//! headers went out the connection is closed instead.
//!
//! gunicorn counterpart: `http/wsgi.py` (`create`, `base_environ`),
//! `workers/sync.py` (`handle_request`), `workers/base.py` (`handle_error`).

pub mod environ;
pub mod errors_stream;
pub mod extras;
pub mod file_wrapper;
pub mod input;
pub mod response;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::glogging;
use crate::request::Request;
use ferricorn_http::h1::Response;
use input::{BodyReader, Input};
use response::{ResponseWriter, StartResponse};

use crate::app::{error_response, format_traceback};

/// How the request ended, for the access log and the connection.
pub struct Outcome {
    pub status: Vec<u8>,
    /// The status the app gave `start_response` (`"200 OK"`), if it did.
    pub status_line: Option<String>,
    /// Body bytes sent, `None` when no response went out.
    pub sent: Option<u64>,
    pub response_headers: response::Headers,
    /// How the response went, for the connection's verdict
    /// (`h1::Conn::finish`): framed whole, failed, or refused.
    pub response: Response,
    pub environ: Py<PyDict>,
    /// The app (or reading its request body) raised.
    pub failed: bool,
}

/// The connection's side of one request at the app boundary: where the
/// body comes from, where the response goes, and what the connection keeps
/// across its requests. The worker's driver builds it; the app side never
/// sees the connection itself.
pub struct Exchange<'a> {
    /// The body source (reads through the connection's stream). Shared:
    /// `wsgi.input` holds it too.
    pub body: Arc<Mutex<BodyReader>>,
    /// The response sink (writes through the connection's stream). Shared:
    /// `start_response` and `wsgi.early_hints` hold it too.
    pub response: Arc<Mutex<ResponseWriter>>,
    /// Where the connection keeps its `gunicorn.socket` object across its
    /// requests (evloop); `None`: a fresh one per request.
    pub socket: Option<&'a extras::SocketSlot>,
    /// Where the response may be held back (evloop); `None`: sent at once.
    pub held: Option<&'a Held>,
}

/// A connection's complete responses held back in memory until its
/// worker's batch of ready connections has been served (evloop), so a
/// sleeping client is woken once per batch, at no syscall. The worker sends
/// `out` before anything else is written to the connection and before it
/// closes.
#[derive(Default)]
pub struct Held {
    /// Complete responses not sent yet.
    pub out: Mutex<Vec<u8>>,
    /// Set by the worker while more connections of the batch wait for
    /// their turn: then a streamed body is held too, while its chunks come
    /// quickly. A list or tuple body (made in one piece) is always held.
    pub others_follow: AtomicBool,
}

impl Held {
    /// Take what `w` has queued, if it is small enough to hold
    /// ([`HOLD_MAX`]); false when it must be sent now.
    fn take(&self, w: &mut ResponseWriter) -> bool {
        if w.queued() > HOLD_MAX {
            return false;
        }
        w.defer_into(&mut self.out.lock().unwrap_or_else(|e| e.into_inner()));
        true
    }
}

/// The largest response left in [`Held::out`]; larger ones go out at once.
pub const HOLD_MAX: usize = 64 * 1024;

/// A streamed body is held only while its chunks come within this time of
/// the first (then they go out as they come).
pub const HOLD_FOR: std::time::Duration = std::time::Duration::from_millis(1);

/// Call the app for one request and send its response.
pub fn serve(
    py: Python<'_>,
    app: &environ::AppContext,
    req: &Request<'_>,
    ex: Exchange<'_>,
) -> Outcome {
    let Exchange {
        body: reader,
        response: writer,
        socket,
        held,
    } = ex;

    let result = (|| -> PyResult<(Py<PyDict>, PyResult<()>)> {
        let input = Py::new(
            py,
            Input {
                reader: reader.clone(),
            },
        )?;
        let environ = app.environ(py, req, input.into_any())?;
        let sock = extras::add(py, &environ, req, socket, &writer)?;
        let start_response = Py::new(
            py,
            StartResponse {
                writer: writer.clone(),
            },
        )?;
        let outcome = call_app(py, app, &environ, start_response, &writer, held);
        if let Some(sock) = sock {
            extras::release(&sock);
        }
        Ok((environ.unbind(), outcome))
    })();

    let (environ, app_result) = match result {
        Ok((env, r)) => (env, r),
        Err(e) => (PyDict::new(py).unbind(), Err(e)),
    };

    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    let failed = app_result.is_err();
    let (response, status, sent) = match app_result {
        Ok(()) => (
            w.framing().map_or(Response::Failed, Response::Complete),
            w.status_code().map(<[u8]>::to_vec).unwrap_or_default(),
            Some(w.sent),
        ),
        Err(err) => {
            let framing_error = reader.lock().unwrap_or_else(|e| e.into_inner()).error();
            let (status, sent) = answer_failure(py, req, &mut w, framing_error, &err);
            (Response::Failed, status, sent)
        }
    };
    let response_headers = std::mem::take(&mut w.headers);
    let status_line = w.status.take();
    drop(w);

    // A connection the response keeps is reusable only once the whole
    // body is read: what the app left is drained (cheaply, or the
    // connection closes: `h1::Conn::finish` sees the body not done).
    if matches!(response, Response::Complete(f) if f.keep_alive) {
        drain_body(py, &reader);
    }
    Outcome {
        status,
        status_line,
        sent,
        response_headers,
        response,
        environ,
        failed,
    }
}

/// After the app (or reading its body) raised: log it and answer it where
/// no response went out yet (the framing error's 4xx, else a 500; nothing
/// for a client that left). Returns the status and body bytes to log.
fn answer_failure(
    py: Python<'_>,
    req: &Request<'_>,
    w: &mut ResponseWriter,
    framing_error: Option<ferricorn_http::Error>,
    err: &PyErr,
) -> (Vec<u8>, Option<u64>) {
    let status = w.status_code().map(<[u8]>::to_vec).unwrap_or_default();
    let uri = String::from_utf8_lossy(req.raw_target());
    let replace = |w: &mut ResponseWriter, code: u16, out: Vec<u8>| {
        py.detach(|| {
            let _ = w.write_raw(&out);
        });
        (code.to_string().into_bytes(), Some(0))
    };
    if let Some(http_err) = framing_error {
        glogging::warning!("Invalid request from ip={}: {}", req.peer.addr, http_err);
        if w.headers_sent {
            return (status, None);
        }
        let code = http_err.status();
        let out = error_response(code, http_err.reason(), &http_err.to_string());
        return replace(w, code, out);
    }
    if is_client_gone(py, err) {
        glogging::debug!(
            "Ignoring connection error while handling request {uri}: {}",
            err.value(py)
        );
        return (status, Some(w.sent));
    }
    glogging::exception(&format!(
        "Error handling request {} {uri}\n{}",
        String::from_utf8_lossy(req.method()),
        format_traceback(py, err)
    ));
    if w.headers_sent {
        return (status, Some(w.sent));
    }
    replace(w, 500, error_response(500, "Internal Server Error", ""))
}

/// Read what the app left of the request body (up to
/// `h1::DRAIN_MAX`) so the connection can serve its next request. Not when
/// the client still waits for `100 Continue` (the app never read): a 100
/// now would come after the final response, where the client takes it for
/// the next one's start, and the body would never come without it; the
/// connection closes instead (`h1::Conn::finish` sees the body not done).
fn drain_body(py: Python<'_>, reader: &Arc<Mutex<BodyReader>>) {
    {
        let mut r = reader.lock().unwrap_or_else(|e| e.into_inner());
        if r.continue_pending() {
            return;
        }
        // A body already read to its end (or none, as for most GETs) drains
        // without a socket read: no need to release the GIL for it.
        if r.is_done() {
            let _ = r.drain(ferricorn_http::h1::DRAIN_MAX);
            return;
        }
    }
    py.detach(|| {
        let mut r = reader.lock().unwrap_or_else(|e| e.into_inner());
        let _ = r.drain(ferricorn_http::h1::DRAIN_MAX);
    });
}

fn is_client_gone(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PyBrokenPipeError>(py)
        || err.is_instance_of::<pyo3::exceptions::PyConnectionResetError>(py)
}

/// Call the app, send the body, and always call `close()` on the iterable.
fn call_app(
    py: Python<'_>,
    app: &environ::AppContext,
    environ: &Bound<'_, PyDict>,
    start_response: Py<StartResponse>,
    writer: &Arc<Mutex<ResponseWriter>>,
    held: Option<&Held>,
) -> PyResult<()> {
    let iterable = app.callable().bind(py).call1((environ, start_response))?;
    let sent = send_body(py, app, &iterable, writer, held);
    // A plain list or tuple has no `close`; asking would raise and clear an
    // AttributeError per request (about 4,000 instructions, docs/profile.md).
    let plain =
        iterable.is_exact_instance_of::<PyList>() || iterable.is_exact_instance_of::<PyTuple>();
    let closed = if !plain
        && iterable
            .hasattr(pyo3::intern!(py, "close"))
            .unwrap_or(false)
    {
        iterable
            .call_method0(pyo3::intern!(py, "close"))
            .map(|_| ())
    } else {
        Ok(())
    };
    sent.and(closed)
}

fn io_to_py(e: std::io::Error) -> PyErr {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe => {
            pyo3::exceptions::PyBrokenPipeError::new_err(e.to_string())
        }
        std::io::ErrorKind::ConnectionReset => {
            pyo3::exceptions::PyConnectionResetError::new_err(e.to_string())
        }
        _ => pyo3::exceptions::PyOSError::new_err(e.to_string()),
    }
}

fn bytes_of<'a, 'py>(item: &'a Bound<'py, PyAny>) -> PyResult<&'a Bound<'py, PyBytes>> {
    item.cast::<PyBytes>().map_err(|_| {
        let name = item
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        pyo3::exceptions::PyTypeError::new_err(format!(
            "the response body must be an iterable of bytes, got {name}"
        ))
    })
}

fn send_body(
    py: Python<'_>,
    app: &environ::AppContext,
    iterable: &Bound<'_, PyAny>,
    writer: &Arc<Mutex<ResponseWriter>>,
    held: Option<&Held>,
) -> PyResult<()> {
    if app.sendfile() {
        if let Some(sent) = send_file_body(py, iterable, writer) {
            return sent;
        }
    }
    // Fastest path: a list of small `bytes` (`[b"Hello"]`). Checked whole
    // first, so that a bad item still fails before the head is queued; no
    // Python code runs between the check and the copies.
    if let Ok(list) = iterable.cast_exact::<PyList>() {
        let small = |i: Bound<'_, PyAny>| {
            i.cast::<PyBytes>()
                .is_ok_and(|b| b.as_bytes().len() < response::DIRECT_WRITE)
        };
        if list.iter().all(small) {
            return send_small_list(py, list, writer);
        }
    }
    // Fast path: a list or tuple is the whole body; send head and body in one write.
    let items: Option<Vec<Bound<'_, PyAny>>> = if let Ok(list) = iterable.cast::<PyList>() {
        Some(list.iter().collect())
    } else if let Ok(tuple) = iterable.cast::<PyTuple>() {
        Some(tuple.iter().collect())
    } else {
        None
    };
    match items {
        Some(items) => send_sequence(py, &items, writer, held),
        None => send_stream(py, iterable, writer, held),
    }
}

/// `wsgi.file_wrapper` around a real file: sendfile(2), no copies through
/// Python (where the stream sends from a descriptor). `None`: not such a
/// body, send it otherwise.
fn send_file_body(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    writer: &Arc<Mutex<ResponseWriter>>,
) -> Option<PyResult<()>> {
    let fw = iterable.cast::<file_wrapper::FileWrapper>().ok()?;
    let direct = {
        let w = writer.lock().unwrap_or_else(|e| e.into_inner());
        w.stream().can_sendfile()
    };
    let src = direct.then(|| fw.borrow().file_source(py)).flatten()?;
    Some(
        py.detach(|| {
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            w.send_file(&src)?;
            w.push_finish()?;
            w.flush()
        })
        .map_err(io_to_py),
    )
}

/// A list of small `bytes`, all copied behind the head and offered to the
/// socket holding the GIL.
fn send_small_list(
    py: Python<'_>,
    list: &Bound<'_, PyList>,
    writer: &Arc<Mutex<ResponseWriter>>,
) -> PyResult<()> {
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.ensure_head()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    for item in list.iter() {
        w.write_body(bytes_of(&item)?.as_bytes())
            .map_err(io_to_py)?;
    }
    w.push_finish().map_err(io_to_py)?;
    if w.flush_nowait().map_err(io_to_py)? {
        return Ok(());
    }
    drop(w);
    flush(py, writer)
}

/// A list or tuple body: the whole response in one write (or held, see
/// [`Held`]).
fn send_sequence(
    py: Python<'_>,
    items: &[Bound<'_, PyAny>],
    writer: &Arc<Mutex<ResponseWriter>>,
    held: Option<&Held>,
) -> PyResult<()> {
    let chunks: Vec<&[u8]> = items
        .iter()
        .map(|i| bytes_of(i).map(|b| b.as_bytes()))
        .collect::<PyResult<_>>()?;
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.ensure_head()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    if chunks.iter().all(|c| c.len() < response::DIRECT_WRITE) {
        // All of it is copied behind the head; offer that to the socket
        // without blocking, keeping the GIL: for a small response the
        // kernel takes it at once, and releasing and retaking the GIL
        // would cost more than the send. Only what the socket could not
        // take waits for it without the GIL.
        for chunk in &chunks {
            w.write_body(chunk).map_err(io_to_py)?;
        }
        w.push_finish().map_err(io_to_py)?;
        if held.is_some_and(|h| h.take(&mut w)) {
            return Ok(());
        }
        if w.flush_nowait().map_err(io_to_py)? {
            return Ok(());
        }
        drop(w);
        return flush(py, writer);
    }
    drop(w);
    // Small chunks are queued behind the head and leave in one write;
    // large ones go out with writev, uncopied. The `bytes` are immutable
    // and `items` holds them, so the slices outlive the released GIL.
    py.detach(|| {
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        for chunk in &chunks {
            w.write_body(chunk)?;
        }
        w.push_finish()?;
        w.flush()
    })
    .map_err(io_to_py)
}

/// A streamed body. While others of the batch wait (see `Held`), its
/// small chunks are held as long as they come within `HOLD_FOR` of the
/// first and stay under `HOLD_MAX` in all; from then on they go out as
/// they come.
fn send_stream(
    py: Python<'_>,
    iterable: &Bound<'_, PyAny>,
    writer: &Arc<Mutex<ResponseWriter>>,
    held: Option<&Held>,
) -> PyResult<()> {
    let mut hold_until = held
        .filter(|h| h.others_follow.load(Ordering::Relaxed))
        .map(|_| std::time::Instant::now() + HOLD_FOR);
    for item in iterable.try_iter()? {
        let item = item?;
        let data = bytes_of(&item)?.as_bytes();
        let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
        if data.len() < response::DIRECT_WRITE {
            w.push(data)
                .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
            if hold_until.is_some_and(|t| w.queued() <= HOLD_MAX && std::time::Instant::now() < t) {
                continue;
            }
            hold_until = None;
            drop(w);
            flush(py, writer)?;
            continue;
        }
        hold_until = None;
        w.ensure_head()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        drop(w);
        py.detach(|| {
            writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_body(data)
        })
        .map_err(io_to_py)?;
    }
    let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
    w.push_finish()
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    if hold_until.is_some() && held.is_some_and(|h| h.take(&mut w)) {
        return Ok(());
    }
    drop(w);
    flush(py, writer)
}

/// Send what the writer has queued, without the GIL (nothing to send: no
/// GIL hand-off either).
fn flush(py: Python<'_>, writer: &Arc<Mutex<ResponseWriter>>) -> PyResult<()> {
    if writer.lock().unwrap_or_else(|e| e.into_inner()).queued() == 0 {
        return Ok(());
    }
    py.detach(|| writer.lock().unwrap_or_else(|e| e.into_inner()).flush())
        .map_err(io_to_py)
}
