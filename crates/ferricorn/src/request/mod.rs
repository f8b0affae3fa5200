//! The request as facts: what a request *is*, whatever the protocol it came
//! over and whatever interface the app speaks. `wsgi/environ` renders these
//! facts into an environ; an ASGI scope renders the same facts, and an
//! HTTP/2 stream will produce them as HTTP/1 does today.
//!
//! Everything borrows from the parsed head and the connection: building
//! the facts copies nothing (a path with `%` escapes is decoded once, here,
//! for the app and the access log alike).
//!
//! gunicorn counterpart: the attributes of `http.message.Request` that
//! `http.wsgi.create` reads (`method`, `uri`, `path`, `query`, `version`,
//! `headers`, `scheme`), plus the listener and peer addresses.

pub mod proxy;

use std::borrow::Cow;

use ferricorn_http::parse::{BodyKind, Head};

use crate::sock::Peer;

/// One request's facts.
pub struct Request<'a> {
    head: &'a Head<'a>,
    /// `http` or `https` (from a trusted proxy's headers, or the listener).
    pub scheme: &'static str,
    /// The listener's `(name, port)`; the port is empty for a Unix socket.
    pub server: &'a (String, String),
    /// The client (as a PROXY header named it, if one did).
    pub peer: &'a Peer,
    /// The client's verified TLS certificate, if it sent one.
    pub peer_cert: Option<crate::tls::PeerCert>,
    /// The path, percent-decoded.
    path: Cow<'a, [u8]>,
    script_name: &'a [u8],
}

/// The request's path does not start with its `SCRIPT_NAME`.
#[derive(Debug, PartialEq, Eq)]
pub struct ScriptNameMismatch {
    pub path: String,
    pub script_name: String,
}

impl std::fmt::Display for ScriptNameMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Request path {:?} does not start with SCRIPT_NAME {:?}",
            self.path, self.script_name
        )
    }
}

impl<'a> Request<'a> {
    /// The facts of `head` received on a connection. `script_name`: the
    /// worker's `SCRIPT_NAME` (from its environment); a trusted proxy's
    /// `SCRIPT_NAME` header takes its place (the parser drops the header
    /// from anyone else, see `forwarder_headers`).
    pub fn new(
        head: &'a Head<'a>,
        scheme: &'static str,
        server: &'a (String, String),
        peer: &'a Peer,
        script_name: &'a [u8],
    ) -> Self {
        Request {
            head,
            scheme,
            server,
            peer,
            peer_cert: None,
            path: percent_decode(head.path),
            script_name: head.header(b"script_name").unwrap_or(script_name),
        }
    }

    /// The parsed head these facts come from.
    pub fn head(&self) -> &'a Head<'a> {
        self.head
    }

    pub fn method(&self) -> &[u8] {
        &self.head.method
    }

    /// The request-target as sent (`RAW_URI`).
    pub fn raw_target(&self) -> &'a [u8] {
        self.head.target
    }

    /// The path, percent-decoded.
    pub fn path(&self) -> &[u8] {
        &self.path
    }

    /// The query string as sent (after `?`, without a fragment).
    pub fn query(&self) -> &'a [u8] {
        self.head.query
    }

    pub fn version(&self) -> (u8, u8) {
        self.head.version
    }

    /// `HTTP/1.1` and the like.
    pub fn protocol(&self) -> Cow<'static, str> {
        match self.head.version {
            (1, 0) => Cow::Borrowed("HTTP/1.0"),
            (1, 1) => Cow::Borrowed("HTTP/1.1"),
            (major, minor) => Cow::Owned(format!("HTTP/{major}.{minor}")),
        }
    }

    /// Header fields in order, names as sent.
    pub fn headers(&self) -> &'a [(&'a [u8], Cow<'a, [u8]>)] {
        &self.head.headers
    }

    /// The first field with this name (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.head.header(name)
    }

    /// Whether a body follows the head.
    pub fn has_body(&self) -> bool {
        !matches!(self.head.body, BodyKind::None | BodyKind::Length(0))
    }

    /// The mount point of the app (`SCRIPT_NAME`, ASGI `root_path`).
    pub fn script_name(&self) -> &[u8] {
        self.script_name
    }

    /// The path below the mount point (`PATH_INFO`).
    pub fn path_info(&self) -> Result<&[u8], ScriptNameMismatch> {
        self.path
            .strip_prefix(self.script_name)
            .ok_or_else(|| ScriptNameMismatch {
                path: String::from_utf8_lossy(&self.path).into_owned(),
                script_name: String::from_utf8_lossy(self.script_name).into_owned(),
            })
    }

    /// `(SERVER_NAME, SERVER_PORT)` for a listener without a port (a Unix
    /// socket): from the `Host` header when there is one (the port after
    /// its last `:`, else the scheme's), else the listener's name and no port.
    pub fn server_from_host(&self) -> (String, String) {
        match self.header(b"host") {
            Some(h) => {
                let h = String::from_utf8_lossy(h);
                match h.rsplit_once(':') {
                    Some((n, p)) => (n.to_string(), p.to_string()),
                    None => (
                        h.to_string(),
                        if self.scheme == "https" { "443" } else { "80" }.to_string(),
                    ),
                }
            }
            None => (self.server.0.clone(), String::new()),
        }
    }
}

/// Percent-decode a path (`%2F` → `/`), leaving malformed escapes as they are.
pub fn percent_decode(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'%') {
        return Cow::Borrowed(raw);
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
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::{Request, percent_decode};
    use crate::sock::Peer;
    use ferricorn_http::parse::{Options, Parser};

    fn peer() -> Peer {
        Peer {
            addr: "10.0.0.1".into(),
            port: Some(5000),
            proxy: None,
        }
    }

    fn with_request(raw: &[u8], script: &[u8], f: impl FnOnce(&Request<'_>)) {
        let mut parser = Parser::new(Options::default());
        let (head, _) = parser.parse(raw).unwrap().unwrap();
        let server = ("127.0.0.1".to_string(), "8000".to_string());
        let peer = peer();
        f(&Request::new(&head, "http", &server, &peer, script));
    }

    #[test]
    fn facts_of_a_request() {
        with_request(
            b"POST /app/a%20b?x=1 HTTP/1.0\r\nHost: h\r\nContent-Length: 3\r\n\r\n",
            b"/app",
            |r| {
                assert_eq!(r.method(), b"POST");
                assert_eq!(r.raw_target(), b"/app/a%20b?x=1");
                assert_eq!(r.path(), b"/app/a b");
                assert_eq!(r.query(), b"x=1");
                assert_eq!(r.protocol(), "HTTP/1.0");
                assert_eq!(r.script_name(), b"/app");
                assert_eq!(r.path_info().unwrap(), b"/a b");
                assert!(r.has_body());
                assert_eq!(r.header(b"HOST"), Some(&b"h"[..]));
            },
        );
    }

    #[test]
    fn a_path_outside_the_script_name_is_an_error() {
        with_request(b"GET /other HTTP/1.1\r\n\r\n", b"/app", |r| {
            let err = r.path_info().unwrap_err();
            assert_eq!(
                err.to_string(),
                "Request path \"/other\" does not start with SCRIPT_NAME \"/app\""
            );
            assert!(!r.has_body());
        });
    }

    #[test]
    fn server_from_the_host_header() {
        with_request(
            b"GET / HTTP/1.1\r\nHost: example.com:81\r\n\r\n",
            b"",
            |r| {
                assert_eq!(r.server_from_host(), ("example.com".into(), "81".into()));
            },
        );
        with_request(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", b"", |r| {
            assert_eq!(r.server_from_host(), ("example.com".into(), "80".into()));
        });
        with_request(b"GET / HTTP/1.1\r\n\r\n", b"", |r| {
            assert_eq!(r.server_from_host(), ("127.0.0.1".into(), String::new()));
        });
    }

    #[test]
    fn percent_decoding_keeps_malformed_escapes() {
        assert_eq!(&*percent_decode(b"/a%2Fb%zz%4"), b"/a/b%zz%4");
        assert_eq!(&*percent_decode(b"/a%20b"), b"/a b");
        assert_eq!(&*percent_decode(b"/a%2Fb%"), b"/a/b%");
        assert_eq!(&*percent_decode(b"%41"), b"A");
        assert!(matches!(
            percent_decode(b"/plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
