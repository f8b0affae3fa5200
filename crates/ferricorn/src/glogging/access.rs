//! Access-log format: parsed once at start-up into segments, rendered per
//! request without touching Python.
//!
//! Atoms (gunicorn's): h l u t r m U q H s B b f a T D M L p, `{name}i`
//! (request header), `{name}o` (response header), `{name}e` (environ).
//! A missing value renders as `-`, as gunicorn's `SafeAtoms` does.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(Vec<u8>),
    Atom(Atom),
}

#[derive(Debug, Clone, PartialEq)]
enum Atom {
    Char(u8),
    RequestHeader(String),
    ResponseHeader(String),
    Environ(String),
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Format {
    segments: Vec<Segment>,
}

/// Looks up an environ variable by name (for `{var}e`).
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
                        let mut j = i + 2 + close + 1;
                        // Skip the conversion spec (flags/width and a type letter).
                        while j < bytes.len() && !bytes[j].is_ascii_alphabetic() {
                            j += 1;
                        }
                        if j < bytes.len() {
                            j += 1;
                        }
                        if !lit.is_empty() {
                            segments.push(Segment::Literal(std::mem::take(&mut lit)));
                        }
                        segments.push(Segment::Atom(Atom::parse(name)));
                        i = j;
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
        Format { segments }
    }

    pub fn render(&self, rec: &Record, out: &mut Vec<u8>) {
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.extend_from_slice(l),
                Segment::Atom(a) => a.render(rec, out),
            }
        }
    }
}

impl Atom {
    fn parse(name: &str) -> Atom {
        if let Some(inner) = name.strip_prefix('{') {
            if let Some((key, kind)) = inner.rsplit_once('}') {
                return match kind {
                    "i" => Atom::RequestHeader(key.to_ascii_lowercase()),
                    "o" => Atom::ResponseHeader(key.to_ascii_lowercase()),
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

    fn render(&self, rec: &Record, out: &mut Vec<u8>) {
        let dash = |out: &mut Vec<u8>, v: &[u8]| {
            if v.is_empty() {
                out.push(b'-')
            } else {
                out.extend_from_slice(v)
            }
        };
        match self {
            Atom::Char(c) => match c {
                b'h' => dash(out, rec.remote_addr.as_bytes()),
                b'l' => out.push(b'-'),
                b'u' => dash(
                    out,
                    basic_auth_user(rec.request_headers)
                        .as_deref()
                        .unwrap_or_default()
                        .as_bytes(),
                ),
                b't' => {
                    out.push(b'[');
                    out.extend_from_slice(
                        jiff::ZonedDateTime::now()
                            .strftime("%d/%b/%Y:%H:%M:%S %z")
                            .to_string()
                            .as_bytes(),
                    );
                    out.push(b']');
                }
                b'r' => {
                    out.extend_from_slice(rec.method);
                    out.push(b' ');
                    out.extend_from_slice(rec.raw_uri);
                    out.push(b' ');
                    out.extend_from_slice(rec.protocol.as_bytes());
                }
                b'm' => out.extend_from_slice(rec.method),
                b'U' => out.extend_from_slice(rec.path_info),
                b'q' => out.extend_from_slice(rec.query),
                b'H' => out.extend_from_slice(rec.protocol.as_bytes()),
                b's' => dash(out, rec.status),
                b'B' => match rec.sent {
                    Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
                    None => out.push(b'-'),
                },
                b'b' => match rec.sent {
                    Some(n) => out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes()),
                    None => out.push(b'-'),
                },
                b'f' => dash(
                    out,
                    header(rec.request_headers, "referer").unwrap_or_default(),
                ),
                b'a' => dash(
                    out,
                    header(rec.request_headers, "user-agent").unwrap_or_default(),
                ),
                b'T' => out.extend_from_slice(
                    itoa::Buffer::new()
                        .format(rec.duration.as_secs())
                        .as_bytes(),
                ),
                b'D' => out.extend_from_slice(
                    itoa::Buffer::new()
                        .format(rec.duration.as_micros())
                        .as_bytes(),
                ),
                b'M' => out.extend_from_slice(
                    itoa::Buffer::new()
                        .format(rec.duration.as_millis())
                        .as_bytes(),
                ),
                b'L' => out.extend_from_slice(
                    format!(
                        "{}.{:06}",
                        rec.duration.as_secs(),
                        rec.duration.subsec_micros()
                    )
                    .as_bytes(),
                ),
                b'p' => out.extend_from_slice(format!("<{}>", std::process::id()).as_bytes()),
                _ => out.push(b'-'),
            },
            Atom::RequestHeader(name) => {
                dash(out, header(rec.request_headers, name).unwrap_or_default())
            }
            Atom::ResponseHeader(name) => {
                let v = rec
                    .response_headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
                    .map(|(_, v)| v.as_slice());
                dash(out, v.unwrap_or_default())
            }
            Atom::Environ(key) => {
                let v = rec.environ.and_then(|f| f(key));
                dash(out, v.as_deref().unwrap_or_default().as_bytes())
            }
            Atom::Unknown => out.push(b'-'),
        }
    }
}

fn header<'a>(headers: &[(&'a [u8], &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

/// The user name of a `Authorization: Basic` header, as gunicorn's `u` atom.
fn basic_auth_user(headers: &[(&[u8], &[u8])]) -> Option<String> {
    let value = header(headers, "authorization")?;
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, creds) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(creds.trim())?;
    let s = String::from_utf8(decoded).ok()?;
    Some(s.split_once(':').map_or(s.clone(), |(u, _)| u.to_string()))
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = chunk.len();
        if n < 2 {
            return None;
        }
        out.push((acc >> 16) as u8);
        if n > 2 {
            out.push((acc >> 8) as u8);
        }
        if n > 3 {
            out.push(acc as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(
        headers: &'a [(&'a [u8], &'a [u8])],
        resp: &'a [(Vec<u8>, Vec<u8>)],
    ) -> Record<'a> {
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

    #[test]
    fn default_format_without_time() {
        let headers: &[(&[u8], &[u8])] = &[(b"User-Agent", b"curl/8"), (b"Referer", b"http://x/")];
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
    fn timing_and_header_atoms() {
        let headers: &[(&[u8], &[u8])] =
            &[(b"X-Id", b"7"), (b"Authorization", b"Basic dXNlcjpwYXNz")];
        let resp = vec![(b"Content-Type".to_vec(), b"text/plain".to_vec())];
        let rec = record(headers, &resp);
        assert_eq!(
            render("%(T)s %(D)s %(M)s %(L)s %(U)s %(q)s %(m)s %(H)s", &rec),
            "1 1234567 1234 1.234567 /a b=1 GET HTTP/1.1"
        );
        assert_eq!(
            render("%({x-id}i)s %({content-type}o)s %({missing}i)s %(u)s", &rec),
            "7 text/plain - user"
        );
        assert_eq!(render("%(nope)s 100%%", &rec), "- 100%");
    }

    #[test]
    fn time_atom_shape() {
        let rec = record(&[], &[]);
        let t = render("%(t)s", &rec);
        assert!(
            t.starts_with('[') && t.ends_with(']') && t.len() == 28,
            "{t}"
        );
    }
}
