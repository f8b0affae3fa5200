//! Request corpus: every `tests/requests/NAME.http` is a raw request and
//! `NAME.expect` its expected outcome. Each case is run whole, split in two
//! at every byte, fed one byte at a time, and (when accepted) pipelined
//! twice back to back; all must agree with the expectation.
//!
//! `.http` format: newlines in the file are ignored (one line of the
//! request per line of the file); bytes are written with escapes: `\r`,
//! `\n`, `\t`, `\0`, `\s` (space), `\\`, `\xHH`, and `\[N|text]` for `text`
//! (itself escaped) repeated N times.
//!
//! `.expect` format: `key: value` lines, `#` comments. `option: NAME=VALUE`
//! lines set parser options (any `Options` field, plus `peer_trusted`). The
//! other lines must equal what the runner renders from the outcome:
//! `outcome: refused STATUS`, `outcome: incomplete` (the head never ended),
//! or `outcome: accepted` followed by `method`, `target`, `path`, `query`,
//! `fragment`, `version`, `keep-alive`, `expect-continue`, `framing`,
//! `header` (one per field, `Name: value`), `body`, `trailer` lines and
//! `rest` (bytes left after the request). Values use the same escapes.

#![allow(clippy::unwrap_used)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[path = "support/escape.rs"]
mod escape;
use escape::unescape;

use ferricorn_http::{BodyKind, Decoder, Error, HeaderMap, Options, Parser};

fn escape(b: &[u8]) -> String {
    let mut s = String::new();
    for &c in b {
        match c {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => write!(s, "\\x{c:02x}").unwrap(),
        }
    }
    s
}

struct Case {
    name: String,
    input: Vec<u8>,
    opts: Options,
    trusted: bool,
    expect: Vec<String>,
}

fn load(dir: &Path) -> Vec<Case> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|http| {
            let name = http.file_stem().unwrap().to_string_lossy().into_owned();
            let raw = std::fs::read_to_string(&http).unwrap();
            let exp_path = http.with_extension("expect");
            let exp = std::fs::read_to_string(&exp_path)
                .unwrap_or_else(|e| panic!("{}: {e}", exp_path.display()));
            let mut opts = Options::default();
            let mut trusted = false;
            let mut expect = Vec::new();
            for line in exp.lines() {
                let line = line.trim_end();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                if let Some(opt) = line.strip_prefix("option: ") {
                    let (k, v) = opt.split_once('=').unwrap();
                    let (k, v) = (k.trim(), v.trim());
                    let flag = || v == "true";
                    let num = || v.parse::<usize>().unwrap();
                    match k {
                        "limit_request_line" => opts.limit_request_line = num(),
                        "limit_request_fields" => opts.limit_request_fields = num(),
                        "limit_request_field_size" => opts.limit_request_field_size = num(),
                        "casefold_http_method" => opts.casefold_http_method = flag(),
                        "permit_unconventional_http_method" => {
                            opts.permit_unconventional_http_method = flag()
                        }
                        "permit_unconventional_http_version" => {
                            opts.permit_unconventional_http_version = flag()
                        }
                        "permit_obsolete_folding" => opts.permit_obsolete_folding = flag(),
                        "strip_header_spaces" => opts.strip_header_spaces = flag(),
                        "header_map" => {
                            opts.header_map = match v {
                                "drop" => HeaderMap::Drop,
                                "refuse" => HeaderMap::Refuse,
                                "dangerous" => HeaderMap::Dangerous,
                                _ => panic!("{name}: header_map {v}"),
                            }
                        }
                        "forwarder_headers" => {
                            opts.forwarder_headers = v.split(',').map(str::to_owned).collect()
                        }
                        "peer_trusted" => trusted = flag(),
                        _ => panic!("{name}: unknown option {k}"),
                    }
                    continue;
                }
                expect.push(line.to_owned());
            }
            Case {
                name,
                input: unescape(&raw),
                opts,
                trusted,
                expect,
            }
        })
        .collect()
}

/// How the input is fed: whole, split once at `k`, or one byte at a time.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Whole,
    Split(usize),
    Bytes,
}

/// Parse one request (head and body) from `input` as it arrives per `feed`.
/// Returns the rendered outcome lines and the number of bytes consumed.
fn run(case: &Case, input: &[u8], feed: Feed) -> (Vec<String>, usize) {
    let mut parser = Parser::new(case.opts.clone());
    parser.set_peer_trusted(case.trusted);
    // The points at which the head parser is called: prefixes of input.
    let cuts: Vec<usize> = match feed {
        Feed::Whole => vec![input.len()],
        Feed::Split(k) => vec![k, input.len()],
        Feed::Bytes => (0..=input.len()).collect(),
    };
    let mut head = None;
    for &cut in &cuts {
        match parser.parse(&input[..cut]) {
            Err(e) => return (vec![refused(e)], cut),
            Ok(None) => continue,
            Ok(Some(h)) => {
                head = Some(h);
                break;
            }
        }
    }
    let Some((head, consumed)) = head else {
        return (vec!["outcome: incomplete".to_owned()], input.len());
    };
    let mut lines = vec!["outcome: accepted".to_owned()];
    lines.push(format!("method: {}", escape(&head.method)));
    lines.push(format!("target: {}", escape(head.target)));
    lines.push(format!("path: {}", escape(head.path)));
    lines.push(format!("query: {}", escape(head.query)));
    lines.push(format!("fragment: {}", escape(head.fragment)));
    lines.push(format!("version: {}.{}", head.version.0, head.version.1));
    lines.push(format!("keep-alive: {}", head.keep_alive));
    lines.push(format!("expect-continue: {}", head.expect_continue));
    lines.push(match head.body {
        BodyKind::None => "framing: none".to_owned(),
        BodyKind::Length(n) => format!("framing: length {n}"),
        BodyKind::Chunked => "framing: chunked".to_owned(),
    });
    for (n, v) in &head.headers {
        lines.push(format!("header: {}: {}", escape(n), escape(v)));
    }

    // Body, from the bytes after the head, fed the same way.
    let rest = &input[consumed..];
    let mut dec = Decoder::new(&head.body, &case.opts);
    let mut body = Vec::new();
    let mut used = 0;
    let pieces: Vec<usize> = match feed {
        Feed::Whole => vec![rest.len()],
        Feed::Split(k) => vec![k.saturating_sub(consumed).min(rest.len()), rest.len()],
        Feed::Bytes => (1..=rest.len()).collect(),
    };
    for end in pieces {
        if dec.is_done() {
            break;
        }
        if end <= used {
            continue;
        }
        match dec.decode(&rest[used..end], &mut body) {
            Ok(n) => used += n,
            Err(e) => return (vec![refused(e)], consumed + used),
        }
    }
    if let Err(e) = dec.finish_eof() {
        return (vec![refused(e)], consumed + used);
    }
    lines.push(format!("body: {}", escape(&body)));
    for (n, v) in dec.trailers() {
        lines.push(format!("trailer: {}: {}", escape(n), escape(v)));
    }
    lines.push(format!("rest: {}", escape(&rest[used..])));
    // Expectation files carry no trailing whitespace.
    let lines = lines.iter().map(|l| l.trim_end().to_owned()).collect();
    (lines, consumed + used)
}

fn refused(e: Error) -> String {
    format!("outcome: refused {}", e.status())
}

fn corpus() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requests");
    let cases = load(&dir);
    assert!(cases.len() >= 200, "corpus has only {} cases", cases.len());
    cases
}

#[test]
fn corpus_whole() {
    let mut failures = Vec::new();
    for case in corpus() {
        let (got, _) = run(&case, &case.input, Feed::Whole);
        if got != case.expect {
            failures.push(format!(
                "{}:\n  expected: {:?}\n  got:      {:?}",
                case.name, case.expect, got
            ));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn corpus_split_everywhere() {
    let mut failures = Vec::new();
    for case in corpus() {
        let len = case.input.len();
        // Every split point for normal sizes; a spread of them for the
        // large limit cases.
        let step = if len > 4096 { len / 512 } else { 1 };
        let mut feeds: Vec<Feed> = (0..=len).step_by(step.max(1)).map(Feed::Split).collect();
        feeds.push(Feed::Bytes);
        for feed in feeds {
            let (got, _) = run(&case, &case.input, feed);
            if got != case.expect {
                failures.push(format!(
                    "{} {feed:?}:\n  expected: {:?}\n  got:      {:?}",
                    case.name, case.expect, got
                ));
                break;
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn corpus_pipelined() {
    let mut failures = Vec::new();
    let mut tried = 0;
    for case in corpus() {
        let accepted = case
            .expect
            .first()
            .is_some_and(|l| l == "outcome: accepted");
        if !accepted || case.expect.last().is_none_or(|l| l != "rest:") {
            continue;
        }
        tried += 1;
        let mut twice = case.input.clone();
        twice.extend_from_slice(&case.input);
        for feed in [Feed::Whole, Feed::Bytes] {
            let (mut first, used) = run(&case, &twice, feed);
            // The first request must stop exactly where the second starts.
            let rest = first.pop();
            if first[..] != case.expect[..case.expect.len() - 1]
                || rest.as_deref() != Some(format!("rest: {}", escape(&case.input)).trim_end())
                || used != case.input.len()
            {
                failures.push(format!(
                    "{} {feed:?} (first): {first:?} {rest:?}",
                    case.name
                ));
                continue;
            }
            let (second, _) = run(&case, &twice[used..], feed);
            if second != case.expect {
                failures.push(format!("{} {feed:?} (second): {second:?}", case.name));
            }
        }
    }
    assert!(tried >= 50, "only {tried} pipelinable cases");
    assert_no_failures(&failures);
}

#[test]
fn escapes_round_trip() {
    assert_eq!(
        unescape("a\\r\\n\nb\\s\\x00\\[3|ab]\\\\"),
        b"a\r\nb \0ababab\\"
    );
    assert_eq!(escape(b"a\r\n\t\\\x7f"), "a\\r\\n\\t\\\\\\x7f");
}

/// Fail with every collected case failure listed.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
