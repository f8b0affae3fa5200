//! Trusting a reverse proxy: which peers may tell us the client's scheme
//! (`secure_scheme_headers`) and send forwarder headers (`forwarder_headers`),
//! per `forwarded_allow_ips` (`*`, addresses or networks). Unix-socket peers
//! are trusted, as in gunicorn.
//!
//! gunicorn counterpart: `http.message.Message.parse_headers` (scheme
//! headers, `InvalidSchemeHeaders`) and `util.is_ipv6`/`ip_network` checks.

use std::net::IpAddr;

use crate::sock::Peer;

/// Two scheme headers of a trusted proxy disagree (gunicorn's `InvalidSchemeHeaders`).
#[derive(Debug, PartialEq, Eq)]
pub struct ContradictoryScheme;

#[derive(Debug, Clone)]
pub struct Trust {
    any: bool,
    nets: Vec<(IpAddr, u8)>,
    /// (header name, value that means https)
    secure_headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Default for Trust {
    /// gunicorn's defaults.
    fn default() -> Self {
        Trust::new(
            &["127.0.0.1".into(), "::1".into()],
            &[
                ("X-FORWARDED-PROTOCOL".into(), "ssl".into()),
                ("X-FORWARDED-PROTO".into(), "https".into()),
                ("X-FORWARDED-SSL".into(), "on".into()),
            ],
        )
    }
}

fn parse_net(entry: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = match entry.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (entry, None),
    };
    let ip: IpAddr = ip.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b.trim().parse::<u8>().ok().filter(|b| *b <= max)?,
        None => max,
    };
    Some((ip, bits))
}

fn in_net(ip: IpAddr, (net, bits): (IpAddr, u8)) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

impl Trust {
    pub fn new(allow: &[String], secure_headers: &[(String, String)]) -> Self {
        Trust {
            any: allow.iter().any(|a| a.trim() == "*"),
            nets: allow.iter().filter_map(|a| parse_net(a)).collect(),
            secure_headers: secure_headers
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// Whether `peer` may send scheme and forwarder headers.
    pub fn trusts(&self, peer: &Peer) -> bool {
        if self.any || peer.port.is_none() {
            return true;
        }
        match peer.addr.parse::<IpAddr>() {
            Ok(ip) => self.nets.iter().any(|n| in_net(ip, *n)),
            Err(_) => false,
        }
    }

    /// The scheme the trusted proxy's headers say (`None` if they say
    /// nothing); `Err` when two of them disagree (gunicorn answers 400).
    pub fn scheme<V: AsRef<[u8]>>(
        &self,
        headers: &[(&[u8], V)],
        trusted: bool,
    ) -> Result<Option<&'static str>, ContradictoryScheme> {
        if !trusted || self.secure_headers.is_empty() {
            return Ok(None);
        }
        let mut found: Option<&'static str> = None;
        for (name, value) in headers {
            if let Some((_, https)) = self
                .secure_headers
                .iter()
                .find(|(h, _)| h.eq_ignore_ascii_case(name))
            {
                let scheme = if value.as_ref() == https.as_slice() {
                    "https"
                } else {
                    "http"
                };
                match found {
                    Some(prev) if prev != scheme => return Err(ContradictoryScheme),
                    _ => found = Some(scheme),
                }
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(addr: &str) -> Peer {
        Peer {
            addr: addr.into(),
            port: Some(1234),
            proxy: None,
        }
    }

    #[test]
    fn addresses_networks_star_and_unix() {
        let t = Trust::new(
            &["10.0.0.0/8".into(), "::1".into(), "192.168.1.7".into()],
            &[],
        );
        assert!(t.trusts(&peer("10.2.3.4")));
        assert!(t.trusts(&peer("::1")));
        assert!(t.trusts(&peer("192.168.1.7")));
        assert!(!t.trusts(&peer("192.168.1.8")));
        assert!(!t.trusts(&peer("127.0.0.1")));
        assert!(t.trusts(&Peer {
            addr: String::new(),
            port: None,
            proxy: None,
        }));
        assert!(Trust::new(&["*".into()], &[]).trusts(&peer("8.8.8.8")));
    }

    #[test]
    fn scheme_headers() {
        let t = Trust::default();
        let h: &[(&[u8], &[u8])] = &[(b"X-Forwarded-Proto", b"https")];
        assert_eq!(t.scheme(h, true), Ok(Some("https")));
        assert_eq!(t.scheme(h, false), Ok(None));
        let h: &[(&[u8], &[u8])] = &[(b"X-Forwarded-Proto", b"http")];
        assert_eq!(t.scheme(h, true), Ok(Some("http")));
        let h: &[(&[u8], &[u8])] = &[
            (b"X-Forwarded-Proto", b"https"),
            (b"X-Forwarded-Ssl", b"off"),
        ];
        assert_eq!(t.scheme(h, true), Err(ContradictoryScheme));
        let h: &[(&[u8], &[u8])] = &[(b"Host", b"x")];
        assert_eq!(t.scheme(h, true), Ok(None));
    }
}
