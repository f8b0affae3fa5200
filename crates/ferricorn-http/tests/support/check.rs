//! Property checks shared by the fuzz target (`fuzz/fuzz_targets/http.rs`)
//! and the deterministic random test (`tests/random.rs`): on any input the
//! parser, decoders and encoder never panic, never report consuming more
//! than they were given, enforce their limits, and reach the same outcome
//! however the input is split.

#![allow(dead_code, clippy::unwrap_used)]

use ferricorn_http::date::DateCache;
use ferricorn_http::proxy;
use ferricorn_http::response::{BodyEncoder, BodyFraming, ResponseContext, encode_head};
use ferricorn_http::{BodyKind, Decoder, Error, HeaderMap, Options, Parser};

/// Options chosen by the bits of `sel`, with small limits so that fuzzed
/// inputs reach them.
pub fn options(sel: u8) -> Options {
    Options {
        limit_request_line: [4094, 32, 0, 9000][usize::from(sel & 3)],
        limit_request_fields: if sel & 4 != 0 { 4 } else { 100 },
        limit_request_field_size: if sel & 8 != 0 { 40 } else { 8190 },
        casefold_http_method: sel & 16 != 0,
        permit_unconventional_http_method: sel & 16 != 0,
        permit_unconventional_http_version: sel & 32 != 0,
        permit_obsolete_folding: sel & 64 != 0,
        strip_header_spaces: sel & 64 != 0,
        header_map: if sel & 128 != 0 {
            HeaderMap::Dangerous
        } else {
            HeaderMap::Drop
        },
        ..Options::default()
    }
}

/// Effective limits, as the parser normalises them.
fn limits(o: &Options) -> (usize, usize, usize) {
    let line = match o.limit_request_line {
        0 => 1024 * 1024,
        n => n.min(8190),
    };
    let fields = match o.limit_request_fields {
        0 => 32768,
        n => n.min(32768),
    };
    let size = match o.limit_request_field_size {
        0 => 8190,
        n => n,
    };
    (line, fields, size)
}

/// A comparable summary of one request's outcome.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Refused(u16),
    Incomplete,
    Accepted {
        head: String,
        consumed: usize,
        body: Result<(Vec<u8>, usize, bool), u16>,
    },
}

fn run(opts: &Options, input: &[u8], cuts: &[usize]) -> Outcome {
    let (line_limit, field_limit, size_limit) = limits(opts);
    let mut parser = Parser::new(opts.clone());
    let mut found = None;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        match parser.parse(&input[..cut]) {
            Err(e) => return Outcome::Refused(e.status()),
            Ok(None) => {
                // Bounded memory: an unfinished head never holds more than
                // a request line, a leading CRLF and the header section.
                assert!(cut <= 2 + line_limit + 2 + field_limit * size_limit + 2);
            }
            Ok(Some(r)) => {
                assert!(r.1 <= cut, "consumed past the input");
                found = Some(r);
                break;
            }
        }
    }
    let Some((head, consumed)) = found else {
        return Outcome::Incomplete;
    };
    assert!(head.target.len() <= line_limit);
    assert!(head.headers.len() <= field_limit);
    for (name, value) in &head.headers {
        assert!(!name.is_empty());
        assert!(
            name.len() + value.len() + 3 <= size_limit,
            "field over the size limit"
        );
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0));
    }
    assert!(!head.target.is_empty());
    let head_text = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {} {}",
        head.method,
        head.target,
        head.path,
        head.query,
        head.version,
        head.headers,
        head.body,
        head.keep_alive,
        head.expect_continue
    );

    let rest = &input[consumed..];
    let mut dec = Decoder::new(&head.body, opts);
    let mut out = Vec::new();
    let mut used = 0;
    let mut body = Ok(());
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let end = cut.saturating_sub(consumed).min(rest.len());
        if end <= used || dec.is_done() {
            continue;
        }
        match dec.decode(&rest[used..end], &mut out) {
            Ok(n) => {
                assert!(n <= end - used, "decoder consumed past its input");
                used += n;
            }
            Err(e) => {
                body = Err(e.status());
                break;
            }
        }
    }
    if let BodyKind::Length(n) = head.body {
        assert!(out.len() as u64 <= n);
        if body.is_ok() {
            assert_eq!(dec.remaining(), Some(n - out.len() as u64));
        }
    }
    let body = body.map(|()| (out, used, dec.finish_eof().is_ok()));
    Outcome::Accepted {
        head: head_text,
        consumed,
        body,
    }
}

/// Parse `data` (first byte: option bits, second: split point) whole, split
/// in two, and byte by byte; all must agree.
pub fn check_request(data: &[u8]) {
    let [sel, split, input @ ..] = data else {
        return;
    };
    let opts = options(*sel);
    let whole = run(&opts, input, &[]);
    let k = if input.is_empty() {
        0
    } else {
        usize::from(*split) % input.len()
    };
    let halves = run(&opts, input, &[k]);
    assert_eq!(whole, halves, "split at {k} changed the outcome");
    if input.len() <= 4096 {
        let bytes: Vec<usize> = (0..input.len()).collect();
        let one_by_one = run(&opts, input, &bytes);
        assert_eq!(
            whole, one_by_one,
            "byte-by-byte feeding changed the outcome"
        );
    }
}

/// Decode `data` as a chunked body whole and byte by byte.
pub fn check_chunked(data: &[u8]) {
    let [sel, input @ ..] = data else {
        return;
    };
    let opts = options(*sel);
    let decode = |step: usize| {
        let mut d = Decoder::new(&BodyKind::Chunked, &opts);
        let mut out = Vec::new();
        let mut used = 0;
        while used < input.len() && !d.is_done() {
            let end = (used + step).min(input.len());
            match d.decode(&input[used..end], &mut out) {
                Ok(n) => {
                    assert!(n <= end - used);
                    used += n;
                }
                Err(e) => return Err(e),
            }
        }
        let (_, fields, size) = limits(&opts);
        assert!(d.trailers().len() <= fields);
        for (n, v) in d.trailers() {
            assert!(n.len() + v.len() + 3 <= size);
        }
        Ok((out, used, d.is_done(), d.trailers().to_vec()))
    };
    let whole = decode(usize::MAX / 2);
    assert_eq!(whole, decode(1));
    assert_eq!(whole, decode(7));
}

/// PROXY protocol headers: whole and prefix results agree.
pub fn check_proxy(data: &[u8]) {
    for mode in [proxy::Mode::V1, proxy::Mode::V2, proxy::Mode::Auto] {
        let whole = proxy::parse(data, mode);
        if let Ok(Some((_, n))) = whole {
            assert!(n <= data.len());
            // Every shorter prefix must be "need more" or the same answer.
            for cut in 0..n {
                if let Ok(Some(r)) = proxy::parse(&data[..cut], mode) {
                    assert_eq!(r.0, proxy::ProxyInfo::Absent);
                    assert_eq!(r.1, 0);
                }
            }
        }
    }
}

/// Response encoding from fuzzed status and headers: never panics, and a
/// successful head has exactly one CRLF per line and ends with a blank line.
pub fn check_response(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0xff);
    let Some(status) = parts.next() else {
        return;
    };
    let rest: Vec<&[u8]> = parts.collect();
    let headers: Vec<(&[u8], &[u8])> = rest
        .chunks(2)
        .filter_map(|c| Some((c[0], *c.get(1)?)))
        .collect();
    let sel = data.first().copied().unwrap_or(0);
    let ctx = ResponseContext {
        method: if sel & 1 != 0 { b"HEAD" } else { b"GET" },
        version: (1, sel >> 1 & 1),
        request_keep_alive: sel & 4 != 0,
        server_allows_keep_alive: sel & 8 != 0,
        server_header: (sel & 16 != 0).then_some(&b"ferricorn"[..]),
    };
    let date = DateCache::new();
    let mut out = Vec::new();
    match encode_head(&mut out, status, &headers, &ctx, &date) {
        Err(e) => {
            assert!(matches!(
                e,
                Error::InvalidStatus
                    | Error::InvalidResponseHeader
                    | Error::InvalidResponseHeaderName
            ));
            assert!(out.is_empty());
        }
        Ok(f) => {
            assert!(out.ends_with(b"\r\n\r\n"));
            let crs = out.iter().filter(|&&b| b == b'\r').count();
            let lfs = out.iter().filter(|&&b| b == b'\n').count();
            assert_eq!(crs, lfs, "bare CR or LF in the head");
            assert!(!out.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'));
            assert!(!out.contains(&0));
            let mut enc = BodyEncoder::new(&f);
            let mut body = Vec::new();
            for piece in &rest {
                enc.chunk(piece, &mut body);
            }
            enc.finish(&mut body);
            if let BodyFraming::Length(n) = f.kind {
                assert!(body.len() as u64 <= n);
            }
            if f.kind == BodyFraming::NoBody {
                assert!(body.is_empty());
            }
        }
    }
}

/// Everything, driven by one input.
pub fn check_all(data: &[u8]) {
    check_request(data);
    check_chunked(data);
    check_proxy(data);
    check_response(data);
}
