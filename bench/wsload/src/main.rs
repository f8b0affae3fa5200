//! A WebSocket echo load client, the `wrk` of bench/run.py's `ws` app.
//!
//! Opens `-c` connections to `--url`, upgrades each, then keeps `--window`
//! messages of `--size` bytes in flight per connection: every echoed
//! message is counted and answered with the next one. One thread, one mio
//! poller; pin it to its own core with taskset. After `--warmup` seconds
//! it counts for `--duration` seconds and prints one line
//! `BENCH_JSON {...}` with the keys of bench/apps/report.lua (`requests` are
//! messages echoed), so run.py reads it like a wrk summary.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

struct Opts {
    host: String,
    addr: SocketAddr,
    path: String,
    connections: usize,
    duration: f64,
    warmup: f64,
    size: usize,
    binary: bool,
    window: usize,
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "wsload: {msg}\nusage: wsload --url ws://HOST:PORT/PATH [-c CONNECTIONS=64] [-d SECONDS=10] \
         [--warmup SECONDS=1] [--size BYTES=64] [--binary] [--window N=1]"
    );
    std::process::exit(2)
}

fn parse_opts() -> Opts {
    let mut url = None;
    let (mut connections, mut duration, mut warmup, mut size, mut binary, mut window) =
        (64, 10.0, 1.0, 64, false, 1);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        match a.as_str() {
            "--url" => url = Some(val()),
            "-c" | "--connections" => {
                connections = val().parse().unwrap_or_else(|_| usage("bad -c"))
            }
            "-d" | "--duration" => duration = val().parse().unwrap_or_else(|_| usage("bad -d")),
            "--warmup" => warmup = val().parse().unwrap_or_else(|_| usage("bad --warmup")),
            "--size" => size = val().parse().unwrap_or_else(|_| usage("bad --size")),
            "--window" => window = val().parse().unwrap_or_else(|_| usage("bad --window")),
            "--binary" => binary = true,
            _ => usage(&format!("unknown argument {a}")),
        }
    }
    let url = url.unwrap_or_else(|| usage("--url is required"));
    let rest = url
        .strip_prefix("ws://")
        .unwrap_or_else(|| usage("only ws:// URLs"));
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| usage(&format!("cannot resolve {hostport}")));
    if connections == 0 || window == 0 {
        usage("-c and --window must be at least 1");
    }
    Opts {
        host: hostport.to_string(),
        addr,
        path: path.to_string(),
        connections,
        duration,
        warmup,
        size,
        binary,
        window,
    }
}

/// One masked client frame carrying `size` bytes of `a`.
fn client_frame(size: usize, binary: bool) -> Vec<u8> {
    const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x88];
    let mut f = vec![0x80 | if binary { 0x2 } else { 0x1 }];
    if size < 126 {
        f.push(0x80 | size as u8);
    } else if size <= 0xFFFF {
        f.push(0x80 | 126);
        f.extend_from_slice(&(size as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(size as u64).to_be_bytes());
    }
    f.extend_from_slice(&MASK);
    f.extend((0..size).map(|i| b'a' ^ MASK[i % 4]));
    f
}

#[derive(PartialEq)]
enum State {
    Upgrading,
    Open,
    Dead,
}

struct Conn {
    stream: TcpStream,
    state: State,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    sent: VecDeque<Instant>,
}

#[derive(Default)]
struct Counts {
    messages: u64,
    bytes: u64,
    latencies_us: Vec<u32>,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
}

impl Conn {
    /// Write what is queued; false if the connection failed.
    fn flush(&mut self, counts: &mut Counts) -> bool {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => {
                    counts.write += 1;
                    return false;
                }
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::NotConnected => return true,
                Err(_) => {
                    counts.write += 1;
                    return false;
                }
            }
        }
        true
    }

    /// Read what is there; false on EOF or error.
    fn fill(&mut self, counts: &mut Counts) -> bool {
        let mut chunk = [0u8; 65536];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    counts.read += 1;
                    return false;
                }
                Ok(n) => {
                    counts.bytes += n as u64;
                    self.inbuf.extend_from_slice(&chunk[..n]);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    counts.read += 1;
                    return false;
                }
            }
        }
    }
}

/// A complete server frame at the front of `b`: (fin, opcode, header length,
/// payload length).
fn server_frame(b: &[u8]) -> Option<(bool, u8, usize, usize)> {
    if b.len() < 2 {
        return None;
    }
    let (len, at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
        127 if b.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(n) as usize, 10)
        }
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    let at = if b[1] & 0x80 != 0 { at + 4 } else { at };
    (b.len() >= at + len).then_some((b[0] & 0x80 != 0, b[0] & 0x0f, at, len))
}

fn main() {
    let o = parse_opts();
    let frame = client_frame(o.size, o.binary);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        o.path, o.host
    );
    let mut poll = Poll::new().expect("poll");
    let mut counts = Counts::default();
    let mut conns: Vec<Conn> = Vec::with_capacity(o.connections);
    for i in 0..o.connections {
        match TcpStream::connect(o.addr) {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                poll.registry()
                    .register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    )
                    .expect("register");
                conns.push(Conn {
                    stream,
                    state: State::Upgrading,
                    inbuf: Vec::new(),
                    out: request.clone().into_bytes(),
                    sent: VecDeque::new(),
                });
            }
            Err(_) => counts.connect += 1,
        }
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(o.warmup);
    let end = measure_from + Duration::from_secs_f64(o.duration);
    let mut measuring = o.warmup <= 0.0;
    let mut base = Counts::default();
    let mut events = Events::with_capacity(1024);
    let mut live = conns.len();
    while live > 0 {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if !measuring && now >= measure_from {
            measuring = true;
            base.messages = counts.messages;
            base.bytes = counts.bytes;
        }
        let wait = (if measuring { end } else { measure_from }) - now;
        if let Err(e) = poll.poll(&mut events, Some(wait.min(Duration::from_millis(100)))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.state == State::Dead {
                continue;
            }
            let mut ok = c.flush(&mut counts);
            if ok && ev.is_readable() {
                ok = c.fill(&mut counts);
            }
            if c.state == State::Upgrading
                && let Some(i) = c.inbuf.windows(4).position(|w| w == b"\r\n\r\n")
            {
                if !c.inbuf.starts_with(b"HTTP/1.1 101") {
                    counts.status += 1;
                    ok = false;
                } else {
                    c.inbuf.drain(..i + 4);
                    c.state = State::Open;
                    for _ in 0..o.window {
                        c.out.extend_from_slice(&frame);
                        c.sent.push_back(Instant::now());
                    }
                }
            }
            if c.state == State::Open {
                let mut used = 0;
                let now = Instant::now();
                while let Some((fin, op, at, len)) = server_frame(&c.inbuf[used..]) {
                    used += at + len;
                    match op {
                        0x1 | 0x2 if fin => {
                            if len != o.size {
                                counts.status += 1;
                            }
                            counts.messages += 1;
                            if let Some(t) = c.sent.pop_front()
                                && measuring
                            {
                                let us = now.duration_since(t).as_micros();
                                counts.latencies_us.push(us.min(u32::MAX as u128) as u32);
                            }
                            c.out.extend_from_slice(&frame);
                            c.sent.push_back(now);
                        }
                        0x9 => {
                            // Pong with the same payload (masked with zeros).
                            let payload = c.inbuf[used - len..used].to_vec();
                            c.out
                                .extend_from_slice(&[0x8a, 0x80 | len as u8, 0, 0, 0, 0]);
                            c.out.extend_from_slice(&payload);
                        }
                        0xA => {}
                        _ => {
                            // A close or something unexpected: this connection is done.
                            counts.status += 1;
                            ok = false;
                            break;
                        }
                    }
                }
                c.inbuf.drain(..used);
                if ok {
                    ok = c.flush(&mut counts);
                }
            }
            if !ok {
                c.state = State::Dead;
                let _ = poll.registry().deregister(&mut c.stream);
                live -= 1;
            }
        }
    }
    let elapsed = if measuring {
        Instant::now()
            .min(end)
            .saturating_duration_since(measure_from)
    } else {
        Duration::ZERO
    };
    // Say goodbye politely: a close frame (masked, code 1000), then drop.
    for c in conns.iter_mut().filter(|c| c.state == State::Open) {
        let _ = c.stream.write(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    }
    let mut lat = std::mem::take(&mut counts.latencies_us);
    lat.sort_unstable();
    let pct = |p: f64| -> u32 {
        if lat.is_empty() {
            0
        } else {
            lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)]
        }
    };
    let mean = if lat.is_empty() {
        0.0
    } else {
        lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64
    };
    println!(
        "BENCH_JSON {{\"duration_us\":{},\"requests\":{},\"bytes\":{},\"connect\":{},\"read\":{},\
         \"write\":{},\"status\":{},\"timeout\":0,\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\
         \"max_us\":{},\"mean_us\":{:.1},\"connections\":{},\"open_at_end\":{}}}",
        elapsed.as_micros(),
        counts.messages - base.messages,
        counts.bytes - base.bytes,
        counts.connect,
        counts.read,
        counts.write,
        counts.status,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lat.last().copied().unwrap_or(0),
        mean,
        o.connections,
        live
    );
}
