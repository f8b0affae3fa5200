//! Request head parser: request line and header section, bytes in, [`Head`] out.
//!
//! gunicorn counterpart: `gunicorn/http/message.py` (`Request.parse`,
//! `parse_request_line`, `Message.parse_headers`, `set_body_reader`,
//! `should_close`, `HeaderPolicy._apply_header_policy`).
//!
//! Invariants:
//! - Zero copy: the returned [`Head`] borrows from the caller's buffer; only
//!   a case-folded method or an obs-folded header value is copied.
//! - Resumable: after `Ok(None)` the parser remembers how far it validated,
//!   so feeding a growing buffer one byte at a time costs O(n) overall.
//!   The caller must pass the same bytes again, plus whatever arrived.
//! - Bounded: an error is returned as soon as a limit is certainly exceeded
//!   (`limit_request_line` + 2 bytes without a line end, a field longer than
//!   `limit_request_field_size`, one field too many), never after buffering
//!   more than that.
//! - Split-invariant: the outcome depends only on the bytes, not on how they
//!   were chunked. Lines are validated in order, and a line's size limit is
//!   checked before its contents.
//! - One judge: a complete plain request line or field line is read in one
//!   pass (`fast_request_line`, `fast_field`), which only ever accepts what
//!   the general path accepts, with the same spans; every other line, and
//!   every error, is left to the general path (`parse::fast_path` tests
//!   compare the two).

use std::borrow::Cow;
use std::sync::Arc;

use crate::chars::{
    find_byte, find_ctl_or_del, is_bad_value_byte, is_tchar, is_token, list_contains,
    parse_decimal, token_prefix, trim_ows, trim_ows_range,
};
use crate::error::Error;

/// gunicorn's `MAX_REQUEST_LINE`: `limit_request_line` is capped to this.
pub const MAX_REQUEST_LINE: usize = 8190;
/// gunicorn's `MAX_HEADERS`: `limit_request_fields` is capped to this.
pub const MAX_HEADERS: usize = 32768;
/// gunicorn's `DEFAULT_MAX_HEADERFIELD_SIZE`, used when the setting is 0.
pub const DEFAULT_MAX_HEADERFIELD_SIZE: usize = 8190;
/// Bound on the request line when `limit_request_line` is 0 ("unlimited"),
/// so memory stays bounded anyway (gunicorn's C parser uses the same 1 MiB).
pub const UNLIMITED_REQUEST_LINE_CAP: usize = 1024 * 1024;

/// What to do with header names that contain `_` (gunicorn `--header-map`).
/// `X_Forwarded_For` and `X-Forwarded-For` both become
/// `HTTP_X_FORWARDED_FOR` in a WSGI environ, so one can spoof the other.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HeaderMap {
    /// Silently drop such headers (gunicorn default).
    #[default]
    Drop,
    /// Refuse the request with 400.
    Refuse,
    /// Pass them on as any other header.
    Dangerous,
}

/// Parser settings; field names and defaults are gunicorn 27's.
#[derive(Clone, Debug)]
pub struct Options {
    /// Longest request line in bytes (without CRLF). 0 = unlimited (bounded
    /// internally at [`UNLIMITED_REQUEST_LINE_CAP`]); values over 8190 are
    /// capped to 8190, as gunicorn does. Exceeding it answers 414.
    pub limit_request_line: usize,
    /// Most header fields per request (and trailer fields per body).
    /// 0 or over 32768 means 32768. Exceeding it answers 431.
    pub limit_request_fields: usize,
    /// Largest header field in bytes, counting its CRLF and any folded
    /// continuation lines. 0 means the default 8190 (gunicorn's code does
    /// this although its documentation says "unlimited"). Exceeding it
    /// answers 431.
    pub limit_request_field_size: usize,
    /// Upper-case the method after validation (`casefold_http_method`).
    pub casefold_http_method: bool,
    /// Accept methods that are tokens but not conventional (lower case,
    /// `#`, shorter than 3 or longer than 20 bytes).
    pub permit_unconventional_http_method: bool,
    /// Accept `HTTP/d.d` versions other than 1.x.
    pub permit_unconventional_http_version: bool,
    /// Accept obs-fold continuation lines, joining them with one space.
    pub permit_obsolete_folding: bool,
    /// Strip SP/HTAB between a header name and its colon.
    pub strip_header_spaces: bool,
    /// Treatment of header names containing `_`.
    pub header_map: HeaderMap,
    /// Upper-case names (`forwarder_headers`) that a trusted peer may send
    /// with underscores; they bypass `header_map`. Only honoured after
    /// [`Parser::set_peer_trusted`]`(true)`.
    pub forwarder_headers: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limit_request_line: 4094,
            limit_request_fields: 100,
            limit_request_field_size: 8190,
            casefold_http_method: false,
            permit_unconventional_http_method: false,
            permit_unconventional_http_version: false,
            permit_obsolete_folding: false,
            strip_header_spaces: false,
            header_map: HeaderMap::Drop,
            forwarder_headers: vec!["SCRIPT_NAME".to_owned(), "PATH_INFO".to_owned()],
        }
    }
}

/// Limits after gunicorn's normalisation of the raw settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) request_line: usize,
    pub(crate) fields: usize,
    pub(crate) field_size: usize,
}

impl Limits {
    pub(crate) fn from_options(o: &Options) -> Self {
        let request_line = match o.limit_request_line {
            0 => UNLIMITED_REQUEST_LINE_CAP,
            n => n.min(MAX_REQUEST_LINE),
        };
        let fields = match o.limit_request_fields {
            0 => MAX_HEADERS,
            n => n.min(MAX_HEADERS),
        };
        let field_size = match o.limit_request_field_size {
            0 => DEFAULT_MAX_HEADERFIELD_SIZE,
            n => n,
        };
        Limits {
            request_line,
            fields,
            field_size,
        }
    }
}

/// How the request body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// No body (no Content-Length, no Transfer-Encoding).
    None,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head, borrowing from the input buffer.
#[derive(Clone, Debug)]
pub struct Head<'b> {
    /// Method as sent, or upper-cased when `casefold_http_method` is on.
    pub method: Cow<'b, [u8]>,
    /// Raw request-target (`RAW_URI`).
    pub target: &'b [u8],
    /// Path part of the target: the path of an origin-form target, the path
    /// after the authority of an absolute-form target (possibly empty),
    /// `*` for `OPTIONS *`, empty for a CONNECT authority-form target.
    pub path: &'b [u8],
    /// Query after `?`, without the fragment; empty if none.
    pub query: &'b [u8],
    /// Fragment after `#`; empty if none (clients should not send one).
    pub fragment: &'b [u8],
    /// `(major, minor)`: (1,0) or (1,1), or others when permitted.
    pub version: (u8, u8),
    /// Header fields in order: name as sent (without any spaces stripped by
    /// `strip_header_spaces`), value without surrounding SP/HTAB. Names with
    /// `_` are already dropped or kept per `header_map`. A value is
    /// `Cow::Owned` only when it was obs-folded.
    pub headers: Vec<(&'b [u8], Cow<'b, [u8]>)>,
    /// Body framing.
    pub body: BodyKind,
    /// Whether the connection may serve another request after this one, per
    /// version, `Connection`, CONNECT and transfer codings.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1 or later.
    pub expect_continue: bool,
}

impl Head<'_> {
    /// First header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &[u8]) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| &**v)
    }
}

type Span = (usize, usize);

/// One header field seen so far, as offsets into the buffer.
#[derive(Clone, Debug, Default)]
struct Field {
    /// Name as sent (after `strip_header_spaces`).
    name: Span,
    /// First line's value, trimmed.
    value: Span,
    /// obs-fold continuation values, trimmed.
    folds: Vec<Span>,
    /// Bytes the field occupies so far, with CRLFs.
    size: usize,
    /// Dropped per `header_map`.
    dropped: bool,
    /// The name holds a `_`.
    underscore: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before the request line (one leading CRLF is skipped here).
    Start,
    /// Inside the request line.
    RequestLine,
    /// Inside the header section.
    Headers,
}

#[derive(Clone, Copy, Debug, Default)]
struct RequestLine {
    method: Span,
    target: Span,
    path: Span,
    query: Span,
    fragment: Span,
    version: (u8, u8),
}

/// Resumable request-head parser. One per connection; reuse it for each
/// request (it resets itself after returning a head or an error).
#[derive(Debug)]
pub struct Parser {
    /// Shared, so that one parser per connection costs no copy of the
    /// options ([`Parser::with_shared_options`]).
    opts: Arc<Options>,
    limits: Limits,
    peer_trusted: bool,
    stage: Stage,
    /// Where the current line starts.
    pos: usize,
    /// Where the search for the current line's end resumes.
    scan: usize,
    line: RequestLine,
    fields: Vec<Field>,
    policy: FieldPolicy,
    expect_continue: bool,
    /// How far the method has been checked, and whether it has ended.
    method_scan: usize,
    method_done: bool,
    /// Read a complete, plain request line and field lines in one pass
    /// ([`fast_request_line`], [`fast_field`]); off only in tests that
    /// compare them with the general path.
    fast_paths: bool,
}

impl Parser {
    /// A parser with these options.
    pub fn new(opts: Options) -> Self {
        Self::with_shared_options(Arc::new(opts))
    }

    /// A parser with options shared with other parsers (one per
    /// connection: no allocation for the options).
    pub fn with_shared_options(opts: Arc<Options>) -> Self {
        let limits = Limits::from_options(&opts);
        Parser {
            opts,
            limits,
            peer_trusted: false,
            stage: Stage::Start,
            pos: 0,
            scan: 0,
            line: RequestLine::default(),
            fields: Vec::new(),
            policy: FieldPolicy::new(false),
            expect_continue: false,
            method_scan: 0,
            method_done: false,
            fast_paths: true,
        }
    }

    /// The options this parser was built with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether the peer is a trusted front-end (`forwarded_allow_ips`): only
    /// then may headers listed in `forwarder_headers` carry underscores.
    /// Defaults to false.
    pub fn set_peer_trusted(&mut self, trusted: bool) {
        self.peer_trusted = trusted;
    }

    /// Forget any partial progress; the next call starts a new request.
    pub fn reset(&mut self) {
        self.stage = Stage::Start;
        self.pos = 0;
        self.scan = 0;
        self.line = RequestLine::default();
        self.fields.clear();
        self.policy = FieldPolicy::new(false);
        self.expect_continue = false;
        self.method_scan = 0;
        self.method_done = false;
    }

    /// Parse a request head from the start of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed; call again with the same bytes
    /// followed by whatever arrived since (the parser resumes where it
    /// stopped). `Ok(Some((head, consumed)))`: the head occupied
    /// `buf[..consumed]`; body bytes, if any, start at `buf[consumed..]`.
    /// `Err`: the request is refused; [`Error::status`] says how. Limits are
    /// enforced as soon as they are certainly exceeded, whatever the chunking.
    pub fn parse<'b>(&mut self, buf: &'b [u8]) -> Result<Option<(Head<'b>, usize)>, Error> {
        if buf.len() < self.pos || buf.len() < self.scan {
            // The caller handed us a different (shorter) buffer: start over.
            self.reset();
        }
        match self.advance(buf) {
            Ok(Some(consumed)) => {
                let head = self.build(buf);
                self.reset();
                match head {
                    Ok(head) => Ok(Some((head, consumed))),
                    Err(e) => Err(e),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }

    /// Drive the state machine; `Some(consumed)` once the empty line ending
    /// the head has been read.
    fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        loop {
            match self.stage {
                Stage::Start => {
                    // RFC 9112 2.2: one empty line before the request line is
                    // tolerated, and only one, and only as CRLF.
                    match buf {
                        [] | [b'\r'] => return Ok(None),
                        [b'\r', b'\n', ..] => self.pos = 2,
                        _ => self.pos = 0,
                    }
                    self.scan = self.pos;
                    self.stage = Stage::RequestLine;
                }
                Stage::RequestLine => {
                    let limit = self.limits.request_line;
                    // The common case in one pass, on the first look only
                    // (so a line arriving in pieces is scanned once); else
                    // the general path below judges the line.
                    if self.fast_paths && self.scan == self.pos {
                        if let Some((line, nl)) = fast_request_line(buf, self.pos, limit) {
                            debug_assert_eq!(
                                format!("{:?}", self.parse_request_line(buf, self.pos, nl - 1)),
                                format!("{:?}", Ok::<_, Error>(line))
                            );
                            self.line = line;
                            self.pos = nl + 1;
                            self.scan = self.pos;
                            self.stage = Stage::Headers;
                            continue;
                        }
                    }
                    // The line may be `limit` bytes plus CRLF; look no further.
                    let window_end = buf.len().min(self.pos.saturating_add(limit + 2));
                    self.check_method_prefix(buf, window_end)?;
                    let Some(nl) = find_lf(buf, self.scan, window_end) else {
                        if buf.len() - self.pos >= limit + 2 {
                            return Err(Error::RequestLineTooLong);
                        }
                        self.scan = buf.len();
                        return Ok(None);
                    };
                    if nl == self.pos || buf[nl - 1] != b'\r' {
                        return Err(Error::InvalidRequestLine("bare LF as line terminator"));
                    }
                    let line_end = nl - 1;
                    if line_end - self.pos > limit {
                        return Err(Error::RequestLineTooLong);
                    }
                    self.line = self.parse_request_line(buf, self.pos, line_end)?;
                    self.pos = nl + 1;
                    self.scan = self.pos;
                    self.stage = Stage::Headers;
                }
                Stage::Headers => {
                    let Some(&first) = buf.get(self.pos) else {
                        return Ok(None);
                    };
                    if first == b'\r' {
                        match buf.get(self.pos + 1) {
                            None => return Ok(None),
                            Some(b'\n') => {
                                self.finish_field(buf)?;
                                return Ok(Some(self.pos + 2));
                            }
                            // A line starting with a bare CR: parsed (and
                            // refused) as a header line below.
                            Some(_) => {}
                        }
                    }
                    let fold = matches!(first, b' ' | b'\t');
                    if self.scan == self.pos {
                        // First look at this line: decide what it starts.
                        if fold {
                            if !self.opts.permit_obsolete_folding {
                                return Err(Error::ObsoleteFolding);
                            }
                            if self.fields.is_empty() {
                                return Err(Error::InvalidHeader(
                                    "continuation line without a field",
                                ));
                            }
                        } else {
                            self.finish_field(buf)?;
                            if self.fields.len() >= self.limits.fields {
                                return Err(Error::TooManyHeaders);
                            }
                            // The common case, a whole plain field line
                            // already in `buf`, in one pass; anything else
                            // (and every error) is left to the general
                            // path below, which decides as it always has.
                            if self.fast_paths {
                                if let Some(f) = fast_field(buf, self.pos, self.limits.field_size) {
                                    debug_assert_eq!(
                                        split_field(
                                            buf,
                                            (self.pos, f.nl - 1),
                                            self.opts.strip_header_spaces
                                        ),
                                        Ok((f.name, f.value))
                                    );
                                    self.fields.push(Field {
                                        name: f.name,
                                        value: f.value,
                                        folds: Vec::new(),
                                        size: f.nl + 1 - self.pos,
                                        dropped: false,
                                        underscore: f.underscore,
                                    });
                                    self.pos = f.nl + 1;
                                    self.scan = self.pos;
                                    continue;
                                }
                            }
                        }
                    }
                    let used = if fold {
                        self.fields.last().map_or(0, |f| f.size)
                    } else {
                        0
                    };
                    let allowed = self.limits.field_size.saturating_sub(used);
                    let window_end = buf.len().min(self.pos.saturating_add(allowed));
                    let Some(nl) = find_lf(buf, self.scan.max(self.pos), window_end) else {
                        if buf.len() >= self.pos.saturating_add(allowed) {
                            return Err(Error::HeaderFieldTooLarge);
                        }
                        self.scan = buf.len();
                        return Ok(None);
                    };
                    if nl == self.pos || buf[nl - 1] != b'\r' {
                        return Err(Error::InvalidHeader("bare LF as line terminator"));
                    }
                    let line = (self.pos, nl - 1);
                    let size = nl + 1 - self.pos;
                    if fold {
                        let span = fold_value(buf, line)?;
                        if let Some(f) = self.fields.last_mut() {
                            f.folds.push(span);
                            f.size += size;
                        }
                    } else {
                        let (name, value) = split_field(buf, line, self.opts.strip_header_spaces)?;
                        self.fields.push(Field {
                            name,
                            value,
                            folds: Vec::new(),
                            size,
                            dropped: false,
                            underscore: buf[name.0..name.1].contains(&b'_'),
                        });
                    }
                    self.pos = nl + 1;
                    self.scan = self.pos;
                }
            }
        }
    }

    /// Judge the method as its bytes arrive, so that a connection that is
    /// not HTTP at all (a TLS handshake, binary junk) is refused at once
    /// rather than after `limit_request_line` bytes. Only bytes before the
    /// first SP are looked at, and the same checks run again on the whole
    /// line, so this changes when an error is found, never which.
    fn check_method_prefix(&mut self, buf: &[u8], window_end: usize) -> Result<(), Error> {
        if self.method_done {
            return Ok(());
        }
        let strict = !self.opts.permit_unconventional_http_method;
        let mut i = self.method_scan.max(self.pos);
        while i < window_end {
            let b = buf[i];
            match b {
                b' ' => {
                    self.method_done = true;
                    break;
                }
                // The line ends here; the line parser decides.
                b'\n' => break,
                _ => {}
            }
            if !is_tchar(b)
                || (strict && (b.is_ascii_lowercase() || b == b'#' || i - self.pos >= 20))
            {
                return Err(Error::InvalidMethod);
            }
            i += 1;
        }
        self.method_scan = i;
        Ok(())
    }

    /// Apply per-field policy (singletons, `Expect`, `header_map`) to the
    /// last field, now that no continuation line can follow it. Runs once
    /// per field, in order, so policy errors come in the same order as
    /// gunicorn's `parse_headers` raises them.
    #[inline(always)]
    fn finish_field(&mut self, buf: &[u8]) -> Result<(), Error> {
        let version = self.line.version;
        let Some(field) = self.fields.last_mut() else {
            return Ok(());
        };
        let name = &buf[field.name.0..field.name.1];
        let forwarders = self
            .peer_trusted
            .then_some(&self.opts.forwarder_headers[..]);
        if !self
            .policy
            .check_flagged(&self.opts.header_map, forwarders, name, field.underscore)?
        {
            field.dropped = true;
            return Ok(());
        }
        // RFC 9110 10.1.1: the Expect value is case-insensitive.
        if name.eq_ignore_ascii_case(b"expect") {
            let continue_ = if field.folds.is_empty() {
                buf[field.value.0..field.value.1].eq_ignore_ascii_case(b"100-continue")
            } else {
                join_folds(buf, field.value, &field.folds).eq_ignore_ascii_case(b"100-continue")
            };
            if !continue_ {
                return Err(Error::ExpectationFailed);
            }
            // A 100-continue expectation on HTTP/1.0 MUST be ignored.
            if version >= (1, 1) {
                self.expect_continue = true;
            }
        }
        Ok(())
    }

    fn parse_request_line(
        &self,
        buf: &[u8],
        start: usize,
        end: usize,
    ) -> Result<RequestLine, Error> {
        let line = &buf[start..end];
        let Some(sp1) = line.iter().position(|&b| b == b' ') else {
            return Err(Error::InvalidRequestLine("expected three parts"));
        };
        let Some(sp2) = line[sp1 + 1..].iter().position(|&b| b == b' ') else {
            return Err(Error::InvalidRequestLine("expected three parts"));
        };
        let sp2 = sp1 + 1 + sp2;
        let method = &line[..sp1];
        let target = &line[sp1 + 1..sp2];
        let version = &line[sp2 + 1..];

        // Method: RFC 9110 9.1 token; gunicorn additionally requires, unless
        // permitted, no lower case or '#', and 3 to 20 bytes.
        if !self.opts.permit_unconventional_http_method
            && (method.iter().any(|&b| b.is_ascii_lowercase() || b == b'#')
                || !(3..=20).contains(&method.len()))
        {
            return Err(Error::InvalidMethod);
        }
        if !is_token(method) {
            return Err(Error::InvalidMethod);
        }
        let is_method = |m: &[u8]| {
            if self.opts.casefold_http_method {
                method.eq_ignore_ascii_case(m)
            } else {
                method == m
            }
        };

        // Target: RFC 9112 3.2, printable ASCII only, never empty.
        if target.is_empty() {
            return Err(Error::InvalidRequestLine("empty request-target"));
        }
        if target.iter().any(|&b| !(0x21..=0x7e).contains(&b)) {
            return Err(Error::InvalidRequestLine("invalid byte in request-target"));
        }
        let t0 = start + sp1 + 1;
        let (path, query, fragment) = if target == b"*" {
            // RFC 9112 3.2.4: asterisk-form is for OPTIONS only.
            if !is_method(b"OPTIONS") {
                return Err(Error::InvalidRequestLine("asterisk-form outside OPTIONS"));
            }
            ((t0, t0 + 1), (t0 + 1, t0 + 1), (t0 + 1, t0 + 1))
        } else if target[0] == b'/' {
            split_path(t0, target)
        } else if let Some(sep) = find_sub(target, b"://") {
            // absolute-form: scheme "://" authority [path-abempty] [? query]
            let scheme = &target[..sep];
            let valid_scheme = scheme.first().is_some_and(u8::is_ascii_alphabetic)
                && scheme
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
            if !valid_scheme {
                return Err(Error::InvalidRequestLine("invalid scheme in absolute-form"));
            }
            let rest = sep + 3;
            let auth_len = target[rest..]
                .iter()
                .position(|&b| matches!(b, b'/' | b'?' | b'#'))
                .unwrap_or(target.len() - rest);
            if !valid_authority(&target[rest..rest + auth_len]) {
                return Err(Error::InvalidRequestLine(
                    "invalid authority in absolute-form",
                ));
            }
            let p0 = rest + auth_len;
            let (path, query, fragment) = split_path(t0 + p0, &target[p0..]);
            (path, query, fragment)
        } else if is_method(b"CONNECT") {
            // RFC 9112 3.2.3: authority-form, only meaningful for CONNECT.
            let end = t0 + target.len();
            ((end, end), (end, end), (end, end))
        } else {
            return Err(Error::InvalidRequestLine("authority-form outside CONNECT"));
        };

        // Version: exactly HTTP/d.d.
        let version = match version {
            [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                if major.is_ascii_digit() && minor.is_ascii_digit() =>
            {
                (major - b'0', minor - b'0')
            }
            _ => return Err(Error::InvalidVersion),
        };
        if version.0 != 1 && !self.opts.permit_unconventional_http_version {
            return Err(Error::InvalidVersion);
        }

        Ok(RequestLine {
            method: (start, start + sp1),
            target: (t0, t0 + target.len()),
            path,
            query,
            fragment,
            version,
        })
    }

    /// Turn the validated offsets into a [`Head`], applying header policy
    /// and deciding framing and persistence.
    fn build<'b>(&mut self, buf: &'b [u8]) -> Result<Head<'b>, Error> {
        let rl = self.line;
        let version = rl.version;
        let raw_method = &buf[rl.method.0..rl.method.1];
        let method: Cow<'b, [u8]> =
            if self.opts.casefold_http_method && raw_method.iter().any(u8::is_ascii_lowercase) {
                Cow::Owned(raw_method.to_ascii_uppercase())
            } else {
                Cow::Borrowed(raw_method)
            };

        let mut headers: Vec<(&'b [u8], Cow<'b, [u8]>)> = Vec::with_capacity(self.fields.len());
        for field in self.fields.iter().filter(|f| !f.dropped) {
            let name = &buf[field.name.0..field.name.1];
            let value: Cow<'b, [u8]> = if field.folds.is_empty() {
                Cow::Borrowed(&buf[field.value.0..field.value.1])
            } else {
                Cow::Owned(join_folds(buf, field.value, &field.folds))
            };
            headers.push((name, value));
        }

        // Framing (RFC 9112 6): gunicorn `set_body_reader`.
        let mut chunked = false;
        let mut transfer_encoding = false;
        let mut must_close = false;
        let mut content_length: Option<&[u8]> = None;
        let mut connection_close = false;
        let mut connection_keep_alive = false;
        for (name, value) in &headers {
            if name.eq_ignore_ascii_case(b"content-length") {
                if content_length.is_some() {
                    return Err(Error::InvalidHeader("more than one Content-Length"));
                }
                content_length = Some(value);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                transfer_encoding = true;
                for coding in value.split(|&b| b == b',') {
                    let coding = trim_ows(coding);
                    if coding.eq_ignore_ascii_case(b"chunked") {
                        if chunked {
                            return Err(Error::InvalidHeader("chunked applied twice"));
                        }
                        chunked = true;
                    } else if coding.eq_ignore_ascii_case(b"identity")
                        || coding.eq_ignore_ascii_case(b"gzip")
                        || coding.eq_ignore_ascii_case(b"deflate")
                        || coding.eq_ignore_ascii_case(b"compress")
                    {
                        if chunked {
                            return Err(Error::InvalidHeader("transfer coding after chunked"));
                        }
                        if !coding.eq_ignore_ascii_case(b"identity") {
                            must_close = true;
                        }
                    } else {
                        return Err(Error::UnsupportedTransferCoding);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"connection") {
                if list_contains(value, b"close") {
                    connection_close = true;
                } else if list_contains(value, b"keep-alive") {
                    connection_keep_alive = true;
                }
            }
        }
        if transfer_encoding && !chunked {
            // RFC 9112 6.3: a request whose final coding is not chunked has
            // no determinable length.
            return Err(Error::InvalidHeader(
                "Transfer-Encoding does not end in chunked",
            ));
        }
        let body = if chunked {
            if version < (1, 1) {
                return Err(Error::InvalidHeader("Transfer-Encoding on HTTP/1.0"));
            }
            if content_length.is_some() {
                return Err(Error::InvalidHeader(
                    "both Content-Length and Transfer-Encoding",
                ));
            }
            BodyKind::Chunked
        } else if let Some(cl) = content_length {
            match parse_decimal(cl) {
                Some(n) => BodyKind::Length(n),
                None => return Err(Error::InvalidHeader("invalid Content-Length")),
            }
        } else {
            BodyKind::None
        };

        let is_connect = if self.opts.casefold_http_method {
            method.eq_ignore_ascii_case(b"CONNECT")
        } else {
            &*method == b"CONNECT"
        };
        let keep_alive = if must_close || is_connect || connection_close {
            false
        } else if connection_keep_alive {
            true
        } else {
            version >= (1, 1)
        };

        Ok(Head {
            method,
            target: &buf[rl.target.0..rl.target.1],
            path: &buf[rl.path.0..rl.path.1],
            query: &buf[rl.query.0..rl.query.1],
            fragment: &buf[rl.fragment.0..rl.fragment.1],
            version,
            headers,
            body,
            keep_alive,
            expect_continue: self.expect_continue,
        })
    }
}

/// Per-field checks shared by the header section and chunked trailers:
/// singleton fields (RFC 9110 5.3), forbidden trailer fields (RFC 9110
/// 6.5.1) and the underscore `header_map` (gunicorn `_apply_header_policy`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldPolicy {
    trailer: bool,
    seen_host: bool,
    seen_content_type: bool,
}

impl FieldPolicy {
    pub(crate) fn new(trailer: bool) -> Self {
        FieldPolicy {
            trailer,
            seen_host: false,
            seen_content_type: false,
        }
    }

    /// `Ok(true)` keep the field, `Ok(false)` drop it, `Err` refuse.
    /// `forwarders`: the `forwarder_headers` a trusted peer may send with
    /// underscores; `None` when the peer is not trusted.
    pub(crate) fn check(
        &mut self,
        header_map: &HeaderMap,
        forwarders: Option<&[String]>,
        name: &[u8],
    ) -> Result<bool, Error> {
        self.check_flagged(header_map, forwarders, name, name.contains(&b'_'))
    }

    /// [`FieldPolicy::check`] for a name already known to hold a `_` or not.
    #[inline(always)]
    pub(crate) fn check_flagged(
        &mut self,
        header_map: &HeaderMap,
        forwarders: Option<&[String]>,
        name: &[u8],
        underscore: bool,
    ) -> Result<bool, Error> {
        debug_assert_eq!(underscore, name.contains(&b'_'));
        if self.trailer && is_forbidden_trailer(name) {
            return Err(Error::ForbiddenTrailer);
        }
        if name.eq_ignore_ascii_case(b"host") {
            if self.seen_host {
                return Err(Error::InvalidHeader("more than one Host"));
            }
            self.seen_host = true;
        } else if name.eq_ignore_ascii_case(b"content-type") {
            if self.seen_content_type {
                return Err(Error::InvalidHeader("more than one Content-Type"));
            }
            self.seen_content_type = true;
        }
        if underscore {
            // Trailers never come from a trusted front-end's rewriting.
            let forwarded = !self.trailer
                && forwarders.is_some_and(|list| {
                    list.iter()
                        .any(|h| h == "*" || h.as_bytes().eq_ignore_ascii_case(name))
                });
            if !forwarded {
                match header_map {
                    HeaderMap::Dangerous => {}
                    HeaderMap::Drop => return Ok(false),
                    HeaderMap::Refuse => {
                        return Err(Error::InvalidHeaderName("underscore in header name"));
                    }
                }
            }
        }
        Ok(true)
    }
}

/// A folded value: the first line's value and each continuation, joined
/// with one space (gunicorn joins the stripped pieces the same way).
pub(crate) fn join_folds(buf: &[u8], first: Span, folds: &[Span]) -> Vec<u8> {
    let mut v = buf[first.0..first.1].to_vec();
    for &(s, e) in folds {
        v.push(b' ');
        v.extend_from_slice(&buf[s..e]);
    }
    v
}

fn is_forbidden_trailer(name: &[u8]) -> bool {
    const FORBIDDEN: [&[u8]; 6] = [
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"trailer",
        b"authorization",
        b"te",
    ];
    FORBIDDEN.iter().any(|f| f.eq_ignore_ascii_case(name))
}

/// Split a complete field line `buf[line.0..line.1]` (without CRLF) into
/// name and trimmed value spans, validating both.
pub(crate) fn split_field(
    buf: &[u8],
    line: Span,
    strip_spaces: bool,
) -> Result<(Span, Span), Error> {
    let bytes = &buf[line.0..line.1];
    // One pass over the name: token bytes up to the colon.
    let name_len = bytes
        .iter()
        .position(|&b| !is_tchar(b))
        .unwrap_or(bytes.len());
    let mut colon = name_len;
    if strip_spaces {
        while matches!(bytes.get(colon), Some(b' ' | b'\t')) {
            colon += 1;
        }
    }
    match bytes.get(colon) {
        Some(b':') if name_len > 0 => {}
        // No colon at all, or an empty name: not a field line.
        _ if name_len == 0 || !bytes.contains(&b':') => {
            return Err(Error::InvalidHeader("field line without a name and colon"));
        }
        _ => return Err(Error::InvalidHeaderName("not a token")),
    }
    let raw_value = &bytes[colon + 1..];
    let (vs, ve) = trim_ows_range(raw_value);
    if has_bad_value_byte(&raw_value[vs..ve]) {
        return Err(Error::InvalidHeader("control character in field value"));
    }
    let base = line.0 + colon + 1;
    Ok(((line.0, line.0 + name_len), (base + vs, base + ve)))
}

/// The request line at `buf[pos..]` in one pass, when it is of the plain
/// kind nearly every request has: a method of 3 to 20 upper-case letters,
/// one SP, an origin-form target (`/` then printable ASCII), one SP,
/// `HTTP/1.` and a digit, CRLF, all within `limit` bytes plus CRLF. Every
/// such line is accepted by [`Parser::parse_request_line`] whatever the
/// options (the method is conventional, the version 1.x), and this gives
/// what it gives (tests compare the two), plus where the LF is. `None` for
/// anything else, valid or not: the general path then judges the line.
#[inline]
fn fast_request_line(buf: &[u8], pos: usize, limit: usize) -> Option<(RequestLine, usize)> {
    let line = buf.get(pos..buf.len().min(pos.saturating_add(limit + 2)))?;
    let sp1 = line.iter().position(|b| !b.is_ascii_uppercase())?;
    if !(3..=20).contains(&sp1) || line[sp1] != b' ' || line.get(sp1 + 1) != Some(&b'/') {
        return None;
    }
    let t0 = sp1 + 1;
    let sp2 = t0 + line[t0..].iter().position(|b| !(0x21..=0x7e).contains(b))?;
    let minor = match line.get(sp2..sp2 + 11)? {
        [
            b' ',
            b'H',
            b'T',
            b'T',
            b'P',
            b'/',
            b'1',
            b'.',
            minor,
            b'\r',
            b'\n',
        ] if minor.is_ascii_digit() => minor - b'0',
        _ => return None,
    };
    let (path, query, fragment) = split_path(pos + t0, &line[t0..sp2]);
    Some((
        RequestLine {
            method: (pos, pos + sp1),
            target: (pos + t0, pos + sp2),
            path,
            query,
            fragment,
            version: (1, minor),
        },
        pos + sp2 + 10,
    ))
}

/// A field line read by [`fast_field`].
#[derive(Debug)]
struct FastField {
    name: Span,
    value: Span,
    /// The line's LF.
    nl: usize,
    underscore: bool,
}

/// A whole field line at `buf[pos..]` in one pass, when it is of the plain
/// kind nearly every request holds: a token name directly followed by `:`,
/// a value of allowed bytes, CRLF within `allowed` bytes of `pos`. Gives
/// exactly what [`split_field`] gives for that line (tests compare the two).
/// `None` for anything else, whether valid (spaces before the colon under
/// `strip_header_spaces`, a line not all in `buf` yet) or not: the caller's
/// general path then judges the line, and only it reports errors, so the
/// error and its precedence (size limit before contents) are unchanged.
#[inline]
fn fast_field(buf: &[u8], pos: usize, allowed: usize) -> Option<FastField> {
    // The line with its CRLF may be `allowed` bytes; look no further.
    let buf = &buf[..buf.len().min(pos.saturating_add(allowed))];
    let (name_len, underscore) = token_prefix(buf.get(pos..)?);
    let colon = pos + name_len;
    if name_len == 0 || buf.get(colon) != Some(&b':') {
        return None;
    }
    let mut i = colon + 1;
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    let value_start = i;
    // Up to the first byte a value may not hold; it must be the CR of CRLF.
    // HTAB is allowed and stepped over.
    loop {
        i += find_ctl_or_del(buf.get(i..)?)?;
        match buf[i] {
            b'\t' => i += 1,
            b'\r' if buf.get(i + 1) == Some(&b'\n') => break,
            _ => return None,
        }
    }
    let mut value_end = i;
    while value_end > value_start && matches!(buf[value_end - 1], b' ' | b'\t') {
        value_end -= 1;
    }
    Some(FastField {
        name: (pos, colon),
        value: (value_start, value_end),
        nl: i + 1,
        underscore,
    })
}

/// Whether a field value holds a control byte other than HTAB, or DEL.
/// Written without early exit so it vectorises.
#[inline]
pub(crate) fn has_bad_value_byte(v: &[u8]) -> bool {
    v.iter().fold(false, |bad, &b| bad | is_bad_value_byte(b))
}

/// Validate an obs-fold continuation line and return its trimmed span.
pub(crate) fn fold_value(buf: &[u8], line: Span) -> Result<Span, Error> {
    let (s, e) = trim_ows_range(&buf[line.0..line.1]);
    if buf[line.0 + s..line.0 + e]
        .iter()
        .any(|&b| is_bad_value_byte(b))
    {
        return Err(Error::InvalidHeader("control character in field value"));
    }
    Ok((line.0 + s, line.0 + e))
}

/// Split a path-and-query (starting at absolute offset `base`) into path,
/// query and fragment spans, as `urllib.parse.urlsplit` does: the fragment
/// is cut first, then the query.
fn split_path(base: usize, s: &[u8]) -> (Span, Span, Span) {
    let end = base + s.len();
    let (before_frag, fragment) = match s.iter().position(|&b| b == b'#') {
        Some(h) => (h, (base + h + 1, end)),
        None => (s.len(), (end, end)),
    };
    match s[..before_frag].iter().position(|&b| b == b'?') {
        Some(q) => (
            (base, base + q),
            (base + q + 1, base + before_frag),
            fragment,
        ),
        None => (
            (base, base + before_frag),
            (base + before_frag, base + before_frag),
            fragment,
        ),
    }
}

/// RFC 3986 3.2: `authority = [ userinfo "@" ] host [ ":" port ]`, checked
/// only for absolute-form targets (origin-form requests never come here).
/// `host` is an IP-literal in brackets (an IPv6 address, with an optional
/// zone, or an IPvFuture), or a reg-name (which covers IPv4 addresses);
/// `port` is digits. An empty authority (`http:///p`) stays accepted, as
/// `urlsplit` accepts it.
fn valid_authority(a: &[u8]) -> bool {
    let unreserved_or_sub = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
    // `*( allowed / pct-encoded )`
    let all = |s: &[u8], extra: u8| {
        let mut i = 0;
        while i < s.len() {
            match s[i] {
                b'%' => {
                    let hex = |j: usize| s.get(j).is_some_and(u8::is_ascii_hexdigit);
                    if !(hex(i + 1) && hex(i + 2)) {
                        return false;
                    }
                    i += 3;
                }
                b if unreserved_or_sub(b) || b == extra => i += 1,
                _ => return false,
            }
        }
        true
    };
    let host_port = match a.iter().position(|&b| b == b'@') {
        Some(at) if all(&a[..at], b':') => &a[at + 1..],
        Some(_) => return false,
        None => a,
    };
    let (host_ok, port) = if let Some(inner) = host_port.strip_prefix(b"[") {
        let Some(close) = inner.iter().position(|&b| b == b']') else {
            return false;
        };
        (valid_ip_literal(&inner[..close]), &inner[close + 1..])
    } else {
        match host_port.iter().position(|&b| b == b':') {
            Some(c) => (all(&host_port[..c], 0), &host_port[c..]),
            None => (all(host_port, 0), &host_port[host_port.len()..]),
        }
    };
    host_ok
        && match port {
            [] => true,
            [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
}

/// The inside of `[...]`: `IPvFuture = "v" 1*HEXDIG "." 1*( unreserved /
/// sub-delims / ":" )`, or an IPv6 address with an optional `%` zone
/// (RFC 6874) of unreserved or pct-encoded bytes.
fn valid_ip_literal(lit: &[u8]) -> bool {
    if let Some(rest) = lit.strip_prefix(b"v").or_else(|| lit.strip_prefix(b"V")) {
        let Some(dot) = rest.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (ver, tail) = (&rest[..dot], &rest[dot + 1..]);
        return !ver.is_empty()
            && ver.iter().all(u8::is_ascii_hexdigit)
            && !tail.is_empty()
            && tail
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:".contains(&b));
    }
    let (addr, zone) = match lit.iter().position(|&b| b == b'%') {
        Some(p) => (&lit[..p], Some(&lit[p + 1..])),
        None => (lit, None),
    };
    let addr_ok = std::str::from_utf8(addr)
        .ok()
        .and_then(|s| s.parse::<std::net::Ipv6Addr>().ok())
        .is_some();
    let zone_ok = zone.is_none_or(|z| {
        !z.is_empty()
            && z.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b))
    });
    addr_ok && zone_ok
}

fn find_lf(buf: &[u8], from: usize, to: usize) -> Option<usize> {
    if from >= to {
        return None;
    }
    find_byte(&buf[from..to], b'\n').map(|i| from + i)
}

fn find_sub(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(opts: Options, input: &[u8]) -> Result<Option<(Head<'_>, usize)>, Error> {
        Parser::new(opts).parse(input)
    }

    fn ok(input: &[u8]) -> (Head<'_>, usize) {
        match parse_all(Options::default(), input) {
            Ok(Some(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn err(input: &[u8]) -> Error {
        match parse_all(Options::default(), input) {
            Err(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_get() {
        let input = b"GET /a/b?x=1&y#frag HTTP/1.1\r\nHost: example.com\r\nX-A:  v  \r\n\r\nBODY";
        let (h, n) = ok(input);
        assert_eq!(&input[n..], b"BODY");
        assert_eq!(&*h.method, b"GET");
        assert_eq!(h.target, b"/a/b?x=1&y#frag");
        assert_eq!(h.path, b"/a/b");
        assert_eq!(h.query, b"x=1&y");
        assert_eq!(h.fragment, b"frag");
        assert_eq!(h.version, (1, 1));
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.header(b"x-a"), Some(&b"v"[..]));
        assert_eq!(h.body, BodyKind::None);
        assert!(h.keep_alive);
        assert!(!h.expect_continue);
    }

    #[test]
    fn incremental_matches_whole() {
        let input = b"\r\nPOST http://h:80/p?q HTTP/1.0\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";
        let mut p = Parser::new(Options::default());
        for end in 0..input.len() - 3 {
            assert!(p.parse(&input[..end]).unwrap().is_none(), "{end}");
        }
        let (h, n) = p.parse(input).unwrap().unwrap();
        assert_eq!(n, input.len() - 3);
        assert_eq!(h.path, b"/p");
        assert_eq!(h.query, b"q");
        assert_eq!(h.body, BodyKind::Length(3));
        assert!(h.keep_alive);
    }

    #[test]
    fn limits() {
        let mut long = b"GET /".to_vec();
        long.extend(std::iter::repeat_n(b'a', 5000));
        assert_eq!(err(&long), Error::RequestLineTooLong);
        // Exactly at the limit is fine.
        let mut line = b"GET /".to_vec();
        line.resize(4094 - 9, b'a');
        line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(ok(&line).0.target.len(), 4094 - 13);
        let mut over = b"GET /".to_vec();
        over.resize(4095 - 9, b'a');
        over.extend_from_slice(b" HTTP/1.1\r\n\r\n");
        assert_eq!(err(&over), Error::RequestLineTooLong);

        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..101 {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        assert_eq!(err(&many), Error::TooManyHeaders);

        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(8300, b'v');
        assert_eq!(err(&big), Error::HeaderFieldTooLarge);
    }

    #[test]
    fn request_line_errors() {
        assert_eq!(err(b"get / HTTP/1.1\r\n\r\n"), Error::InvalidMethod);
        assert_eq!(err(b"GE / HTTP/1.1\r\n\r\n"), Error::InvalidMethod);
        assert_eq!(
            err(b"GET  / HTTP/1.1\r\n\r\n"),
            Error::InvalidRequestLine("empty request-target")
        );
        assert_eq!(err(b"GET / HTTP/2.0\r\n\r\n"), Error::InvalidVersion);
        assert_eq!(err(b"GET / HTTP/1.1 \r\n\r\n"), Error::InvalidVersion);
        assert_eq!(
            err(b"GET * HTTP/1.1\r\n\r\n"),
            Error::InvalidRequestLine("asterisk-form outside OPTIONS")
        );
        assert_eq!(
            err(b"GET h:80 HTTP/1.1\r\n\r\n"),
            Error::InvalidRequestLine("authority-form outside CONNECT")
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\n\r\n"),
            Error::InvalidRequestLine("bare LF as line terminator")
        );
        assert_eq!(err(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Error::InvalidMethod);
        assert_eq!(err(b"\x16\x03\x01"), Error::InvalidMethod);
    }

    #[test]
    fn casefold_needs_unconventional() {
        let opts = Options {
            casefold_http_method: true,
            permit_unconventional_http_method: true,
            ..Options::default()
        };
        let input = b"get / HTTP/1.1\r\n\r\n";
        let (h, _) = parse_all(opts, input).unwrap().unwrap();
        assert_eq!(&*h.method, b"GET");
        assert!(matches!(h.method, Cow::Owned(_)));
    }

    #[test]
    fn folding() {
        let opts = Options {
            permit_obsolete_folding: true,
            ..Options::default()
        };
        let input = b"GET / HTTP/1.1\r\nX: a\r\n  b \r\n\tc\r\nY: d\r\n\r\n";
        let (h, _) = parse_all(opts, input).unwrap().unwrap();
        assert_eq!(h.header(b"x"), Some(&b"a b c"[..]));
        assert_eq!(h.header(b"y"), Some(&b"d"[..]));
        assert_eq!(err(input), Error::ObsoleteFolding);
    }

    #[test]
    fn framing() {
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .0
                .body,
            BodyKind::Chunked
        );
        assert!(
            !ok(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .0
                .keep_alive
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nTransfer-Encoding: br\r\n\r\n"),
            Error::UnsupportedTransferCoding
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n").status(),
            400
        );
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nExpect: 101-whatever\r\n\r\n"),
            Error::ExpectationFailed
        );
        assert!(
            ok(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\n\r\n")
                .0
                .expect_continue
        );
        assert!(
            !ok(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")
                .0
                .expect_continue
        );
    }

    #[test]
    fn underscore_headers() {
        let input = b"GET / HTTP/1.1\r\nScript_Name: /x\r\nX_Y: 1\r\n\r\n";
        assert!(ok(input).0.headers.is_empty());
        let mut p = Parser::new(Options::default());
        p.set_peer_trusted(true);
        let (h, _) = p.parse(input).unwrap().unwrap();
        assert_eq!(h.headers.len(), 1);
        assert_eq!(h.headers[0].0, b"Script_Name");
        let refuse = Options {
            header_map: HeaderMap::Refuse,
            ..Options::default()
        };
        assert_eq!(parse_all(refuse, input).unwrap_err().status(), 400);
        let dangerous = Options {
            header_map: HeaderMap::Dangerous,
            ..Options::default()
        };
        assert_eq!(
            parse_all(dangerous, input)
                .unwrap()
                .unwrap()
                .0
                .headers
                .len(),
            2
        );
    }
}

#[cfg(test)]
mod bounded {
    use super::*;

    /// 10 MB without a line end, arriving in 64 KiB reads, is refused long
    /// before it is all buffered, with the default limit and with
    /// `limit_request_line = 0` (unlimited, capped at 1 MiB).
    #[test]
    fn ten_megabytes_without_crlf() {
        for (limit, max_seen) in [
            (4094, 64 * 1024),
            (0, UNLIMITED_REQUEST_LINE_CAP + 64 * 1024),
        ] {
            let opts = Options {
                limit_request_line: limit,
                ..Options::default()
            };
            let mut p = Parser::new(opts);
            let mut buf = b"GET /".to_vec();
            let mut refused_at = None;
            while buf.len() < 10 * 1024 * 1024 {
                buf.extend(std::iter::repeat_n(b'a', 64 * 1024));
                match p.parse(&buf) {
                    Ok(None) => {}
                    Err(e) => {
                        assert_eq!(e, Error::RequestLineTooLong);
                        refused_at = Some(buf.len());
                        break;
                    }
                    Ok(Some(_)) => panic!("accepted"),
                }
            }
            let at = refused_at.expect("never refused");
            assert!(at <= max_seen + 5, "refused only after {at} bytes");
        }
    }

    /// Header bytes one at a time: refused as soon as the field exceeds its
    /// limit, and each call does constant work (resumable scanning).
    #[test]
    fn header_byte_at_a_time() {
        let mut p = Parser::new(Options::default());
        let mut buf = b"GET / HTTP/1.1\r\nX: ".to_vec();
        assert!(p.parse(&buf).unwrap().is_none());
        for i in 0..20_000 {
            buf.push(b'v');
            match p.parse(&buf) {
                Ok(None) => {}
                Err(e) => {
                    assert_eq!(e, Error::HeaderFieldTooLarge);
                    assert!(i < 8190, "{i}");
                    return;
                }
                Ok(Some(_)) => panic!("accepted"),
            }
        }
        panic!("never refused");
    }

    #[test]
    fn shorter_buffer_restarts() {
        let mut p = Parser::new(Options::default());
        assert!(p.parse(b"GET / HTTP/1.1\r\nX: y").unwrap().is_none());
        // A new, shorter buffer: the parser starts over rather than
        // indexing past its end.
        let (h, n) = p.parse(b"PUT /x HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(&*h.method, b"PUT");
        assert_eq!(n, 19);
    }
}

/// The one-pass readers ([`fast_request_line`], [`fast_field`]) against
/// the general path alone: the same outcome (head, consumed bytes, or
/// error) for every input, option set and chunking.
#[cfg(test)]
mod fast_path {
    use super::*;

    fn option_sets() -> Vec<(Options, bool)> {
        let base = Options::default();
        vec![
            (base.clone(), false),
            (base.clone(), true),
            (
                Options {
                    strip_header_spaces: true,
                    permit_obsolete_folding: true,
                    ..base.clone()
                },
                false,
            ),
            (
                Options {
                    limit_request_field_size: 24,
                    limit_request_fields: 3,
                    header_map: HeaderMap::Refuse,
                    ..base.clone()
                },
                false,
            ),
            (
                Options {
                    limit_request_field_size: 17,
                    header_map: HeaderMap::Dangerous,
                    permit_obsolete_folding: true,
                    ..base.clone()
                },
                true,
            ),
            (
                Options {
                    limit_request_line: 16,
                    casefold_http_method: true,
                    permit_unconventional_http_method: true,
                    permit_unconventional_http_version: true,
                    ..base
                },
                false,
            ),
        ]
    }

    fn parser(opts: &Options, trusted: bool, fast: bool) -> Parser {
        let mut p = Parser::new(opts.clone());
        p.set_peer_trusted(trusted);
        p.fast_paths = fast;
        p
    }

    /// Whole-buffer outcome and the outcome fed one byte at a time, as text.
    fn outcomes(opts: &Options, trusted: bool, fast: bool, input: &[u8]) -> (String, String) {
        let whole = format!("{:?}", parser(opts, trusted, fast).parse(input));
        let mut p = parser(opts, trusted, fast);
        let mut fed = String::from("incomplete");
        for end in 1..=input.len() {
            match p.parse(&input[..end]) {
                Ok(None) => {}
                other => {
                    fed = format!("{end}: {other:?}");
                    break;
                }
            }
        }
        (whole, fed)
    }

    fn same(input: &[u8]) {
        for (opts, trusted) in option_sets() {
            let fast = outcomes(&opts, trusted, true, input);
            let slow = outcomes(&opts, trusted, false, input);
            assert_eq!(fast, slow, "{:?} {opts:?}", String::from_utf8_lossy(input));
        }
    }

    const TRICKY: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: profile\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:a\r\nX:\r\nY: \t \r\nZ:\t\tv\t \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        b"GET / HTTP/1.1\r\n: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
        b"GET / HTTP/1.1\r\nX(y): a\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\nb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x0bb\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: caf\xc3\xa9 \x80\xff\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\nY: c\r\n\r\n",
        b"GET / HTTP/1.1\r\n b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX_Y: a\r\nScript_Name: /x\r\nPath_Info: /y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nContent-Type: a\r\nCONTENT-TYPE: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: \tchunked\t\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        b"POST / HTTP/1.1\r\nExpect: 100-continue \r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 123456789012345678\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1234567890123456789\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 12345678901234567890\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 123456789012\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nA:b\r\nB: 1\r\n\r",
        b"GET / HTTP/1.1\r\nA:b\r\nB: 1\r\n\rX",
        b"GET / HTTP/1.1\r\nA:b\r\nB: 1\r\n\n",
        b"GET / HTTP/1.1\r\nA:b\r\nB: 1\r\n",
        b"GET / HTTP/1.1\r\nA:b\r\nB: 1\r",
        b"GET / HTTP/1.1\r\nA:b\r\n\r\nBODY\r\nX: y\r\n\r\n",
        b"\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"\r\n\r\nGET / HTTP/1.1\r\n\r\n",
        b"\nGET / HTTP/1.1\r\n\r\n",
        b"GET /a?b#c HTTP/1.1\r\n\r\n",
        b"GET /a#b?c HTTP/1.1\r\n\r\n",
        b"GET /?# HTTP/1.0\r\n\r\n",
        // 16 and 17 bytes: at and over one option set's limit_request_line.
        b"GET /ab HTTP/1.1\r\n\r\n",
        b"GET /abc HTTP/1.1\r\n\r\n",
        b"GET /abcdefg HTTP/1.1\r\n\r\n",
        b"GET /abcdefgh HTTP/1.1\r\n\r\n",
        b"GET /abcdefghi HTTP/1.1\r\n\r\n",
        b"GE / HTTP/1.1\r\n\r\n",
        b"get / HTTP/1.1\r\n\r\n",
        b"Get / HTTP/1.1\r\n\r\n",
        b"ABCDEFGHIJKLMNOPQRST / HTTP/1.1\r\n\r\n",
        b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1\r\n\r\n",
        b"M-SEARCH * HTTP/1.1\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\n\r\n",
        b"CONNECT h:443 HTTP/1.1\r\n\r\n",
        b"GET http://h/p?q HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1 \r\n\r\n",
        b"GET /  HTTP/1.1\r\n\r\n",
        b"GET /\t HTTP/1.1\r\n\r\n",
        b"GET /\x7f HTTP/1.1\r\n\r\n",
        b"GET /\x80 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.x\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/0.9\r\n\r\n",
        b"GET / http/1.1\r\n\r\n",
        b"GET / HTTP/1.1\n\r\n",
        b"GET / HTTP/1.1\r\r\n\r\n",
        b"GET / HTTP/1.10\r\n\r\n",
        b"GET / HTTP/1.1",
        b"GET /",
        b"\x16\x03\x01\x02",
    ];

    #[test]
    fn tricky_inputs() {
        for input in TRICKY {
            same(input);
        }
    }

    /// Long values (the word-at-a-time scan) with a bad byte at each place.
    #[test]
    fn long_values() {
        for bad in [0u8, b'\t', b'\n', b'\r', 0x0b, 0x1f, b' ', 0x7f, 0x80, b':'] {
            for at in 0..40 {
                let mut input = b"GET / HTTP/1.1\r\nUser-Agent: ".to_vec();
                let mut value = vec![b'v'; 40];
                value[at] = bad;
                input.extend_from_slice(&value);
                input.extend_from_slice(b"\r\nHost: h\r\n\r\n");
                same(&input);
            }
        }
    }

    /// Seeded mutations of ordinary requests: bytes replaced by, or
    /// inserted as, the bytes that matter to a field line.
    #[test]
    fn mutations() {
        const SEEDS: &[&[u8]] = &[
            b"GET /p?q HTTP/1.1\r\nHost: example.com\r\nUser-Agent: x/1.0\r\nAccept: */*\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nX_A: b\r\nExpect: 100-continue\r\n\r\nabc",
        ];
        const BYTES: &[u8] = b"\r\n\t :_(\x00\x7f\x80\xff\x0ba,/?#*E1.";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
        };
        for round in 0..1500 {
            let mut input = SEEDS[round % SEEDS.len()].to_vec();
            for _ in 0..1 + next(3) {
                // Mostly in the field lines, one in four in the request line.
                let from = if round % 4 == 0 { 0 } else { 16 };
                let at = from + next(input.len() - from);
                let b = BYTES[next(BYTES.len())];
                match next(3) {
                    0 => input.insert(at, b),
                    1 if input.len() > 20 => {
                        input.remove(at);
                    }
                    _ => input[at] = b,
                }
            }
            same(&input);
        }
    }
}
