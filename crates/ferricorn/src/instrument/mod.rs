//! StatsD instrumentation: metrics sent as UDP (or unix datagram) packets,
//! never blocking the caller.
//!
//! Metric names and types are gunicorn's:
//! - per request: `gunicorn.request.duration` (timer, ms, float),
//!   `gunicorn.requests` (counter), `gunicorn.request.status.<code>` (counter);
//! - per error-log record: `gunicorn.log.critical|error|warning|exception` (counters);
//! - from the master: `gunicorn.workers` (gauge), `gunicorn.backlog` (histogram).
//!
//! Packet forms: `<prefix><name>:<v>|c|@1.0`, `|g`, `|ms`, `|h`, then
//! `|#<dogstatsd tags>` when tags are configured.
//!
//! Invariant: the socket is non-blocking; a full buffer or an absent
//! collector drops the packet, it never delays a request.
//!
//! gunicorn counterpart: `gunicorn/instrument/statsd.py` (`Statsd`).

use std::io;
use std::net::{ToSocketAddrs, UdpSocket};
use std::os::unix::net::UnixDatagram;

/// Where metrics go: `host:port` (UDP) or `unix:PATH` (unix datagram).
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Udp(String, u16),
    Unix(String),
}

/// Parse `--statsd-host` as gunicorn does (default port 8125).
pub fn parse_target(raw: &str) -> Result<Target, String> {
    let raw = raw.trim();
    let bad = || "Value must be one of ('host:port', 'unix://PATH')".to_string();
    if let Some(port) = raw.strip_prefix("unix:") {
        // gunicorn keeps the pre-20 reading of `unix:PORT` as host "unix".
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Target::Udp("unix".into(), port.parse().map_err(|_| bad())?));
        }
        let path = raw.strip_prefix("unix://").unwrap_or(&raw["unix:".len()..]);
        if path.is_empty() {
            return Err(bad());
        }
        return Ok(Target::Unix(path.to_string()));
    }
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        (host, after.strip_prefix(':').unwrap_or(""))
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => (raw, ""),
        }
    };
    let port = if port.is_empty() {
        8125
    } else {
        port.parse::<u16>().map_err(|_| bad())?
    };
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    Ok(Target::Udp(host.to_lowercase(), port))
}

/// gunicorn's prefix rule: a prefix of two or more characters ends in exactly one dot.
pub fn normalize_prefix(prefix: &str) -> String {
    let stem = prefix.trim_end_matches('.');
    if stem.chars().count() >= 2 {
        format!("{stem}.")
    } else {
        prefix.to_string()
    }
}

enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

pub struct Statsd {
    sock: Option<Socket>,
    prefix: String,
    tags: String,
}

impl Statsd {
    /// Connect (datagram sockets: only fixes the peer). A collector that cannot
    /// be resolved leaves metrics off, as gunicorn does.
    pub fn new(target: &Target, prefix: &str, tags: &str) -> Statsd {
        let sock = match target {
            Target::Udp(host, port) => connect_udp(host, *port).ok().map(Socket::Udp),
            Target::Unix(path) => UnixDatagram::unbound()
                .and_then(|s| {
                    s.connect(path)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })
                .ok()
                .map(Socket::Unix),
        };
        Statsd {
            sock,
            prefix: normalize_prefix(prefix),
            tags: tags.to_string(),
        }
    }

    pub fn increment(&self, name: &str, value: u64) {
        self.send(name, &value.to_string(), "c|@1.0");
    }
    pub fn gauge(&self, name: &str, value: i64) {
        self.send(name, &value.to_string(), "g");
    }
    pub fn histogram(&self, name: &str, value: i64) {
        self.send(name, &value.to_string(), "h");
    }
    /// A timer in milliseconds, written as Python writes a float (`12.5`, `3.0`).
    pub fn timer_ms(&self, name: &str, ms: f64) {
        self.send(name, &python_float(ms), "ms");
    }

    /// The three per-request metrics.
    pub fn request(&self, status: u16, duration: std::time::Duration) {
        let ms = duration.as_secs() as f64 * 1000.0 + f64::from(duration.subsec_micros()) / 1000.0;
        self.timer_ms("gunicorn.request.duration", ms);
        self.increment("gunicorn.requests", 1);
        self.increment(&format!("gunicorn.request.status.{status}"), 1);
    }

    fn send(&self, name: &str, value: &str, kind: &str) {
        let Some(sock) = &self.sock else { return };
        let mut msg = format!("{}{name}:{value}|{kind}", self.prefix);
        if !self.tags.is_empty() {
            msg.push_str("|#");
            msg.push_str(&self.tags);
        }
        // A lost metric is preferable to a stalled request.
        let _ = match sock {
            Socket::Udp(s) => s.send(msg.as_bytes()),
            Socket::Unix(s) => s.send(msg.as_bytes()),
        };
    }
}

/// A non-blocking UDP socket connected to `host:port` (also used by syslog).
pub fn connect_udp(host: &str, port: u16) -> io::Result<UdpSocket> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))?;
    let local: std::net::SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(local)?;
    s.connect(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Python's `str(float)` for the values durations take (no exponent range).
pub fn python_float(v: f64) -> String {
    let s = format!("{v}");
    if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("localhost:9125"),
            Ok(Target::Udp("localhost".into(), 9125))
        );
        assert_eq!(
            parse_target("statsd"),
            Ok(Target::Udp("statsd".into(), 8125))
        );
        assert_eq!(parse_target("[::1]:1"), Ok(Target::Udp("::1".into(), 1)));
        assert_eq!(
            parse_target("unix:///tmp/s.sock"),
            Ok(Target::Unix("/tmp/s.sock".into()))
        );
        assert_eq!(
            parse_target("unix:/tmp/s.sock"),
            Ok(Target::Unix("/tmp/s.sock".into()))
        );
        assert_eq!(
            parse_target("unix:8125"),
            Ok(Target::Udp("unix".into(), 8125))
        );
        assert!(parse_target("host:port").is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("app"), "app.");
        assert_eq!(normalize_prefix("app..."), "app.");
        assert_eq!(normalize_prefix("a"), "a");
        assert_eq!(normalize_prefix("my.app"), "my.app.");
    }

    #[test]
    fn floats_like_python() {
        assert_eq!(python_float(3.0), "3.0");
        assert_eq!(python_float(0.532), "0.532");
        assert_eq!(python_float(1234.567), "1234.567");
        assert_eq!(python_float(0.0), "0.0");
    }

    #[test]
    fn packets_on_a_local_listener() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let s = Statsd::new(&Target::Udp("127.0.0.1".into(), port), "web", "env:prod");
        s.request(404, Duration::from_micros(1_500));
        s.gauge("gunicorn.workers", 3);
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..4 {
            let n = rx.recv(&mut buf).unwrap();
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        assert_eq!(
            got,
            [
                "web.gunicorn.request.duration:1.5|ms|#env:prod",
                "web.gunicorn.requests:1|c|@1.0|#env:prod",
                "web.gunicorn.request.status.404:1|c|@1.0|#env:prod",
                "web.gunicorn.workers:3|g|#env:prod",
            ]
        );
    }
}
