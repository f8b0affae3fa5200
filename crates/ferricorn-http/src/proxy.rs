//! PROXY protocol v1 (text) and v2 (binary) headers, sans-IO.
//!
//! gunicorn counterpart: `Request._handle_proxy_protocol`,
//! `_parse_proxy_protocol_v1`, `_parse_proxy_protocol_v2` in
//! `gunicorn/http/message.py` (setting `proxy_protocol`: off, v1, v2, auto).
//! Checking the peer against `proxy_allow_ips` is the caller's job; refuse
//! with [`Error::ForbiddenProxy`] (403).
//!
//! Invariants: at most 107 bytes are examined for a v1 line (the spec's
//! maximum) and 16 + 65535 for a v2 header; a connection that does not start
//! with a PROXY header is left untouched ([`ProxyInfo::Absent`], 0 bytes).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::chars::parse_decimal;
use crate::error::Error;

/// The 12-byte v2 signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (spec section 2.1).
pub const V1_MAX_LINE: usize = 107;

/// Which PROXY protocol versions are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Text headers only.
    V1,
    /// Binary headers only.
    V2,
    /// Either.
    Auto,
}

/// What the PROXY header said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyInfo {
    /// The connection does not start with a PROXY header (gunicorn then
    /// serves the bytes as plain HTTP).
    Absent,
    /// v2 LOCAL command: a health check from the proxy itself; use the real
    /// peer address.
    Local,
    /// v1 `UNKNOWN` or v2 `UNSPEC` family: the proxy does not know the
    /// client's address; use the real peer address.
    Unknown,
    /// A proxied TCP connection (v1 TCP4/TCP6 or v2 INET/INET6 STREAM).
    Proxied {
        /// The client's address.
        src: SocketAddr,
        /// The address the client connected to.
        dst: SocketAddr,
    },
}

/// Parse a PROXY header at the start of `buf`.
///
/// `Ok(None)`: more bytes are needed to decide. `Ok(Some((info, n)))`: the
/// header took `buf[..n]` (0 for [`ProxyInfo::Absent`]); HTTP starts at
/// `buf[n..]`.
pub fn parse(buf: &[u8], mode: Mode) -> Result<Option<(ProxyInfo, usize)>, Error> {
    let v2 = matches!(mode, Mode::V2 | Mode::Auto);
    let v1 = matches!(mode, Mode::V1 | Mode::Auto);
    if v2 && is_prefix_of(buf, V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(None);
        }
        return parse_v2(buf);
    }
    if v1 && is_prefix_of(buf, b"PROXY ") {
        if buf.len() < 6 {
            return Ok(None);
        }
        return parse_v1(buf);
    }
    Ok(Some((ProxyInfo::Absent, 0)))
}

/// Whether `buf` and `sig` agree on their common length (so `buf` may still
/// turn out to start with `sig`).
fn is_prefix_of(buf: &[u8], sig: &[u8]) -> bool {
    let n = buf.len().min(sig.len());
    buf[..n] == sig[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, Error> {
    let look = &buf[..buf.len().min(V1_MAX_LINE)];
    let Some(lf) = look.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX_LINE {
            return Err(Error::InvalidProxyLine("line too long"));
        }
        return Ok(None);
    };
    if lf == 0 || look[lf - 1] != b'\r' {
        return Err(Error::InvalidProxyLine("line not terminated by CRLF"));
    }
    let line = &look[..lf - 1];
    let consumed = lf + 1;
    let parts: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    if parts.get(1) == Some(&&b"UNKNOWN"[..]) {
        // "PROXY UNKNOWN" optionally followed by anything up to CRLF.
        return Ok(Some((ProxyInfo::Unknown, consumed)));
    }
    let [_, proto, src, dst, sport, dport] = parts[..] else {
        return Err(Error::InvalidProxyLine("expected six fields"));
    };
    let (src, dst): (IpAddr, IpAddr) = match proto {
        b"TCP4" => (
            IpAddr::V4(parse_addr::<Ipv4Addr>(src)?),
            IpAddr::V4(parse_addr::<Ipv4Addr>(dst)?),
        ),
        b"TCP6" => (
            IpAddr::V6(parse_addr::<Ipv6Addr>(src)?),
            IpAddr::V6(parse_addr::<Ipv6Addr>(dst)?),
        ),
        _ => return Err(Error::InvalidProxyLine("protocol not supported")),
    };
    let sport = parse_port(sport)?;
    let dport = parse_port(dport)?;
    Ok(Some((
        ProxyInfo::Proxied {
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        },
        consumed,
    )))
}

fn parse_addr<T: std::str::FromStr>(s: &[u8]) -> Result<T, Error> {
    std::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Error::InvalidProxyLine("invalid address"))
}

fn parse_port(s: &[u8]) -> Result<u16, Error> {
    if s.len() > 5 {
        return Err(Error::InvalidProxyLine("invalid port"));
    }
    parse_decimal(s)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(Error::InvalidProxyLine("invalid port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyInfo, usize)>, Error> {
    let [
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        _,
        ver_cmd,
        fam_proto,
        len_hi,
        len_lo,
        ..,
    ] = *buf
    else {
        return Ok(None);
    };
    if ver_cmd >> 4 != 2 {
        return Err(Error::InvalidProxyHeader("unsupported version"));
    }
    let command = ver_cmd & 0x0f;
    if command > 1 {
        return Err(Error::InvalidProxyHeader("unsupported command"));
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let total = 16 + len;
    if buf.len() < total {
        return Ok(None);
    }
    if command == 0 {
        return Ok(Some((ProxyInfo::Local, total)));
    }
    let family = fam_proto >> 4;
    let protocol = fam_proto & 0x0f;
    if family == 0 {
        return Ok(Some((ProxyInfo::Unknown, total)));
    }
    if protocol != 1 {
        return Err(Error::InvalidProxyHeader("only TCP is supported"));
    }
    let addr = &buf[16..total];
    let info = match family {
        1 => {
            let [a, b, c, d, e, f, g, h, sp0, sp1, dp0, dp1, ..] = *addr else {
                return Err(Error::InvalidProxyHeader("short IPv4 address block"));
            };
            ProxyInfo::Proxied {
                src: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                    u16::from_be_bytes([sp0, sp1]),
                ),
                dst: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(e, f, g, h)),
                    u16::from_be_bytes([dp0, dp1]),
                ),
            }
        }
        2 => {
            if addr.len() < 36 {
                return Err(Error::InvalidProxyHeader("short IPv6 address block"));
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&addr[..16]);
            d.copy_from_slice(&addr[16..32]);
            ProxyInfo::Proxied {
                src: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(s)),
                    u16::from_be_bytes([addr[32], addr[33]]),
                ),
                dst: SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(d)),
                    u16::from_be_bytes([addr[34], addr[35]]),
                ),
            }
        }
        _ => return Err(Error::InvalidProxyHeader("unsupported address family")),
    };
    Ok(Some((info, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn absent() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n", Mode::Auto),
            Ok(Some((ProxyInfo::Absent, 0)))
        );
        assert_eq!(parse(b"", Mode::Auto), Ok(None));
        assert_eq!(parse(b"PRO", Mode::Auto), Ok(None));
        assert_eq!(parse(b"PRO", Mode::V2), Ok(Some((ProxyInfo::Absent, 0))));
        assert_eq!(parse(b"\r\n\r", Mode::Auto), Ok(None));
        assert_eq!(
            parse(b"\r\nGET", Mode::Auto),
            Ok(Some((ProxyInfo::Absent, 0)))
        );
        assert_eq!(
            parse(b"PROXY TCP4 ", Mode::V2),
            Ok(Some((ProxyInfo::Absent, 0)))
        );
    }

    #[test]
    fn v1() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET";
        for n in 0..line.len() - 3 {
            assert_eq!(parse(&line[..n], Mode::Auto), Ok(None), "{n}");
        }
        assert_eq!(
            parse(line, Mode::V1),
            Ok(Some((
                ProxyInfo::Proxied {
                    src: addr("192.168.0.1:56324"),
                    dst: addr("192.168.0.11:443")
                },
                line.len() - 3
            )))
        );
        let line6 = b"PROXY TCP6 ::1 2001:db8::1 1 65535\r\n";
        assert_eq!(
            parse(line6, Mode::Auto),
            Ok(Some((
                ProxyInfo::Proxied {
                    src: addr("[::1]:1"),
                    dst: addr("[2001:db8::1]:65535")
                },
                line6.len()
            )))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n", Mode::Auto),
            Ok(Some((ProxyInfo::Unknown, 15)))
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad, Mode::Auto), Err(Error::InvalidProxyLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(200, b'1');
        assert!(parse(&long, Mode::Auto).is_err());
    }

    fn v2(ver_cmd: u8, fam: u8, body: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(ver_cmd);
        v.push(fam);
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn v2_tcp4() {
        let mut h = v2(
            0x21,
            0x11,
            &[10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0x01, 0xbb, 0xaa],
        );
        let n = h.len();
        for k in 0..n {
            assert_eq!(parse(&h[..k], Mode::Auto), Ok(None), "{k}");
        }
        h.extend_from_slice(b"GET");
        assert_eq!(
            parse(&h, Mode::V2),
            Ok(Some((
                ProxyInfo::Proxied {
                    src: addr("10.0.0.1:8080"),
                    dst: addr("10.0.0.2:443")
                },
                n
            )))
        );
    }

    #[test]
    fn v2_tcp6_local_unspec_and_errors() {
        let mut body = vec![0u8; 36];
        body[15] = 1;
        body[31] = 2;
        body[33] = 80;
        body[35] = 81;
        let h = v2(0x21, 0x21, &body);
        assert_eq!(
            parse(&h, Mode::Auto),
            Ok(Some((
                ProxyInfo::Proxied {
                    src: addr("[::1]:80"),
                    dst: addr("[::2]:81")
                },
                52
            )))
        );
        assert_eq!(
            parse(&v2(0x20, 0x00, b""), Mode::Auto),
            Ok(Some((ProxyInfo::Local, 16)))
        );
        assert_eq!(
            parse(&v2(0x20, 0x11, &[1; 12]), Mode::Auto),
            Ok(Some((ProxyInfo::Local, 28)))
        );
        assert_eq!(
            parse(&v2(0x21, 0x00, b""), Mode::Auto),
            Ok(Some((ProxyInfo::Unknown, 16)))
        );
        for bad in [
            v2(0x11, 0x11, &[0; 12]),
            v2(0x22, 0x11, &[0; 12]),
            v2(0x21, 0x12, &[0; 12]),
            v2(0x21, 0x11, &[0; 11]),
            v2(0x21, 0x21, &[0; 35]),
            v2(0x21, 0x31, &[0; 216]),
        ] {
            assert!(matches!(
                parse(&bad, Mode::Auto),
                Err(Error::InvalidProxyHeader(_))
            ));
        }
        // v2 signature when only v1 is accepted: not a PROXY header at all.
        assert_eq!(parse(&h, Mode::V1), Ok(Some((ProxyInfo::Absent, 0))));
    }
}
