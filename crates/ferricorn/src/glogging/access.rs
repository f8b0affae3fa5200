//! Access-log format: parsed once at start-up into segments, rendered per
//! request without touching Python (except `{var}e`, which reads the environ).
//!
//! Atoms (gunicorn's): h l u t r m U q H s B b f a T D M L p, `{name}i`
//! (request header), `{name}o` (response header), `{name}e` (environ).
//! Rendering follows gunicorn's `Logger.atoms` + `SafeAtoms` + Python's `%`:
//! - an unknown atom or a missing header/variable renders as `-`; a header
//!   that is present but empty renders empty (`f`, `a`, `{..}i` alike);
//! - `"` inside any string value is written as `\"`; numbers are not touched;
//! - `{..}` names are matched case-insensitively, plain atoms are not;
//! - bytes from the wire (headers, URI) are latin-1, written out as UTF-8,
//!   as Python's logging does with the latin-1 strings gunicorn builds;
//! - conversion flags and width (`%(s)5s`, `%(D)-8d`, `%(U)r`) are honoured.
//!
//! `t` is `[%d/%b/%Y:%H:%M:%S %z]` in local time, formatted once per second
//! per thread and reused.
//!
//! gunicorn counterpart: `glogging.Logger.atoms`, `SafeAtoms`, `Logger.now`.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(Vec<u8>),
    Field(Atom, Spec),
}

/// A `%` conversion: flags, width, type letter.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Spec {
    left: bool,
    zero: bool,
    width: usize,
    /// `s`, `d`, `r`, …; anything else renders like `s`.
    conv: u8,
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Char(u8),
    RequestHeader(String),
    ResponseHeader(String),
    /// The lower-cased variable name.
    Environ(String),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Format {
    segments: Vec<Segment>,
    /// The format string as given (Python logging gets it as the record's `msg`).
    source: String,
}

/// Looks up an environ variable by lower-cased name, case-insensitively (for `{var}e`).
pub type EnvironLookup<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// Everything about one request/response the atoms can show.
pub struct Record<'a> {
    pub remote_addr: &'a str,
    pub method: &'a [u8],
    pub raw_uri: &'a [u8],
    pub path_info: &'a [u8],
    pub query: &'a [u8],
    pub protocol: &'a str,
    /// The status code as the app gave it ("200").
    pub status: &'a [u8],
    /// Body bytes sent; `None` if no response was started.
    pub sent: Option<u64>,
    pub request_headers: &'a [(&'a [u8], &'a [u8])],
    pub response_headers: &'a [(Vec<u8>, Vec<u8>)],
    pub duration: Duration,
    /// Looks up an environ variable for `{var}e` (None when not available).
    pub environ: Option<&'a EnvironLookup<'a>>,
}

/// One atom's value before formatting.
enum Val<'a> {
    Missing,
    /// Bytes off the wire, latin-1.
    Latin1(&'a [u8]),
    Text(std::borrow::Cow<'a, str>),
    Int(u128),
}

impl Format {
    /// Parse a Python %-style format string such as `%(h)s "%(r)s"`.
    pub fn parse(fmt: &str) -> Format {
        let bytes = fmt.as_bytes();
        let mut segments = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                if bytes.get(i + 1) == Some(&b'%') {
                    lit.push(b'%');
                    i += 2;
                    continue;
                }
                if bytes.get(i + 1) == Some(&b'(') {
                    if let Some(close) = fmt[i + 2..].find(')') {
                        let name = &fmt[i + 2..i + 2 + close];
                        let (spec, next) = parse_spec(bytes, i + 2 + close + 1);
                        if !lit.is_empty() {
                            segments.push(Segment::Literal(std::mem::take(&mut lit)));
                        }
                        segments.push(Segment::Field(Atom::parse(name), spec));
                        i = next;
                        continue;
                    }
                }
            }
            lit.push(bytes[i]);
            i += 1;
        }
        if !lit.is_empty() {
            segments.push(Segment::Literal(lit));
        }
        Format {
            segments,
            source: fmt.to_string(),
        }
    }

    /// The format string as given.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether any atom needs the WSGI environ.
    pub fn uses_environ(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Field(Atom::Environ(_), _)))
    }

    pub fn render(&self, rec: &Record, out: &mut Vec<u8>) {
        let mut scratch = Vec::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.extend_from_slice(l),
                Segment::Field(atom, spec) => {
                    scratch.clear();
                    atom.value(rec, |v| write_value(&v, spec, &mut scratch));
                    pad(&scratch, spec, out);
                }
            }
        }
    }
}

/// Parse `[flags][width][.precision]type` after `%(name)`; returns the spec and the next index.
fn parse_spec(bytes: &[u8], mut j: usize) -> (Spec, usize) {
    let mut spec = Spec::default();
    while let Some(&c) = bytes.get(j) {
        match c {
            b'-' => spec.left = true,
            b'0' => spec.zero = true,
            b' ' | b'+' | b'#' => {}
            _ => break,
        }
        j += 1;
    }
    while let Some(&c) = bytes.get(j) {
        if !c.is_ascii_digit() {
            break;
        }
        spec.width = spec.width * 10 + usize::from(c - b'0');
        j += 1;
    }
    if bytes.get(j) == Some(&b'.') {
        j += 1;
        while bytes.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
    }
    if let Some(&c) = bytes.get(j) {
        spec.conv = c;
        j += 1;
    }
    (spec, j)
}

/// Write a value with `"` escaped as gunicorn's `SafeAtoms` does.
fn write_value(v: &Val, spec: &Spec, out: &mut Vec<u8>) {
    let repr = spec.conv == b'r' || spec.conv == b'a';
    match v {
        Val::Int(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Val::Missing => push_str(b"-", repr, out, false),
        Val::Latin1(b) => push_str(b, repr, out, true),
        Val::Text(s) => push_str(s.as_bytes(), repr, out, false),
    }
}

fn push_str(b: &[u8], repr: bool, out: &mut Vec<u8>, latin1: bool) {
    if repr {
        out.push(b'\'');
    }
    for &c in b {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\'' if repr => out.extend_from_slice(b"\\'"),
            0x80.. if latin1 => {
                // latin-1 code point → UTF-8 (two bytes for U+0080..U+00FF).
                out.push(0xC0 | (c >> 6));
                out.push(0x80 | (c & 0x3F));
            }
            _ => out.push(c),
        }
    }
    if repr {
        out.push(b'\'');
    }
}

fn pad(v: &[u8], spec: &Spec, out: &mut Vec<u8>) {
    let chars = std::str::from_utf8(v).map_or(v.len(), |s| s.chars().count());
    let fill = spec.width.saturating_sub(chars);
    if fill == 0 {
        out.extend_from_slice(v);
    } else if spec.left {
        out.extend_from_slice(v);
        out.resize(out.len() + fill, b' ');
    } else if spec.zero && matches!(spec.conv, b'd' | b'i' | b'u') {
        out.resize(out.len() + fill, b'0');
        out.extend_from_slice(v);
    } else {
        out.resize(out.len() + fill, b' ');
        out.extend_from_slice(v);
    }
}

impl Atom {
    fn parse(name: &str) -> Atom {
        if name.starts_with('{') {
            let lower = name.to_ascii_lowercase();
            if let Some((key, kind)) = lower[1..].rsplit_once('}') {
                return match kind {
                    "i" => Atom::RequestHeader(key.to_string()),
                    "o" => Atom::ResponseHeader(key.to_string()),
                    "e" => Atom::Environ(key.to_string()),
                    _ => Atom::Unknown,
                };
            }
            return Atom::Unknown;
        }
        match name.as_bytes() {
            [c] if b"hlutrmUqHsBbfaTDMLp".contains(c) => Atom::Char(*c),
            _ => Atom::Unknown,
        }
    }

    /// Hand the atom's value to `f` (a callback, so borrowed and temporary values both work).
    fn value(&self, rec: &Record, f: impl FnOnce(Val)) {
        fn opt(v: Option<&[u8]>) -> Val<'_> {
            v.map_or(Val::Missing, Val::Latin1)
        }
        let num = |n: u128| Val::Int(n);
        match self {
            Atom::Char(c) => match c {
                b'h' => f(Val::Text(rec.remote_addr.into())),
                b'l' => f(Val::Missing),
                b'u' => match basic_auth_user(rec.request_headers) {
                    Some(u) if !u.is_empty() => f(Val::Text(u.into())),
                    _ => f(Val::Missing),
                },
                b't' => with_now(|t| f(Val::Latin1(t))),
                b'r' => {
                    let mut r = Vec::with_capacity(rec.method.len() + rec.raw_uri.len() + 10);
                    r.extend_from_slice(rec.method);
                    r.push(b' ');
                    r.extend_from_slice(rec.raw_uri);
                    r.push(b' ');
                    r.extend_from_slice(rec.protocol.as_bytes());
                    f(Val::Latin1(&r))
                }
                b'm' => f(Val::Latin1(rec.method)),
                b'U' => f(Val::Latin1(rec.path_info)),
                b'q' => f(Val::Latin1(rec.query)),
                b'H' => f(Val::Text(rec.protocol.into())),
                b's' => {
                    let code = rec.status.split(|&b| b == b' ').next().unwrap_or_default();
                    f(Val::Latin1(code))
                }
                b'B' | b'b' => f(rec.sent.map_or(Val::Missing, |n| num(u128::from(n)))),
                b'f' => match joined_header(rec.request_headers, "referer") {
                    Some(v) => f(Val::Latin1(&v)),
                    None => f(Val::Missing),
                },
                b'a' => match joined_header(rec.request_headers, "user-agent") {
                    Some(v) => f(Val::Latin1(&v)),
                    None => f(Val::Missing),
                },
                b'T' => f(num(u128::from(rec.duration.as_secs()))),
                b'D' => f(num(rec.duration.as_micros())),
                b'M' => f(num(rec.duration.as_millis())),
                b'L' => f(Val::Text(
                    format!(
                        "{}.{:06}",
                        rec.duration.as_secs(),
                        rec.duration.subsec_micros()
                    )
                    .into(),
                )),
                b'p' => f(Val::Text(format!("<{}>", std::process::id()).into())),
                _ => f(Val::Missing),
            },
            Atom::RequestHeader(name) => f(opt(last_header(rec.request_headers, name))),
            Atom::ResponseHeader(name) => {
                let v = rec
                    .response_headers
                    .iter()
                    .rev()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v.as_slice());
                f(opt(v))
            }
            Atom::Environ(key) => match rec.environ.and_then(|look| look(key)) {
                Some(v) => f(Val::Text(v.into())),
                None => f(Val::Missing),
            },
            Atom::Unknown => f(Val::Missing),
        }
    }
}

/// One entry of gunicorn's atoms dict, as Python logging receives it.
#[derive(Debug, Clone, PartialEq)]
pub enum AtomValue {
    Str(String),
    Int(u128),
    None,
}

/// The one-letter atoms with the values and types gunicorn's
/// `Logger.atoms` gives them (`B` is `None` and `b` is `'-'` when no
/// response was started; `T`, `D`, `M` are ints). Strings are as on the
/// wire (latin-1), before any `"` escaping. The `{..}i/o/e` entries are
/// added by the caller, which has the headers and the environ.
pub fn plain_atoms(rec: &Record) -> Vec<(&'static str, AtomValue)> {
    const NAMES: [&str; 19] = [
        "h", "l", "u", "t", "r", "s", "m", "U", "q", "H", "b", "B", "f", "a", "T", "D", "M", "L",
        "p",
    ];
    NAMES
        .iter()
        .map(|&name| {
            let mut value = AtomValue::None;
            Atom::Char(name.as_bytes()[0]).value(rec, |v| {
                value = match v {
                    Val::Missing => AtomValue::Str("-".into()),
                    Val::Latin1(b) => AtomValue::Str(b.iter().map(|&c| char::from(c)).collect()),
                    Val::Text(t) => AtomValue::Str(t.into_owned()),
                    Val::Int(n) => AtomValue::Int(n),
                }
            });
            let value = match (name, value) {
                ("B", AtomValue::Str(_)) => AtomValue::None,
                ("b", AtomValue::Int(n)) => AtomValue::Str(n.to_string()),
                (_, v) => v,
            };
            (name, value)
        })
        .collect()
}

/// The last value of a header (gunicorn's atoms dict keeps the last one).
fn last_header<'a>(headers: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

/// All values of a header joined with `,` (the WSGI environ's `HTTP_*` form).
fn joined_header(headers: &[(&[u8], &[u8])], name: &str) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for (k, v) in headers {
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            match out.as_mut() {
                Some(o) => {
                    o.push(b',');
                    o.extend_from_slice(v);
                }
                None => out = Some(v.to_vec()),
            }
        }
    }
    out
}

/// The user name of a `Authorization: Basic` header, as gunicorn's `u` atom.
fn basic_auth_user(headers: &[(&[u8], &[u8])]) -> Option<String> {
    let value = joined_header(headers, "authorization")?;
    let text = std::str::from_utf8(&value).ok()?;
    if !text.to_ascii_lowercase().starts_with("basic") {
        return None;
    }
    let (_, creds) = text.split_once(' ')?;
    let decoded = base64_decode(creds.trim())?;
    let user = decoded.split(|&b| b == b':').next().unwrap_or_default();
    String::from_utf8(user.to_vec()).ok()
}

/// Python's `base64.b64decode` (non-validating: other characters are dropped,
/// padding must be complete).
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let mut digits: Vec<u32> = Vec::with_capacity(s.len());
    let mut pads = 0;
    for c in s.bytes() {
        if c == b'=' {
            pads += 1;
            continue;
        }
        if let Some(v) = val(c) {
            if pads > 0 {
                break;
            }
            digits.push(v);
        }
    }
    let rem = digits.len() % 4;
    if rem == 1 || (rem != 0 && pads < 4 - rem) {
        return None;
    }
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &d) in chunk.iter().enumerate() {
            acc |= d << (18 - 6 * i);
        }
        let [_, a, b, c] = acc.to_be_bytes();
        out.push(a);
        if chunk.len() > 2 {
            out.push(b);
        }
        if chunk.len() > 3 {
            out.push(c);
        }
    }
    Some(out)
}

thread_local! {
    /// `(unix second, "[24/Nov/2026:17:25:17 +0000]")`, refreshed when the second changes.
    static NOW: RefCell<(u64, Vec<u8>)> = const { RefCell::new((u64::MAX, Vec::new())) };
}

/// Call `f` with the current `t` atom; formats at most once per second per thread.
fn with_now<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    NOW.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != secs {
            c.0 = secs;
            c.1 = format_clf_time(secs);
        }
        f(&c.1)
    })
}

fn format_clf_time(secs: u64) -> Vec<u8> {
    let ts = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let zoned = ts.to_zoned_datetime(jiff::tz::TimeZone::system());
    zoned
        .strftime("[%d/%b/%Y:%H:%M:%S %z]")
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Headers<'a> = &'a [(&'a [u8], &'a [u8])];

    fn record<'a>(headers: Headers<'a>, resp: &'a [(Vec<u8>, Vec<u8>)]) -> Record<'a> {
        Record {
            remote_addr: "127.0.0.1",
            method: b"GET",
            raw_uri: b"/a?b=1",
            path_info: b"/a",
            query: b"b=1",
            protocol: "HTTP/1.1",
            status: b"200",
            sent: Some(13),
            request_headers: headers,
            response_headers: resp,
            duration: Duration::from_micros(1_234_567),
            environ: None,
        }
    }

    fn render(fmt: &str, rec: &Record) -> String {
        let mut out = Vec::new();
        Format::parse(fmt).render(rec, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// One snapshot per atom, with the values gunicorn 27.0.1 renders for the same request.
    #[test]
    fn every_atom_snapshot() {
        let headers: Headers = &[
            (b"Host", b"x"),
            (b"User-Agent", b"curl/8"),
            (b"Referer", b"http://x/"),
            (b"X-Id", b"1"),
            (b"X-Id", b"7"),
            (b"Authorization", b"Basic dXNlcjpwYXNz"),
        ];
        let resp = vec![(b"Content-Type".to_vec(), b"text/plain".to_vec())];
        let lookup = |k: &str| (k == "remote_addr").then(|| "10.0.0.1".to_string());
        let mut rec = record(headers, &resp);
        rec.environ = Some(&lookup);
        let pid = std::process::id();
        let cases: &[(&str, String)] = &[
            ("h", "127.0.0.1".into()),
            ("l", "-".into()),
            ("u", "user".into()),
            ("r", "GET /a?b=1 HTTP/1.1".into()),
            ("m", "GET".into()),
            ("U", "/a".into()),
            ("q", "b=1".into()),
            ("H", "HTTP/1.1".into()),
            ("s", "200".into()),
            ("B", "13".into()),
            ("b", "13".into()),
            ("f", "http://x/".into()),
            ("a", "curl/8".into()),
            ("T", "1".into()),
            ("D", "1234567".into()),
            ("M", "1234".into()),
            ("L", "1.234567".into()),
            ("p", format!("<{pid}>")),
            ("{x-id}i", "7".into()),
            ("{X-ID}i", "7".into()),
            ("{missing}i", "-".into()),
            ("{content-type}o", "text/plain".into()),
            ("{Content-Type}o", "text/plain".into()),
            ("{nope}o", "-".into()),
            ("{REMOTE_ADDR}e", "10.0.0.1".into()),
            ("{remote_addr}e", "10.0.0.1".into()),
            ("{nope}e", "-".into()),
            ("nope", "-".into()),
            ("H2", "-".into()),
        ];
        for (atom, want) in cases {
            assert_eq!(&render(&format!("%({atom})s"), &rec), want, "atom {atom}");
        }
    }

    #[test]
    fn default_format_without_time() {
        let headers: Headers = &[(b"User-Agent", b"curl/8"), (b"Referer", b"http://x/")];
        let rec = record(headers, &[]);
        assert_eq!(
            render(
                r#"%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#,
                &rec
            ),
            r#"127.0.0.1 - - "GET /a?b=1 HTTP/1.1" 200 13 "http://x/" "curl/8""#
        );
    }

    #[test]
    fn quotes_escaped_empty_is_not_missing() {
        let headers: Headers = &[(b"Referer", b""), (b"X-Q", b"a\"b"), (b"User-Agent", b"x")];
        let mut rec = record(headers, &[]);
        rec.status = b"404 Not Found";
        rec.query = b"";
        assert_eq!(
            render(r#""%(f)s" %({x-q}i)s %(s)s [%(q)s] %(B)s"#, &rec),
            r#""" a\"b 404 [] 13"#
        );
        rec.sent = None;
        assert_eq!(render("%(b)s %(B)s", &rec), "- -");
    }

    #[test]
    fn latin1_bytes_written_as_utf8() {
        let headers: Headers = &[(b"X-N", b"caf\xe9")];
        let rec = record(headers, &[]);
        assert_eq!(render("%({x-n}i)s", &rec), "café");
    }

    #[test]
    fn conversions_and_width() {
        let rec = record(&[], &[]);
        assert_eq!(render("%(s)5s|%(s)-5s|", &rec), "  200|200  |");
        assert_eq!(render("%(D)d %(B)08d", &rec), "1234567 00000013");
        assert_eq!(render("%(U)r %(l)r", &rec), "'/a' '-'");
        assert_eq!(render("100%% %(m)s%", &rec), "100% GET%");
    }

    #[test]
    fn user_from_basic_auth() {
        let user = |v: &[u8]| basic_auth_user(&[(b"Authorization", v)]);
        assert_eq!(user(b"Basic dXNlcjpwYXNz").as_deref(), Some("user"));
        assert_eq!(user(b"basic  dXNlcjpwYXNz ").as_deref(), Some("user"));
        assert_eq!(user(b"Basic dXNlcg==").as_deref(), Some("user"));
        assert_eq!(user(b"Basic dXNlcg").as_deref(), None, "padding required");
        assert_eq!(user(b"Bearer abc").as_deref(), None);
        let headers: Headers = &[(b"Authorization", b"Basic OnB3")];
        assert_eq!(render("%(u)s", &record(headers, &[])), "-");
    }

    #[test]
    fn time_atom_shape_and_cache() {
        let rec = record(&[], &[]);
        let t = render("%(t)s", &rec);
        assert!(
            t.starts_with('[') && t.ends_with(']') && t.len() == 28,
            "{t}"
        );
        // 2026-11-24 17:25:17 UTC in the clf form, with the system zone's offset.
        let fixed = String::from_utf8(format_clf_time(1_795_541_117)).unwrap();
        assert_eq!(fixed.len(), 28, "{fixed}");
        assert!(fixed.contains("/Nov/2026:"), "{fixed}");
    }

    #[test]
    fn environ_atoms_detected() {
        assert!(Format::parse("%({X}e)s").uses_environ());
        assert!(!Format::parse("%(h)s %({x}i)s").uses_environ());
    }
}
