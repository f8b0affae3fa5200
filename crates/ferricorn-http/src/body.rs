//! Request body decoders: Content-Length and chunked (with trailers).
//!
//! gunicorn counterpart: `gunicorn/http/body.py` (`LengthReader`,
//! `ChunkedReader.parse_chunked` / `parse_chunk_size` / `parse_trailers`).
//!
//! Invariants:
//! - Streaming and split-invariant: bytes are examined in order exactly once,
//!   so the result never depends on how input was chunked.
//! - Never consumes past the end of the body: a pipelined next request stays
//!   in the caller's buffer.
//! - Bounded: a chunk-size line is at most `limit_request_field_size` bytes,
//!   trailers obey the header count and size limits, sizes overflow-checked.
//! - After an error the decoder stays failed and repeats that error.

use crate::chars::{hex_value, is_bad_value_byte, is_tchar, trim_ows_end};
use crate::error::Error;
use crate::parse::{BodyKind, FieldPolicy, HeaderMap, Limits, Options, fold_value, split_field};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Content-Length body with this many bytes left.
    Length(u64),
    /// Reading a chunk-size line (with optional extensions) into `line`.
    SizeLine,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// Reading a trailer line (or the final empty line) into `line`.
    Trailer,
    /// Body complete.
    Done,
    /// Refused; every later call repeats the error.
    Failed(Error),
}

/// Decodes one request body. Build it from the head's [`BodyKind`].
///
/// Small (a request's body state moves with it between the connection and
/// the application): what only a chunked body needs lives behind a box,
/// made for chunked bodies only.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    chunked: Option<Box<Chunked>>,
}

/// A chunked body's line state, trailers and limits.
#[derive(Clone, Debug)]
struct Chunked {
    limits: Limits,
    strip_header_spaces: bool,
    permit_obsolete_folding: bool,
    header_map: HeaderMap,
    /// Current chunk-size or trailer line, without its LF.
    line: Vec<u8>,
    trailers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Trailer fields seen, dropped ones included.
    trailer_fields: usize,
    /// Size of the trailer field being read, for folding.
    trailer_field_size: usize,
    /// Whether the last trailer field was kept (folds extend it).
    last_trailer_kept: bool,
    policy: FieldPolicy,
}

impl Decoder {
    /// A decoder for a body framed as `kind`, with `opts`' limits.
    pub fn new(kind: &BodyKind, opts: &Options) -> Self {
        let state = match *kind {
            BodyKind::None | BodyKind::Length(0) => State::Done,
            BodyKind::Length(n) => State::Length(n),
            BodyKind::Chunked => State::SizeLine,
        };
        let chunked = (*kind == BodyKind::Chunked).then(|| {
            Box::new(Chunked {
                limits: Limits::from_options(opts),
                strip_header_spaces: opts.strip_header_spaces,
                permit_obsolete_folding: opts.permit_obsolete_folding,
                header_map: opts.header_map.clone(),
                line: Vec::new(),
                trailers: Vec::new(),
                trailer_fields: 0,
                trailer_field_size: 0,
                last_trailer_kept: false,
                policy: FieldPolicy::new(true),
            })
        });
        Decoder { state, chunked }
    }

    /// Consume bytes from `input`, appending decoded body bytes to `out`.
    /// Returns how many bytes of `input` were consumed; never more than the
    /// body, so whatever follows it stays in `input`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Error> {
        let mut consumed = 0;
        while consumed < input.len() && !self.is_done() {
            let (n, data) = self.next_data(&input[consumed..])?;
            out.extend_from_slice(data);
            consumed += n;
            if n == 0 {
                break;
            }
        }
        Ok(consumed)
    }

    /// Zero-copy step: consume framing bytes from `input` up to and
    /// including the next run of body data, and return how many bytes were
    /// consumed with that data (a sub-slice of `input`, possibly empty).
    /// Call again with the rest of `input` until it is empty or
    /// [`Decoder::is_done`].
    pub fn next_data<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), Error> {
        match self.step(input) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.state = State::Failed(e);
                Err(e)
            }
        }
    }

    fn step<'a>(&mut self, input: &'a [u8]) -> Result<(usize, &'a [u8]), Error> {
        let mut i = 0;
        loop {
            match self.state {
                State::Failed(e) => return Err(e),
                State::Done => return Ok((i, &[])),
                State::Length(left) => {
                    let n = clamp(left, input.len() - i);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::Done
                    } else {
                        State::Length(left)
                    };
                    return Ok((i + n, &input[i..i + n]));
                }
                State::Data(left) => {
                    let n = clamp(left, input.len() - i);
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    return Ok((i + n, &input[i..i + n]));
                }
                State::DataCr | State::DataLf => {
                    let Some(&b) = input.get(i) else {
                        return Ok((i, &[]));
                    };
                    let (want, next) = if self.state == State::DataCr {
                        (b'\r', State::DataLf)
                    } else {
                        (b'\n', State::SizeLine)
                    };
                    if b != want {
                        return Err(Error::ChunkMissingTerminator);
                    }
                    i += 1;
                    self.state = next;
                }
                State::SizeLine => {
                    let c = self.chunked.as_deref_mut().ok_or(Error::InvalidChunkSize)?;
                    let limit = c.limits.field_size;
                    let Some(end) = c.fill_line(input, &mut i, limit)? else {
                        return Ok((i, &[]));
                    };
                    if !end {
                        return Err(Error::InvalidChunkSize);
                    }
                    let size = chunk_size(&c.line)?;
                    c.line.clear();
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::Data(size)
                    };
                }
                State::Trailer => {
                    let c = self.chunked.as_deref_mut().ok_or(Error::InvalidChunkSize)?;
                    let fold = matches!(c.line.first().or(input.get(i)), Some(b' ' | b'\t'))
                        && c.permit_obsolete_folding;
                    let allowed = if fold {
                        c.limits.field_size.saturating_sub(c.trailer_field_size)
                    } else {
                        c.limits.field_size
                    };
                    // The line may hold `allowed` bytes with its CRLF; the LF
                    // is not stored, so `allowed - 1` before it.
                    let Some(end) = c.fill_line(input, &mut i, allowed.saturating_sub(1))? else {
                        return Ok((i, &[]));
                    };
                    if !end {
                        return Err(Error::HeaderFieldTooLarge);
                    }
                    let done = c.trailer_line()?;
                    c.line.clear();
                    if done {
                        self.state = State::Done;
                    }
                }
            }
        }
    }

    /// True once the whole body (and any trailers) has been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// For Content-Length bodies, how many body bytes are still expected;
    /// `Some(0)` when done. `None` for chunked bodies.
    pub fn remaining(&self) -> Option<u64> {
        match self.state {
            State::Length(n) => Some(n),
            _ if self.chunked.is_some() => None,
            State::Done => Some(0),
            _ => None,
        }
    }

    /// Record that the caller read `n` bytes of a Content-Length body
    /// itself (e.g. straight into the application's buffer, bounded by
    /// [`Decoder::remaining`]). Ignored for other framings.
    pub fn advance(&mut self, n: u64) {
        if let State::Length(left) = self.state {
            let left = left.saturating_sub(n);
            self.state = if left == 0 {
                State::Done
            } else {
                State::Length(left)
            };
        }
    }

    /// Trailer fields of a chunked body, in order (name as sent, value
    /// trimmed), after [`Decoder::is_done`].
    pub fn trailers(&self) -> &[(Vec<u8>, Vec<u8>)] {
        self.chunked.as_ref().map_or(&[], |c| &c.trailers)
    }

    /// The peer closed the connection: `Ok` if the body was complete,
    /// otherwise [`Error::IncompleteBody`] (or the earlier error).
    pub fn finish_eof(&self) -> Result<(), Error> {
        match self.state {
            State::Done => Ok(()),
            State::Failed(e) => Err(e),
            _ => Err(Error::IncompleteBody),
        }
    }
}

fn clamp(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

impl Chunked {
    /// Append bytes up to and including the next LF to `line` (the LF is
    /// not stored). `Some(true)`: a line is complete. `Some(false)`: the
    /// line grew past `limit` bytes. `None`: input exhausted.
    fn fill_line(
        &mut self,
        input: &[u8],
        i: &mut usize,
        limit: usize,
    ) -> Result<Option<bool>, Error> {
        let rest = &input[*i..];
        let room = limit.saturating_sub(self.line.len()) + 1;
        let look = &rest[..rest.len().min(room)];
        match look.iter().position(|&b| b == b'\n') {
            Some(nl) => {
                self.line.extend_from_slice(&look[..nl]);
                *i += nl + 1;
                Ok(Some(true))
            }
            None => {
                self.line.extend_from_slice(look);
                *i += look.len();
                if self.line.len() > limit {
                    Ok(Some(false))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// Handle one complete trailer line held in `line` (LF removed);
    /// true at the empty line that ends the body.
    fn trailer_line(&mut self) -> Result<bool, Error> {
        let Some((&b'\r', content)) = self.line.split_last() else {
            return Err(Error::InvalidHeader("bare LF as line terminator"));
        };
        if content.is_empty() {
            return Ok(true);
        }
        let size = content.len() + 2;
        let line = (0, content.len());
        if matches!(content[0], b' ' | b'\t') {
            if !self.permit_obsolete_folding {
                return Err(Error::ObsoleteFolding);
            }
            if self.trailer_fields == 0 {
                return Err(Error::InvalidHeader("continuation line without a field"));
            }
            let (s, e) = fold_value(content, line)?;
            self.trailer_field_size += size;
            if self.last_trailer_kept
                && let Some((_, v)) = self.trailers.last_mut()
            {
                v.push(b' ');
                v.extend_from_slice(&content[s..e]);
            }
            return Ok(false);
        }
        if self.trailer_fields >= self.limits.fields {
            return Err(Error::TooManyHeaders);
        }
        let ((ns, ne), (vs, ve)) = split_field(content, line, self.strip_header_spaces)?;
        self.trailer_fields += 1;
        self.trailer_field_size = size;
        let name = &content[ns..ne];
        self.last_trailer_kept = self.policy.check(&self.header_map, None, name)?;
        if self.last_trailer_kept {
            self.trailers
                .push((name.to_vec(), content[vs..ve].to_vec()));
        }
        Ok(false)
    }
}

/// Parse a chunk-size line (LF removed, CR still there):
/// `1*HEXDIG [ BWS chunk-ext ] CRLF` (RFC 9112 7.1).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let Some((&b'\r', line)) = line.split_last() else {
        return Err(Error::InvalidChunkSize);
    };
    let (size, ext) = match line.iter().position(|&b| b == b';') {
        Some(semi) => {
            let ext = &line[semi..];
            if ext.contains(&b'\r') {
                return Err(Error::InvalidChunkExtension);
            }
            // BWS is allowed before an extension, and only there.
            (trim_ows_end(&line[..semi]), Some(ext))
        }
        None => (line, None),
    };
    if size.is_empty() {
        return Err(Error::InvalidChunkSize);
    }
    let mut n: u64 = 0;
    for &b in size {
        let d = hex_value(b).ok_or(Error::InvalidChunkSize)?;
        n = n
            .checked_mul(16)
            .and_then(|n| n.checked_add(u64::from(d)))
            .ok_or(Error::InvalidChunkSize)?;
    }
    if let Some(ext) = ext
        && !valid_chunk_ext(ext)
    {
        return Err(Error::InvalidChunkExtension);
    }
    Ok(n)
}

/// `*( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )` with
/// `ext-name = token`, `ext-val = token / quoted-string` (RFC 9112 7.1.1).
fn valid_chunk_ext(s: &[u8]) -> bool {
    let ws = |s: &[u8], mut i: usize| {
        while i < s.len() && matches!(s[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let token = |s: &[u8], mut i: usize| {
        let start = i;
        while i < s.len() && is_tchar(s[i]) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    let mut i = 0;
    while i < s.len() {
        i = ws(s, i);
        if s.get(i) != Some(&b';') {
            return false;
        }
        i = ws(s, i + 1);
        let Some(after_name) = token(s, i) else {
            return false;
        };
        i = after_name;
        let j = ws(s, i);
        if s.get(j) == Some(&b'=') {
            let k = ws(s, j + 1);
            if s.get(k) == Some(&b'"') {
                match quoted_string_end(s, k) {
                    Some(end) => i = end,
                    None => return false,
                }
            } else {
                match token(s, k) {
                    Some(end) => i = end,
                    None => return false,
                }
            }
        }
    }
    true
}

/// Index just past the quoted-string starting at `s[start] == '"'`.
fn quoted_string_end(s: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' => {
                let &c = s.get(i + 1)?;
                if is_bad_value_byte(c) {
                    return None;
                }
                i += 2;
            }
            c if is_bad_value_byte(c) => return None,
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked() -> Decoder {
        Decoder::new(&BodyKind::Chunked, &Options::default())
    }

    fn decode_all(d: &mut Decoder, input: &[u8]) -> Result<(Vec<u8>, usize), Error> {
        let mut out = Vec::new();
        let n = d.decode(input, &mut out)?;
        Ok((out, n))
    }

    #[test]
    fn length_body_stops_at_end() {
        let mut d = Decoder::new(&BodyKind::Length(5), &Options::default());
        assert_eq!(d.remaining(), Some(5));
        let (out, n) = decode_all(&mut d, b"helloGET /").unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(n, 5);
        assert!(d.is_done());
        assert_eq!(d.remaining(), Some(0));
        assert!(d.finish_eof().is_ok());
    }

    #[test]
    fn length_body_truncated() {
        let mut d = Decoder::new(&BodyKind::Length(5), &Options::default());
        let (out, n) = decode_all(&mut d, b"hel").unwrap();
        assert_eq!((out.as_slice(), n), (&b"hel"[..], 3));
        assert_eq!(d.remaining(), Some(2));
        assert_eq!(d.finish_eof(), Err(Error::IncompleteBody));
        d.advance(2);
        assert!(d.is_done());
    }

    #[test]
    fn chunked_basic_with_trailers() {
        let mut d = chunked();
        let input =
            b"5\r\nhello\r\n6;name=val;x=\"q\\\"s\"\r\n world\r\n0\r\nX-Sum: 1 \r\n\r\nNEXT";
        let (out, n) = decode_all(&mut d, input).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(&input[n..], b"NEXT");
        assert!(d.is_done());
        assert_eq!(d.trailers(), &[(b"X-Sum".to_vec(), b"1".to_vec())]);
        assert_eq!(d.remaining(), None);
    }

    #[test]
    fn chunked_byte_at_a_time() {
        let input = b"A\r\n0123456789\r\n1 ; a = b\r\nZ\r\n0\r\n\r\n";
        let mut d = chunked();
        let mut out = Vec::new();
        for b in input.iter() {
            assert_eq!(d.decode(std::slice::from_ref(b), &mut out).unwrap(), 1);
        }
        assert!(d.is_done());
        assert_eq!(out, b"0123456789Z");
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(b"0\r"), Ok(0));
        assert_eq!(chunk_size(b"fF\r"), Ok(255));
        assert_eq!(chunk_size(b"ffffffffffffffff\r"), Ok(u64::MAX));
        assert_eq!(
            chunk_size(b"10000000000000000\r"),
            Err(Error::InvalidChunkSize)
        );
        assert_eq!(chunk_size(b"+5\r"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b"0x5\r"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b"5 \r"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b" 5\r"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b"\r"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b"5"), Err(Error::InvalidChunkSize));
        assert_eq!(chunk_size(b"5 ;a\r"), Ok(5));
        assert_eq!(chunk_size(b"5;\r"), Err(Error::InvalidChunkExtension));
        assert_eq!(chunk_size(b"5;a=\r"), Err(Error::InvalidChunkExtension));
        assert_eq!(chunk_size(b"5;a \r"), Err(Error::InvalidChunkExtension));
        assert_eq!(chunk_size(b"5;a=\"x\r"), Err(Error::InvalidChunkExtension));
        assert_eq!(chunk_size(b"5;a\rb\r"), Err(Error::InvalidChunkExtension));
        assert_eq!(chunk_size(b"5 ; a = \"b c\" ;d\r"), Ok(5));
    }

    #[test]
    fn chunk_errors() {
        for (input, err) in [
            (&b"5\r\nhelloX"[..], Error::ChunkMissingTerminator),
            (b"5\r\nhello\rX", Error::ChunkMissingTerminator),
            (b"5\nhello", Error::InvalidChunkSize),
            (b"0\r\nHost: x\r\n\r\n", Error::ForbiddenTrailer),
            (b"0\r\nContent-Length: 1\r\n\r\n", Error::ForbiddenTrailer),
            (
                b"0\r\nX: a\nb",
                Error::InvalidHeader("bare LF as line terminator"),
            ),
            (b"0\r\n folded\r\n\r\n", Error::ObsoleteFolding),
            (b"0\r\nX: 1\r\n fold\r\n\r\n", Error::ObsoleteFolding),
            (
                b"0\r\nX y: 1\r\n\r\n",
                Error::InvalidHeaderName("not a token"),
            ),
        ] {
            let mut d = chunked();
            assert_eq!(decode_all(&mut d, input).map(|_| ()), Err(err), "{input:?}");
            assert_eq!(d.finish_eof(), Err(err));
        }
    }

    #[test]
    fn size_line_bounded() {
        let mut d = chunked();
        let mut input = b"1".to_vec();
        input.extend(std::iter::repeat_n(b'0', 9000));
        assert_eq!(
            decode_all(&mut d, &input).map(|_| ()),
            Err(Error::InvalidChunkSize)
        );
    }

    #[test]
    fn trailers_underscore_dropped() {
        let mut d = chunked();
        let (_, _) = decode_all(&mut d, b"0\r\nX_A: 1\r\nX-B: 2\r\n\r\n").unwrap();
        assert_eq!(d.trailers(), &[(b"X-B".to_vec(), b"2".to_vec())]);
    }

    #[test]
    fn truncated_chunked() {
        let mut d = chunked();
        decode_all(&mut d, b"5\r\nhel").unwrap();
        assert_eq!(d.finish_eof(), Err(Error::IncompleteBody));
        let mut d = chunked();
        decode_all(&mut d, b"0\r\n").unwrap();
        assert_eq!(d.finish_eof(), Err(Error::IncompleteBody));
    }
}
