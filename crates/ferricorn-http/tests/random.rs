//! Deterministic stand-in for the fuzzer, run by `cargo test`: mutations of
//! the request corpus and random byte strings through the same property
//! checks as `fuzz/fuzz_targets/http.rs`.

#![allow(clippy::unwrap_used)]

#[path = "support/escape.rs"]
mod escape;
use escape::unescape;

#[path = "support/check.rs"]
mod check;

#[path = "support/rng.rs"]
mod rng;
use rng::Rng;

/// Raw corpus inputs (the `.http` files, unescaped by the same rules as
/// tests/corpus.rs, kept minimal here: escapes only).
fn corpus_inputs() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/requests");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "http"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| unescape(&std::fs::read_to_string(p).unwrap()))
        .filter(|b| b.len() <= 2048)
        .collect()
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\t",
    b":",
    b";",
    b"0",
    b"\0",
    b"\x7f",
    b"\xff",
    b"_",
    b"chunked",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"0\r\n\r\n",
    b"Expect: 100-continue\r\n",
    b"Host: x\r\n",
    b"HTTP/1.1",
    b"ffffffffffffffff",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..=rng.below(4) {
        let at = rng.below(input.len() + 1);
        match rng.below(5) {
            0 if !input.is_empty() => {
                let at = at.min(input.len() - 1);
                input[at] = rng.next() as u8;
            }
            1 if !input.is_empty() => {
                let at = at.min(input.len() - 1);
                let n = rng.below(8).min(input.len() - at);
                input.drain(at..at + n);
            }
            2 => {
                let piece = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 if !input.is_empty() => {
                let from = rng.below(input.len());
                let n = rng.below(16).min(input.len() - from);
                let copy: Vec<u8> = input[from..from + n].to_vec();
                input.splice(at..at, copy);
            }
            _ => input.insert(at, rng.next() as u8),
        }
    }
}

#[test]
fn mutated_corpus() {
    let corpus = corpus_inputs();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..3000 {
        let mut input = corpus[round % corpus.len()].clone();
        mutate(&mut rng, &mut input);
        let mut data = vec![rng.next() as u8, rng.next() as u8];
        data.extend_from_slice(&input);
        check::check_all(&data);
    }
}

#[test]
fn random_bytes() {
    let mut rng = Rng(42);
    for _ in 0..3000 {
        let len = rng.below(300);
        let data: Vec<u8> = (0..len)
            .map(|_| {
                // Bias towards the bytes that matter to HTTP.
                let b = rng.next() as u8;
                if b < 64 {
                    b"\r\n :;0aA\t"[usize::from(b) % 9]
                } else {
                    b
                }
            })
            .collect();
        check::check_all(&data);
    }
}

#[test]
fn corpus_through_checks() {
    for input in corpus_inputs() {
        for sel in [0u8, 0xff, 0x0c, 0x41] {
            let mut data = vec![sel, 17];
            data.extend_from_slice(&input);
            check::check_all(&data);
        }
    }
}
