//! permessage-deflate (RFC 7692): negotiation of the extension's offer,
//! the inflater for the client's compressed messages and the deflater for
//! the server's. Raw DEFLATE through zlib-rs (pure Rust, no system zlib).
//!
//! Choices (docs/asgi.md says what they cost):
//! - The server compresses at level 1 with a 2^13-byte window and memory
//!   level 5: about 177 KiB per connection. Measured on 132-byte JSON chat
//!   messages with context takeover this keeps the ratio of a 2^15 window
//!   (0.17), at about 0.3 µs a message; level 2 and above cost ten times
//!   more per small message for a better ratio only on large text. A
//!   smaller window than the client allows is always valid (the client
//!   inflates with the larger one), so this needs no negotiation.
//! - The inflater (about 46 KiB) always uses a 2^15 window: a client may use
//!   any window up to the one agreed, and zlib-rs allocates the same state
//!   whatever the window, so `client_max_window_bits` is never asked for.
//! - Each is allocated at the first message it has to handle, not at the
//!   handshake: a connection that exchanges no compressed message costs
//!   nothing. With `client_no_context_takeover` agreed the inflater is freed
//!   after each message (allocating it again is cheap); with
//!   `server_no_context_takeover` the deflater is reset after each message
//!   instead (resetting it costs about a third of allocating it anew).
//! - Messages under [`MIN_COMPRESS`] bytes are sent uncompressed (RSV1
//!   clear, as RFC 7692 6 allows): at that size at most a few dozen bytes
//!   are saved, less than one packet's TCP/IP headers, and a connection
//!   that only sends such messages never allocates the deflater.
//! - An offer of `server_max_window_bits=8` is honoured with Huffman-only
//!   coding (no back-references at all, so no window), since zlib cannot
//!   make raw DEFLATE with a 256-byte window.
//!
//! Invariants:
//! - The inflated size of a message never exceeds the decoder's limit in
//!   memory: output is produced in bounded pieces and refused with 1009 as
//!   soon as the message would pass it (a decompression bomb allocates at
//!   most the limit).
//! - A compressed message's frame carries RSV1 on its first frame only; the
//!   payload is the DEFLATE stream without the `00 00 ff ff` tail of the
//!   sync flush (RFC 7692 7.2.1).

use zlib_rs::{Deflate, DeflateConfig, DeflateFlush, Inflate, InflateFlush, Status, Strategy};

use super::{Opcode, ProtocolError, encode_frame, encode_head};

/// The extension's token.
pub const EXTENSION: &str = "permessage-deflate";

/// Messages shorter than this are sent uncompressed.
pub const MIN_COMPRESS: usize = 128;

/// The server's LZ77 window (bits) when the client sets no lower limit.
pub const SERVER_WINDOW_BITS: u8 = 13;

/// The deflater's compression level and memory level (see the module doc).
const LEVEL: i32 = 1;
const MEM_LEVEL: i32 = 5;

/// The tail a sync flush ends with, left off on the wire.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What was agreed for a connection: the parameters of the accepted offer
/// as the response states them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerMessageDeflate {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (so the server
    /// may drop its inflater between messages).
    pub client_no_context_takeover: bool,
    /// The server's window, when the client limited it (8..=15).
    pub server_max_window_bits: Option<u8>,
}

impl PerMessageDeflate {
    /// The `Sec-WebSocket-Extensions` value of the response.
    pub fn response(&self) -> String {
        let mut out = String::from(EXTENSION);
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out
    }

    /// The window the server compresses with.
    fn window_bits(&self) -> u8 {
        self.server_max_window_bits
            .map_or(SERVER_WINDOW_BITS, |b| b.min(SERVER_WINDOW_BITS))
    }
}

/// Pick the first acceptable permessage-deflate offer of a request's
/// `Sec-WebSocket-Extensions` items (RFC 7692 5, 7.1): offers of other
/// extensions are passed over; an offer with an unknown parameter, a
/// parameter given twice, or a value that is not allowed is declined and the
/// next one tried. `None`: no offer was acceptable, no extension is used.
pub fn negotiate<S: AsRef<str>>(offers: &[S]) -> Option<PerMessageDeflate> {
    offers.iter().find_map(|o| accept_offer(o.as_ref()))
}

/// One offer (`name; param; param=value`), accepted or not.
fn accept_offer(offer: &str) -> Option<PerMessageDeflate> {
    let mut parts = offer.split(';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut agreed = PerMessageDeflate {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: None,
    };
    let mut client_window_seen = false;
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (part.trim(), None),
        };
        match (key.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) if !agreed.server_no_context_takeover => {
                agreed.server_no_context_takeover = true;
            }
            ("client_no_context_takeover", None) if !agreed.client_no_context_takeover => {
                agreed.client_no_context_takeover = true;
            }
            ("server_max_window_bits", Some(v)) if agreed.server_max_window_bits.is_none() => {
                agreed.server_max_window_bits = Some(window_bits(&v)?);
            }
            // The client may use any window up to the one it names; the
            // inflater's 2^15 window takes them all, so the answer does not
            // name it (RFC 7692 7.1.2.2 leaves that to the server).
            ("client_max_window_bits", v) if !client_window_seen => {
                client_window_seen = true;
                if let Some(v) = v {
                    window_bits(&v)?;
                }
            }
            _ => return None,
        }
    }
    // The answer lowers the server's window to what it will use.
    agreed.server_max_window_bits = agreed
        .server_max_window_bits
        .map(|b| if b == 8 { 8 } else { b.min(SERVER_WINDOW_BITS) });
    Some(agreed)
}

/// A window size parameter: a decimal 8..=15 without leading zeros.
fn window_bits(v: &str) -> Option<u8> {
    match v {
        "8" | "9" | "10" | "11" | "12" | "13" | "14" | "15" => v.parse().ok(),
        _ => None,
    }
}

/// A parameter value: a token as it is, or a quoted string unescaped;
/// `None` for an unterminated quote or an empty value.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.is_empty() && !v.contains('"')).then(|| v.to_string());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A compressed payload the inflater could not take: close 1002.
const BAD_DATA: ProtocolError = ProtocolError::protocol("invalid compressed data");

/// Inflates the client's compressed messages into the decoder's message
/// buffer, bounded by its limit.
pub(super) struct Inflater {
    no_context_takeover: bool,
    /// Allocated at the first compressed message.
    state: Option<Inflate>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater")
            .field("no_context_takeover", &self.no_context_takeover)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

impl Inflater {
    pub(super) fn new(pmd: &PerMessageDeflate) -> Self {
        Inflater {
            no_context_takeover: pmd.client_no_context_takeover,
            state: None,
        }
    }

    /// Whether the state is allocated (between messages: context kept).
    pub(super) fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    /// Unmask `masked` (the mask resuming `phase` bytes in) and inflate it
    /// onto `data`, refusing with 1009 past `max` bytes (0: no limit).
    pub(super) fn feed(
        &mut self,
        masked: &[u8],
        mask: [u8; 4],
        phase: usize,
        data: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let mut piece = [0u8; 4096];
        let mut phase = phase;
        for chunk in masked.chunks(piece.len()) {
            let piece = &mut piece[..chunk.len()];
            piece.copy_from_slice(chunk);
            super::unmask(piece, mask, phase);
            phase = (phase + chunk.len()) % 4;
            self.inflate(piece, data, max)?;
        }
        Ok(())
    }

    /// The message's last frame is in: inflate the sync-flush tail the
    /// sender left off, and forget the context if it is not kept.
    pub(super) fn finish(&mut self, data: &mut Vec<u8>, max: usize) -> Result<(), ProtocolError> {
        self.inflate(&TAIL, data, max)?;
        if self.no_context_takeover {
            self.state = None;
        }
        Ok(())
    }

    fn inflate(
        &mut self,
        mut input: &[u8],
        data: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), ProtocolError> {
        let st = self.state.get_or_insert_with(|| Inflate::new(false, 15));
        let mut out = [0u8; 16384];
        loop {
            let (in0, out0) = (st.total_in(), st.total_out());
            let status = st
                .decompress(input, &mut out, InflateFlush::NoFlush)
                .map_err(|_| BAD_DATA)?;
            let used = (st.total_in() - in0) as usize;
            let made = (st.total_out() - out0) as usize;
            input = &input[used..];
            push_bounded(data, &out[..made], max)?;
            if status == Status::StreamEnd {
                // A block with BFINAL set ended the stream (RFC 7692
                // 7.2.3.3 allows it): what follows starts a new one.
                st.reset(false);
                if input.is_empty() {
                    return Ok(());
                }
                continue;
            }
            if made < out.len() && input.is_empty() {
                return Ok(());
            }
            if used == 0 && made == 0 {
                return Err(BAD_DATA);
            }
        }
    }
}

/// Append `bytes` to `data` unless that passes `max` (0: no limit); the
/// buffer grows by doubling but never past `max`.
fn push_bounded(data: &mut Vec<u8>, bytes: &[u8], max: usize) -> Result<(), ProtocolError> {
    let need = data.len() + bytes.len();
    if max > 0 && need > max {
        return Err(ProtocolError::TOO_BIG);
    }
    if need > data.capacity() {
        let mut want = need.max(data.capacity() * 2).max(256);
        if max > 0 {
            want = want.min(max);
        }
        data.reserve_exact(want - data.len());
    }
    data.extend_from_slice(bytes);
    Ok(())
}

/// Compresses the server's data messages.
pub struct Deflater {
    pmd: PerMessageDeflate,
    /// Allocated at the first message worth compressing.
    state: Option<Deflate>,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater")
            .field("pmd", &self.pmd)
            .field("allocated", &self.state.is_some())
            .finish()
    }
}

impl Deflater {
    pub fn new(pmd: &PerMessageDeflate) -> Self {
        Deflater {
            pmd: *pmd,
            state: None,
        }
    }

    /// Whether the compressor state is allocated.
    pub fn is_allocated(&self) -> bool {
        self.state.is_some()
    }

    fn config(&self) -> DeflateConfig {
        let bits = self.pmd.window_bits();
        DeflateConfig {
            level: LEVEL,
            // Raw DEFLATE (negative bits); zlib's smallest raw window is 2^9.
            window_bits: -i32::from(bits.max(9)),
            mem_level: MEM_LEVEL,
            strategy: if bits < 9 {
                Strategy::HuffmanOnly
            } else {
                Strategy::Default
            },
            ..DeflateConfig::default()
        }
    }

    /// Append `payload` as one data frame: compressed with RSV1 set, or as
    /// it is when it is under [`MIN_COMPRESS`] bytes.
    pub fn encode(&mut self, out: &mut Vec<u8>, opcode: Opcode, payload: &[u8]) {
        if payload.len() < MIN_COMPRESS {
            encode_frame(out, opcode, payload);
            return;
        }
        let config = self.config();
        let st = self
            .state
            .get_or_insert_with(|| Deflate::new_with_config(config));
        // Room for the longest head; the unused part is cut out below.
        let start = out.len();
        out.resize(start + 10, 0);
        let mut input = payload;
        loop {
            let at = out.len();
            let room = zlib_rs::compress_bound(input.len()) + 16;
            out.resize(at + room, 0);
            let (in0, out0) = (st.total_in(), st.total_out());
            // Cannot fail: the state is valid and output room is given.
            let _ = st.compress(input, &mut out[at..], DeflateFlush::SyncFlush);
            let used = (st.total_in() - in0) as usize;
            let made = (st.total_out() - out0) as usize;
            out.truncate(at + made);
            input = &input[used..];
            // No progress cannot happen with a valid state and output room;
            // leave rather than spin if it ever did.
            if input.is_empty() && made < room || used == 0 && made == 0 {
                break;
            }
        }
        debug_assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        let mut head = Vec::with_capacity(10);
        encode_head(&mut head, opcode, true, out.len() - start - 10);
        head[0] |= 0x40; // RSV1: compressed
        let gap = 10 - head.len();
        out[start + gap..start + 10].copy_from_slice(&head);
        out.drain(start..start + gap);
        if self.pmd.server_no_context_takeover {
            st.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` zero bytes as one raw DEFLATE message (tail removed).
    fn zeros_compressed(n: usize) -> Vec<u8> {
        let mut c = Deflate::new(9, false, 15);
        let input = vec![0u8; n];
        let mut out = vec![0u8; zlib_rs::compress_bound(n) + 64];
        let _ = c.compress(&input, &mut out, DeflateFlush::SyncFlush);
        out.truncate(c.total_out() as usize - TAIL.len());
        out
    }

    #[test]
    fn a_bomb_never_grows_the_buffer_past_the_limit() {
        let bomb = zeros_compressed(8 << 20);
        assert!(bomb.len() < 16 * 1024);
        for max in [1000, 65_536, 1 << 20] {
            let pmd = negotiate(&["permessage-deflate"]).unwrap_or_else(|| unreachable!());
            let mut inf = Inflater::new(&pmd);
            let mut data = Vec::new();
            let err = bomb
                .chunks(100)
                .try_for_each(|c| inf.feed(c, [0; 4], 0, &mut data, max));
            assert_eq!(err, Err(ProtocolError::TOO_BIG));
            assert!(
                data.len() <= max && data.capacity() <= max,
                "max {max}: {}",
                data.capacity()
            );
        }
        // Exactly at the limit is fine.
        let pmd = negotiate(&["permessage-deflate"]).unwrap_or_else(|| unreachable!());
        let mut inf = Inflater::new(&pmd);
        let mut data = Vec::new();
        let exact = zeros_compressed(70_000);
        assert_eq!(inf.feed(&exact, [0; 4], 0, &mut data, 70_000), Ok(()));
        assert_eq!(inf.finish(&mut data, 70_000), Ok(()));
        assert_eq!((data.len(), data.capacity()), (70_000, 70_000));
    }
}
