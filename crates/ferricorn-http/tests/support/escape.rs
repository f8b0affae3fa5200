//! The corpus files' escape syntax (`\\r`, `\\n`, `\\xHH`, `\\[N|text]` for
//! N repetitions), shared by the corpus runner and the random tests.

#![allow(clippy::unwrap_used)]

pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            i += 1;
            continue;
        }
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let e = b[i + 1];
        i += 2;
        match e {
            b'r' => out.push(b'\r'),
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'0' => out.push(0),
            b's' => out.push(b' '),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let hex = std::str::from_utf8(&b[i..i + 2]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b'[' => {
                let bar = i + b[i..].iter().position(|&x| x == b'|').unwrap();
                let end = bar + b[bar..].iter().position(|&x| x == b']').unwrap();
                let n: usize = std::str::from_utf8(&b[i..bar]).unwrap().parse().unwrap();
                let text = unescape(std::str::from_utf8(&b[bar + 1..end]).unwrap());
                for _ in 0..n {
                    out.extend_from_slice(&text);
                }
                i = end + 1;
            }
            other => panic!("unknown escape \\{}", other as char),
        }
    }
    out
}
