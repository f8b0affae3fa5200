//! WebSocket frames from the client's side for tests/ws.rs and
//! tests/ws_deflate.rs: building a client frame, taking a server frame apart,
//! decoding a client's bytes fed in pieces.

use ferricorn_http::ws::{Decoder, Message, ProtocolError};

/// Everything `d` decodes from `input` fed in pieces of `step` bytes, then
/// the error if any.
pub fn decode_with(
    d: &mut Decoder,
    input: &[u8],
    step: usize,
) -> (Vec<Message>, Option<ProtocolError>) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// One client frame: FIN, RSV bits (RSV1 = 4), opcode, masked with `mask`
/// unless it is `None`.
pub fn client_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (rsv << 4) | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(m | len as u8);
    } else if len <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(mask) => {
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A server frame at the front of `b`: (FIN, RSV1, opcode, payload, bytes
/// it took). Server frames are never masked and never set RSV2/RSV3.
pub fn server_frame(b: &[u8]) -> (bool, bool, u8, Vec<u8>, usize) {
    assert_eq!(b[1] & 0x80, 0, "server frames are not masked");
    assert_eq!(b[0] & 0x30, 0, "RSV2/RSV3 never set");
    let (len, at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        n => (n as usize, 2),
    };
    (
        b[0] & 0x80 != 0,
        b[0] & 0x40 != 0,
        b[0] & 0x0f,
        b[at..at + len].to_vec(),
        at + len,
    )
}
