//! The ASGI app boundary (beside `wsgi/`): a request's facts rendered into
//! an ASGI 3.0 scope, and one HTTP exchange's `receive`/`send` protocol —
//! what the app's messages mean for the bytes on the wire and what the
//! bytes the client sent mean as messages. No I/O here: the driver
//! (`workers::asgi`) reads into the body, writes what `send` appended to
//! the connection's output, and resolves the futures a `receive` or a
//! `send` had to wait on.
//!
//! Invariants:
//! - the scope is built from `request::Request`'s facts, with interned
//!   keys and cached values (header names, server and client addresses);
//! - `send` never writes more body bytes than the head announced (the
//!   response encoder's `BodyEncoder`), refuses a second start, a body
//!   before the start and a body after the last one;
//! - `receive` hands the body out as it was read, `more_body` false once
//!   the body is complete, then waits for the client to go away
//!   (`http.disconnect`);
//! - an awaitable that has nothing to wait for is a [`Ready`]: no future,
//!   no trip through the loop.
//!
//! gunicorn counterpart: `asgi/protocol.py` (`_build_http_scope`,
//! `BodyReceiver`, `_handle_http_request`'s `send`).

use std::collections::HashMap;
use std::time::Instant;

use ferricorn_http::h1::{self, Chunk};
use ferricorn_http::response::{BodyEncoder, Framing, encode_head};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyStopIteration, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};

use crate::glogging::{self, access};
use crate::request::Request;

pub mod websocket;

/// An awaitable that is already complete: awaiting it returns `value`
/// (None for `send`) without a future or a loop turn.
#[pyclass(module = "ferricorn", name = "Ready", frozen, freelist = 16)]
pub struct Ready {
    value: Option<Py<PyAny>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match &self.value {
            None => Ok(None),
            Some(v) => Err(PyStopIteration::new_err((v.clone_ref(py),))),
        }
    }

    fn send(&self, py: Python<'_>, _value: &Bound<'_, PyAny>) -> PyResult<Option<Py<PyAny>>> {
        self.__next__(py).and_then(|r| match r {
            None => Err(PyStopIteration::new_err(())),
            Some(v) => Ok(Some(v)),
        })
    }
}

/// `send`'s result when nothing has to wait: one shared object (it holds
/// no state), so a `send` that completes at once allocates nothing.
pub fn ready_none(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static READY: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    READY
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(Py::new(py, Ready { value: None })?.into_any())
        })
        .map(|r| r.clone_ref(py))
}

/// An awaitable completing at once with `value`.
pub fn ready(py: Python<'_>, value: Py<PyAny>) -> PyResult<Py<PyAny>> {
    Ok(Py::new(py, Ready { value: Some(value) })?.into_any())
}

/// Values every scope shares, and caches across requests.
pub struct Strings {
    asgi: Py<PyDict>,
    root_path: Py<PyString>,
    /// Header names as sent → their lower-cased bytes object.
    names: HashMap<Vec<u8>, Py<PyBytes>, crate::util::FnvBuild>,
    /// Per listener: `(host, port)` or `(path, None)`.
    servers: Vec<Py<PyAny>>,
    /// The last client `(addr, port)` seen.
    client: Option<(String, Option<u16>, Py<PyAny>)>,
    /// Per listener, by kind (HTTP or WebSocket, without or with `state`):
    /// a scope's keys, the constant values set (see [`Strings::template`]).
    templates: Vec<[Option<Py<PyDict>>; 4]>,
}

/// Header names remembered at most.
const NAME_CACHE: usize = 256;

impl Strings {
    /// `servers`: each listener's `(name, port)` (port empty for a Unix socket).
    pub fn new(py: Python<'_>, root_path: &str, servers: &[(String, String)]) -> PyResult<Self> {
        let asgi = PyDict::new(py);
        asgi.set_item("version", "3.0")?;
        asgi.set_item("spec_version", "2.4")?;
        let servers = servers
            .iter()
            .map(|(name, port)| -> PyResult<Py<PyAny>> {
                Ok(match port.parse::<u16>() {
                    Ok(p) => (name.as_str(), p).into_pyobject(py)?.into_any().unbind(),
                    Err(_) => (name.as_str(), py.None())
                        .into_pyobject(py)?
                        .into_any()
                        .unbind(),
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        Ok(Strings {
            asgi: asgi.unbind(),
            root_path: PyString::new(py, root_path).unbind(),
            names: HashMap::default(),
            servers,
            client: None,
            templates: Vec::new(),
        })
    }

    /// A new scope dict with every key a scope of this kind has, in
    /// order: the values all its scopes share set, the others `None` until
    /// the request's are set. A copy of a dict of the same keys costs one
    /// allocation; inserting each key grows the table twice.
    fn template<'py>(
        &mut self,
        py: Python<'py>,
        websocket: bool,
        server: usize,
        state: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let kind = usize::from(websocket) * 2 + usize::from(state);
        if let Some(t) = self.templates.get(server).and_then(|t| t[kind].as_ref()) {
            return t.bind(py).copy();
        }
        let t = PyDict::new(py);
        let none = py.None();
        let scope_type = if websocket {
            intern!(py, "websocket")
        } else {
            intern!(py, "http")
        };
        t.set_item(intern!(py, "type"), scope_type)?;
        t.set_item(intern!(py, "asgi"), self.asgi.bind(py))?;
        t.set_item(intern!(py, "http_version"), intern!(py, "1.1"))?;
        for key in [
            intern!(py, "path"),
            intern!(py, "raw_path"),
            intern!(py, "query_string"),
        ] {
            t.set_item(key, &none)?;
        }
        t.set_item(intern!(py, "root_path"), self.root_path.bind(py))?;
        t.set_item(intern!(py, "headers"), &none)?;
        if let Some(s) = self.servers.get(server) {
            t.set_item(intern!(py, "server"), s.bind(py))?;
        }
        t.set_item(intern!(py, "client"), &none)?;
        if state {
            t.set_item(intern!(py, "state"), &none)?;
        }
        if websocket {
            t.set_item(intern!(py, "scheme"), intern!(py, "ws"))?;
            t.set_item(intern!(py, "subprotocols"), &none)?;
            t.set_item(intern!(py, "extensions"), &none)?;
        } else {
            t.set_item(intern!(py, "method"), &none)?;
            t.set_item(intern!(py, "scheme"), intern!(py, "http"))?;
        }
        let scope = t.copy()?;
        if self.templates.len() <= server {
            self.templates.resize_with(server + 1, Default::default);
        }
        self.templates[server][kind] = Some(t.unbind());
        Ok(scope)
    }

    fn name<'py>(&mut self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyBytes> {
        if let Some(b) = self.names.get(name) {
            return b.bind(py).clone();
        }
        let lower = name.to_ascii_lowercase();
        let b = PyBytes::new(py, &lower);
        if self.names.len() < NAME_CACHE {
            self.names.insert(name.to_vec(), b.clone().unbind());
        }
        b
    }

    fn client<'py>(
        &mut self,
        py: Python<'py>,
        addr: &str,
        port: Option<u16>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if let Some((a, p, t)) = &self.client {
            if a == addr && *p == port {
                return Ok(t.bind(py).clone());
            }
        }
        let t = match port {
            Some(p) => (addr, p).into_pyobject(py)?.into_any(),
            None => (addr, py.None()).into_pyobject(py)?.into_any(),
        };
        self.client = Some((addr.to_string(), port, t.clone().unbind()));
        Ok(t)
    }
}

/// The decoded path as a str: UTF-8 (as ASGI asks), latin-1 where it is not.
fn path_str<'py>(py: Python<'py>, path: &[u8]) -> Bound<'py, PyString> {
    match path {
        b"/" => intern!(py, "/").clone(),
        _ => match std::str::from_utf8(path) {
            Ok(s) => PyString::new(py, s),
            Err(_) => crate::wsgi::environ::latin1_str(py, path),
        },
    }
}

/// The HTTP scope of `req`, which came on listener `server`; `state`: the
/// lifespan state, copied shallowly into the scope.
pub fn http_scope<'py>(
    py: Python<'py>,
    req: &Request<'_>,
    strings: &mut Strings,
    server: usize,
    state: Option<&Py<PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = strings.template(py, false, server, state.is_some())?;
    fill_common(py, &scope, req, strings, state)?;
    scope.set_item(
        intern!(py, "method"),
        crate::wsgi::environ::method_str(py, req.method()),
    )?;
    if req.scheme == "https" {
        scope.set_item(intern!(py, "scheme"), intern!(py, "https"))?;
    }
    Ok(scope)
}

/// On a TLS connection, the ASGI TLS extension (`scope["extensions"]
/// ["tls"]`): the verified client certificate (PEM, as a one-item chain)
/// and its subject. A certificate that fails verification fails the
/// handshake, so no request carries `client_cert_error`. `tls_version` and
/// `cipher_suite` are the negotiated IANA numbers; the server's own
/// certificate is not exposed (None).
pub fn add_tls<'py>(
    py: Python<'py>,
    scope: Bound<'py, PyDict>,
    stream: &crate::stream::Stream,
) -> PyResult<Bound<'py, PyDict>> {
    if !stream.is_tls() {
        return Ok(scope);
    }
    let cert = stream.peer_cert();
    let tls = PyDict::new(py);
    tls.set_item("server_cert", py.None())?;
    let chain = PyList::empty(py);
    if let Some(c) = &cert {
        chain.append(c.pem.as_str())?;
    }
    tls.set_item("client_cert_chain", chain)?;
    tls.set_item(
        "client_cert_name",
        cert.as_ref()
            .filter(|c| !c.subject.is_empty())
            .map(|c| c.subject.as_str()),
    )?;
    tls.set_item("client_cert_error", py.None())?;
    let negotiated = stream.tls_negotiated();
    tls.set_item("tls_version", negotiated.map(|n| n.0))?;
    tls.set_item("cipher_suite", negotiated.map(|n| n.1))?;
    let extensions = match scope.get_item(intern!(py, "extensions"))? {
        Some(e) => e.cast_into::<PyDict>()?,
        None => {
            let e = PyDict::new(py);
            scope.set_item(intern!(py, "extensions"), &e)?;
            e
        }
    };
    extensions.set_item("tls", tls)?;
    Ok(scope)
}

/// The values HTTP and WebSocket scopes share that are the request's own
/// (`scope` is a [`Strings::template`] copy).
fn fill_common(
    py: Python<'_>,
    scope: &Bound<'_, PyDict>,
    req: &Request<'_>,
    strings: &mut Strings,
    state: Option<&Py<PyDict>>,
) -> PyResult<()> {
    if req.version() == (1, 0) {
        scope.set_item(intern!(py, "http_version"), intern!(py, "1.0"))?;
    }
    scope.set_item(intern!(py, "path"), path_str(py, req.path()))?;
    scope.set_item(intern!(py, "raw_path"), PyBytes::new(py, req.head().path))?;
    scope.set_item(intern!(py, "query_string"), PyBytes::new(py, req.query()))?;
    let headers = PyList::empty(py);
    for (name, value) in req.headers() {
        let pair = PyTuple::new(
            py,
            [
                strings.name(py, name).into_any(),
                PyBytes::new(py, value).into_any(),
            ],
        )?;
        headers.append(pair)?;
    }
    scope.set_item(intern!(py, "headers"), headers)?;
    scope.set_item(
        intern!(py, "client"),
        strings.client(py, &req.peer.addr, req.peer.port)?,
    )?;
    if let Some(state) = state {
        scope.set_item(intern!(py, "state"), state.bind(py).copy()?)?;
    }
    Ok(())
}

/// What the access log needs of a request, kept past its head (which
/// borrows the connection's buffer). Made only when the access log is on.
pub struct AccessFacts {
    remote_addr: String,
    method: Vec<u8>,
    raw_uri: Vec<u8>,
    path: Vec<u8>,
    query: Vec<u8>,
    protocol: std::borrow::Cow<'static, str>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl AccessFacts {
    pub fn of(req: &Request<'_>) -> Self {
        AccessFacts {
            remote_addr: req.peer.addr.clone(),
            method: req.method().to_vec(),
            raw_uri: req.raw_target().to_vec(),
            path: req.path().to_vec(),
            query: req.query().to_vec(),
            protocol: req.protocol(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect(),
        }
    }
}

/// Where the response is.
enum Response {
    NotStarted,
    Started {
        framing: Framing,
        encoder: BodyEncoder,
    },
    Complete(Framing),
}

/// What a `receive` found.
pub enum Received {
    /// This message, now.
    Message(Py<PyAny>),
    /// Body bytes must be read from the client first (write
    /// [`Exchange::take_continue`]'s bytes before reading).
    NeedRead,
    /// The body was handed out whole: wait for the client to go away.
    WaitDisconnect,
}

/// How a request's exchange ended, for the connection and the log.
pub struct Ended {
    pub body: h1::Body,
    pub response: h1::Response,
    pub status: u16,
    pub sent: u64,
    pub response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    pub version: (u8, u8),
}

/// One HTTP request's `receive`/`send` state.
pub struct Exchange {
    pub body: h1::Body,
    exchange: h1::Exchange,
    /// A receive returned `more_body: False`.
    body_taken: bool,
    /// The client went away, or the server stopped waiting for it.
    disconnected: bool,
    response: Response,
    /// A receive waiting for body bytes or the disconnect.
    pub receiver: Option<Py<PyAny>>,
    /// A send waiting for the client to read.
    pub writer: Option<Py<PyAny>>,
    /// Since when `receiver` waits for body bytes, or `writer` for the
    /// client to read (`--timeout` bounds both waits).
    pub waiting_since: Option<Instant>,
    log: Option<AccessFacts>,
    /// Keep the response headers (the access log or `post_request` wants them).
    keep_headers: bool,
    status: u16,
    response_headers: Vec<(Vec<u8>, Vec<u8>)>,
    sent: u64,
    started: Instant,
}

/// The `http.disconnect` message.
pub fn disconnect_message(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.disconnect"))?;
    Ok(d.into_any().unbind())
}

fn request_message(py: Python<'_>, body: &[u8], more: bool) -> PyResult<Py<PyAny>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
    d.set_item(intern!(py, "body"), PyBytes::new(py, body))?;
    d.set_item(intern!(py, "more_body"), more)?;
    Ok(d.into_any().unbind())
}

/// `message[key]` when it is there (any mapping; a dict the fast way).
fn get<'py>(
    message: &Bound<'py, PyAny>,
    key: &Bound<'py, PyString>,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    if let Ok(d) = message.cast::<PyDict>() {
        return d.get_item(key);
    }
    match message.get_item(key) {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(message.py()) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Exchange {
    /// The response is complete, the connection may serve another request
    /// after it, and the app took the whole request body: the app's call
    /// may go on (a background task) while the next request is served.
    pub fn may_finish_early(&self) -> bool {
        matches!(self.response, Response::Complete(f) if f.keep_alive && !f.upgrade)
            && self.body.is_done()
            && self.body.available() == 0
    }

    pub fn new(
        body: h1::Body,
        exchange: h1::Exchange,
        log: Option<AccessFacts>,
        keep_headers: bool,
    ) -> Self {
        Exchange {
            keep_headers: keep_headers || log.is_some(),
            body,
            exchange,
            body_taken: false,
            disconnected: false,
            response: Response::NotStarted,
            receiver: None,
            writer: None,
            waiting_since: None,
            log,
            status: 0,
            response_headers: Vec::new(),
            sent: 0,
            started: Instant::now(),
        }
    }

    pub fn is_disconnected(&self) -> bool {
        self.disconnected
    }

    /// The response is complete (its last body message was sent).
    pub fn is_complete(&self) -> bool {
        matches!(self.response, Response::Complete(_))
    }

    /// The client went away (or the server stops waiting for it): a
    /// waiting receive gets `http.disconnect`, a waiting send `OSError`.
    pub fn disconnect(&mut self, py: Python<'_>) {
        self.disconnected = true;
        if let Some(f) = self.receiver.take() {
            if let Ok(m) = disconnect_message(py) {
                resolve(py, &f, m);
            }
        }
        if let Some(f) = self.writer.take() {
            fail(py, &f, PyOSError::new_err("client disconnected"));
        }
    }

    /// `receive()`: the next message if there is one now.
    pub fn receive(&mut self, py: Python<'_>) -> PyResult<Received> {
        // ASGI 2.4: after the response, receive() says http.disconnect.
        if self.disconnected || self.is_complete() {
            return disconnect_message(py).map(Received::Message);
        }
        if self.body_taken {
            return Ok(Received::WaitDisconnect);
        }
        let more = match self.body.next_data() {
            Ok(Chunk::Data(d)) => {
                let d = PyBytes::new(py, d);
                let more = !self.body.is_done();
                if !more {
                    self.body_taken = true;
                }
                let m = PyDict::new(py);
                m.set_item(intern!(py, "type"), intern!(py, "http.request"))?;
                m.set_item(intern!(py, "body"), d)?;
                m.set_item(intern!(py, "more_body"), more)?;
                return Ok(Received::Message(m.into_any().unbind()));
            }
            Ok(Chunk::End) => false,
            Ok(Chunk::NeedRead) => return Ok(Received::NeedRead),
            // A malformed body: the client is as good as gone.
            Err(_) => {
                self.disconnected = true;
                return disconnect_message(py).map(Received::Message);
            }
        };
        self.body_taken = true;
        request_message(py, b"", more).map(Received::Message)
    }

    /// Before a body read for a receive: `100 Continue` when owed.
    pub fn take_continue(&mut self) -> Option<&'static [u8]> {
        if matches!(self.response, Response::NotStarted) {
            self.body.take_continue()
        } else {
            None
        }
    }

    /// Whether a receive waits for body bytes (not for the disconnect).
    pub fn wants_body(&self) -> bool {
        self.receiver.is_some() && !self.body_taken && !self.disconnected
    }

    /// `send(message)`: what it means on the wire, appended to `out`.
    /// True when `out` should be written now (a body message, an interim
    /// response); a final response head waits for the body's first bytes,
    /// so that both go in one write.
    pub fn send(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<bool> {
        if self.disconnected {
            return Err(PyOSError::new_err("client disconnected"));
        }
        let kind = get(message, intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without a 'type'"))?;
        let kind = kind.cast_into::<PyString>()?;
        match kind.to_str()? {
            "http.response.start" => self.start(py, message, out),
            "http.response.body" => self.body_message(py, message, out).map(|()| true),
            "http.response.trailers" => Ok(false),
            other => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{other}' sent, after response already completed or not an HTTP response message"
            ))),
        }
    }

    fn start(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<bool> {
        if !matches!(self.response, Response::NotStarted) {
            return Err(PyRuntimeError::new_err("Response already started"));
        }
        let status: i64 = get(message, intern!(py, "status"))?
            .ok_or_else(|| PyValueError::new_err("http.response.start without a 'status'"))?
            .extract()?;
        if !(100..=999).contains(&status) {
            return Err(PyValueError::new_err(format!(
                "Invalid HTTP status code {status}"
            )));
        }
        let status = status as u16;
        let mut headers: Vec<(PyBackedBytes, PyBackedBytes)> = Vec::new();
        if let Some(hs) = get(message, intern!(py, "headers"))? {
            for item in hs.try_iter()? {
                let item = item?;
                let name = item.get_item(0)?;
                let value = item.get_item(1)?;
                let as_bytes = |v: Bound<'_, PyAny>| -> PyResult<PyBackedBytes> {
                    if v.is_instance_of::<PyString>() {
                        return Err(PyTypeError::new_err(
                            "ASGI response header names and values must be bytes",
                        ));
                    }
                    v.extract().map_err(Into::into)
                };
                headers.push((as_bytes(name)?, as_bytes(value)?));
            }
        }
        let reason = ferricorn_http::error::reason_phrase(status);
        let mut line = String::with_capacity(4 + reason.len());
        line.push_str(itoa::Buffer::new().format(status));
        line.push(' ');
        line.push_str(reason);
        let ctx = self
            .exchange
            .response_context(crate::lifecycle::current(), crate::util::server_header());
        let framing =
            crate::app::with_date(|d| encode_head(out, line.as_bytes(), &headers, &ctx, d))
                .map_err(|e| PyValueError::new_err(format!("Invalid ASGI response: {e}")))?;
        if status < 200 {
            // An interim response (103 Early Hints): the final one follows.
            return Ok(true);
        }
        self.status = status;
        if self.keep_headers {
            self.response_headers = headers
                .iter()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
        }
        self.response = Response::Started {
            encoder: BodyEncoder::new(&framing),
            framing,
        };
        Ok(false)
    }

    fn body_message(
        &mut self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let (framing, encoder) = match &mut self.response {
            Response::Started { framing, encoder } => (*framing, encoder),
            Response::NotStarted => return Err(PyRuntimeError::new_err("Response not started")),
            Response::Complete(_) => {
                return Err(PyRuntimeError::new_err("Response already complete"));
            }
        };
        let more = match get(message, intern!(py, "more_body"))? {
            Some(m) => m.is_truthy()?,
            None => false,
        };
        if let Some(body) = get(message, intern!(py, "body"))? {
            if let Ok(b) = body.cast::<PyBytes>() {
                encoder.chunk(b.as_bytes(), out);
            } else {
                let b: PyBackedBytes = body.extract()?;
                encoder.chunk(&b, out);
            }
        }
        if !more {
            encoder.finish(out);
            self.sent = encoder.written();
            self.response = Response::Complete(framing);
            if let Some(f) = self.receiver.take() {
                resolve(py, &f, disconnect_message(py)?);
            }
        } else {
            self.sent = encoder.written();
        }
        Ok(())
    }

    /// The app's call is over (`failed`: it raised or was cancelled):
    /// what the connection's state needs, after a 500 when nothing was
    /// started (appended to `out`), and the access log line.
    pub fn end(mut self, py: Python<'_>, failed: bool, out: &mut Vec<u8>) -> Ended {
        let response = match self.response {
            Response::Complete(framing) => h1::Response::Complete(framing),
            Response::Started { .. } => h1::Response::Failed,
            Response::NotStarted => {
                if !failed {
                    glogging::error!("ASGI callable returned without starting response.");
                }
                out.extend_from_slice(&crate::app::error_response(
                    500,
                    "Internal Server Error",
                    "",
                ));
                self.status = 500;
                h1::Response::Failed
            }
        };
        if let Some(f) = self.receiver.take() {
            let _ = f.bind(py).call_method0(intern!(py, "cancel"));
        }
        if let Some(f) = self.writer.take() {
            let _ = f.bind(py).call_method0(intern!(py, "cancel"));
        }
        if let Some(facts) = &self.log {
            log_access(
                facts,
                self.status,
                self.sent,
                &self.response_headers,
                self.started,
            );
        }
        Ended {
            body: self.body,
            response,
            status: self.status,
            sent: self.sent,
            response_headers: self.response_headers,
            version: self.exchange.version,
        }
    }
}

/// Set a future's result unless it is done (or cancelled).
pub fn resolve(py: Python<'_>, fut: &Py<PyAny>, value: Py<PyAny>) {
    let f = fut.bind(py);
    if f.call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
    {
        return;
    }
    let _ = f.call_method1(intern!(py, "set_result"), (value,));
}

/// Fail a future with `err` unless it is done.
pub fn fail(py: Python<'_>, fut: &Py<PyAny>, err: PyErr) {
    let f = fut.bind(py);
    if f.call_method0(intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
    {
        return;
    }
    let _ = f.call_method1(intern!(py, "set_exception"), (err.value(py),));
}

fn log_access(
    facts: &AccessFacts,
    status: u16,
    sent: u64,
    response_headers: &[(Vec<u8>, Vec<u8>)],
    started: Instant,
) {
    if !glogging::access_enabled() {
        return;
    }
    let request_headers: Vec<(&[u8], &[u8])> = facts
        .headers
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let status = status.to_string();
    // `{var}e`: the request's few environ-like facts, as gunicorn's ASGI
    // worker builds them for its access log.
    let lookup = |key: &str| -> Option<String> {
        let latin1 = |b: &[u8]| b.iter().map(|&c| char::from(c)).collect::<String>();
        match key {
            "request_method" => Some(latin1(&facts.method)),
            "raw_uri" => Some(latin1(&facts.raw_uri)),
            "path_info" => Some(latin1(&facts.path)),
            "query_string" => Some(latin1(&facts.query)),
            "server_protocol" => Some(facts.protocol.to_string()),
            "remote_addr" => Some(facts.remote_addr.clone()),
            _ => {
                let name = key.strip_prefix("http_")?;
                facts
                    .headers
                    .iter()
                    .rev()
                    .find(|(k, _)| {
                        k.len() == name.len()
                            && k.iter().zip(name.bytes()).all(|(&a, b)| {
                                let a = a.to_ascii_lowercase();
                                a == b || (a == b'-' && b == b'_')
                            })
                    })
                    .map(|(_, v)| latin1(v))
            }
        }
    };
    glogging::access(&access::Record {
        remote_addr: &facts.remote_addr,
        method: &facts.method,
        raw_uri: &facts.raw_uri,
        path_info: &facts.path,
        query: &facts.query,
        protocol: &facts.protocol,
        status: status.as_bytes(),
        sent: (status != "0").then_some(sent),
        request_headers: &request_headers,
        response_headers,
        duration: started.elapsed(),
        environ: Some(&lookup),
    });
}
