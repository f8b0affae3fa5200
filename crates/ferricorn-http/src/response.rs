//! Response head encoder and body framing.
//!
//! gunicorn counterpart: `gunicorn/http/wsgi.py` `Response`
//! (`start_response`, `process_headers`, `is_chunked`, `should_close`,
//! `default_headers`, `write`, `close`) and `util.write_error`.
//!
//! Invariants:
//! - Nothing the application passes can inject bytes into the head: status
//!   and header values with CR, LF, NUL or other controls, and header names
//!   that are not tokens, are refused (the server answers 500 instead).
//! - The status line is always `HTTP/1.1` (RFC 9110 2.5: a server sends its
//!   own highest version; gunicorn echoes the request's version instead).
//! - Hop-by-hop headers from the application never reach the wire; the
//!   server writes its own `Server`, `Date`, `Connection` and
//!   `Transfer-Encoding`.
//! - The framing chosen here and the [`BodyEncoder`] built from it never put
//!   more body bytes on the wire than the head announced.

use crate::chars::{is_token, list_contains, parse_decimal, trim_ows};
use crate::date::DateCache;
use crate::error::Error;

/// How the response body is delimited on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body may be sent (HEAD, 1xx, 204, 304); body bytes are swallowed.
    NoBody,
    /// `Content-Length` from the application; excess bytes are dropped.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Body runs until the connection closes (HTTP/1.0 without length).
    CloseDelimited,
}

/// What [`encode_head`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Framing {
    /// Body delimitation.
    pub kind: BodyFraming,
    /// Whether the connection may serve another request afterwards
    /// (`Connection: keep-alive` was sent); false means close after the body.
    pub keep_alive: bool,
    /// The application asked for a protocol upgrade (`Connection: upgrade`
    /// was sent): after a 101 the connection belongs to the application.
    pub upgrade: bool,
    /// Numeric status code, for access logs.
    pub status: u16,
}

/// Request facts and server policy the response head depends on.
#[derive(Clone, Copy, Debug)]
pub struct ResponseContext<'a> {
    /// Request method (as the application saw it).
    pub method: &'a [u8],
    /// Request version.
    pub version: (u8, u8),
    /// [`crate::Head::keep_alive`] of the request.
    pub request_keep_alive: bool,
    /// False for workers that close every connection (the sync worker) or
    /// while shutting down / after max-requests.
    pub server_allows_keep_alive: bool,
    /// `Server` header value (e.g. `b"ferricorn"`), `None` to send none; then
    /// a `Server` header from the application is passed on instead.
    pub server_header: Option<&'a [u8]>,
}

/// What to do with one application header.
enum Action {
    Emit,
    Drop,
}

/// Per-response facts gathered from the application's headers.
#[derive(Default)]
struct Scan {
    length: Option<u64>,
    upgrade: bool,
    close: bool,
}

/// Validate the application's status and headers and append the response
/// head to `out`: status line (always `HTTP/1.1`), `Server`, `Date`,
/// `Connection`, `Transfer-Encoding: chunked` when chosen, the
/// application's end-to-end headers, and the blank line.
///
/// `status` is the application's full status, e.g. `b"200 OK"` or `b"204"`:
/// three digits (100-999), then optionally one SP and a reason of SP, HTAB,
/// VCHAR or obs-text. On `Err`, `out` is left as it was.
pub fn encode_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    status: &[u8],
    headers: &[(N, V)],
    ctx: &ResponseContext,
    date: &DateCache,
) -> Result<Framing, Error> {
    let code = parse_status(status)?;
    let omits_body = ctx.method == b"HEAD" || code < 200 || code == 204 || code == 304;
    // RFC 9110 8.6: no Content-Length on 1xx or 204 (HEAD and 304 may
    // carry the length the GET or unconditional response would have).
    let forbids_length = code < 200 || code == 204;

    let mut scan = Scan::default();
    let mut size = 0;
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), value.as_ref());
        size += name.len() + value.len() + 4;
        classify(name, value, forbids_length, &mut scan)?;
    }

    let chunked = scan.length.is_none() && ctx.version >= (1, 1) && !omits_body;
    let must_close = !ctx.server_allows_keep_alive || !ctx.request_keep_alive || scan.close;
    let keep_alive = !must_close && (omits_body || scan.length.is_some() || chunked);
    let kind = if omits_body {
        BodyFraming::NoBody
    } else if let Some(n) = scan.length {
        BodyFraming::Length(n)
    } else if chunked {
        BodyFraming::Chunked
    } else {
        BodyFraming::CloseDelimited
    };

    out.reserve(128 + size);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status);
    if status.len() == 3 {
        out.push(b' ');
    }
    out.extend_from_slice(b"\r\n");
    if let Some(server) = ctx.server_header {
        out.extend_from_slice(b"Server: ");
        out.extend_from_slice(server);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date.get());
    out.extend_from_slice(b"\r\nConnection: ");
    out.extend_from_slice(if scan.upgrade {
        &b"upgrade"[..]
    } else if keep_alive {
        b"keep-alive"
    } else {
        b"close"
    });
    out.extend_from_slice(b"\r\n");
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    let mut length_sent = false;
    for (name, value) in headers {
        let (name, value) = (name.as_ref(), trim_ows(value.as_ref()));
        let kind = special(name);
        let emit = match action(kind, value, forbids_length, ctx) {
            Action::Drop => false,
            Action::Emit if kind == Special::ContentLength => {
                // Identical duplicates collapse into one.
                !std::mem::replace(&mut length_sent, true)
            }
            Action::Emit => true,
        };
        if emit {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");

    Ok(Framing {
        kind,
        keep_alive,
        upgrade: scan.upgrade,
        status: code,
    })
}

/// `3DIGIT [ SP reason ]`, code 100-999.
fn parse_status(status: &[u8]) -> Result<u16, Error> {
    let (code, rest) = match status {
        [a, b, c, rest @ ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => (
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0'),
            rest,
        ),
        _ => return Err(Error::InvalidStatus),
    };
    if code < 100 {
        return Err(Error::InvalidStatus);
    }
    match rest {
        [] => Ok(code),
        [b' ', reason @ ..] if reason.iter().all(|&b| is_field_byte(b)) => Ok(code),
        _ => Err(Error::InvalidStatus),
    }
}

/// SP, HTAB, VCHAR, obs-text: what a field value or reason phrase may hold.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

/// Validate one application header and note what it says about framing.
fn classify(name: &[u8], value: &[u8], forbids_length: bool, scan: &mut Scan) -> Result<(), Error> {
    if !is_token(name) {
        return Err(Error::InvalidResponseHeaderName);
    }
    if !value.iter().all(|&b| is_field_byte(b)) {
        return Err(Error::InvalidResponseHeader);
    }
    let value = trim_ows(value);
    match special(name) {
        Special::ContentLength if !forbids_length => {
            let n = parse_decimal(value).ok_or(Error::InvalidResponseHeader)?;
            if scan.length.is_some_and(|m| m != n) {
                return Err(Error::InvalidResponseHeader);
            }
            scan.length = Some(n);
        }
        Special::Connection => {
            scan.upgrade |= list_contains(value, b"upgrade");
            scan.close |= list_contains(value, b"close");
        }
        _ => {}
    }
    Ok(())
}

/// Response header names the encoder treats specially.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Special {
    ContentLength,
    Connection,
    Upgrade,
    Server,
    /// Another hop-by-hop header (gunicorn `util.hop_headers`) or `Date`:
    /// the server writes its own.
    Hop,
    Other,
}

/// Which [`Special`] a header name is. The length is tested first, so most
/// application headers cost one `match` and no comparison.
fn special(name: &[u8]) -> Special {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        14 if is(b"content-length") => Special::ContentLength,
        10 if is(b"connection") => Special::Connection,
        10 if is(b"keep-alive") => Special::Hop,
        7 if is(b"upgrade") => Special::Upgrade,
        6 if is(b"server") => Special::Server,
        18 if is(b"proxy-authenticate") => Special::Hop,
        19 if is(b"proxy-authorization") => Special::Hop,
        2 if is(b"te") => Special::Hop,
        8 if is(b"trailers") => Special::Hop,
        17 if is(b"transfer-encoding") => Special::Hop,
        4 if is(b"date") => Special::Hop,
        _ => Special::Other,
    }
}

/// Whether an (already validated) application header goes on the wire.
fn action(kind: Special, value: &[u8], forbids_length: bool, ctx: &ResponseContext) -> Action {
    match kind {
        Special::ContentLength if forbids_length => Action::Drop,
        Special::ContentLength => Action::Emit,
        // Kept only for WebSocket handshakes, as gunicorn does.
        Special::Upgrade if value.eq_ignore_ascii_case(b"websocket") => Action::Emit,
        Special::Upgrade => Action::Drop,
        Special::Server if ctx.server_header.is_some() => Action::Drop,
        Special::Server => Action::Emit,
        Special::Connection | Special::Hop => Action::Drop,
        Special::Other => Action::Emit,
    }
}

/// Frames response body bytes per a [`Framing`].
#[derive(Clone, Debug)]
pub struct BodyEncoder {
    kind: BodyFraming,
    written: u64,
    finished: bool,
}

impl BodyEncoder {
    /// An encoder for the framing [`encode_head`] chose.
    pub fn new(f: &Framing) -> Self {
        BodyEncoder {
            kind: f.kind,
            written: 0,
            finished: false,
        }
    }

    /// Append `data`, framed, to `out`: a chunk for chunked bodies (nothing
    /// for empty data, which would end the body), as is for close-delimited
    /// ones, cut at the declared length, or nothing at all for no-body
    /// responses.
    pub fn chunk(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let n = self.chunk_start(data.len(), out);
        out.extend_from_slice(&data[..n]);
        self.chunk_end(n, out);
    }

    /// Zero-copy variant of [`BodyEncoder::chunk`] for a body piece of `len`
    /// bytes sent separately (writev, sendfile): appends the framing that
    /// goes before it and returns how many of its bytes may be sent
    /// (`0..=len`). After sending them, call [`BodyEncoder::chunk_end`] with
    /// that count.
    pub fn chunk_start(&mut self, len: usize, out: &mut Vec<u8>) -> usize {
        if self.finished {
            return 0;
        }
        let n = match self.kind {
            BodyFraming::NoBody => 0,
            BodyFraming::Length(total) => {
                usize::try_from(total - self.written).map_or(len, |left| left.min(len))
            }
            BodyFraming::Chunked | BodyFraming::CloseDelimited => len,
        };
        if self.kind == BodyFraming::Chunked && n > 0 {
            write_hex(n as u64, out);
            out.extend_from_slice(b"\r\n");
        }
        self.written += n as u64;
        n
    }

    /// Framing that goes after `n` body bytes announced by
    /// [`BodyEncoder::chunk_start`].
    pub fn chunk_end(&mut self, n: usize, out: &mut Vec<u8>) {
        if self.kind == BodyFraming::Chunked && n > 0 {
            out.extend_from_slice(b"\r\n");
        }
    }

    /// End the body: the last chunk for chunked bodies. Idempotent; later
    /// `chunk` calls write nothing.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.finished && self.kind == BodyFraming::Chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.finished = true;
    }

    /// Body bytes accepted so far (framing excluded; truncated or
    /// swallowed bytes not counted).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// For `Length` framing, bytes still owed to the client; when the
    /// application stops short the connection must be closed, not reused.
    pub fn remaining(&self) -> Option<u64> {
        match self.kind {
            BodyFraming::Length(total) => Some(total - self.written),
            _ => None,
        }
    }
}

fn write_hex(mut n: u64, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// A complete error response as gunicorn's `util.write_error` sends it for
/// a refused request: `Connection: close`, `Content-Type: text/html`,
/// `Content-Length` and a small HTML page with `reason` as title and the
/// HTML-escaped `body` as message. A `Date` header is added. Control
/// characters in `reason` are replaced by spaces.
pub fn error_response(status: u16, reason: &str, body: &str, date: &DateCache, out: &mut Vec<u8>) {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut html = String::with_capacity(128 + reason.len() * 2 + body.len());
    html.push_str("<html>\n  <head>\n    <title>");
    escape_html(&reason, &mut html);
    html.push_str("</title>\n  </head>\n  <body>\n    <h1><p>");
    escape_html(&reason, &mut html);
    html.push_str("</p></h1>\n    ");
    escape_html(body, &mut html);
    html.push_str("\n  </body>\n</html>\n");

    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(num.format(status.min(999)).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date.get());
    out.extend_from_slice(b"\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: ");
    out.extend_from_slice(num.format(html.len()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(html.as_bytes());
}

fn escape_html(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_header_names_in_any_case() {
        let cases: [(&[u8], Special); 16] = [
            (b"Content-Length", Special::ContentLength),
            (b"CONNECTION", Special::Connection),
            (b"Keep-Alive", Special::Hop),
            (b"upgrade", Special::Upgrade),
            (b"Server", Special::Server),
            (b"Proxy-Authenticate", Special::Hop),
            (b"proxy-authorization", Special::Hop),
            (b"TE", Special::Hop),
            (b"Trailers", Special::Hop),
            (b"Transfer-Encoding", Special::Hop),
            (b"DATE", Special::Hop),
            (b"Content-Type", Special::Other),
            (b"Content-Lengths", Special::Other),
            (b"Servers", Special::Other),
            (b"trailer", Special::Other),
            (b"X", Special::Other),
        ];
        for (name, want) in cases {
            assert_eq!(special(name), want, "{}", String::from_utf8_lossy(name));
        }
    }

    fn ctx(method: &'static [u8], version: (u8, u8)) -> ResponseContext<'static> {
        ResponseContext {
            method,
            version,
            request_keep_alive: version >= (1, 1),
            server_allows_keep_alive: true,
            server_header: Some(b"ferricorn"),
        }
    }

    fn head(
        status: &[u8],
        headers: &[(&[u8], &[u8])],
        ctx: &ResponseContext,
    ) -> Result<(Framing, String), Error> {
        let date = DateCache::new();
        let mut out = Vec::new();
        let f = encode_head(&mut out, status, headers, ctx, &date)?;
        let text = String::from_utf8_lossy(&out)
            .replace(std::str::from_utf8(date.get()).unwrap_or_default(), "DATE");
        Ok((f, text))
    }

    #[test]
    fn simple_length() {
        let (f, text) = head(
            b"200 OK",
            &[
                (b"Content-Type", b"text/plain"),
                (b"Content-Length", b" 5 "),
            ],
            &ctx(b"GET", (1, 1)),
        )
        .unwrap();
        assert_eq!(f.kind, BodyFraming::Length(5));
        assert!(f.keep_alive);
        assert_eq!(f.status, 200);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: ferricorn\r\nDate: DATE\r\nConnection: keep-alive\r\n\
             Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
        );
    }

    /// The framing table: (method, version, request keep-alive, server
    /// keep-alive, status, content-length) -> (framing, keep-alive).
    #[test]
    fn framing_table() {
        use BodyFraming::*;
        #[allow(clippy::type_complexity)]
        let cases: &[(
            &[u8],
            (u8, u8),
            bool,
            bool,
            &[u8],
            Option<&[u8]>,
            BodyFraming,
            bool,
        )] = &[
            (b"GET", (1, 1), true, true, b"200 OK", None, Chunked, true),
            (
                b"GET",
                (1, 1),
                true,
                true,
                b"200 OK",
                Some(b"3"),
                Length(3),
                true,
            ),
            (b"GET", (1, 1), false, true, b"200 OK", None, Chunked, false),
            (b"GET", (1, 1), true, false, b"200 OK", None, Chunked, false),
            (
                b"GET",
                (1, 1),
                true,
                false,
                b"200 OK",
                Some(b"3"),
                Length(3),
                false,
            ),
            (
                b"GET",
                (1, 0),
                false,
                true,
                b"200 OK",
                None,
                CloseDelimited,
                false,
            ),
            (
                b"GET",
                (1, 0),
                true,
                true,
                b"200 OK",
                None,
                CloseDelimited,
                false,
            ),
            (
                b"GET",
                (1, 0),
                true,
                true,
                b"200 OK",
                Some(b"3"),
                Length(3),
                true,
            ),
            (
                b"GET",
                (1, 0),
                false,
                true,
                b"200 OK",
                Some(b"3"),
                Length(3),
                false,
            ),
            (b"HEAD", (1, 1), true, true, b"200 OK", None, NoBody, true),
            (
                b"HEAD",
                (1, 1),
                true,
                true,
                b"200 OK",
                Some(b"3"),
                NoBody,
                true,
            ),
            (b"HEAD", (1, 0), true, true, b"200 OK", None, NoBody, true),
            (
                b"GET",
                (1, 1),
                true,
                true,
                b"204 No Content",
                Some(b"3"),
                NoBody,
                true,
            ),
            (
                b"GET",
                (1, 1),
                true,
                true,
                b"304 Not Modified",
                None,
                NoBody,
                true,
            ),
            (
                b"GET",
                (1, 1),
                true,
                true,
                b"101 Switching",
                None,
                NoBody,
                true,
            ),
            (b"GET", (1, 1), true, true, b"103", None, NoBody, true),
            (
                b"GET",
                (1, 1),
                false,
                true,
                b"204 No Content",
                None,
                NoBody,
                false,
            ),
            (
                b"POST",
                (1, 1),
                true,
                true,
                b"500 Oops",
                Some(b"0"),
                Length(0),
                true,
            ),
        ];
        for &(method, version, req_ka, srv_ka, status, cl, kind, ka) in cases {
            let c = ResponseContext {
                method,
                version,
                request_keep_alive: req_ka,
                server_allows_keep_alive: srv_ka,
                server_header: None,
            };
            let headers: Vec<(&[u8], &[u8])> = cl
                .map(|v| (&b"Content-Length"[..], v))
                .into_iter()
                .collect();
            let (f, text) = head(status, &headers, &c).unwrap();
            assert_eq!(
                (f.kind, f.keep_alive),
                (kind, ka),
                "{:?}",
                String::from_utf8_lossy(status)
            );
            assert_eq!(text.contains("Transfer-Encoding: chunked"), kind == Chunked);
            let conn = if ka {
                "Connection: keep-alive"
            } else {
                "Connection: close"
            };
            assert!(text.contains(conn), "{text}");
            let has_cl = text.contains("Content-Length");
            assert_eq!(
                has_cl,
                cl.is_some() && !status.starts_with(b"1") && !status.starts_with(b"204")
            );
        }
    }

    #[test]
    fn hop_by_hop_dropped() {
        let (f, text) = head(
            b"200 OK",
            &[
                (b"Connection", b"keep-alive"),
                (b"Keep-Alive", b"timeout=5"),
                (b"Transfer-Encoding", b"chunked"),
                (b"TE", b"trailers"),
                (b"Trailers", b"x"),
                (b"Proxy-Authenticate", b"Basic"),
                (b"Proxy-Authorization", b"Basic"),
                (b"Upgrade", b"h2c"),
                (b"Server", b"app"),
                (b"Date", b"yesterday"),
                (b"X-Ok", b"1"),
            ],
            &ctx(b"GET", (1, 1)),
        )
        .unwrap();
        assert_eq!(f.kind, BodyFraming::Chunked);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: ferricorn\r\nDate: DATE\r\nConnection: keep-alive\r\n\
             Transfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n"
        );
    }

    #[test]
    fn app_server_header_kept_without_ours() {
        let mut c = ctx(b"GET", (1, 1));
        c.server_header = None;
        let (_, text) = head(b"200 OK", &[(b"Server", b"app")], &c).unwrap();
        assert!(text.contains("Server: app\r\n"));
    }

    #[test]
    fn websocket_upgrade() {
        let (f, text) = head(
            b"101 Switching Protocols",
            &[(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")],
            &ctx(b"GET", (1, 1)),
        )
        .unwrap();
        assert!(f.upgrade);
        assert_eq!(f.kind, BodyFraming::NoBody);
        assert!(text.contains("Connection: upgrade\r\n"));
        assert!(text.contains("Upgrade: websocket\r\n"));
    }

    #[test]
    fn app_connection_close_honoured() {
        let (f, text) = head(
            b"200 OK",
            &[(b"Connection", b"close"), (b"Content-Length", b"1")],
            &ctx(b"GET", (1, 1)),
        )
        .unwrap();
        assert!(!f.keep_alive);
        assert!(text.contains("Connection: close\r\n"));
    }

    #[test]
    fn status_validation() {
        let c = ctx(b"GET", (1, 1));
        assert!(
            head(b"200", &[], &c)
                .unwrap()
                .1
                .starts_with("HTTP/1.1 200 \r\n")
        );
        assert!(head(b"200 ", &[], &c).is_ok());
        assert!(head(b"599 Whatever \t\xe9", &[], &c).is_ok());
        for bad in [
            &b""[..],
            b"20",
            b"2000 OK",
            b"200  \r\nX: y",
            b"200 OK\r\n",
            b"200 O\nK",
            b"200 O\0K",
            b" 200 OK",
            b"099 Low",
            b"abc OK",
            b"200\tOK",
        ] {
            assert_eq!(
                head(bad, &[], &c).map(|_| ()),
                Err(Error::InvalidStatus),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn header_validation() {
        let c = ctx(b"GET", (1, 1));
        for (name, value, err) in [
            (
                &b"X-A"[..],
                &b"a\r\nSet-Cookie: x"[..],
                Error::InvalidResponseHeader,
            ),
            (b"X-A", b"a\nb", Error::InvalidResponseHeader),
            (b"X-A", b"a\0b", Error::InvalidResponseHeader),
            (b"X-A", b"a\x7fb", Error::InvalidResponseHeader),
            (b"X A", b"x", Error::InvalidResponseHeaderName),
            (b"X-A:", b"x", Error::InvalidResponseHeaderName),
            (b"", b"x", Error::InvalidResponseHeaderName),
            (b"X\r\nA", b"x", Error::InvalidResponseHeaderName),
            (b"Content-Length", b"+5", Error::InvalidResponseHeader),
            (b"Content-Length", b"5, 5", Error::InvalidResponseHeader),
            (b"Content-Length", b"", Error::InvalidResponseHeader),
            (
                b"Content-Length",
                b"99999999999999999999",
                Error::InvalidResponseHeader,
            ),
        ] {
            let mut out = b"keep".to_vec();
            let r = encode_head(&mut out, b"200 OK", &[(name, value)], &c, &DateCache::new());
            assert_eq!(r.map(|_| ()), Err(err), "{name:?} {value:?}");
            assert_eq!(out, b"keep");
        }
        assert!(head(b"200 OK", &[(b"X-A", b"caf\xe9\t ok")], &c).is_ok());
        let dup = [
            (&b"Content-Length"[..], &b"5"[..]),
            (b"Content-Length", b"6"),
        ];
        assert_eq!(
            head(b"200 OK", &dup, &c).map(|_| ()),
            Err(Error::InvalidResponseHeader)
        );
        let same = [
            (&b"Content-Length"[..], &b"5"[..]),
            (b"content-length", b"5"),
        ];
        let (f, text) = head(b"200 OK", &same, &c).unwrap();
        assert_eq!(f.kind, BodyFraming::Length(5));
        assert_eq!(text.matches("ontent-").count(), 1);
    }

    #[test]
    fn body_encoder_length_truncates() {
        let f = Framing {
            kind: BodyFraming::Length(5),
            keep_alive: true,
            upgrade: false,
            status: 200,
        };
        let mut e = BodyEncoder::new(&f);
        let mut out = Vec::new();
        e.chunk(b"abc", &mut out);
        assert_eq!(e.remaining(), Some(2));
        e.chunk(b"defgh", &mut out);
        e.chunk(b"ijk", &mut out);
        e.finish(&mut out);
        assert_eq!(out, b"abcde");
        assert_eq!(e.written(), 5);
        assert_eq!(e.remaining(), Some(0));
    }

    #[test]
    fn body_encoder_chunked() {
        let f = Framing {
            kind: BodyFraming::Chunked,
            keep_alive: true,
            upgrade: false,
            status: 200,
        };
        let mut e = BodyEncoder::new(&f);
        let mut out = Vec::new();
        e.chunk(b"hello", &mut out);
        e.chunk(b"", &mut out);
        e.chunk(&[b'x'; 26], &mut out);
        e.finish(&mut out);
        e.finish(&mut out);
        e.chunk(b"late", &mut out);
        let mut want = b"5\r\nhello\r\n1A\r\n".to_vec();
        want.extend_from_slice(&[b'x'; 26]);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(out, want);
        assert_eq!(e.written(), 31);
        assert_eq!(e.remaining(), None);
    }

    #[test]
    fn body_encoder_no_body_and_close() {
        let mut out = Vec::new();
        let mut nb = BodyEncoder::new(&Framing {
            kind: BodyFraming::NoBody,
            keep_alive: true,
            upgrade: false,
            status: 204,
        });
        nb.chunk(b"dropped", &mut out);
        nb.finish(&mut out);
        assert!(out.is_empty());
        assert_eq!(nb.written(), 0);
        let mut cd = BodyEncoder::new(&Framing {
            kind: BodyFraming::CloseDelimited,
            keep_alive: false,
            upgrade: false,
            status: 200,
        });
        cd.chunk(b"raw", &mut out);
        cd.finish(&mut out);
        assert_eq!(out, b"raw");
    }

    #[test]
    fn error_page() {
        let date = DateCache::new();
        let mut out = Vec::new();
        error_response(400, "Bad Request", "Invalid <x> & 'y'", &date, &mut out);
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\nDate: "));
        assert!(head.contains("\r\nConnection: close\r\nContent-Type: text/html\r\n"));
        assert!(head.ends_with(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("<title>Bad Request</title>"));
        assert!(body.contains("Invalid &lt;x&gt; &amp; &#x27;y&#x27;"));
        let mut out = Vec::new();
        error_response(431, "Too\r\nLarge", "", &date, &mut out);
        assert!(out.starts_with(b"HTTP/1.1 431 Too  Large\r\n"));
    }

    #[test]
    fn hex() {
        let mut out = Vec::new();
        write_hex(0, &mut out);
        out.push(b' ');
        write_hex(u64::MAX, &mut out);
        assert_eq!(out, b"0 FFFFFFFFFFFFFFFF");
    }
}
