//! `ws::deflate`: permessage-deflate (RFC 7692) negotiation, the decoder's
//! inflating of compressed client messages (RSV1 rules, fragments, context
//! takeover, the size limit on inflated bytes) and the server's deflater,
//! checked against an independent raw-DEFLATE client built on zlib-rs.

#![allow(clippy::unwrap_used)]

use ferricorn_http::ws::deflate::{MIN_COMPRESS, SERVER_WINDOW_BITS, negotiate};
use ferricorn_http::ws::{
    Decoder, Deflater, Message, Opcode, PerMessageDeflate, ProtocolError, accept_response,
    handshake,
};
use zlib_rs::{Deflate, DeflateFlush, Inflate, InflateFlush};

const MASK: [u8; 4] = [0x5a, 0x01, 0xc3, 0x77];
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

fn pmd(server_nct: bool, client_nct: bool, bits: Option<u8>) -> PerMessageDeflate {
    PerMessageDeflate {
        server_no_context_takeover: server_nct,
        client_no_context_takeover: client_nct,
        server_max_window_bits: bits,
    }
}

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

#[path = "support/wsframe.rs"]
mod wsframe;
use wsframe::{decode_with, server_frame};

fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    wsframe::client_frame(fin, rsv, opcode, payload, Some(MASK))
}

/// A client compressor: raw DEFLATE, 2^15 window.
fn client() -> Deflate {
    Deflate::new(6, false, 15)
}

/// Compress one message as RFC 7692 7.2.1 says: sync flush, tail removed.
fn compress(c: &mut Deflate, data: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; zlib_rs::compress_bound(data.len()) + 64];
    let before = c.total_out();
    c.compress(data, &mut out, DeflateFlush::SyncFlush).unwrap();
    out.truncate((c.total_out() - before) as usize);
    assert!(out.ends_with(&TAIL));
    out.truncate(out.len() - 4);
    out
}

fn decoder(max: usize, agreed: &PerMessageDeflate) -> Decoder {
    let mut d = Decoder::new(max);
    d.enable_deflate(agreed);
    d
}

fn decode(
    agreed: &PerMessageDeflate,
    input: &[u8],
    max: usize,
) -> (Vec<Message>, Option<ProtocolError>) {
    decode_with(&mut decoder(max, agreed), input, input.len())
}

/// Inflate one compressed server payload the way a client does.
fn client_inflate(inf: &mut Inflate, payload: &[u8]) -> Vec<u8> {
    let mut input = payload.to_vec();
    input.extend_from_slice(&TAIL);
    let mut out = vec![0u8; 1 << 22];
    let before = inf.total_out();
    inf.decompress(&input, &mut out, InflateFlush::SyncFlush)
        .unwrap();
    out.truncate((inf.total_out() - before) as usize);
    out
}

fn compressible(n: usize) -> Vec<u8> {
    let words = [
        "alpha ",
        "beta ",
        "gamma ",
        "delta ",
        "{\"id\": ",
        "42, ",
        "\"name\": \"x\"} ",
    ];
    let mut out = Vec::with_capacity(n + 16);
    let mut i = 7u32;
    while out.len() < n {
        i = i.wrapping_mul(1_103_515_245).wrapping_add(12345);
        out.extend_from_slice(words[(i >> 16) as usize % words.len()].as_bytes());
    }
    out.truncate(n);
    out
}

fn noise(n: usize) -> Vec<u8> {
    let mut x = 0x1234_5678u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Negotiation
// ---------------------------------------------------------------------------

fn answer(offers: &[&str]) -> Option<String> {
    negotiate(offers).map(|p| p.response())
}

#[test]
fn plain_offers_are_accepted_and_answered() {
    let cases: &[(&str, &str)] = &[
        ("permessage-deflate", "permessage-deflate"),
        ("PerMessage-Deflate", "permessage-deflate"),
        // The inflater takes any client window: not named in the answer.
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; client_max_window_bits=10",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; client_max_window_bits=\"8\"",
            "permessage-deflate",
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate;client_no_context_takeover ; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_max_window_bits = \"10\"",
            "permessage-deflate; server_max_window_bits=10",
        ),
        // Answered with the window the server will use (same or smaller).
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=13",
        ),
        // Honoured with Huffman-only coding.
        (
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=8",
        ),
        (
            // Chrome's and Firefox's offer.
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
        ),
        (
            // Autobahn's default offer.
            "permessage-deflate; client_no_context_takeover; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover",
        ),
    ];
    for (offer, want) in cases {
        assert_eq!(answer(&[offer]).as_deref(), Some(*want), "offer {offer:?}");
    }
    assert_eq!(SERVER_WINDOW_BITS, 13);
}

#[test]
fn malformed_or_unknown_offers_are_declined() {
    for offer in [
        "x-webkit-deflate-frame",
        "permessage-deflate-x",
        "permessage-deflate;",
        "permessage-deflate; ;",
        "permessage-deflate; foo",
        "permessage-deflate; foo=1",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=+9",
        "permessage-deflate; server_max_window_bits=ten",
        "permessage-deflate; server_max_window_bits=\"9",
        "permessage-deflate; server_max_window_bits=\"\"",
        "permessage-deflate; server_max_window_bits=9; server_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; client_max_window_bits=1 5",
        "permessage-deflate; client_max_window_bits; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
        "permessage-deflate; client_no_context_takeover=true",
        "",
    ] {
        assert_eq!(answer(&[offer]), None, "offer {offer:?}");
    }
    assert_eq!(negotiate::<&str>(&[]), None);
}

#[test]
fn the_first_acceptable_offer_wins() {
    assert_eq!(
        answer(&[
            "x-webkit-deflate-frame",
            "permessage-deflate; bogus",
            "permessage-deflate; server_max_window_bits=9; server_no_context_takeover",
            "permessage-deflate",
        ])
        .as_deref(),
        Some("permessage-deflate; server_no_context_takeover; server_max_window_bits=9")
    );
}

#[test]
fn handshake_offers_reach_negotiation_and_the_answer_reaches_the_head() {
    let h = |name: &[u8]| -> Option<Vec<u8>> {
        Some(
            match name {
                b"upgrade" => "websocket",
                b"connection" => "Upgrade",
                b"sec-websocket-version" => "13",
                b"sec-websocket-key" => "dGhlIHNhbXBsZSBub25jZQ==",
                b"sec-websocket-extensions" => {
                    "permessage-deflate; server_max_window_bits=\"7,8\", permessage-deflate; client_max_window_bits"
                }
                _ => return None,
            }
            .as_bytes()
            .to_vec(),
        )
    };
    let mut hs = handshake(b"GET", true, h).unwrap();
    assert_eq!(hs.extensions.len(), 2);
    assert_eq!(hs.deflate, None);
    let mut out = Vec::new();
    accept_response(&mut out, &hs, None, &[]);
    assert!(!String::from_utf8_lossy(&out).contains("Extensions"));

    hs.deflate = negotiate(&hs.extensions);
    assert_eq!(hs.deflate, Some(pmd(false, false, None)));
    let mut out = Vec::new();
    accept_response(
        &mut out,
        &hs,
        None,
        &[(b"Sec-WebSocket-Extensions", b"made-up"), (b"x-app", b"1")],
    );
    let head = String::from_utf8(out).unwrap();
    assert!(
        head.contains("\r\nSec-WebSocket-Extensions: permessage-deflate\r\n"),
        "{head}"
    );
    assert!(
        !head.contains("made-up"),
        "the app cannot claim an extension: {head}"
    );
    assert!(head.contains("\r\nx-app: 1\r\n"));
}

// ---------------------------------------------------------------------------
// Decoder: the client's compressed messages
// ---------------------------------------------------------------------------

#[test]
fn compressed_text_and_binary_messages() {
    let agreed = pmd(false, false, None);
    let mut c = client();
    let text = compressible(5000);
    let bin = noise(3000);
    let mut input = frame(true, 4, 0x1, &compress(&mut c, &text));
    input.extend(frame(true, 4, 0x2, &compress(&mut c, &bin)));
    // An uncompressed message in between is fine too.
    input.extend(frame(true, 0, 0x1, b"plain"));
    // An empty message compressed is one empty block (RFC 7692 7.2.3.6).
    input.extend(frame(true, 4, 0x2, &[0x00]));
    let (msgs, err) = decode(&agreed, &input, 0);
    assert_eq!(err, None);
    assert_eq!(
        msgs,
        vec![
            Message::Text(String::from_utf8(text).unwrap()),
            Message::Binary(bin),
            Message::Text("plain".into()),
            Message::Binary(vec![]),
        ]
    );
}

#[test]
fn fragmented_compressed_message_with_a_ping_between_at_every_split() {
    let agreed = pmd(false, false, None);
    let text = compressible(3000);
    let z = compress(&mut client(), &text);
    let (a, rest) = z.split_at(z.len() / 3);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut input = frame(false, 4, 0x1, a);
    input.extend(frame(true, 0, 0x9, b"hi"));
    input.extend(frame(false, 0, 0x0, b));
    input.extend(frame(false, 0, 0x0, &[]));
    input.extend(frame(true, 0, 0x0, c));
    let want = vec![
        Message::Ping(b"hi".to_vec()),
        Message::Text(String::from_utf8(text).unwrap()),
    ];
    for step in [1, 2, 3, 7, 64, 1000, input.len()] {
        let (msgs, err) = decode_with(&mut decoder(0, &agreed), &input, step);
        assert_eq!(err, None, "step {step}");
        assert_eq!(msgs, want, "step {step}");
    }
}

#[test]
fn rsv1_rules_are_1002() {
    let agreed = pmd(false, false, None);
    let z = compress(&mut client(), b"hello hello hello");
    // Not agreed: RSV1 is a protocol error as before.
    let mut plain = Decoder::new(0);
    let (_, e) = decode_with(&mut plain, &frame(true, 4, 0x1, &z), 1000);
    assert_eq!(e.unwrap().code, 1002);
    // Agreed: never on control frames ...
    for op in [0x8, 0x9, 0xA] {
        let (_, e) = decode(&agreed, &frame(true, 4, op, b""), 0);
        assert_eq!(e.unwrap().code, 1002, "opcode {op}");
    }
    // ... nor on a continuation (only the first frame carries it) ...
    let mut input = frame(false, 4, 0x1, &z[..4]);
    input.extend(frame(true, 4, 0x0, &z[4..]));
    let (_, e) = decode(&agreed, &input, 0);
    assert_eq!(e.unwrap().code, 1002);
    // ... and RSV2, RSV3 stay reserved.
    for rsv in [1, 2, 3, 5, 6, 7] {
        let (_, e) = decode(&agreed, &frame(true, rsv, 0x1, &z), 0);
        assert_eq!(e.unwrap().code, 1002, "rsv {rsv}");
    }
}

#[test]
fn bad_compressed_data_is_1002_and_bad_utf8_inside_is_1007() {
    let agreed = pmd(false, false, None);
    let (_, e) = decode(&agreed, &frame(true, 4, 0x2, &[0xff, 0xff, 0xff, 0xff]), 0);
    assert_eq!(e.unwrap().code, 1002);
    let z = compress(&mut client(), b"valid start \xff\xfe then junk");
    let (_, e) = decode(&agreed, &frame(true, 4, 0x1, &z), 0);
    assert_eq!(e.unwrap().code, 1007);
}

#[test]
fn context_takeover_kept_or_dropped_as_agreed() {
    // The client keeps its context: the second message refers back.
    let msg = compressible(4000);
    let mut c = client();
    let z1 = compress(&mut c, &msg);
    let z2 = compress(&mut c, &msg);
    assert!(
        z2.len() * 4 < z1.len(),
        "the repeat is coded as a back-reference"
    );
    let mut d = decoder(0, &pmd(false, false, None));
    let mut input = frame(true, 4, 0x2, &z1);
    input.extend(frame(true, 4, 0x2, &z2));
    let (msgs, err) = decode_with(&mut d, &input, 100);
    assert_eq!(err, None);
    assert_eq!(
        msgs,
        vec![Message::Binary(msg.clone()), Message::Binary(msg.clone())]
    );
    assert!(
        d.inflater_allocated(),
        "the context is kept between messages"
    );

    // client_no_context_takeover agreed: each message stands alone and the
    // inflater is freed between them.
    let mut d = decoder(0, &pmd(false, true, None));
    assert!(
        !d.inflater_allocated(),
        "nothing is allocated before a message"
    );
    for _ in 0..3 {
        let z = compress(&mut client(), &msg);
        let (msgs, err) = decode_with(&mut d, &frame(true, 4, 0x2, &z), 100);
        assert_eq!((msgs, err), (vec![Message::Binary(msg.clone())], None));
        assert!(!d.inflater_allocated());
    }
}

#[test]
fn a_final_block_ends_the_stream_and_the_next_message_starts_anew() {
    let agreed = pmd(false, true, None);
    let mut input = Vec::new();
    for text in ["first message, ended with BFINAL", "second one, also final"] {
        let mut c = client();
        let mut z = vec![0u8; 256];
        c.compress(text.as_bytes(), &mut z, DeflateFlush::Finish)
            .unwrap();
        z.truncate(c.total_out() as usize);
        input.extend(frame(true, 4, 0x1, &z));
    }
    let (msgs, err) = decode(&agreed, &input, 0);
    assert_eq!(err, None);
    assert_eq!(
        msgs,
        vec![
            Message::Text("first message, ended with BFINAL".into()),
            Message::Text("second one, also final".into())
        ]
    );
}

#[test]
fn the_limit_applies_to_inflated_bytes() {
    let agreed = pmd(false, false, None);
    let max = 10_000;
    let exact = compressible(max);
    let z = compress(&mut client(), &exact);
    assert!(z.len() < max / 4);
    let (msgs, err) = decode(&agreed, &frame(true, 4, 0x1, &z), max);
    assert_eq!((msgs.len(), err), (1, None));
    let over = compressible(max + 1);
    let z = compress(&mut client(), &over);
    let (_, err) = decode(&agreed, &frame(true, 4, 0x1, &z), max);
    assert_eq!(err.unwrap().code, 1009);
    // The limit counts the whole message across fragments.
    let z = compress(&mut client(), &over);
    let mut input = frame(false, 4, 0x1, &z[..z.len() / 2]);
    input.extend(frame(true, 0, 0x0, &z[z.len() / 2..]));
    let (_, err) = decode_with(&mut decoder(max, &agreed), &input, 50);
    assert_eq!(err.unwrap().code, 1009);
}

#[test]
fn a_decompression_bomb_is_1009_while_it_inflates() {
    // 64 MiB of zeros is about 64 KiB compressed; the limit is 1 MiB.
    let agreed = pmd(false, false, None);
    let mut c = client();
    let zeros = vec![0u8; 1 << 20];
    let mut z = Vec::new();
    for _ in 0..64 {
        let mut out = vec![0u8; 8192];
        let before = c.total_out();
        c.compress(&zeros, &mut out, DeflateFlush::NoFlush).unwrap();
        out.truncate((c.total_out() - before) as usize);
        z.extend(out);
    }
    let mut out = vec![0u8; 1 << 16];
    let before = c.total_out();
    c.compress(&[], &mut out, DeflateFlush::SyncFlush).unwrap();
    out.truncate((c.total_out() - before) as usize);
    z.extend(out);
    assert!(z.len() < 128 * 1024, "compressed {}", z.len());
    let input = frame(true, 4, 0x2, &z);
    let mut d = decoder(1 << 20, &agreed);
    let (msgs, err) = decode_with(&mut d, &input, 4096);
    assert!(msgs.is_empty());
    assert_eq!(err.unwrap().code, 1009);
}

// ---------------------------------------------------------------------------
// Deflater: the server's messages
// ---------------------------------------------------------------------------

#[test]
fn server_messages_round_trip_with_context_takeover() {
    let mut d = Deflater::new(&pmd(false, false, None));
    let mut inf = Inflate::new(false, 15);
    // Within the server's window, so a repeat can refer back to it; noise,
    // so only a repeat compresses.
    let msg = noise(3_000);
    let mut sizes = Vec::new();
    for opcode in [Opcode::Text, Opcode::Binary, Opcode::Text] {
        let mut out = b"before".to_vec();
        d.encode(&mut out, opcode, &msg);
        let (fin, rsv1, op, payload, used) = server_frame(&out[6..]);
        assert_eq!(6 + used, out.len());
        assert!(fin && rsv1);
        assert_eq!(op, opcode as u8);
        sizes.push(payload.len());
        assert_eq!(client_inflate(&mut inf, &payload), msg);
    }
    assert!(
        sizes[1] < sizes[0] / 4,
        "the repeat refers to the context: {sizes:?}"
    );
    let text = compressible(20_000);
    let mut out = Vec::new();
    d.encode(&mut out, Opcode::Text, &text);
    let (_, _, _, payload, _) = server_frame(&out);
    assert!(
        payload.len() < text.len() / 2,
        "compressed: {}",
        payload.len()
    );
    assert_eq!(client_inflate(&mut inf, &payload), text);
    // Incompressible data still round-trips, one frame per message.
    let n = noise(70_000);
    let mut out = Vec::new();
    d.encode(&mut out, Opcode::Binary, &n);
    let (_, rsv1, _, payload, used) = server_frame(&out);
    assert!(rsv1 && used == out.len());
    assert_eq!(client_inflate(&mut inf, &payload), n);
}

#[test]
fn server_no_context_takeover_makes_each_message_stand_alone() {
    let mut d = Deflater::new(&pmd(true, false, None));
    let msg = compressible(5000);
    for _ in 0..3 {
        let mut out = Vec::new();
        d.encode(&mut out, Opcode::Text, &msg);
        let (_, rsv1, _, payload, _) = server_frame(&out);
        assert!(rsv1);
        // A fresh inflater each time: nothing may refer to an earlier one.
        assert_eq!(client_inflate(&mut Inflate::new(false, 15), &payload), msg);
    }
}

#[test]
fn small_messages_go_uncompressed_and_allocate_nothing() {
    let mut d = Deflater::new(&pmd(false, false, None));
    let small = compressible(MIN_COMPRESS - 1);
    let mut out = Vec::new();
    d.encode(&mut out, Opcode::Text, &small);
    let (fin, rsv1, op, payload, _) = server_frame(&out);
    assert!(fin && !rsv1 && op == 1);
    assert_eq!(payload, small);
    assert!(!d.is_allocated());
    let mut out = Vec::new();
    d.encode(&mut out, Opcode::Text, &compressible(MIN_COMPRESS));
    assert!(server_frame(&out).1);
    assert!(d.is_allocated());
}

#[test]
fn a_limited_server_window_is_honoured() {
    // The client inflates with the window it agreed to: a reference beyond
    // it would fail to inflate ("distance too far back").
    let long = compressible(200_000);
    for bits in [8u8, 9, 10, 12] {
        let mut d = Deflater::new(&pmd(false, false, Some(bits)));
        let mut inf = Inflate::new(false, bits);
        for _ in 0..2 {
            let mut out = Vec::new();
            d.encode(&mut out, Opcode::Binary, &long);
            let (_, rsv1, _, payload, _) = server_frame(&out);
            assert!(rsv1);
            assert!(payload.len() < long.len(), "bits {bits}: still compresses");
            assert_eq!(client_inflate(&mut inf, &payload), long, "bits {bits}");
        }
    }
}

#[test]
fn every_length_encoding_of_compressed_frames() {
    let mut d = Deflater::new(&pmd(true, false, None));
    for n in [MIN_COMPRESS, 300, 5_000, 70_000, 300_000] {
        let msg = noise(n);
        let mut out = Vec::new();
        d.encode(&mut out, Opcode::Binary, &msg);
        let (_, rsv1, _, payload, used) = server_frame(&out);
        assert!(rsv1 && used == out.len(), "n {n}");
        assert_eq!(client_inflate(&mut Inflate::new(false, 15), &payload), msg);
    }
}

#[test]
fn server_and_decoder_agree_end_to_end() {
    // The server's own frames, masked as a client would send them, decode
    // back through a decoder with the same agreement.
    let agreed = pmd(false, false, None);
    let mut d = Deflater::new(&agreed);
    let mut dec = decoder(0, &agreed);
    for n in [10, 200, 5000, 100_000] {
        let msg = compressible(n);
        let mut out = Vec::new();
        d.encode(&mut out, Opcode::Text, &msg);
        let (_, rsv1, _, payload, _) = server_frame(&out);
        let input = frame(true, if rsv1 { 4 } else { 0 }, 0x1, &payload);
        let (msgs, err) = decode_with(&mut dec, &input, 777);
        assert_eq!(err, None);
        assert_eq!(msgs, vec![Message::Text(String::from_utf8(msg).unwrap())]);
    }
}
