//! Building the PEP 3333 environ for a request.
//!
//! The constant part (`wsgi.version`, `wsgi.errors`, `SERVER_SOFTWARE`, …) is
//! built once per worker and copied per request (`dict.copy()`); header keys
//! (`HTTP_USER_AGENT`) are cached as Python strings, and so is the last value
//! seen for each, so a keep-alive client repeating its headers costs no new
//! strings. The base also holds every always-set key, with the most common
//! value (`GET`, `http`, `HTTP/1.1`, `/`, `""`, the first listener's name and
//! port, the first client address): a request sets only the keys whose value
//! differs, and its copy has room for a few more keys without growing.
//! Every value is an immutable `str` (or `None`-free constant), so requests
//! share no mutable state through the copy. docs/profile.md has the
//! per-request cost.
//!
//! gunicorn counterpart: `http.wsgi.base_environ`, `default_environ`, `create`.

use std::collections::HashMap;
use std::sync::Mutex;

use ferricorn_http::parse::Options;
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyString};

use super::errors_stream::ErrorsStream;
use super::file_wrapper::FileWrapper;
use crate::request::Request;

/// Everything a worker needs to call its app, built once after the app loads.
pub struct AppContext {
    callable: Py<PyAny>,
    /// The template every request's environ is copied from. Its per-request
    /// keys hold the values of [`Defaults`] (request-independent ones are
    /// filled in by the first request that knows them).
    base: Py<PyDict>,
    /// Strings cached across requests, behind one lock taken once per request.
    caches: Mutex<Caches>,
    script_name: String,
    parser_options: Options,
    sendfile: bool,
    /// Peers trusted to set scheme and forwarder headers (`forwarded_allow_ips`).
    trust: crate::request::proxy::Trust,
}

const HEADER_KEY_CACHE: usize = 512;
/// Header values at most this long are remembered for reuse.
const VALUE_CACHE_MAX: usize = 256;

/// A header name's environ key and the last value seen for it.
struct HeaderEntry {
    /// The name as sent (the map's key too).
    name: Vec<u8>,
    key: Py<PyString>,
    last: Option<(Vec<u8>, Py<PyString>)>,
}

#[derive(Default)]
struct Caches {
    /// Header name as sent → index in `header_entries`.
    header_keys: HashMap<Vec<u8>, usize, crate::util::FnvBuild>,
    header_entries: Vec<HeaderEntry>,
    /// The entry found for each header position of the previous request: a
    /// keep-alive client sends the same names in the same order, so one
    /// comparison finds the entry, without hashing the name.
    recent: Vec<usize>,
    /// `SERVER_NAME` and `SERVER_PORT` strings per listener address.
    servers: Vec<ServerStrings>,
    /// The last client address and port, as strings.
    remote_addr: Option<(String, Py<PyString>)>,
    remote_port: Option<(u16, Py<PyString>)>,
    /// The values `base` holds for the keys filled in by a first request.
    server_name: Option<Py<PyString>>,
    server_port: Option<Py<PyString>>,
    remote: Option<Py<PyString>>,
}

/// A listener's (name, port) and the Python strings made of them once.
struct ServerStrings {
    name: String,
    port: String,
    py_name: Py<PyString>,
    py_port: Py<PyString>,
}

/// Keys every request sets (`gunicorn.socket` and `wsgi.early_hints` by
/// `extras::add`). The base environ holds them so each request's copy
/// already has their slots: setting them replaces a value instead of
/// inserting (and growing the dict). Those with a common value hold it (see
/// `AppContext::new`); a request sets only what differs.
const ALWAYS_SET: [&str; 13] = [
    "wsgi.input",
    "wsgi.url_scheme",
    "REQUEST_METHOD",
    "QUERY_STRING",
    "RAW_URI",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "SERVER_NAME",
    "SERVER_PORT",
    "PATH_INFO",
    "SCRIPT_NAME",
    "gunicorn.socket",
    "wsgi.early_hints",
];

/// Give `dict` room to grow: CPython copies a dict's table at its size, so a
/// template whose table is full makes every copy resize (rehash) on its
/// first insertion. Inserting placeholder keys until the table grows and
/// deleting them leaves a larger table; it is kept only if the deleted slots
/// are few enough that `dict.copy()` still copies the table as it is (at
/// most a third of the entries). The contents are unchanged either way.
fn presize(py: Python<'_>, dict: &Bound<'_, PyDict>) -> PyResult<()> {
    let sys = py.import("sys")?;
    let size_of = |d: &Bound<'_, PyDict>| -> PyResult<usize> {
        sys.call_method1("getsizeof", (d,))?.extract()
    };
    let before = size_of(dict)?;
    let used = dict.len();
    let mut pads = Vec::new();
    while pads.len() <= used / 2 {
        let pad = PyString::new(py, &format!("\0ferricorn-pad-{}", pads.len()));
        dict.set_item(&pad, py.None())?;
        pads.push(pad);
        if size_of(dict)? != before {
            break;
        }
    }
    for pad in &pads {
        dict.del_item(pad)?;
    }
    if pads.len() > used / 2 {
        // Too many holes for the fast copy: rebuild the table compact.
        let compact = dict.copy()?;
        dict.clear();
        dict.update(compact.as_mapping())?;
    }
    Ok(())
}

/// A str for a request method: the common ones are interned constants.
pub(crate) fn method_str<'py>(py: Python<'py>, method: &[u8]) -> Bound<'py, PyString> {
    use pyo3::intern;
    let s = match method {
        b"GET" => intern!(py, "GET"),
        b"POST" => intern!(py, "POST"),
        b"HEAD" => intern!(py, "HEAD"),
        b"PUT" => intern!(py, "PUT"),
        b"DELETE" => intern!(py, "DELETE"),
        b"PATCH" => intern!(py, "PATCH"),
        b"OPTIONS" => intern!(py, "OPTIONS"),
        _ => return latin1_str(py, method),
    };
    s.clone()
}

/// `latin1_str`, with the empty string and `/` shared instead of made anew.
fn path_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match bytes {
        b"" => pyo3::intern!(py, "").clone(),
        b"/" => pyo3::intern!(py, "/").clone(),
        _ => latin1_str(py, bytes),
    }
}

/// Decode bytes as latin-1 into a Python str (ASCII fast path).
pub fn latin1_str<'py>(py: Python<'py>, bytes: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(bytes) {
        Ok(s) if bytes.is_ascii() => PyString::new(py, s),
        _ => {
            let s: String = bytes.iter().map(|&b| char::from(b)).collect();
            PyString::new(py, &s)
        }
    }
}

impl AppContext {
    pub fn new(
        py: Python<'_>,
        callable: Py<PyAny>,
        multiprocess: bool,
        multithread: bool,
        parser_options: Options,
    ) -> PyResult<Self> {
        use pyo3::intern;
        let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
        let py_script_name = path_str(py, script_name.as_bytes());
        let base = PyDict::new(py);
        base.set_item("wsgi.errors", Py::new(py, ErrorsStream)?)?;
        base.set_item("wsgi.version", (1, 0))?;
        base.set_item("wsgi.multithread", multithread)?;
        base.set_item("wsgi.multiprocess", multiprocess)?;
        base.set_item("wsgi.run_once", false)?;
        base.set_item("wsgi.file_wrapper", py.get_type::<FileWrapper>())?;
        base.set_item("wsgi.input_terminated", true)?;
        base.set_item(
            "SERVER_SOFTWARE",
            format!("ferricorn/{}", env!("CARGO_PKG_VERSION")),
        )?;
        for key in ALWAYS_SET {
            base.set_item(PyString::intern(py, key), py.None())?;
        }
        // The common values; `environ()` compares against these same objects.
        base.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
        base.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, b"GET"))?;
        base.set_item(intern!(py, "QUERY_STRING"), path_str(py, b""))?;
        base.set_item(intern!(py, "RAW_URI"), path_str(py, b"/"))?;
        base.set_item(intern!(py, "SERVER_PROTOCOL"), intern!(py, "HTTP/1.1"))?;
        base.set_item(intern!(py, "PATH_INFO"), path_str(py, b"/"))?;
        base.set_item(intern!(py, "SCRIPT_NAME"), &py_script_name)?;
        presize(py, &base)?;
        Ok(AppContext {
            callable,
            base: base.unbind(),
            caches: Mutex::new(Caches::default()),
            script_name,
            parser_options,
            sendfile: true,
            trust: crate::request::proxy::Trust::default(),
        })
    }

    /// `forwarded_allow_ips` and `secure_scheme_headers`.
    pub fn with_proxy_trust(
        mut self,
        allow: &[String],
        secure_headers: &[(String, String)],
    ) -> Self {
        self.trust = crate::request::proxy::Trust::new(allow, secure_headers);
        self
    }

    pub fn trust(&self) -> &crate::request::proxy::Trust {
        &self.trust
    }

    pub fn callable(&self) -> &Py<PyAny> {
        &self.callable
    }

    /// Whether `wsgi.file_wrapper` responses of real files use sendfile(2).
    pub fn with_sendfile(mut self, on: bool) -> Self {
        self.sendfile = on;
        self
    }

    pub fn sendfile(&self) -> bool {
        self.sendfile
    }

    /// The worker's `SCRIPT_NAME` (from its environment).
    pub fn script_name(&self) -> &[u8] {
        self.script_name.as_bytes()
    }

    pub fn parser_options(&self) -> &Options {
        &self.parser_options
    }

    /// The environ for one request: a copy of the template with what
    /// differs set (each step below sets its keys only where the value is
    /// not the template's very object).
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        req: &Request<'_>,
        input: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        // Locked without holding the GIL while it waits: the holder may
        // release the GIL inside (the first use of an `intern!` string
        // does), and a gthread thread blocking here with the GIL held would
        // then wait for it forever (seen: both threads of a new worker hung
        // on their first requests).
        let mut guard = self
            .caches
            .lock_py_attached(py)
            .unwrap_or_else(|e| e.into_inner());
        let caches = &mut *guard;
        let addresses = self.fill_template(py, caches, req)?;
        let env = self.base.bind(py).copy()?;
        env.set_item(pyo3::intern!(py, "wsgi.input"), input)?;
        set_request_line(py, &env, req)?;
        set_headers(py, &env, caches, req.headers())?;
        set_addresses(py, &env, caches, req, addresses)?;
        drop(guard);
        self.set_paths(py, &env, req)?;
        Ok(env)
    }

    /// The request's server and client address strings (cached), put into
    /// the template by the first request that knows them.
    fn fill_template<'py>(
        &self,
        py: Python<'py>,
        caches: &mut Caches,
        req: &Request<'_>,
    ) -> PyResult<Addresses<'py>> {
        use pyo3::intern;
        let base = self.base.bind(py);
        let server = if req.server.1.is_empty() {
            None
        } else {
            let (name, port) = server_strings(py, &mut caches.servers, req.server);
            if caches.server_name.is_none() {
                base.set_item(intern!(py, "SERVER_NAME"), &name)?;
                base.set_item(intern!(py, "SERVER_PORT"), &port)?;
                caches.server_name = Some(name.clone().unbind());
                caches.server_port = Some(port.clone().unbind());
            }
            Some((name, port))
        };
        let remote = match &caches.remote_addr {
            Some((addr, s)) if *addr == req.peer.addr => s.bind(py).clone(),
            _ => {
                let s = PyString::new(py, &req.peer.addr);
                caches.remote_addr = Some((req.peer.addr.clone(), s.clone().unbind()));
                s
            }
        };
        if caches.remote.is_none() {
            base.set_item(intern!(py, "REMOTE_ADDR"), &remote)?;
            caches.remote = Some(remote.clone().unbind());
        }
        Ok(Addresses { server, remote })
    }

    /// `PATH_INFO`, and `SCRIPT_NAME` where it is not the worker's.
    fn set_paths(
        &self,
        py: Python<'_>,
        env: &Bound<'_, PyDict>,
        req: &Request<'_>,
    ) -> PyResult<()> {
        use pyo3::intern;
        let path_info = req
            .path_info()
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
        set_unless(
            env,
            intern!(py, "PATH_INFO"),
            path_str(py, path_info),
            Some(intern!(py, "/")),
        )?;
        if req.script_name() != self.script_name.as_bytes() {
            env.set_item(intern!(py, "SCRIPT_NAME"), path_str(py, req.script_name()))?;
        }
        Ok(())
    }
}

/// A request's `SERVER_NAME`/`SERVER_PORT` (`None` for a Unix socket) and
/// `REMOTE_ADDR` strings.
struct Addresses<'py> {
    server: Option<(Bound<'py, PyString>, Bound<'py, PyString>)>,
    remote: Bound<'py, PyString>,
}

/// Set `key` unless the environ already holds this very object (`default`,
/// the template's value).
#[inline]
fn set_unless<'py>(
    env: &Bound<'py, PyDict>,
    key: &Bound<'py, PyString>,
    value: Bound<'py, PyString>,
    default: Option<&Bound<'py, PyString>>,
) -> PyResult<()> {
    if default.is_some_and(|d| d.is(&value)) {
        return Ok(());
    }
    env.set_item(key, value)
}

/// `wsgi.url_scheme`, `REQUEST_METHOD`, `QUERY_STRING`, `RAW_URI`, `SERVER_PROTOCOL`.
fn set_request_line<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    req: &Request<'_>,
) -> PyResult<()> {
    use pyo3::intern;
    let scheme = match req.scheme {
        "http" => intern!(py, "http").clone(),
        "https" => intern!(py, "https").clone(),
        other => PyString::new(py, other),
    };
    set_unless(
        env,
        intern!(py, "wsgi.url_scheme"),
        scheme,
        Some(intern!(py, "http")),
    )?;
    set_unless(
        env,
        intern!(py, "REQUEST_METHOD"),
        method_str(py, req.method()),
        Some(intern!(py, "GET")),
    )?;
    set_unless(
        env,
        intern!(py, "QUERY_STRING"),
        path_str(py, req.query()),
        Some(intern!(py, "")),
    )?;
    set_unless(
        env,
        intern!(py, "RAW_URI"),
        path_str(py, req.raw_target()),
        Some(intern!(py, "/")),
    )?;
    let protocol = match req.version() {
        (1, 0) => intern!(py, "HTTP/1.0").clone(),
        (1, 1) => intern!(py, "HTTP/1.1").clone(),
        _ => PyString::new(py, &req.protocol()),
    };
    set_unless(
        env,
        intern!(py, "SERVER_PROTOCOL"),
        protocol,
        Some(intern!(py, "HTTP/1.1")),
    )
}

/// `CONTENT_TYPE`, `CONTENT_LENGTH` and an `HTTP_*` key per header name
/// (repeated fields joined with `,`), keys and values from the caches.
fn set_headers<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    caches: &mut Caches,
    headers: &[(&[u8], std::borrow::Cow<'_, [u8]>)],
) -> PyResult<()> {
    use pyo3::intern;
    for (i, (name, value)) in headers.iter().enumerate() {
        if name.eq_ignore_ascii_case(b"content-type") {
            env.set_item(intern!(py, "CONTENT_TYPE"), latin1_str(py, value))?;
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            env.set_item(intern!(py, "CONTENT_LENGTH"), latin1_str(py, value))?;
            continue;
        }
        // Repeated fields (names equal once mapped to a key) become one
        // entry, at the first one's place, their values joined with ",".
        if headers[..i].iter().any(|(n, _)| same_key(n, name)) {
            continue;
        }
        let mut joined: Option<Vec<u8>> = None;
        for (_, v) in headers[i + 1..].iter().filter(|(n, _)| same_key(n, name)) {
            let buf = joined.get_or_insert_with(|| value.to_vec());
            buf.push(b',');
            buf.extend_from_slice(v);
        }
        let (key, value) = match header_entry(py, caches, i, name) {
            Some(entry) => {
                let value = match &joined {
                    Some(all) => latin1_str(py, all),
                    None => cached_value(py, &mut entry.last, value),
                };
                (entry.key.bind(py).clone(), value)
            }
            None => (
                PyString::intern(py, &http_key(name)),
                latin1_str(py, joined.as_deref().unwrap_or(value)),
            ),
        };
        env.set_item(key, value)?;
    }
    Ok(())
}

/// `REMOTE_ADDR`, `REMOTE_PORT`, the `PROXY_*` keys, `SERVER_NAME`, `SERVER_PORT`.
fn set_addresses<'py>(
    py: Python<'py>,
    env: &Bound<'py, PyDict>,
    caches: &mut Caches,
    req: &Request<'_>,
    addresses: Addresses<'py>,
) -> PyResult<()> {
    use pyo3::intern;
    set_unless(
        env,
        intern!(py, "REMOTE_ADDR"),
        addresses.remote,
        caches.remote.as_ref().map(|r| r.bind(py)),
    )?;
    if let Some(port) = req.peer.port {
        let s = match &caches.remote_port {
            Some((p, s)) if *p == port => s.bind(py).clone(),
            _ => {
                let mut digits = itoa::Buffer::new();
                let s = PyString::new(py, digits.format(port));
                caches.remote_port = Some((port, s.clone().unbind()));
                s
            }
        };
        env.set_item(intern!(py, "REMOTE_PORT"), s)?;
    }
    if let Some(proxied) = &req.peer.proxy {
        env.set_item(intern!(py, "PROXY_PROTOCOL"), proxied.protocol)?;
        env.set_item(intern!(py, "PROXY_ADDR"), proxied.addr.as_str())?;
        env.set_item(intern!(py, "PROXY_PORT"), proxied.port.to_string())?;
    }
    if let Some(cert) = &req.peer_cert {
        env.set_item(intern!(py, "ferricorn.peercert"), cert.pem.as_str())?;
        env.set_item(
            intern!(py, "ferricorn.peercert_subject"),
            cert.subject.as_str(),
        )?;
    }
    match addresses.server {
        Some((name, port)) => {
            set_unless(
                env,
                intern!(py, "SERVER_NAME"),
                name,
                caches.server_name.as_ref().map(|s| s.bind(py)),
            )?;
            set_unless(
                env,
                intern!(py, "SERVER_PORT"),
                port,
                caches.server_port.as_ref().map(|s| s.bind(py)),
            )?;
        }
        None => {
            // Unix socket: derive SERVER_* from the Host header when present.
            let (server_name, server_port) = req.server_from_host();
            env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
            env.set_item(intern!(py, "SERVER_PORT"), server_port)?;
        }
    }
    Ok(())
}

/// `HTTP_` and the name upper-cased, `-` as `_`.
fn http_key(name: &[u8]) -> String {
    let mut key = String::with_capacity(5 + name.len());
    key.push_str("HTTP_");
    for &b in name {
        key.push(if b == b'-' {
            '_'
        } else {
            char::from(b.to_ascii_uppercase())
        });
    }
    key
}

/// Whether two header names map to the same environ key.
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let norm = |c: u8| {
        if c == b'-' {
            b'_'
        } else {
            c.to_ascii_uppercase()
        }
    };
    a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| norm(x) == norm(y))
}

/// The cache entry for the request's header number `at`, named `name`,
/// made on first sight (`None` when the cache is full and the name is new).
fn header_entry<'c>(
    py: Python<'_>,
    caches: &'c mut Caches,
    at: usize,
    name: &[u8],
) -> Option<&'c mut HeaderEntry> {
    let hint = caches.recent.get(at).copied();
    let index = match hint {
        Some(i) if caches.header_entries.get(i).is_some_and(|e| e.name == name) => i,
        _ => {
            let i = match caches.header_keys.get(name) {
                Some(&i) => i,
                None => {
                    if caches.header_entries.len() >= HEADER_KEY_CACHE {
                        return None;
                    }
                    let key = PyString::intern(py, &http_key(name)).unbind();
                    let i = caches.header_entries.len();
                    caches.header_entries.push(HeaderEntry {
                        name: name.to_vec(),
                        key,
                        last: None,
                    });
                    caches.header_keys.insert(name.to_vec(), i);
                    i
                }
            };
            // Remember it for this position (positions beyond the first
            // few dozen are not worth remembering).
            if at < caches.recent.len() {
                caches.recent[at] = i;
            } else if at == caches.recent.len() && at < 64 {
                caches.recent.push(i);
            }
            i
        }
    };
    caches.header_entries.get_mut(index)
}

/// The str for a header value: the one made last time when the bytes are
/// the same (strs are immutable, so requests may share it).
fn cached_value<'py>(
    py: Python<'py>,
    last: &mut Option<(Vec<u8>, Py<PyString>)>,
    value: &[u8],
) -> Bound<'py, PyString> {
    if let Some((bytes, s)) = last.as_ref() {
        if bytes.as_slice() == value {
            return s.bind(py).clone();
        }
    }
    let s = latin1_str(py, value);
    if value.len() <= VALUE_CACHE_MAX {
        match last {
            Some((bytes, old)) => {
                bytes.clear();
                bytes.extend_from_slice(value);
                *old = s.clone().unbind();
            }
            None => *last = Some((value.to_vec(), s.clone().unbind())),
        }
    }
    s
}

/// `SERVER_NAME` and `SERVER_PORT` of a listener, made once.
fn server_strings<'py>(
    py: Python<'py>,
    cache: &mut Vec<ServerStrings>,
    (name, port): &(String, String),
) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
    if let Some(s) = cache.iter().find(|s| s.name == *name && s.port == *port) {
        return (s.py_name.bind(py).clone(), s.py_port.bind(py).clone());
    }
    let (py_name, py_port) = (PyString::new(py, name), PyString::new(py, port));
    // Bounded: one entry per listener is the normal case.
    if cache.len() < 64 {
        cache.push(ServerStrings {
            name: name.clone(),
            port: port.clone(),
            py_name: py_name.clone().unbind(),
            py_port: py_port.clone().unbind(),
        });
    }
    (py_name, py_port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_keys() {
        assert_eq!(http_key(b"User-Agent"), "HTTP_USER_AGENT");
        assert_eq!(http_key(b"x_y"), "HTTP_X_Y");
        assert!(same_key(b"X-Rep", b"x-rep"));
        assert!(same_key(b"X-Rep", b"X_REP"));
        assert!(!same_key(b"X-Rep", b"X-Repo"));
        assert!(!same_key(b"X-Rep", b"X-Ree"));
    }
}
