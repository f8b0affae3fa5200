//! Syslog output: each error-log and access-log record as one syslog message.
//!
//! Message bytes, as Python's `SysLogHandler` with gunicorn's formatter:
//! `<PRI>gunicorn.<prefix>.<error|access>: [PID] message\0`, where
//! PRI = facility * 8 + severity (debug 7, info 6, warning 4, error 3,
//! critical 2) and prefix is `--log-syslog-prefix`, else the process name
//! with `:` replaced by `.`.
//!
//! Addresses: `udp://HOST[:PORT]`, `tcp://HOST[:PORT]` (port 514, host
//! `localhost` by default), `unix://PATH[#dgram|#stream]` (datagram first,
//! then stream, when no type is given).
//!
//! gunicorn counterpart: `glogging.parse_syslog_address`,
//! `Logger._set_syslog_handler`, `SYSLOG_FACILITIES`.

use std::io::{self, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::sync::Mutex;

use super::Level;

#[derive(Debug, Clone, PartialEq)]
pub enum Address {
    Udp(String, u16),
    Tcp(String, u16),
    /// Path and socket type: `Some(true)` datagram, `Some(false)` stream, `None` try both.
    Unix(String, Option<bool>),
}

/// Parse `--log-syslog-to`.
pub fn parse_address(addr: &str) -> Result<Address, String> {
    if let Some(rest) = addr.strip_prefix("unix://") {
        let (path, kind) = match rest.split_once('#') {
            Some((p, "dgram")) => (p, Some(true)),
            Some((p, "stream")) => (p, Some(false)),
            Some((p, _)) => (p, None),
            None => (rest, None),
        };
        return Ok(Address::Unix(path.to_string(), kind));
    }
    let (rest, tcp) = if let Some(r) = addr.strip_prefix("udp://") {
        (r, false)
    } else if let Some(r) = addr.strip_prefix("tcp://") {
        (r, true)
    } else {
        return Err(format!("invalid syslog address: {addr:?}"));
    };
    let host = if rest.contains('[') && rest.contains(']') {
        rest.split(']')
            .next()
            .unwrap_or_default()
            .trim_start_matches('[')
            .to_lowercase()
    } else if let Some((h, _)) = rest.split_once(':') {
        h.to_lowercase()
    } else if rest.is_empty() {
        "localhost".to_string()
    } else {
        rest.to_lowercase()
    };
    let after = rest.rsplit(']').next().unwrap_or_default();
    let port = match after.split_once(':') {
        Some((_, p)) => p
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a valid port number."))?,
        None => 514,
    };
    Ok(if tcp {
        Address::Tcp(host, port)
    } else {
        Address::Udp(host, port)
    })
}

/// The facility code of `--log-syslog-facility`.
pub fn facility(name: &str) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_str() {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" | "security" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Debug => 7,
        Level::Info => 6,
        Level::Warning => 4,
        Level::Error => 3,
        Level::Critical => 2,
    }
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    UnixDgram(UnixDatagram),
    UnixStream(UnixStream),
}

pub struct Syslog {
    conn: Mutex<Conn>,
    facility: u8,
    prefix: String,
}

impl Syslog {
    /// Connect to the syslog address. `prefix` is the part after `gunicorn.`.
    pub fn connect(addr: &Address, facility: u8, prefix: &str) -> io::Result<Syslog> {
        let conn = match addr {
            Address::Udp(host, port) => Conn::Udp(crate::instrument::connect_udp(host, *port)?),
            Address::Tcp(host, port) => Conn::Tcp(TcpStream::connect((host.as_str(), *port))?),
            Address::Unix(path, Some(true)) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                Conn::UnixDgram(s)
            }
            Address::Unix(path, Some(false)) => Conn::UnixStream(UnixStream::connect(path)?),
            Address::Unix(path, None) => {
                let s = UnixDatagram::unbound()?;
                match s.connect(path) {
                    Ok(()) => Conn::UnixDgram(s),
                    Err(_) => Conn::UnixStream(UnixStream::connect(path)?),
                }
            }
        };
        Ok(Syslog {
            conn: Mutex::new(conn),
            facility,
            prefix: prefix.to_string(),
        })
    }

    /// Send one record; `kind` is `error` or `access`.
    pub fn send(&self, level: Level, kind: &str, msg: &str) {
        let pri = u32::from(self.facility) * 8 + u32::from(severity(level));
        let line = format!(
            "<{pri}>gunicorn.{}.{kind}: [{}] {msg}\0",
            self.prefix,
            std::process::id()
        );
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failed syslog write; the file/stream sinks still have the line.
        let _ = match &mut *conn {
            Conn::Udp(s) => s.send(line.as_bytes()).map(drop),
            Conn::Tcp(s) => s.write_all(line.as_bytes()),
            Conn::UnixDgram(s) => s.send(line.as_bytes()).map(drop),
            Conn::UnixStream(s) => s.write_all(line.as_bytes()),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("udp://localhost:514"),
            Ok(Address::Udp("localhost".into(), 514))
        );
        assert_eq!(
            parse_address("udp://"),
            Ok(Address::Udp("localhost".into(), 514))
        );
        assert_eq!(
            parse_address("tcp://LogHost"),
            Ok(Address::Tcp("loghost".into(), 514))
        );
        assert_eq!(
            parse_address("udp://[::1]:5140"),
            Ok(Address::Udp("::1".into(), 5140))
        );
        assert_eq!(
            parse_address("unix:///dev/log"),
            Ok(Address::Unix("/dev/log".into(), None))
        );
        assert_eq!(
            parse_address("unix:///dev/log#dgram"),
            Ok(Address::Unix("/dev/log".into(), Some(true)))
        );
        assert!(parse_address("udp://h:x").is_err());
        assert!(parse_address("http://h").is_err());
    }

    #[test]
    fn facilities() {
        assert_eq!(facility("user"), Some(1));
        assert_eq!(facility("LOCAL7"), Some(23));
        assert_eq!(facility("nope"), None);
    }

    #[test]
    fn message_over_udp() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        let s = Syslog::connect(&Address::Udp("127.0.0.1".into(), port), 16, "app.x").unwrap();
        s.send(Level::Warning, "error", "careful");
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!(
                "<132>gunicorn.app.x.error: [{}] careful\0",
                std::process::id()
            )
        );
    }
}
