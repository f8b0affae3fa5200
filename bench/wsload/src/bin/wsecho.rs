//! A WebSocket echo server on ferricorn-http's sans-IO codec (`ws`) alone:
//! std sockets, a thread per connection, no Python. It checks the codec
//! against Autobahn (`bench/autobahn.py --codec`) before any worker serves
//! WebSockets, and is the floor a worker's per-message cost can be held to.
//!
//!     wsecho 127.0.0.1:9001 [MAX_MESSAGE_SIZE]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use ferricorn_http::ws::{self, Decoder, Message};

fn header_lookup(head: &[u8]) -> impl Fn(&[u8]) -> Option<Vec<u8>> + '_ {
    move |name: &[u8]| {
        let mut out: Option<Vec<u8>> = None;
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if line[..colon].eq_ignore_ascii_case(name) {
                let value = line[colon + 1..].trim_ascii();
                match &mut out {
                    Some(v) => {
                        v.extend_from_slice(b", ");
                        v.extend_from_slice(value);
                    }
                    None => out = Some(value.to_vec()),
                }
            }
        }
        out
    }
}

fn serve(mut s: TcpStream, max: usize) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head: Vec<u8> = buf.drain(..end).collect();
    let request_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let http11 = parts.nth(1) == Some(b"HTTP/1.1");
    let hs = match ws::handshake(method, http11, header_lookup(&head)) {
        Ok(hs) => hs,
        Err(e) => {
            let mut out = format!(
                "HTTP/1.1 {} Refused\r\nContent-Length: 0\r\nConnection: close\r\n",
                e.status
            )
            .into_bytes();
            for (n, v) in &e.extra_headers {
                out.extend_from_slice(n);
                out.extend_from_slice(b": ");
                out.extend_from_slice(v);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            return s.write_all(&out);
        }
    };
    let mut out = Vec::new();
    ws::accept_response(&mut out, &hs, None, &[]);
    s.write_all(&out)?;
    let mut dec = Decoder::new(max);
    loop {
        out.clear();
        let mut pos = 0;
        let mut done = false;
        loop {
            match dec.decode_at(&buf, &mut pos) {
                Ok(Some(Message::Ping(p))) => ws::encode(&mut out, &Message::Pong(p)),
                Ok(Some(Message::Pong(_))) => {}
                Ok(Some(Message::Close { code, .. })) => {
                    match code {
                        Some(c) => ws::encode_close(&mut out, c, ""),
                        None => ws::encode(
                            &mut out,
                            &Message::Close {
                                code: None,
                                reason: String::new(),
                            },
                        ),
                    }
                    done = true;
                    break;
                }
                Ok(Some(m)) => ws::encode(&mut out, &m),
                Ok(None) => break,
                Err(e) => {
                    ws::encode_close(&mut out, e.code, e.reason);
                    done = true;
                    break;
                }
            }
        }
        buf.drain(..pos);
        if !out.is_empty() {
            s.write_all(&out)?;
        }
        if done {
            let _ = s.shutdown(Shutdown::Write);
            // Let the client's close frame / FIN arrive before dropping, so the
            // close is clean (no RST for unread bytes).
            s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
            while matches!(s.read(&mut chunk), Ok(n) if n > 0) {}
            return Ok(());
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9001".into());
    let max = args
        .next()
        .map_or(16 << 20, |m| m.parse().expect("MAX_MESSAGE_SIZE"));
    let listener = TcpListener::bind(&addr).expect("bind");
    println!(
        "Listening at: ws://{}/",
        listener.local_addr().expect("addr")
    );
    for conn in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(conn, max);
        });
    }
}
