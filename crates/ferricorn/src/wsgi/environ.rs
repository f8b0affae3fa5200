//! Building the PEP 3333 environ for a request.
//!
//! The constant part (`wsgi.version`, `wsgi.errors`, `SERVER_SOFTWARE`, …) is
//! built once per worker and copied per request; header keys
//! (`HTTP_USER_AGENT`) are cached as Python strings so a request allocates
//! only its values. The base also holds every always-set key (as `None`), so
//! the copy has their slots and never grows for them; common values (`GET`,
//! `http`, `""`, `/`, the listener's name and port) are shared strings.
//! docs/profile.md has the per-request cost.
//!
//! gunicorn counterpart: `http.wsgi.base_environ`, `default_environ`, `create`.

use std::collections::HashMap;
use std::sync::Mutex;

use ferricorn_http::parse::{Head, Options};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use super::Conn;
use super::errors_stream::ErrorsStream;
use super::file_wrapper::FileWrapper;

/// An environ header entry: (key, first value, joined values when repeated).
type Field<'py, 'h> = (Bound<'py, PyString>, &'h [u8], Option<Vec<u8>>);

/// Everything a worker needs to call its app, built once after the app loads.
pub struct AppContext {
    callable: Py<PyAny>,
    base: Py<PyDict>,
    header_keys: Mutex<HashMap<Vec<u8>, Py<PyString>>>,
    /// `SERVER_NAME` and `SERVER_PORT` strings per listener address.
    servers: Mutex<Vec<ServerStrings>>,
    script_name: String,
    parser_options: Options,
    sendfile: bool,
    /// Peers trusted to set scheme and forwarder headers (`forwarded_allow_ips`).
    trust: super::proxy::Trust,
}

const HEADER_KEY_CACHE: usize = 512;

/// A listener's (name, port) and the Python strings made of them once.
struct ServerStrings {
    name: String,
    port: String,
    py_name: Py<PyString>,
    py_port: Py<PyString>,
}

/// Keys every request sets. The base environ holds them (as `None`) so each
/// request's copy already has their slots: setting them replaces a value
/// instead of inserting (and growing the dict).
const ALWAYS_SET: [&str; 11] = [
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
];

/// A str for a request method: the common ones are interned constants.
fn method_str<'py>(py: Python<'py>, method: &[u8]) -> Bound<'py, PyString> {
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

/// Percent-decode a path (`%2F` → `/`), leaving malformed escapes as they are.
pub fn percent_decode(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return std::borrow::Cow::Borrowed(raw);
    }
    let hex = |b: u8| -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    std::borrow::Cow::Owned(out)
}

impl AppContext {
    pub fn new(
        py: Python<'_>,
        callable: Py<PyAny>,
        multiprocess: bool,
        multithread: bool,
        parser_options: Options,
    ) -> PyResult<Self> {
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
        Ok(AppContext {
            callable,
            base: base.unbind(),
            header_keys: Mutex::new(HashMap::new()),
            servers: Mutex::new(Vec::new()),
            script_name: std::env::var("SCRIPT_NAME").unwrap_or_default(),
            parser_options,
            sendfile: true,
            trust: super::proxy::Trust::default(),
        })
    }

    /// `forwarded_allow_ips` and `secure_scheme_headers`.
    pub fn with_proxy_trust(
        mut self,
        allow: &[String],
        secure_headers: &[(String, String)],
    ) -> Self {
        self.trust = super::proxy::Trust::new(allow, secure_headers);
        self
    }

    pub fn trust(&self) -> &super::proxy::Trust {
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

    pub fn parser_options(&self) -> &Options {
        &self.parser_options
    }

    fn header_key<'py>(&self, py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
        let mut cache = self.header_keys.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.get(name) {
            return k.bind(py).clone();
        }
        let mut key = String::with_capacity(5 + name.len());
        key.push_str("HTTP_");
        for &b in name {
            key.push(if b == b'-' {
                '_'
            } else {
                char::from(b.to_ascii_uppercase())
            });
        }
        let s = PyString::intern(py, &key);
        if cache.len() < HEADER_KEY_CACHE {
            cache.insert(name.to_vec(), s.clone().unbind());
        }
        s
    }

    /// `SERVER_NAME` and `SERVER_PORT` of a listener, made once.
    fn server_strings<'py>(
        &self,
        py: Python<'py>,
        (name, port): &(String, String),
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        let mut cache = self.servers.lock().unwrap_or_else(|e| e.into_inner());
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

    /// The environ for one request.
    pub fn environ<'py>(
        &self,
        py: Python<'py>,
        head: &Head<'_>,
        conn: &Conn<'_>,
        input: Py<PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        use pyo3::intern;
        let env = self.base.bind(py).copy()?;
        env.set_item(intern!(py, "wsgi.input"), input)?;
        let scheme = match conn.url_scheme {
            "http" => intern!(py, "http").clone(),
            "https" => intern!(py, "https").clone(),
            other => PyString::new(py, other),
        };
        env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
        env.set_item(intern!(py, "REQUEST_METHOD"), method_str(py, &head.method))?;
        env.set_item(intern!(py, "QUERY_STRING"), path_str(py, head.query))?;
        env.set_item(intern!(py, "RAW_URI"), latin1_str(py, head.target))?;
        let protocol = match head.version {
            (1, 0) => intern!(py, "HTTP/1.0").clone(),
            (1, 1) => intern!(py, "HTTP/1.1").clone(),
            (major, minor) => PyString::new(py, &format!("HTTP/{major}.{minor}")),
        };
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;

        let mut host: Option<&[u8]> = None;
        // (key, first value, joined values when the field is repeated)
        let mut fields: Vec<Field<'py, '_>> = Vec::with_capacity(head.headers.len());
        for (name, value) in &head.headers {
            if name.eq_ignore_ascii_case(b"content-type") {
                env.set_item(intern!(py, "CONTENT_TYPE"), latin1_str(py, value))?;
                continue;
            }
            if name.eq_ignore_ascii_case(b"content-length") {
                env.set_item(intern!(py, "CONTENT_LENGTH"), latin1_str(py, value))?;
                continue;
            }
            if name.eq_ignore_ascii_case(b"host") {
                host = Some(value);
            }
            let key = self.header_key(py, name);
            // Keys are interned, so identity is equality.
            match fields.iter_mut().find(|(k, _, _)| k.is(&key)) {
                Some((_, first, joined)) => {
                    let buf = joined.get_or_insert_with(|| first.to_vec());
                    buf.push(b',');
                    buf.extend_from_slice(value);
                }
                None => fields.push((key, value, None)),
            }
        }
        for (key, first, joined) in fields {
            env.set_item(key, latin1_str(py, joined.as_deref().unwrap_or(first)))?;
        }

        let url_scheme = conn.url_scheme;
        env.set_item(intern!(py, "REMOTE_ADDR"), conn.peer.addr.as_str())?;
        if let Some(port) = conn.peer.port {
            let mut digits = itoa::Buffer::new();
            env.set_item(intern!(py, "REMOTE_PORT"), digits.format(port))?;
        }
        if let Some(proxied) = &conn.peer.proxy {
            env.set_item(intern!(py, "PROXY_PROTOCOL"), proxied.protocol)?;
            env.set_item(intern!(py, "PROXY_ADDR"), proxied.addr.as_str())?;
            env.set_item(intern!(py, "PROXY_PORT"), proxied.port.to_string())?;
        }
        if conn.server.1.is_empty() {
            // Unix socket: derive SERVER_* from the Host header when present.
            let (server_name, server_port) = match host {
                Some(h) => {
                    let h = String::from_utf8_lossy(h);
                    match h.rsplit_once(':') {
                        Some((n, p)) => (n.to_string(), p.to_string()),
                        None => (
                            h.to_string(),
                            if url_scheme == "https" { "443" } else { "80" }.to_string(),
                        ),
                    }
                }
                None => (conn.server.0.clone(), String::new()),
            };
            env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
            env.set_item(intern!(py, "SERVER_PORT"), server_port)?;
        } else {
            let (name, port) = self.server_strings(py, conn.server);
            env.set_item(intern!(py, "SERVER_NAME"), name)?;
            env.set_item(intern!(py, "SERVER_PORT"), port)?;
        }

        let path = percent_decode(head.path);
        // A `SCRIPT_NAME` header reaches here only from a trusted peer that
        // `forwarder_headers` lists (the parser drops it otherwise).
        let script = head
            .header(b"script_name")
            .unwrap_or(self.script_name.as_bytes());
        let path_info: &[u8] = if !script.is_empty() {
            if !path.starts_with(script) {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "Request path {:?} does not start with SCRIPT_NAME {:?}",
                    String::from_utf8_lossy(&path),
                    String::from_utf8_lossy(script)
                )));
            }
            &path[script.len()..]
        } else {
            &path
        };
        env.set_item(intern!(py, "PATH_INFO"), path_str(py, path_info))?;
        env.set_item(intern!(py, "SCRIPT_NAME"), path_str(py, script))?;
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/a%2Fb%"), b"/a/b%");
        assert_eq!(&*percent_decode(b"/a%zz"), b"/a%zz");
        assert_eq!(&*percent_decode(b"/plain"), b"/plain");
        assert_eq!(&*percent_decode(b"%41"), b"A");
    }
}
