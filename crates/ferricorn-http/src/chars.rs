//! Byte classes shared by the parser, the body decoders and the encoder.

/// RFC 9110 5.6.2 `tchar`.
const fn build_token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        t[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    t
}

static TOKEN: [bool; 256] = build_token_table();

/// [`is_tchar`] as a class: 0 not a tchar, 1 a tchar other than `_`, 2 `_`.
/// Scanning a name with it gives "has an underscore" at one OR a byte.
const fn build_name_class_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        if TOKEN[i] {
            t[i] = if i == b'_' as usize { 2 } else { 1 };
        }
        i += 1;
    }
    t
}

static NAME_CLASS: [u8; 256] = build_name_class_table();

/// Length of the run of tchars at the start of `s`, and whether it holds a
/// `_`.
#[inline]
pub(crate) fn token_prefix(s: &[u8]) -> (usize, bool) {
    let mut seen = 0u8;
    let mut i = 0;
    while i < s.len() {
        let c = NAME_CLASS[s[i] as usize];
        if c == 0 {
            break;
        }
        seen |= c;
        i += 1;
    }
    (i, seen & 2 != 0)
}

#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    TOKEN[b as usize]
}

/// A non-empty RFC 9110 token.
#[inline]
pub(crate) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Bytes refused inside a field value: controls other than HTAB, and DEL
/// (RFC 9110 5.5). obs-text (0x80-0xFF) is allowed and kept as is.
#[inline]
pub(crate) fn is_bad_value_byte(b: u8) -> bool {
    (b < 0x20 && b != b'\t') || b == 0x7f
}

/// Strip SP and HTAB from both ends.
#[inline]
pub(crate) fn trim_ows(s: &[u8]) -> &[u8] {
    let (start, end) = trim_ows_range(s);
    &s[start..end]
}

/// Start and end of `s` without surrounding SP / HTAB.
#[inline]
pub(crate) fn trim_ows_range(s: &[u8]) -> (usize, usize) {
    let mut start = 0;
    let mut end = s.len();
    while start < end && matches!(s[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(s[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    (start, end)
}

/// Strip SP and HTAB from the end only.
#[inline]
pub(crate) fn trim_ows_end(s: &[u8]) -> &[u8] {
    let mut end = s.len();
    while end > 0 && matches!(s[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    &s[..end]
}

/// Index of the first `needle` in `hay`, eight bytes at a time.
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO * u64::from(needle);
    let mut i = 0;
    for chunk in hay.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        // Some byte of x is zero, i.e. some byte equals `needle`.
        if x.wrapping_sub(LO) & !x & HI != 0 {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == needle).map(|p| i + p)
}

/// Index of the first control byte (below 0x20, HTAB included) or DEL in
/// `hay`, eight bytes at a time: the bytes a field value may not hold, plus
/// HTAB (allowed, the caller steps over it) and CR / LF (the line end).
#[inline]
pub(crate) fn find_ctl_or_del(hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut i = 0;
    for chunk in hay.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Some byte is below 0x20 (exact as a yes/no: a borrow only ever
        // flags a byte above one that really is below).
        let below = x.wrapping_sub(LO * 0x20) & !x & HI;
        // Some byte is 0x7f.
        let d = x ^ (LO * 0x7f);
        let del = d.wrapping_sub(LO) & !d & HI;
        if below | del != 0 {
            break;
        }
        i += 8;
    }
    hay[i..]
        .iter()
        .position(|&b| b < 0x20 || b == 0x7f)
        .map(|p| i + p)
}

/// Parse a non-empty run of ASCII decimal digits into a u64; `None` on any
/// other byte (sign, space, hex) or on overflow.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Value of one hex digit.
#[inline]
pub(crate) fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Does the comma-separated list `value` contain `token` (ASCII
/// case-insensitive, surrounding whitespace ignored)?
pub(crate) fn list_contains(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| trim_ows(item).eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token(b"GET"));
        assert!(is_token(b"X-Foo_Bar!#$%&'*+-.^_`|~09"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a:b"));
        assert!(!is_token(b"a\x80"));
        assert!(!is_token(b"(x)"));
    }

    #[test]
    fn find() {
        let hay = b"0123456789abcdef\nxyz\n";
        for start in 0..hay.len() {
            let want = hay[start..].iter().position(|&b| b == b'\n');
            assert_eq!(find_byte(&hay[start..], b'\n'), want);
        }
        assert_eq!(find_byte(b"", b'\n'), None);
        assert_eq!(find_byte(&[0x8a; 20], b'\n'), None);
        assert_eq!(
            find_byte(b"\x80\x80\x80\x80\x80\x80\x80\x0a", b'\n'),
            Some(7)
        );
    }

    #[test]
    fn name_class() {
        for b in 0..=255u8 {
            let s = [b, b'x'];
            let (n, us) = token_prefix(&s[..1]);
            assert_eq!(n == 1, is_tchar(b), "{b:#x}");
            assert_eq!(us, b == b'_', "{b:#x}");
        }
        assert_eq!(token_prefix(b"X-Forwarded_For: 1"), (15, true));
        assert_eq!(token_prefix(b"Host: a_b"), (4, false));
        assert_eq!(token_prefix(b""), (0, false));
    }

    #[test]
    fn find_ctl() {
        let naive = |s: &[u8]| s.iter().position(|&b| b < 0x20 || b == 0x7f);
        // Every byte value at every position of a 19-byte run of value
        // bytes, over backgrounds that stress the word arithmetic
        // (0x20 just above the bound, 0x80/0xff with the high bit set,
        // 0x7e/0x80 next to DEL).
        for background in [b'a', 0x20, 0x21, 0x7e, 0x80, 0x81, 0xff] {
            for pos in 0..19 {
                for b in 0..=255u8 {
                    let mut s = [background; 19];
                    s[pos] = b;
                    assert_eq!(
                        find_ctl_or_del(&s),
                        naive(&s),
                        "{background:#x} {pos} {b:#x}"
                    );
                    // Two candidates: the first one wins.
                    if pos + 1 < s.len() {
                        s[pos + 1] = b'\r';
                        assert_eq!(find_ctl_or_del(&s), naive(&s));
                    }
                }
            }
        }
        assert_eq!(find_ctl_or_del(b""), None);
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal(b"18446744073709551616"), None);
        assert_eq!(parse_decimal(b"+1"), None);
        assert_eq!(parse_decimal(b"-1"), None);
        assert_eq!(parse_decimal(b" 1"), None);
        assert_eq!(parse_decimal(b"0x1"), None);
        assert_eq!(parse_decimal(b""), None);
    }

    #[test]
    fn lists() {
        assert!(list_contains(b"keep-alive, Close", b"close"));
        assert!(!list_contains(b"closed", b"close"));
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows_end(b" a \t"), b" a");
    }
}
