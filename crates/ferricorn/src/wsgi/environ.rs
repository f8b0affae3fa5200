//! Building the PEP 3333 environ for a request.
//!
//! The constant part (`wsgi.version`, `wsgi.errors`, `SERVER_SOFTWARE`, …) is
//! built once per worker and copied per request; header keys
//! (`HTTP_USER_AGENT`) are cached as Python strings so a request allocates
//! only its values.
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
    script_name: String,
    parser_options: Options,
    sendfile: bool,
    /// Peers trusted to set scheme and forwarder headers (`forwarded_allow_ips`).
    trust: super::proxy::Trust,
}

const HEADER_KEY_CACHE: usize = 512;

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
        Ok(AppContext {
            callable,
            base: base.unbind(),
            header_keys: Mutex::new(HashMap::new()),
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
        env.set_item(intern!(py, "wsgi.url_scheme"), conn.url_scheme)?;
        env.set_item(intern!(py, "REQUEST_METHOD"), latin1_str(py, &head.method))?;
        env.set_item(intern!(py, "QUERY_STRING"), latin1_str(py, head.query))?;
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
            env.set_item(intern!(py, "REMOTE_PORT"), port.to_string())?;
        }
        if let Some(proxied) = &conn.peer.proxy {
            env.set_item(intern!(py, "PROXY_PROTOCOL"), proxied.protocol)?;
            env.set_item(intern!(py, "PROXY_ADDR"), proxied.addr.as_str())?;
            env.set_item(intern!(py, "PROXY_PORT"), proxied.port.to_string())?;
        }
        let (server_name, server_port) = if conn.server.1.is_empty() {
            // Unix socket: derive SERVER_* from the Host header when present.
            match host {
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
            }
        } else {
            (conn.server.0.clone(), conn.server.1.clone())
        };
        env.set_item(intern!(py, "SERVER_NAME"), server_name)?;
        env.set_item(intern!(py, "SERVER_PORT"), server_port)?;

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
        env.set_item(intern!(py, "PATH_INFO"), latin1_str(py, path_info))?;
        env.set_item(intern!(py, "SCRIPT_NAME"), latin1_str(py, script))?;
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
