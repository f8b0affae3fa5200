//! Sans-IO WebSocket (RFC 6455): the opening handshake, frame decoding with
//! fragment reassembly and UTF-8 validation, and server frame encoding;
//! permessage-deflate (RFC 7692) in [`deflate`].
//! Bytes in, messages out; no sockets, no Python.
//!
//! gunicorn counterpart: `gunicorn/asgi/websocket.py` (`WebSocketProtocol`:
//! the handshake checks, `_parse_frame`, `_send_frame`, close handling) as
//! used by the `asgi` worker; the rules themselves are RFC 6455's.
//!
//! Invariants:
//! - [`Decoder::decode`] never buffers more than one message: a message whose
//!   frames announce more than `max_message_size` bytes in all is refused
//!   with 1009 from the frame header, before its payload is read.
//! - Data frame payloads are taken as they arrive (a frame need not be
//!   complete), copied once into the message buffer and unmasked there eight
//!   bytes at a time; control frames (at most 125 bytes) are taken whole.
//! - A text message is refused with 1007 as soon as the bytes received so far
//!   cannot start valid UTF-8, not only when the message completes
//!   (Autobahn 6.4.x "fail fast").
//! - RSV1 marks a compressed message on its first frame only, and only once
//!   permessage-deflate is agreed ([`Decoder::enable_deflate`]); anywhere
//!   else, and RSV2/RSV3 always, it is 1002. A compressed message is
//!   inflated as its frames arrive and the size limit applies to the
//!   inflated bytes.
//! - After a protocol error the decoder is failed for good: every later call
//!   returns the same error. After a Close frame it yields nothing more.
//! - [`accept_response`] never lets an application header inject bytes into
//!   the head: names that are not tokens and values with controls are
//!   skipped ([`check_extra_headers`] tells the caller beforehand).

use crate::chars::{is_bad_value_byte, is_token, list_contains, trim_ows};

pub mod deflate;

pub use deflate::{Deflater, PerMessageDeflate};

/// The GUID of RFC 6455 1.3, appended to the client's key before hashing.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The largest control frame payload (RFC 6455 5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The largest close reason that fits a control frame after the 2-byte code.
pub const MAX_CLOSE_REASON: usize = MAX_CONTROL_PAYLOAD - 2;

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

/// A validated upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// `Sec-WebSocket-Protocol` offers, in the client's order (ASGI scope
    /// `subprotocols`).
    pub subprotocols: Vec<String>,
    /// `Sec-WebSocket-Extensions` offers, one entry per extension with its
    /// parameters, in the client's order.
    pub extensions: Vec<String>,
    /// permessage-deflate as agreed, when the server took an offer
    /// ([`deflate::negotiate`]); [`accept_response`] answers it.
    pub deflate: Option<PerMessageDeflate>,
}

/// Why an upgrade request is refused: answer `status` with `extra_headers`
/// and close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeError {
    /// 400, or 426 for a `Sec-WebSocket-Version` other than 13.
    pub status: u16,
    /// A short human reason, for the log and the response body.
    pub reason: &'static str,
    /// Headers the refusal must carry (426: `Sec-WebSocket-Version: 13`).
    pub extra_headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HandshakeError {
    fn bad(reason: &'static str) -> Self {
        HandshakeError {
            status: 400,
            reason,
            extra_headers: Vec::new(),
        }
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WebSocket handshake refused ({}): {}",
            self.status, self.reason
        )
    }
}

impl std::error::Error for HandshakeError {}

/// Does the request ask for a WebSocket (`Upgrade` lists the `websocket`
/// token, case-insensitively)? This decides the ASGI scope type; the rest
/// of the request is checked by [`handshake`].
pub fn is_upgrade(header: impl Fn(&[u8]) -> Option<Vec<u8>>) -> bool {
    header(b"upgrade").is_some_and(|v| list_contains(&v, b"websocket"))
}

/// Validate an upgrade request (RFC 6455 4.2.1): method GET, HTTP/1.1 or
/// later, `Upgrade` listing `websocket`, `Connection` listing `upgrade`,
/// `Sec-WebSocket-Version: 13` (426 otherwise) and a `Sec-WebSocket-Key`
/// that is the base64 of 16 bytes. `header` returns a header's value by
/// lowercase name, comma-joined when the header is repeated.
pub fn handshake(
    method: &[u8],
    http11: bool,
    header: impl Fn(&[u8]) -> Option<Vec<u8>>,
) -> Result<Handshake, HandshakeError> {
    if method != b"GET" {
        return Err(HandshakeError::bad("WebSocket upgrade needs method GET"));
    }
    if !http11 {
        return Err(HandshakeError::bad("WebSocket upgrade needs HTTP/1.1"));
    }
    if !header(b"upgrade").is_some_and(|v| list_contains(&v, b"websocket")) {
        return Err(HandshakeError::bad(
            "Upgrade header does not name websocket",
        ));
    }
    if !header(b"connection").is_some_and(|v| list_contains(&v, b"upgrade")) {
        return Err(HandshakeError::bad(
            "Connection header does not name upgrade",
        ));
    }
    match header(b"sec-websocket-version") {
        None => return Err(HandshakeError::bad("missing Sec-WebSocket-Version")),
        Some(v) if trim_ows(&v) == b"13" => {}
        Some(_) => {
            return Err(HandshakeError {
                status: 426,
                reason: "unsupported Sec-WebSocket-Version",
                extra_headers: vec![(b"Sec-WebSocket-Version".to_vec(), b"13".to_vec())],
            });
        }
    }
    let key = header(b"sec-websocket-key")
        .ok_or_else(|| HandshakeError::bad("missing Sec-WebSocket-Key"))?;
    let key = trim_ows(&key);
    if !is_key(key) {
        return Err(HandshakeError::bad("invalid Sec-WebSocket-Key"));
    }
    let subprotocols = header(b"sec-websocket-protocol")
        .map(|v| split_list(&v))
        .unwrap_or_default();
    let extensions = header(b"sec-websocket-extensions")
        .map(|v| split_list(&v))
        .unwrap_or_default();
    Ok(Handshake {
        accept: accept_key(key),
        subprotocols,
        extensions,
        deflate: None,
    })
}

/// Is `key` the base64 of 16 bytes (22 alphabet characters and `==`)?
fn is_key(key: &[u8]) -> bool {
    key.len() == 24
        && key[22..] == *b"=="
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// The non-empty, trimmed items of a comma-separated header value; commas
/// inside a quoted string (an extension parameter) do not split.
fn split_list(value: &[u8]) -> Vec<String> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, &b) in value.iter().enumerate() {
        if escaped {
            escaped = false;
        } else if quoted && b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            quoted = !quoted;
        } else if b == b',' && !quoted {
            push_item(&mut items, &value[start..i]);
            start = i + 1;
        }
    }
    push_item(&mut items, &value[start..]);
    items
}

fn push_item(items: &mut Vec<String>, item: &[u8]) {
    let item = trim_ows(item);
    if !item.is_empty() {
        items.push(String::from_utf8_lossy(item).into_owned());
    }
}

/// `Sec-WebSocket-Accept` for a client key: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64(&sha.finish())
}

/// Headers the head writes itself; the same names from the application are
/// left out.
fn is_own_header(name: &[u8]) -> bool {
    [
        &b"upgrade"[..],
        b"connection",
        b"sec-websocket-accept",
        b"sec-websocket-protocol",
        b"sec-websocket-extensions",
    ]
    .iter()
    .any(|own| name.eq_ignore_ascii_case(own))
}

/// Check the application's `websocket.accept` headers: every name a token,
/// no value with a control character (other than HTAB) or DEL.
pub fn check_extra_headers(extra: &[(&[u8], &[u8])]) -> Result<(), &'static str> {
    for (name, value) in extra {
        if !is_token(name) {
            return Err("invalid header name");
        }
        if value.iter().any(|&b| is_bad_value_byte(b)) {
            return Err("invalid header value");
        }
    }
    Ok(())
}

/// Append the `101 Switching Protocols` head: `Upgrade`, `Connection`,
/// `Sec-WebSocket-Accept`, `Sec-WebSocket-Protocol` when `subprotocol` is
/// given (and a token), `Sec-WebSocket-Extensions` when `hs.deflate` is
/// agreed, then the application's `extra` headers (its `websocket.accept`
/// headers) and the blank line. Extra headers that [`check_extra_headers`]
/// refuses, and ones naming a header written here, are left out.
pub fn accept_response(
    out: &mut Vec<u8>,
    hs: &Handshake,
    subprotocol: Option<&[u8]>,
    extra: &[(&[u8], &[u8])],
) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(hs.accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    let valid = |p: &&[u8]| is_token(p);
    if let Some(p) = subprotocol.filter(valid) {
        out.extend_from_slice(b"Sec-WebSocket-Protocol: ");
        out.extend_from_slice(p);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(pmd) = &hs.deflate {
        out.extend_from_slice(b"Sec-WebSocket-Extensions: ");
        out.extend_from_slice(pmd.response().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for &(name, value) in extra {
        if is_own_header(name) || check_extra_headers(&[(name, value)]).is_err() {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

// ---------------------------------------------------------------------------
// Frames
// ---------------------------------------------------------------------------

/// A frame opcode (RFC 6455 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Opcode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

/// One complete message from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// `code` is `None` for an empty close payload (then `reason` is empty).
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// The client broke the protocol: close with `code` (1002 protocol error,
/// 1007 invalid UTF-8, 1009 message too big) and drop the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub code: u16,
    pub reason: &'static str,
}

impl ProtocolError {
    const fn protocol(reason: &'static str) -> Self {
        ProtocolError { code: 1002, reason }
    }
    const BAD_UTF8: ProtocolError = ProtocolError {
        code: 1007,
        reason: "invalid UTF-8 in text message",
    };
    const TOO_BIG: ProtocolError = ProtocolError {
        code: 1009,
        reason: "message too big",
    };
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebSocket protocol error {}: {}", self.code, self.reason)
    }
}

impl std::error::Error for ProtocolError {}

/// May a close frame carry `code` on the wire (RFC 6455 7.4, and the IANA
/// registry's 1012-1014)? 1005, 1006 and 1015 are for reporting only.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// The kind of data message being reassembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    Binary,
}

/// A data frame whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct Payload {
    fin: bool,
    mask: [u8; 4],
    /// Payload bytes already taken, modulo 4: where the mask resumes.
    phase: usize,
    remaining: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Open,
    Closed,
    Failed(ProtocolError),
}

/// A parsed frame header.
struct Header {
    fin: bool,
    /// RSV1: a compressed message's first frame.
    rsv1: bool,
    opcode: u8,
    mask: [u8; 4],
    len: u64,
    /// Bytes the header took.
    size: usize,
}

/// Decodes the client's frames into [`Message`]s: reassembles fragments
/// (answering control frames in between), validates text incrementally and
/// enforces the message size limit.
#[derive(Debug)]
pub struct Decoder {
    max_message_size: usize,
    /// The data message being reassembled, if any.
    kind: Option<Kind>,
    /// Its unmasked payload so far.
    data: Vec<u8>,
    /// Text: the prefix of `data` known to be valid UTF-8 up to a sequence
    /// boundary; a partial sequence after it is the carry.
    checked: usize,
    payload: Option<Payload>,
    state: State,
    /// permessage-deflate, once agreed.
    inflater: Option<deflate::Inflater>,
    /// The message being reassembled is compressed.
    compressed: bool,
}

impl Decoder {
    /// `max_message_size` bounds a data message (all its fragments); 0 means
    /// unlimited.
    pub fn new(max_message_size: usize) -> Self {
        Decoder {
            max_message_size,
            kind: None,
            data: Vec::new(),
            checked: 0,
            payload: None,
            state: State::Open,
            inflater: None,
            compressed: false,
        }
    }

    /// permessage-deflate was agreed: from now on RSV1 marks a compressed
    /// message, inflated as it arrives.
    pub fn enable_deflate(&mut self, pmd: &PerMessageDeflate) {
        self.inflater = Some(deflate::Inflater::new(pmd));
    }

    /// Whether the inflater's state is allocated now (for tests and memory
    /// accounting: it is allocated at the first compressed message and
    /// dropped after each one when the client keeps no context).
    pub fn inflater_allocated(&self) -> bool {
        self.inflater
            .as_ref()
            .is_some_and(deflate::Inflater::is_allocated)
    }

    /// Has a Close frame been decoded?
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Decode from the front of `buf`, draining what was used: `Some`
    /// message when one is complete, `None` when more bytes are needed (the
    /// payload of a data frame received so far is taken into the decoder, a
    /// partial header or control frame is left in `buf`). Call again while it
    /// returns `Some`: `buf` may hold more frames.
    ///
    /// Client frames must be masked; control frames at most 125 bytes and not
    /// fragmented; RSV bits (but RSV1 on the first frame of a message once
    /// permessage-deflate is agreed) and reserved opcodes are refused; a
    /// continuation without a started message, or a new data frame inside a
    /// fragmented one, is refused (all 1002). A close payload
    /// is empty or a valid code and a UTF-8 reason (else 1002 / 1007).
    pub fn decode(&mut self, buf: &mut Vec<u8>) -> Result<Option<Message>, ProtocolError> {
        let mut pos = 0;
        let result = self.decode_at(buf, &mut pos);
        buf.drain(..pos);
        result
    }

    /// [`Decoder::decode`] without the drain, for a batch: decode from
    /// `buf[*pos..]` and advance `*pos` past what was used. Loop while it
    /// returns `Some`, then drop `buf[..*pos]` once; many small messages in
    /// one read then cost one move of the rest, not one per message.
    pub fn decode_at(
        &mut self,
        buf: &[u8],
        pos: &mut usize,
    ) -> Result<Option<Message>, ProtocolError> {
        match self.state {
            State::Open => {}
            State::Closed => return Ok(None),
            State::Failed(e) => return Err(e),
        }
        let result = self.step(buf, pos);
        if let Err(e) = result {
            self.state = State::Failed(e);
            self.kind = None;
            self.payload = None;
            self.data = Vec::new();
            self.inflater = None;
        }
        result
    }

    fn step(&mut self, buf: &[u8], pos: &mut usize) -> Result<Option<Message>, ProtocolError> {
        loop {
            if let Some(p) = &mut self.payload {
                let avail = buf.len() - *pos;
                let n = usize::try_from(p.remaining).map_or(avail, |r| r.min(avail));
                let chunk = &buf[*pos..*pos + n];
                match &mut self.inflater {
                    Some(inf) if self.compressed => {
                        inf.feed(
                            chunk,
                            p.mask,
                            p.phase,
                            &mut self.data,
                            self.max_message_size,
                        )?;
                    }
                    _ => {
                        let start = self.data.len();
                        self.data.extend_from_slice(chunk);
                        unmask(&mut self.data[start..], p.mask, p.phase);
                    }
                }
                p.phase = (p.phase + n) % 4;
                p.remaining -= n as u64;
                *pos += n;
                if p.remaining > 0 {
                    return self.need_more();
                }
                let fin = p.fin;
                self.payload = None;
                if fin {
                    if let Some(inf) = self.inflater.as_mut().filter(|_| self.compressed) {
                        inf.finish(&mut self.data, self.max_message_size)?;
                    }
                    return self.finish().map(Some);
                }
                // Checked now, so a control frame after a bad fragment is
                // not answered however the input was split.
                self.check_text()?;
                continue;
            }
            let Some(h) = parse_header(&buf[*pos..])? else {
                return self.need_more();
            };
            if h.rsv1 && (h.opcode != 0x1 && h.opcode != 0x2 || self.inflater.is_none()) {
                return Err(ProtocolError::protocol(match h.opcode {
                    0x8..=0xA => "RSV1 set on a control frame",
                    0x0 => "RSV1 set on a continuation frame",
                    _ => "RSV1 set without permessage-deflate",
                }));
            }
            match h.opcode {
                0x8..=0xA => {
                    if !h.fin {
                        return Err(ProtocolError::protocol("fragmented control frame"));
                    }
                    // parse_header refuses control payloads over 125 bytes.
                    let len = h.len as usize;
                    let Some(frame) = buf[*pos..].get(h.size..h.size + len) else {
                        return self.need_more();
                    };
                    let mut body = frame.to_vec();
                    unmask(&mut body, h.mask, 0);
                    *pos += h.size + len;
                    return match h.opcode {
                        0x9 => Ok(Some(Message::Ping(body))),
                        0xA => Ok(Some(Message::Pong(body))),
                        _ => {
                            let msg = parse_close(&body)?;
                            self.state = State::Closed;
                            Ok(Some(msg))
                        }
                    };
                }
                0x0 => {
                    if self.kind.is_none() {
                        return Err(ProtocolError::protocol(
                            "continuation frame without a message",
                        ));
                    }
                }
                0x1 | 0x2 => {
                    if self.kind.is_some() {
                        return Err(ProtocolError::protocol(
                            "new data frame inside a fragmented message",
                        ));
                    }
                    self.kind = Some(if h.opcode == 0x1 {
                        Kind::Text
                    } else {
                        Kind::Binary
                    });
                    self.checked = 0;
                    self.compressed = h.rsv1;
                }
                _ => return Err(ProtocolError::protocol("reserved opcode")),
            }
            // A compressed message is bounded as it inflates instead.
            if self.max_message_size > 0
                && !self.compressed
                && (self.data.len() as u64).saturating_add(h.len) > self.max_message_size as u64
            {
                return Err(ProtocolError::TOO_BIG);
            }
            *pos += h.size;
            self.payload = Some(Payload {
                fin: h.fin,
                mask: h.mask,
                phase: 0,
                remaining: h.len,
            });
        }
    }

    /// Out of input: before waiting, refuse a text message whose bytes so
    /// far cannot be valid UTF-8.
    fn need_more(&mut self) -> Result<Option<Message>, ProtocolError> {
        self.check_text()?;
        Ok(None)
    }

    /// Refuse a text message whose bytes so far cannot start valid UTF-8;
    /// a partial sequence at the end stays unchecked for the next call.
    fn check_text(&mut self) -> Result<(), ProtocolError> {
        if self.kind == Some(Kind::Text) && self.checked < self.data.len() {
            match std::str::from_utf8(&self.data[self.checked..]) {
                Ok(_) => self.checked = self.data.len(),
                Err(e) if e.error_len().is_some() => return Err(ProtocolError::BAD_UTF8),
                Err(e) => self.checked += e.valid_up_to(),
            }
        }
        Ok(())
    }

    /// The final fragment arrived: hand the message over.
    fn finish(&mut self) -> Result<Message, ProtocolError> {
        let data = std::mem::take(&mut self.data);
        self.checked = 0;
        match self.kind.take() {
            Some(Kind::Text) => String::from_utf8(data)
                .map(Message::Text)
                .map_err(|_| ProtocolError::BAD_UTF8),
            _ => Ok(Message::Binary(data)),
        }
    }
}

/// Parse a frame header from the front of `b`; `None` if incomplete.
fn parse_header(b: &[u8]) -> Result<Option<Header>, ProtocolError> {
    let [b0, b1, ..] = *b else {
        return Ok(None);
    };
    if b0 & 0x30 != 0 {
        return Err(ProtocolError::protocol(
            "reserved bits set without an extension",
        ));
    }
    let opcode = b0 & 0x0F;
    if matches!(opcode, 0x3..=0x7 | 0xB..=0xF) {
        return Err(ProtocolError::protocol("reserved opcode"));
    }
    if b1 & 0x80 == 0 {
        return Err(ProtocolError::protocol("client frame not masked"));
    }
    let (len, at) = match b1 & 0x7F {
        126 => match b.get(2..4) {
            Some(&[x, y]) => (u64::from(u16::from_be_bytes([x, y])), 4),
            _ => return Ok(None),
        },
        127 => match b.get(2..10) {
            Some(s) => {
                let mut n = [0u8; 8];
                n.copy_from_slice(s);
                let len = u64::from_be_bytes(n);
                if len >> 63 != 0 {
                    return Err(ProtocolError::protocol(
                        "payload length has the top bit set",
                    ));
                }
                (len, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && len > MAX_CONTROL_PAYLOAD as u64 {
        return Err(ProtocolError::protocol("control frame over 125 bytes"));
    }
    let Some(&[m0, m1, m2, m3]) = b.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode,
        mask: [m0, m1, m2, m3],
        len,
        size: at + 4,
    }))
}

fn parse_close(body: &[u8]) -> Result<Message, ProtocolError> {
    match body {
        [] => Ok(Message::Close {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(ProtocolError::protocol("close payload of one byte")),
        [hi, lo, rest @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(ProtocolError::protocol("invalid close code"));
            }
            let reason = std::str::from_utf8(rest).map_err(|_| ProtocolError {
                code: 1007,
                reason: "invalid UTF-8 in close reason",
            })?;
            Ok(Message::Close {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// XOR `data` with the mask, starting `phase` bytes into it: eight bytes at
/// a time, then the tail.
fn unmask(data: &mut [u8], mask: [u8; 4], phase: usize) {
    let key: [u8; 4] = std::array::from_fn(|i| mask[(phase + i) % 4]);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key.iter().cycle()) {
        *b ^= k;
    }
}

/// Append a server frame header (unmasked) for a payload of `len` bytes.
pub fn encode_head(out: &mut Vec<u8>, opcode: Opcode, fin: bool, len: usize) {
    out.push(if fin { 0x80 } else { 0 } | opcode as u8);
    if len < 126 {
        out.push(len as u8);
    } else if let Ok(n) = u16::try_from(len) {
        out.push(126);
        out.extend_from_slice(&n.to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// Append one unfragmented server frame.
pub fn encode_frame(out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
    out.reserve(10 + payload.len());
    encode_head(out, opcode, true, payload.len());
    out.extend_from_slice(payload);
}

/// Append `msg` as one server frame (unmasked, FIN set). A `Close` with no
/// code is an empty close frame; control payloads over 125 bytes are cut
/// (a close reason at a character boundary).
pub fn encode(out: &mut Vec<u8>, msg: &Message) {
    match msg {
        Message::Text(s) => encode_frame(out, Opcode::Text, s.as_bytes()),
        Message::Binary(b) => encode_frame(out, Opcode::Binary, b),
        Message::Ping(b) => encode_frame(out, Opcode::Ping, &b[..b.len().min(MAX_CONTROL_PAYLOAD)]),
        Message::Pong(b) => encode_frame(out, Opcode::Pong, &b[..b.len().min(MAX_CONTROL_PAYLOAD)]),
        Message::Close { code: None, .. } => encode_frame(out, Opcode::Close, &[]),
        Message::Close {
            code: Some(code),
            reason,
        } => encode_close(out, *code, reason),
    }
}

/// Append a close frame with `code` and `reason`, the reason cut to 123
/// bytes at a character boundary.
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    encode_head(out, Opcode::Close, true, 2 + reason.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

// ---------------------------------------------------------------------------
// SHA-1 (FIPS 180-4) and base64 (RFC 4648), only for the accept key
// ---------------------------------------------------------------------------

struct Sha1 {
    h: [u32; 5],
    block: [u8; 64],
    filled: usize,
    total: u64,
}

impl Sha1 {
    fn new() -> Self {
        Sha1 {
            h: [
                0x6745_2301,
                0xEFCD_AB89,
                0x98BA_DCFE,
                0x1032_5476,
                0xC3D2_E1F0,
            ],
            block: [0; 64],
            filled: 0,
            total: 0,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        while !data.is_empty() {
            let n = (64 - self.filled).min(data.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 64 {
                self.compress();
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> [u8; 20] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 20];
        for (chunk, word) in out.chunks_exact_mut(4).zip(self.h) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }

    fn compress(&mut self) {
        let mut w = [0u32; 80];
        for (i, c) in self.block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = self.h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (h, v) in self.h.iter_mut().zip([a, b, c, d, e]) {
            *h = h.wrapping_add(v);
        }
    }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(chunk.get(1).copied().unwrap_or(0)) << 8)
            | u32::from(chunk.get(2).copied().unwrap_or(0));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn sha1(data: &[u8]) -> String {
        let mut s = Sha1::new();
        s.update(data);
        hex(&s.finish())
    }

    #[test]
    fn sha1_vectors() {
        assert_eq!(sha1(b""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
        assert_eq!(sha1(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            sha1(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
        assert_eq!(
            sha1(&vec![b'a'; 1_000_000]),
            "34aa973cd4c4daa4f61eeb2bdbad27316534016f"
        );
        // Fed in pieces of every size around the block boundary.
        let data: Vec<u8> = (0..200u8).collect();
        let whole = sha1(&data);
        for step in 1..70 {
            let mut s = Sha1::new();
            for c in data.chunks(step) {
                s.update(c);
            }
            assert_eq!(hex(&s.finish()), whole);
        }
    }

    #[test]
    fn base64_vectors() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(b"fooba"), "Zm9vYmE=");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }

    #[test]
    fn unmask_any_phase_matches_bytewise() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let data: Vec<u8> = (0..37u8).collect();
        for phase in 0..4 {
            let mut fast = data.clone();
            unmask(&mut fast, mask, phase);
            let slow: Vec<u8> = data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[(phase + i) % 4])
                .collect();
            assert_eq!(fast, slow);
        }
    }

    #[test]
    fn split_list_respects_quotes() {
        assert_eq!(
            split_list(b" a, b ,,c;x=\"1,2\" , d"),
            vec!["a", "b", "c;x=\"1,2\"", "d"]
        );
        assert!(split_list(b" , ").is_empty());
    }
}
