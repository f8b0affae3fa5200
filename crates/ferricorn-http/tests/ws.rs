//! `ws`: the WebSocket handshake, decoder and encoder against RFC 6455's
//! rules, driven by a scripted client that masks its frames.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use ferricorn_http::ws::{
    Decoder, Handshake, HandshakeError, MAX_CLOSE_REASON, Message, Opcode, ProtocolError,
    accept_key, accept_response, check_extra_headers, encode, encode_close, encode_frame,
    encode_head, handshake, is_upgrade, is_valid_close_code,
};

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[path = "support/wsframe.rs"]
mod wsframe;

/// One client frame: FIN, RSV bits, opcode, masked with `MASK` unless
/// `masked` is false.
fn frame_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    wsframe::client_frame(fin, rsv, opcode, payload, masked.then_some(MASK))
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, payload, true)
}

fn text(s: &str) -> Vec<u8> {
    frame(true, 0x1, s.as_bytes())
}

fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    frame(true, 0x8, &p)
}

/// Everything `decode` yields from `input` given at once, then the error if
/// any.
fn decode_all(input: &[u8], max: usize) -> (Vec<Message>, Option<ProtocolError>) {
    let mut d = Decoder::new(max);
    let mut buf = input.to_vec();
    let mut out = Vec::new();
    loop {
        match d.decode(&mut buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

/// The same, with the input fed in pieces of `step` bytes.
fn decode_pieces(input: &[u8], max: usize, step: usize) -> (Vec<Message>, Option<ProtocolError>) {
    wsframe::decode_with(&mut Decoder::new(max), input, step)
}

fn error_code(input: &[u8], max: usize) -> u16 {
    let (_, e) = decode_all(input, max);
    e.expect("a protocol error").code
}

// ---------------------------------------------------------------------------
// Handshake
// ---------------------------------------------------------------------------

fn headers(pairs: &[(&str, &str)]) -> impl Fn(&[u8]) -> Option<Vec<u8>> {
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (k, v) in pairs {
        let e = map.entry(k.to_ascii_lowercase().into_bytes()).or_default();
        if !e.is_empty() {
            e.extend_from_slice(b", ");
        }
        e.extend_from_slice(v.as_bytes());
    }
    move |name: &[u8]| map.get(name).cloned()
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn good() -> Vec<(&'static str, &'static str)> {
    vec![
        ("Host", "example.com"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", KEY),
        ("Sec-WebSocket-Version", "13"),
    ]
}

fn refuse(pairs: &[(&str, &str)]) -> HandshakeError {
    handshake(b"GET", true, headers(pairs)).unwrap_err()
}

fn without(name: &str) -> Vec<(&'static str, &'static str)> {
    good().into_iter().filter(|(k, _)| *k != name).collect()
}

fn with(name: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut h = without(name);
    h.push((name, value));
    h
}

#[test]
fn accept_key_is_rfc_example() {
    // RFC 6455 1.3.
    assert_eq!(accept_key(KEY.as_bytes()), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    // A second, independently computed pair (Python hashlib + base64).
    assert_eq!(
        accept_key(b"x3JJHMbDL1EzLkh9GBhXDw=="),
        "HSmrc0sMlYUkAGmm5OPpG2HaGWk="
    );
}

#[test]
fn handshake_accepts_a_valid_request() {
    let hs = handshake(b"GET", true, headers(&good())).unwrap();
    assert_eq!(
        hs,
        Handshake {
            accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
            subprotocols: vec![],
            extensions: vec![],
            deflate: None,
        }
    );
}

#[test]
fn handshake_tokens_are_case_insensitive_lists() {
    let mut h = without("Upgrade");
    h.retain(|(k, _)| *k != "Connection");
    h.push(("Upgrade", "foo, WebSocket"));
    h.push(("Connection", "keep-alive"));
    h.push(("Connection", "UPGRADE"));
    assert!(handshake(b"GET", true, headers(&h)).is_ok());
}

#[test]
fn handshake_collects_subprotocols_and_extensions() {
    let mut h = good();
    h.push(("Sec-WebSocket-Protocol", "chat, superchat"));
    h.push(("Sec-WebSocket-Protocol", " v2 "));
    h.push((
        "Sec-WebSocket-Extensions",
        "permessage-deflate; client_max_window_bits, x-foo",
    ));
    let hs = handshake(b"GET", true, headers(&h)).unwrap();
    assert_eq!(hs.subprotocols, vec!["chat", "superchat", "v2"]);
    assert_eq!(
        hs.extensions,
        vec!["permessage-deflate; client_max_window_bits", "x-foo"]
    );
}

#[test]
fn handshake_refusals() {
    let e = handshake(b"POST", true, headers(&good())).unwrap_err();
    assert_eq!(e.status, 400);
    let e = handshake(b"GET", false, headers(&good())).unwrap_err();
    assert_eq!(e.status, 400);
    for h in [
        without("Upgrade"),
        with("Upgrade", "h2c"),
        without("Connection"),
        with("Connection", "keep-alive"),
        without("Sec-WebSocket-Key"),
        with("Sec-WebSocket-Key", "short=="),
        // 15 bytes
        with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAA"),
        // 17 bytes
        with("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAAA="),
        with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ!="),
        with("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ"),
        without("Sec-WebSocket-Version"),
    ] {
        let e = refuse(&h);
        assert_eq!(e.status, 400, "{h:?}");
        assert!(e.extra_headers.is_empty());
        assert!(!e.reason.is_empty());
    }
    // A repeated key joins into something that is not 16 bytes.
    let mut h = good();
    h.push(("Sec-WebSocket-Key", KEY));
    assert_eq!(refuse(&h).status, 400);
}

#[test]
fn handshake_wrong_version_is_426_naming_13() {
    for v in ["8", "12", "14", "13, 8", "x"] {
        let e = refuse(&with("Sec-WebSocket-Version", v));
        assert_eq!(e.status, 426, "{v}");
        assert_eq!(
            e.extra_headers,
            vec![(b"Sec-WebSocket-Version".to_vec(), b"13".to_vec())]
        );
    }
    // Surrounding whitespace is not a different version.
    assert!(
        handshake(
            b"GET",
            true,
            headers(&with("Sec-WebSocket-Version", " 13 "))
        )
        .is_ok()
    );
}

#[test]
fn is_upgrade_decides_on_the_upgrade_header() {
    assert!(is_upgrade(headers(&good())));
    assert!(is_upgrade(headers(&[("Upgrade", "WEBSOCKET")])));
    assert!(is_upgrade(headers(&[("Upgrade", "a, websocket")])));
    assert!(!is_upgrade(headers(&[("Upgrade", "h2c")])));
    assert!(!is_upgrade(headers(&[("Connection", "upgrade")])));
}

#[test]
fn accept_response_head() {
    let hs = handshake(b"GET", true, headers(&good())).unwrap();
    let mut out = Vec::new();
    accept_response(&mut out, &hs, None, &[]);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    );
    let mut out = Vec::new();
    accept_response(
        &mut out,
        &hs,
        Some(b"chat"),
        &[
            (b"x-a", b"1"),
            (b"set-cookie", b"s=1; Path=/"),
            // Never injected, never duplicated.
            (b"x-bad", b"a\r\nInjected: 1"),
            (b"bad name", b"v"),
            (b"connection", b"close"),
            (b"Sec-WebSocket-Accept", b"forged"),
        ],
    );
    let s = String::from_utf8(out).unwrap();
    assert_eq!(
        s,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
         x-a: 1\r\nset-cookie: s=1; Path=/\r\n\r\n"
    );
    assert!(check_extra_headers(&[(b"x-a", b"1"), (b"b", b"tab\tok")]).is_ok());
    assert!(check_extra_headers(&[(b"x-bad", b"a\nb")]).is_err());
    assert!(check_extra_headers(&[(b"", b"v")]).is_err());
    assert!(check_extra_headers(&[(b"a:b", b"v")]).is_err());
}

// ---------------------------------------------------------------------------
// Decoder: data frames
// ---------------------------------------------------------------------------

#[test]
fn single_frames_of_every_length_encoding() {
    for len in [0usize, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let (msgs, e) = decode_all(&frame(true, 0x2, &payload), 0);
        assert_eq!(e, None);
        assert_eq!(msgs, vec![Message::Binary(payload.clone())], "len {len}");
        let s: String = (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let (msgs, e) = decode_all(&text(&s), 0);
        assert_eq!(e, None);
        assert_eq!(msgs, vec![Message::Text(s)]);
    }
}

#[test]
fn sixty_four_bit_length_with_small_value_is_accepted() {
    // A non-minimal 64-bit length (RFC says "minimal", but receivers
    // commonly accept; Autobahn does not test it).
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&5u64.to_be_bytes());
    f.extend_from_slice(&MASK);
    f.extend(b"hello".iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    assert_eq!(
        decode_all(&f, 0),
        (vec![Message::Binary(b"hello".to_vec())], None)
    );
}

#[test]
fn sixty_four_bit_length_top_bit_is_1002() {
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 63).to_be_bytes());
    f.extend_from_slice(&MASK);
    assert_eq!(error_code(&f, 0), 1002);
}

#[test]
fn huge_declared_length_is_streamed_not_preallocated() {
    // 2^40 bytes announced, unlimited size: the decoder takes what is there
    // and waits, without reserving the whole length.
    let mut f = vec![0x82, 0x80 | 127];
    f.extend_from_slice(&(1u64 << 40).to_be_bytes());
    f.extend_from_slice(&MASK);
    f.extend_from_slice(&[0u8; 100]);
    let mut d = Decoder::new(0);
    let mut buf = f;
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(buf.is_empty());
}

#[test]
fn several_messages_in_one_buffer() {
    let mut input = text("one");
    input.extend(frame(true, 0x2, b"two"));
    input.extend(frame(true, 0x9, b"p"));
    input.extend(text(""));
    input.extend(close_frame(1000, b"bye"));
    input.extend(text("after close is ignored"));
    let (msgs, e) = decode_all(&input, 0);
    assert_eq!(e, None);
    assert_eq!(
        msgs,
        vec![
            Message::Text("one".into()),
            Message::Binary(b"two".to_vec()),
            Message::Ping(b"p".to_vec()),
            Message::Text(String::new()),
            Message::Close {
                code: Some(1000),
                reason: "bye".into()
            },
        ]
    );
}

#[test]
fn decode_drains_exactly_what_it_used() {
    let mut d = Decoder::new(0);
    let mut buf = text("a");
    let second = text("b");
    buf.extend_from_slice(&second[..3]);
    assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("a".into()))));
    // The partial second header stays.
    assert_eq!(buf, second[..3]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert_eq!(buf, second[..3]);
    buf.extend_from_slice(&second[3..]);
    assert_eq!(d.decode(&mut buf), Ok(Some(Message::Text("b".into()))));
    assert!(buf.is_empty());
    assert!(!d.is_closed());
}

#[test]
fn decode_at_batches_without_draining() {
    let mut input = text("one");
    input.extend(frame(false, 0x2, b"tw"));
    input.extend(frame(true, 0x9, b"p"));
    input.extend(frame(true, 0x0, b"o"));
    let second = text("three");
    input.extend_from_slice(&second[..4]);
    let mut d = Decoder::new(0);
    let mut pos = 0;
    let mut got = Vec::new();
    while let Some(m) = d.decode_at(&input, &mut pos).unwrap() {
        got.push(m);
    }
    assert_eq!(
        got,
        vec![
            Message::Text("one".into()),
            Message::Ping(b"p".to_vec()),
            Message::Binary(b"two".to_vec()),
        ]
    );
    // The partial header is not used.
    assert_eq!(pos, input.len() - 4);
    let mut rest = input[pos..].to_vec();
    rest.extend_from_slice(&second[4..]);
    assert_eq!(d.decode(&mut rest), Ok(Some(Message::Text("three".into()))));
    // Errors from decode_at are sticky too.
    let mut pos = 0;
    let bad = frame(true, 0x3, b"");
    assert_eq!(d.decode_at(&bad, &mut pos).unwrap_err().code, 1002);
    assert_eq!(d.decode(&mut text("x")).unwrap_err().code, 1002);
}

#[test]
fn fragmented_messages_reassemble_with_interleaved_control_frames() {
    let mut input = frame(false, 0x1, "héllo ".as_bytes());
    input.extend(frame(true, 0x9, b"ping1"));
    input.extend(frame(false, 0x0, b""));
    input.extend(frame(false, 0x0, "wörld".as_bytes()));
    input.extend(frame(true, 0xA, b"pong"));
    input.extend(frame(true, 0x0, b"!"));
    input.extend(frame(false, 0x2, &[1, 2]));
    input.extend(frame(true, 0x0, &[3]));
    let want = vec![
        Message::Ping(b"ping1".to_vec()),
        Message::Pong(b"pong".to_vec()),
        Message::Text("héllo wörld!".into()),
        Message::Binary(vec![1, 2, 3]),
    ];
    assert_eq!(decode_all(&input, 0), (want.clone(), None));
    for step in 1..input.len() {
        assert_eq!(
            decode_pieces(&input, 0, step),
            (want.clone(), None),
            "{step}"
        );
    }
}

#[test]
fn every_split_point_gives_the_same_messages() {
    let long: String = "€uro ".repeat(40); // 240 bytes: a 16-bit length
    let mut input = text(&long);
    input.extend(frame(false, 0x1, "ab€".as_bytes()[..3].as_ref()));
    input.extend(frame(true, 0x0, &"ab€".as_bytes()[3..]));
    input.extend(frame(true, 0x9, b""));
    input.extend(frame(true, 0x2, &[0u8; 9]));
    input.extend(close_frame(1001, "går".as_bytes()));
    let whole = decode_all(&input, 0);
    assert_eq!(whole.1, None);
    assert_eq!(whole.0.len(), 5);
    for cut in 0..=input.len() {
        let mut d = Decoder::new(0);
        let mut buf = input[..cut].to_vec();
        let mut got = Vec::new();
        while let Some(m) = d.decode(&mut buf).unwrap() {
            got.push(m);
        }
        buf.extend_from_slice(&input[cut..]);
        while let Some(m) = d.decode(&mut buf).unwrap() {
            got.push(m);
        }
        assert_eq!(got, whole.0, "cut at {cut}");
    }
    // Byte by byte.
    assert_eq!(decode_pieces(&input, 0, 1), whole);
}

#[test]
fn unmasking_works_across_partial_payloads_of_any_phase() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let f = frame(true, 0x2, &payload);
    for step in [1, 2, 3, 5, 7, 8, 9, 13, 64, 999] {
        assert_eq!(
            decode_pieces(&f, 0, step),
            (vec![Message::Binary(payload.clone())], None),
            "{step}"
        );
    }
}

// ---------------------------------------------------------------------------
// Decoder: protocol errors (1002)
// ---------------------------------------------------------------------------

#[test]
fn unmasked_client_frame_is_1002() {
    assert_eq!(error_code(&frame_with(true, 0, 0x1, b"hi", false), 0), 1002);
    assert_eq!(error_code(&frame_with(true, 0, 0x9, b"", false), 0), 1002);
}

#[test]
fn rsv_bits_are_1002() {
    for rsv in 1..8 {
        assert_eq!(error_code(&frame_with(true, rsv, 0x1, b"x", true), 0), 1002);
        assert_eq!(error_code(&frame_with(true, rsv, 0x9, b"", true), 0), 1002);
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        assert_eq!(error_code(&frame(true, op, b""), 0), 1002, "opcode {op}");
        assert_eq!(error_code(&frame(true, op, b"payload"), 0), 1002);
    }
}

#[test]
fn reserved_opcode_after_a_good_message_still_yields_it_first() {
    let mut input = text("ok");
    input.extend(frame(true, 5, b""));
    let (msgs, e) = decode_all(&input, 0);
    assert_eq!(msgs, vec![Message::Text("ok".into())]);
    assert_eq!(e.unwrap().code, 1002);
}

#[test]
fn control_frame_rules_are_1002() {
    // Over 125 bytes.
    assert_eq!(error_code(&frame(true, 0x9, &[0; 126]), 0), 1002);
    assert_eq!(error_code(&frame(true, 0xA, &[0; 126]), 0), 1002);
    assert_eq!(
        error_code(
            &frame(true, 0x8, &[3, 0xe8, b'a', 0, 0, 0, 0].repeat(20)),
            0
        ),
        1002
    );
    // Exactly 125 is fine.
    assert_eq!(
        decode_all(&frame(true, 0x9, &[7; 125]), 0),
        (vec![Message::Ping(vec![7; 125])], None)
    );
    // Fragmented.
    assert_eq!(error_code(&frame(false, 0x9, b"a"), 0), 1002);
    assert_eq!(error_code(&frame(false, 0x8, b""), 0), 1002);
}

#[test]
fn oversized_control_frame_fails_from_the_header_alone() {
    // Only the two header bytes and the 16-bit length: no need to wait.
    let mut d = Decoder::new(0);
    let mut buf = vec![0x89, 0x80 | 126, 0, 200];
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1002);
}

#[test]
fn continuation_rules_are_1002() {
    // Continuation with nothing started.
    assert_eq!(error_code(&frame(true, 0x0, b"x"), 0), 1002);
    assert_eq!(error_code(&frame(false, 0x0, b"x"), 0), 1002);
    // Continuation after a finished message.
    let mut input = text("done");
    input.extend(frame(true, 0x0, b"x"));
    assert_eq!(error_code(&input, 0), 1002);
    // A new text or binary frame inside a fragmented message.
    for op in [0x1, 0x2] {
        let mut input = frame(false, 0x1, b"a");
        input.extend(frame(true, op, b"b"));
        assert_eq!(error_code(&input, 0), 1002);
    }
}

#[test]
fn errors_are_sticky() {
    let mut d = Decoder::new(0);
    let mut buf = frame_with(true, 0, 0x1, b"hi", false);
    let e = d.decode(&mut buf).unwrap_err();
    let mut good = text("later");
    assert_eq!(d.decode(&mut good), Err(e));
}

// ---------------------------------------------------------------------------
// Decoder: UTF-8 (1007)
// ---------------------------------------------------------------------------

const BAD_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xc0\xaf",         // overlong
    b"\xed\xa0\x80",     // surrogate
    b"\xf4\x90\x80\x80", // above U+10FFFF
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
    b"a\x80b",   // lone continuation
    b"\xe2\x82", // truncated at the end
];

#[test]
fn invalid_utf8_text_is_1007() {
    for bad in BAD_UTF8 {
        assert_eq!(error_code(&frame(true, 0x1, bad), 0), 1007, "{bad:?}");
        // Binary carries anything.
        assert_eq!(
            decode_all(&frame(true, 0x2, bad), 0),
            (vec![Message::Binary(bad.to_vec())], None)
        );
    }
}

#[test]
fn utf8_split_across_fragments_is_valid() {
    let s = "κόσμε 𝄞 €";
    let bytes = s.as_bytes();
    for cut in 0..=bytes.len() {
        let mut input = frame(false, 0x1, &bytes[..cut]);
        input.extend(frame(true, 0x0, &bytes[cut..]));
        assert_eq!(
            decode_pieces(&input, 0, 1),
            (vec![Message::Text(s.into())], None),
            "cut {cut}"
        );
    }
}

#[test]
fn invalid_utf8_fails_fast_in_a_fragment() {
    // Autobahn 6.4.1/6.4.2: the bad fragment is refused before the final
    // one arrives.
    let mut d = Decoder::new(0);
    let mut buf = frame(false, 0x1, "κόσμε".as_bytes());
    assert_eq!(d.decode(&mut buf), Ok(None));
    buf.extend(frame(false, 0x0, b"\xf4\x90\x80\x80"));
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1007);

    // An incomplete sequence at a fragment's end is not an error yet...
    let mut d = Decoder::new(0);
    let mut buf = frame(false, 0x1, b"ok\xf0\x9d");
    assert_eq!(d.decode(&mut buf), Ok(None));
    // ...but a byte that cannot continue it is.
    buf.extend(frame(false, 0x0, b"A"));
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1007);
}

#[test]
fn bad_fragment_is_refused_before_a_following_ping() {
    // Whole or split, the ping after a bad fragment is never yielded.
    let mut input = frame(false, 0x1, b"\xff");
    input.extend(frame(true, 0x9, b"p"));
    input.extend(frame(true, 0x0, b"x"));
    let want = (vec![], Some(1007));
    for step in 1..=input.len() {
        let (msgs, e) = decode_pieces(&input, 0, step);
        assert_eq!((msgs, e.map(|e| e.code)), want, "{step}");
    }
}

#[test]
fn invalid_utf8_fails_fast_inside_one_frame() {
    // Autobahn 6.4.3/6.4.4: one frame whose payload arrives in pieces.
    let payload =
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80\x65\x64\x69\x74\x65\x64";
    let f = frame(true, 0x1, payload);
    let header = f.len() - payload.len();
    let mut d = Decoder::new(0);
    // The valid prefix, and 0xF4 which may still start U+10xxxx: waits.
    let mut buf = f[..header + 12].to_vec();
    assert_eq!(d.decode(&mut buf), Ok(None));
    // 0x90 after 0xF4 is above U+10FFFF: refused at once, before the rest.
    buf.extend_from_slice(&f[header + 12..header + 13]);
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1007);
}

#[test]
fn incomplete_sequence_at_message_end_is_1007() {
    let mut input = frame(false, 0x1, b"\xe2\x82");
    input.extend(frame(true, 0x0, b""));
    assert_eq!(error_code(&input, 0), 1007);
}

// ---------------------------------------------------------------------------
// Decoder: limits (1009)
// ---------------------------------------------------------------------------

#[test]
fn message_size_limit() {
    assert_eq!(
        decode_all(&frame(true, 0x2, &[0; 100]), 100),
        (vec![Message::Binary(vec![0; 100])], None)
    );
    assert_eq!(error_code(&frame(true, 0x2, &[0; 101]), 100), 1009);
    assert_eq!(error_code(&text(&"x".repeat(101)), 100), 1009);
    // Across fragments.
    let mut input = frame(false, 0x2, &[0; 60]);
    input.extend(frame(true, 0x0, &[0; 40]));
    assert_eq!(decode_all(&input, 100).1, None);
    let mut input = frame(false, 0x2, &[0; 60]);
    input.extend(frame(false, 0x0, &[0; 40]));
    input.extend(frame(true, 0x0, &[0; 1]));
    assert_eq!(error_code(&input, 100), 1009);
    // Control frames are not counted against it.
    let mut input = frame(false, 0x2, &[0; 100]);
    input.extend(frame(true, 0x9, &[0; 100]));
    input.extend(frame(true, 0x0, b""));
    assert_eq!(decode_all(&input, 100).1, None);
    // The limit is per message.
    let mut input = frame(true, 0x2, &[0; 100]);
    input.extend(frame(true, 0x2, &[0; 100]));
    assert_eq!(decode_all(&input, 100).0.len(), 2);
}

#[test]
fn too_big_is_refused_from_the_header_before_the_payload() {
    let mut d = Decoder::new(1 << 20);
    let mut buf = vec![0x82, 0x80 | 127];
    buf.extend_from_slice(&(1u64 << 32).to_be_bytes());
    buf.extend_from_slice(&MASK);
    assert_eq!(d.decode(&mut buf).unwrap_err().code, 1009);
}

// ---------------------------------------------------------------------------
// Decoder: close frames
// ---------------------------------------------------------------------------

#[test]
fn close_payloads() {
    assert_eq!(
        decode_all(&frame(true, 0x8, b""), 0),
        (
            vec![Message::Close {
                code: None,
                reason: String::new()
            }],
            None
        )
    );
    // One byte.
    assert_eq!(error_code(&frame(true, 0x8, b"\x03"), 0), 1002);
    // Valid codes (Autobahn 7.7.x) and the registered 1012-1014.
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ] {
        assert!(is_valid_close_code(code));
        assert_eq!(
            decode_all(&close_frame(code, b""), 0),
            (
                vec![Message::Close {
                    code: Some(code),
                    reason: String::new()
                }],
                None
            )
        );
    }
    // Invalid codes (Autobahn 7.9.x and more).
    for code in [
        0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        assert!(!is_valid_close_code(code));
        assert_eq!(error_code(&close_frame(code, b""), 0), 1002, "{code}");
    }
    // Reason UTF-8.
    assert_eq!(
        decode_all(&close_frame(1000, "κόσμε".as_bytes()), 0).0,
        vec![Message::Close {
            code: Some(1000),
            reason: "κόσμε".into()
        }]
    );
    for bad in BAD_UTF8 {
        assert_eq!(error_code(&close_frame(1000, bad), 0), 1007);
    }
    // 123-byte reason is the most that fits.
    let r = "r".repeat(123);
    assert_eq!(decode_all(&close_frame(1000, r.as_bytes()), 0).1, None);
    assert_eq!(
        error_code(&close_frame(1000, "r".repeat(124).as_bytes()), 0),
        1002
    );
}

#[test]
fn close_inside_a_fragmented_message_is_allowed_and_final() {
    let mut input = frame(false, 0x1, b"part");
    input.extend(close_frame(1000, b""));
    input.extend(frame(true, 0x0, b"rest"));
    let mut d = Decoder::new(0);
    let mut buf = input;
    assert_eq!(
        d.decode(&mut buf),
        Ok(Some(Message::Close {
            code: Some(1000),
            reason: String::new()
        }))
    );
    assert!(d.is_closed());
    assert_eq!(d.decode(&mut buf), Ok(None));
}

// ---------------------------------------------------------------------------
// Encoder
// ---------------------------------------------------------------------------

/// Parse a server frame: (fin, opcode, payload, bytes used).
fn parse_server(b: &[u8]) -> (bool, u8, Vec<u8>, usize) {
    let (fin, rsv1, opcode, payload, used) = wsframe::server_frame(b);
    assert!(!rsv1, "no RSV bits");
    (fin, opcode, payload, used)
}

#[test]
fn encode_messages_with_minimal_lengths() {
    for (len, header) in [
        (0, 2),
        (125, 2),
        (126, 4),
        (65535, 4),
        (65536, 10),
        (100_000, 10),
    ] {
        let payload = vec![0xabu8; len];
        let mut out = Vec::new();
        encode(&mut out, &Message::Binary(payload.clone()));
        assert_eq!(out.len(), header + len, "len {len}");
        assert_eq!(parse_server(&out), (true, 0x2, payload, out.len()));
    }
    let mut out = Vec::new();
    encode(&mut out, &Message::Text("héllo".into()));
    encode(&mut out, &Message::Ping(b"p".to_vec()));
    encode(&mut out, &Message::Pong(b"q".to_vec()));
    encode(
        &mut out,
        &Message::Close {
            code: None,
            reason: String::new(),
        },
    );
    let mut at = 0;
    let mut got = Vec::new();
    while at < out.len() {
        let (fin, op, p, n) = parse_server(&out[at..]);
        assert!(fin);
        got.push((op, p));
        at += n;
    }
    assert_eq!(
        got,
        vec![
            (0x1, "héllo".as_bytes().to_vec()),
            (0x9, b"p".to_vec()),
            (0xA, b"q".to_vec()),
            (0x8, vec![]),
        ]
    );
}

#[test]
fn encode_head_and_frame() {
    let mut out = Vec::new();
    encode_head(&mut out, Opcode::Text, false, 3);
    assert_eq!(out, [0x01, 3]);
    let mut out = Vec::new();
    encode_frame(&mut out, Opcode::Binary, b"abc");
    assert_eq!(out, [0x82, 3, b'a', b'b', b'c']);
}

#[test]
fn encode_close_truncates_at_a_char_boundary() {
    let mut out = Vec::new();
    encode_close(&mut out, 1000, "bye");
    assert_eq!(out, [0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
    // 62 two-byte chars = 124 bytes: cut to 61 chars (122 bytes), not 123.
    let reason = "é".repeat(62);
    let mut out = Vec::new();
    encode_close(&mut out, 1001, &reason);
    let (_, op, p, _) = parse_server(&out);
    assert_eq!(op, 0x8);
    assert_eq!(p.len(), 2 + 122);
    assert_eq!(std::str::from_utf8(&p[2..]).unwrap(), "é".repeat(61));
    let mut out = Vec::new();
    encode_close(&mut out, 1000, &"a".repeat(500));
    assert_eq!(parse_server(&out).2.len(), 2 + MAX_CLOSE_REASON);
    // A close message encodes the same way.
    let mut via_msg = Vec::new();
    encode(
        &mut via_msg,
        &Message::Close {
            code: Some(1000),
            reason: "a".repeat(500),
        },
    );
    assert_eq!(via_msg, out);
}

#[test]
fn encoded_frames_decode_back_when_masked() {
    // Round trip: what the server encodes, a client masking it would send.
    for msg in [
        Message::Text("round ☃ trip".into()),
        Message::Binary((0..=255).collect()),
        Message::Ping(b"x".to_vec()),
        Message::Close {
            code: Some(4000),
            reason: "app".into(),
        },
    ] {
        let mut out = Vec::new();
        encode(&mut out, &msg);
        let (fin, op, payload, _) = parse_server(&out);
        let (got, e) = decode_all(&frame(fin, op, &payload), 0);
        assert_eq!(e, None);
        assert_eq!(got, vec![msg]);
    }
}

// ---------------------------------------------------------------------------
// Random streams (a deterministic stand-in for fuzzing)
// ---------------------------------------------------------------------------

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// A stream of valid client frames, some fragmented, with pings between.
fn random_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..1 + rng.below(6) {
        let len = [0, 1, 5, 125, 126, 300, 70_000][rng.below(7)];
        let binary = rng.below(2) == 0;
        let payload: Vec<u8> = if binary {
            (0..len).map(|_| rng.next() as u8).collect()
        } else {
            "aé€𝄞"
                .chars()
                .cycle()
                .take(len)
                .collect::<String>()
                .into_bytes()
        };
        let parts = 1 + rng.below(4);
        let mut cuts: Vec<usize> = (1..parts).map(|_| rng.below(payload.len() + 1)).collect();
        cuts.push(0);
        cuts.push(payload.len());
        cuts.sort_unstable();
        for (i, w) in cuts.windows(2).enumerate() {
            let op = if i > 0 {
                0
            } else if binary {
                2
            } else {
                1
            };
            out.extend(frame(i + 2 == cuts.len(), op, &payload[w[0]..w[1]]));
            if rng.below(3) == 0 {
                out.extend(frame(true, 0x9, b"hb"));
            }
        }
    }
    out
}

#[test]
fn random_streams_and_mutations_decode_the_same_however_split() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut input = random_stream(&mut rng);
        if round % 2 == 1 {
            // Corrupt a few bytes: any outcome but a panic, and the same
            // outcome for every split.
            for _ in 0..1 + rng.below(3) {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
        }
        let max = [0, 100, 1 << 16][rng.below(3)];
        let whole = decode_all(&input, max);
        if round % 2 == 0 && max == 0 {
            assert_eq!(whole.1, None, "round {round}");
        }
        for m in &whole.0 {
            if let (Message::Text(_) | Message::Binary(_), true) = (m, max > 0) {
                let len = match m {
                    Message::Text(s) => s.len(),
                    Message::Binary(b) => b.len(),
                    _ => 0,
                };
                assert!(len <= max);
            }
        }
        let step = 1 + rng.below(200);
        assert_eq!(
            decode_pieces(&input, max, step),
            whole,
            "round {round} step {step}"
        );
    }
}
