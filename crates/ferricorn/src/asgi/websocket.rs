//! One WebSocket connection's ASGI protocol (scope type `websocket`, spec
//! 2.3+ with the `websocket.http.response` denial extension) over the
//! sans-IO codec `ferricorn_http::ws`. No I/O: the driver appends what the
//! client sent to [`WsExchange::inbuf`] and writes [`WsExchange::send`]'s
//! bytes.
//!
//! - `receive`: `websocket.connect` first, then a message per complete
//!   data message (a ping is answered with a pong on the way), then
//!   `websocket.disconnect` with the client's close code (1006 when the
//!   connection dropped, the protocol error's code when the client broke
//!   the protocol: 1002, 1007, 1009 over `websocket_max_message_size`).
//! - `send`: `websocket.accept` (the 101 with a subprotocol and headers),
//!   `websocket.send` (text or bytes), `websocket.close` (a close frame, or
//!   before the accept a 403), `websocket.http.response.start`/`.body`
//!   (an HTTP response instead of the accept).
//! - permessage-deflate (RFC 7692, `websocket_per_message_deflate`, on by
//!   default as in uvicorn) is agreed at the accept when the client offers
//!   it: messages are inflated before the app sees them and the app's are
//!   compressed on the way out; the app sees plain text and bytes.
//! - What the client sends is decoded only as the app receives: at most
//!   one message (bounded by `websocket_max_message_size`) plus one read
//!   is held.
//! - Keepalive (`websocket_ping_interval`, off by default): once accepted,
//!   the server pings every interval while no ping is outstanding; any pong
//!   the client sends answers it (RFC 6455 5.5.3 allows unsolicited ones, so
//!   no payload is matched). No pong within `websocket_ping_timeout`: close
//!   1011 "keepalive ping timeout" (what uvicorn's `websockets` sends) and
//!   the driver drops the connection without waiting for the client's
//!   close; the app receives `websocket.disconnect` with 1011. While a ping
//!   is outstanding and the app is not receiving, the client's frames are
//!   decoded ahead to find the pong, up to the first data message (kept
//!   for the next `receive`): then at most two messages plus one read are
//!   held. The driver's deadline sweep calls [`WsExchange::keepalive`].
//!
//! gunicorn counterpart: `asgi/websocket.py` (`WebSocketProtocol`).

use ferricorn_http::response::{BodyEncoder, encode_head};
use ferricorn_http::ws::{self, Handshake, Message};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use std::time::{Duration, Instant};

use super::{Strings, fill_common, get};
use crate::request::Request;

/// Where the WebSocket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Handshake not answered yet.
    Connecting,
    /// A denial (HTTP response) is under way.
    Denying,
    /// Accepted.
    Open,
    /// The server sent its close frame.
    Closing,
    /// Over: the client's close came, or the connection dropped, or the
    /// denial was sent.
    Closed,
}

/// What a `receive` found.
pub enum Received {
    Message(Py<PyAny>),
    /// Read from the client, then try again.
    NeedRead,
}

pub struct WsExchange {
    hs: Handshake,
    pub phase: Phase,
    decoder: ws::Decoder,
    /// Whether permessage-deflate may be agreed at the accept.
    deflate_allowed: bool,
    /// The compressor for the app's messages, once agreed.
    deflater: Option<ws::Deflater>,
    /// Bytes from the client not decoded yet.
    pub inbuf: Vec<u8>,
    connect_delivered: bool,
    /// The disconnect's code once known (client close, drop, error).
    disconnect: Option<(u16, String)>,
    pub receiver: Option<Py<PyAny>>,
    pub writer: Option<Py<PyAny>>,
    /// The client's end of the connection came (EOF or error).
    pub eof: bool,
    denial: Option<BodyEncoder>,
    /// The server must close the TCP connection once its output is sent.
    pub finished: bool,
    /// `websocket_ping_interval`/`_timeout`, when the server pings.
    pub pings: Option<PingPolicy>,
    /// The ping timer, from the accept on.
    keepalive: Option<Keepalive>,
    /// What decoding ahead for a pong found first (for the next receive).
    pending: Option<Result<Message, ws::ProtocolError>>,
}

/// The close reason sent when a ping is not answered in time.
pub const PING_TIMEOUT_REASON: &str = "keepalive ping timeout";

/// How the server pings an open WebSocket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingPolicy {
    pub interval: Duration,
    /// None: ping, but never close for a missing pong.
    pub timeout: Option<Duration>,
}

impl PingPolicy {
    /// From the settings' seconds (None or 0: no pings / no timeout).
    pub fn from_secs(interval: f64, timeout: f64) -> Option<Self> {
        let secs = |s: f64| (s > 0.0 && s.is_finite()).then(|| Duration::from_secs_f64(s));
        Some(PingPolicy {
            interval: secs(interval)?,
            timeout: secs(timeout),
        })
    }
}

/// What the ping timer wants now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    Idle,
    /// Send a ping with this payload.
    Ping(u32),
    /// The outstanding ping was not answered in time.
    TimedOut,
}

/// The ping timer of one WebSocket: pure, driven by the caller's clock.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    policy: PingPolicy,
    next_ping: Instant,
    /// The pong of the ping in flight is due by then.
    pong_by: Option<Instant>,
    sent: u32,
}

impl Keepalive {
    pub fn new(policy: PingPolicy, now: Instant) -> Self {
        Keepalive {
            policy,
            next_ping: now + policy.interval,
            pong_by: None,
            sent: 0,
        }
    }

    /// At `now`: a ping to send, the timeout, or nothing.
    pub fn poll(&mut self, now: Instant) -> Beat {
        if let Some(by) = self.pong_by {
            return if now >= by {
                Beat::TimedOut
            } else {
                Beat::Idle
            };
        }
        if now < self.next_ping {
            return Beat::Idle;
        }
        self.sent = self.sent.wrapping_add(1);
        self.next_ping = now + self.policy.interval;
        self.pong_by = self.policy.timeout.map(|t| now + t);
        Beat::Ping(self.sent)
    }

    /// A pong came: the ping in flight is answered.
    pub fn pong(&mut self) {
        self.pong_by = None;
    }

    /// A ping waits for its pong.
    pub fn waiting(&self) -> bool {
        self.pong_by.is_some()
    }
}

/// The WebSocket scope of `req`.
pub fn scope<'py>(
    py: Python<'py>,
    req: &Request<'_>,
    hs: &Handshake,
    strings: &mut Strings,
    server: usize,
    state: Option<&Py<PyDict>>,
) -> PyResult<Bound<'py, PyDict>> {
    let scope = strings.template(py, true, server, state.is_some())?;
    fill_common(py, &scope, req, strings, state)?;
    if req.scheme == "https" {
        scope.set_item(intern!(py, "scheme"), intern!(py, "wss"))?;
    }
    scope.set_item(
        intern!(py, "subprotocols"),
        PyList::new(py, &hs.subprotocols)?,
    )?;
    let extensions = PyDict::new(py);
    extensions.set_item("websocket.http.response", PyDict::new(py))?;
    scope.set_item(intern!(py, "extensions"), extensions)?;
    Ok(scope)
}

fn message<'py>(py: Python<'py>, kind: &Bound<'py, PyString>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item(intern!(py, "type"), kind)?;
    Ok(d)
}

fn disconnect_message(py: Python<'_>, code: u16, reason: &str) -> PyResult<Py<PyAny>> {
    let d = message(py, intern!(py, "websocket.disconnect"))?;
    d.set_item(intern!(py, "code"), code)?;
    d.set_item(intern!(py, "reason"), reason)?;
    Ok(d.into_any().unbind())
}

impl WsExchange {
    /// `inbuf`: what came after the upgrade request's head; `deflate`:
    /// whether permessage-deflate may be agreed.
    pub fn new(hs: Handshake, max_message_size: usize, deflate: bool, inbuf: Vec<u8>) -> Self {
        WsExchange {
            hs,
            phase: Phase::Connecting,
            decoder: ws::Decoder::new(max_message_size),
            deflate_allowed: deflate,
            deflater: None,
            inbuf,
            connect_delivered: false,
            disconnect: None,
            receiver: None,
            writer: None,
            eof: false,
            denial: None,
            finished: false,
            pings: None,
            keepalive: None,
            pending: None,
        }
    }

    /// The deadline sweep's call (only with pings on): send a ping when
    /// one is due (appended to `out`); true when the client did not answer
    /// in time: the close frame is in `out`, the app told (1011), and the
    /// driver must drop the connection once `out` is sent.
    pub fn keepalive(&mut self, py: Python<'_>, now: Instant, out: &mut Vec<u8>) -> bool {
        if self.phase != Phase::Open || self.eof {
            return false;
        }
        let Some(k) = self.keepalive.as_mut() else {
            return false;
        };
        match k.poll(now) {
            Beat::Idle => false,
            Beat::Ping(n) => {
                ws::encode_frame(out, ws::Opcode::Ping, &n.to_be_bytes());
                false
            }
            Beat::TimedOut => {
                ws::encode_close(out, 1011, PING_TIMEOUT_REASON);
                self.phase = Phase::Closed;
                self.finished = true;
                self.disconnect = Some((1011, PING_TIMEOUT_REASON.to_string()));
                if let Some(f) = self.receiver.take() {
                    if let Ok(m) = disconnect_message(py, 1011, PING_TIMEOUT_REASON) {
                        super::resolve(py, &f, m);
                    }
                }
                if let Some(f) = self.writer.take() {
                    super::fail(py, &f, PyOSError::new_err("client disconnected"));
                }
                true
            }
        }
    }

    /// Bytes came while no receive waits: if a ping is outstanding, decode
    /// ahead for its pong (pings answered into `out`), stopping at the
    /// first other message, kept for the next receive.
    pub fn look_for_pong(&mut self, out: &mut Vec<u8>) {
        if !self.keepalive.as_ref().is_some_and(Keepalive::waiting)
            || self.pending.is_some()
            || self.phase != Phase::Open
        {
            return;
        }
        loop {
            let mut pos = 0;
            let got = self.decoder.decode_at(&self.inbuf, &mut pos);
            self.inbuf.drain(..pos);
            match got {
                Ok(None) => return,
                Ok(Some(Message::Ping(p))) => ws::encode(out, &Message::Pong(p)),
                Ok(Some(Message::Pong(_))) => {
                    self.pong();
                    return;
                }
                Ok(Some(m)) => return self.pending = Some(Ok(m)),
                Err(e) => return self.pending = Some(Err(e)),
            }
        }
    }

    /// What the client sent is not all received by the app yet.
    pub fn holds_input(&self) -> bool {
        !self.inbuf.is_empty() || self.pending.is_some()
    }

    fn pong(&mut self) {
        if let Some(k) = self.keepalive.as_mut() {
            k.pong();
        }
    }

    /// Whether a receive could use more bytes from the client now.
    pub fn wants_bytes(&self) -> bool {
        self.disconnect.is_none() && !self.eof && matches!(self.phase, Phase::Open | Phase::Closing)
    }

    /// The connection dropped (or the server stops waiting): 1006.
    pub fn dropped(&mut self, py: Python<'_>) {
        self.eof = true;
        if self.disconnect.is_none() {
            self.disconnect = Some((1006, String::new()));
        }
        if let Some(f) = self.receiver.take() {
            if let Ok(m) = disconnect_message(py, 1006, "") {
                super::resolve(py, &f, m);
            }
        }
        if let Some(f) = self.writer.take() {
            super::fail(py, &f, PyOSError::new_err("client disconnected"));
        }
    }

    /// `receive()`: the next message if there is one now (pongs and close
    /// replies appended to `out`).
    pub fn receive(&mut self, py: Python<'_>, out: &mut Vec<u8>) -> PyResult<Received> {
        if !self.connect_delivered {
            self.connect_delivered = true;
            return Ok(Received::Message(
                message(py, intern!(py, "websocket.connect"))?
                    .into_any()
                    .unbind(),
            ));
        }
        if let Some((code, reason)) = &self.disconnect {
            return disconnect_message(py, *code, reason).map(Received::Message);
        }
        if matches!(self.phase, Phase::Connecting | Phase::Denying) {
            // Nothing comes before the accept: wait for the client to go.
            if self.eof {
                self.disconnect = Some((1006, String::new()));
                return disconnect_message(py, 1006, "").map(Received::Message);
            }
            return Ok(Received::NeedRead);
        }
        loop {
            let got = match self.pending.take() {
                Some(kept) => kept.map(Some),
                None => {
                    let mut pos = 0;
                    let got = self.decoder.decode_at(&self.inbuf, &mut pos);
                    self.inbuf.drain(..pos);
                    got
                }
            };
            match got {
                Ok(Some(Message::Text(s))) => {
                    let d = message(py, intern!(py, "websocket.receive"))?;
                    d.set_item(intern!(py, "text"), s)?;
                    return Ok(Received::Message(d.into_any().unbind()));
                }
                Ok(Some(Message::Binary(b))) => {
                    let d = message(py, intern!(py, "websocket.receive"))?;
                    d.set_item(intern!(py, "bytes"), PyBytes::new(py, &b))?;
                    return Ok(Received::Message(d.into_any().unbind()));
                }
                Ok(Some(Message::Ping(p))) => {
                    if self.phase == Phase::Open {
                        ws::encode(out, &Message::Pong(p));
                    }
                }
                Ok(Some(Message::Pong(_))) => self.pong(),
                Ok(Some(Message::Close { code, reason })) => {
                    if self.phase == Phase::Open {
                        // Echo the code (RFC 6455 5.5.1).
                        match code {
                            Some(c) => ws::encode_close(out, c, ""),
                            None => ws::encode(
                                out,
                                &Message::Close {
                                    code: None,
                                    reason: String::new(),
                                },
                            ),
                        }
                    }
                    self.phase = Phase::Closed;
                    self.finished = true;
                    let code = code.unwrap_or(1005);
                    self.disconnect = Some((code, reason.clone()));
                    return disconnect_message(py, code, &reason).map(Received::Message);
                }
                Ok(None) if self.eof => {
                    self.disconnect = Some((1006, String::new()));
                    self.finished = true;
                    return disconnect_message(py, 1006, "").map(Received::Message);
                }
                Ok(None) => return Ok(Received::NeedRead),
                Err(e) => {
                    if self.phase == Phase::Open {
                        ws::encode_close(out, e.code, e.reason);
                    }
                    self.phase = Phase::Closed;
                    self.finished = true;
                    self.disconnect = Some((e.code, e.reason.to_string()));
                    return disconnect_message(py, e.code, e.reason).map(Received::Message);
                }
            }
        }
    }

    /// `send(message)`, appended to `out`.
    pub fn send(
        &mut self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        out: &mut Vec<u8>,
    ) -> PyResult<()> {
        let kind = get(msg, intern!(py, "type"))?
            .ok_or_else(|| PyValueError::new_err("ASGI message without a 'type'"))?
            .cast_into::<PyString>()?;
        let kind = kind.to_str()?;
        if self.eof || self.disconnect.is_some() && self.phase != Phase::Closing {
            if kind == "websocket.close" {
                return Ok(());
            }
            return Err(PyOSError::new_err("client disconnected"));
        }
        match (kind, self.phase) {
            ("websocket.accept", Phase::Connecting) => {
                let subprotocol = match get(msg, intern!(py, "subprotocol"))? {
                    Some(s) if !s.is_none() => Some(s.extract::<String>()?),
                    _ => None,
                };
                let headers = headers_of(msg)?;
                let extra: Vec<(&[u8], &[u8])> =
                    headers.iter().map(|(k, v)| (&**k, &**v)).collect();
                ws::check_extra_headers(&extra).map_err(PyValueError::new_err)?;
                if self.deflate_allowed {
                    self.hs.deflate = ws::deflate::negotiate(&self.hs.extensions);
                }
                if let Some(pmd) = &self.hs.deflate {
                    self.decoder.enable_deflate(pmd);
                    self.deflater = Some(ws::Deflater::new(pmd));
                }
                ws::accept_response(
                    out,
                    &self.hs,
                    subprotocol.as_deref().map(str::as_bytes),
                    &extra,
                );
                self.phase = Phase::Open;
                self.keepalive = self.pings.map(|p| Keepalive::new(p, Instant::now()));
                Ok(())
            }
            ("websocket.send", Phase::Open) => {
                let bytes = get(msg, intern!(py, "bytes"))?.filter(|b| !b.is_none());
                let text = get(msg, intern!(py, "text"))?.filter(|t| !t.is_none());
                match (bytes, text) {
                    (Some(b), None) => {
                        let b: PyBackedBytes = b.extract().map_err(Into::<PyErr>::into)?;
                        self.data(out, ws::Opcode::Binary, &b);
                    }
                    (None, Some(t)) => {
                        let t = t.cast_into::<PyString>()?;
                        self.data(out, ws::Opcode::Text, t.to_str()?.as_bytes());
                    }
                    _ => {
                        return Err(PyTypeError::new_err(
                            "websocket.send needs exactly one of 'bytes' and 'text'",
                        ));
                    }
                }
                Ok(())
            }
            ("websocket.close", Phase::Connecting) => {
                // Refused before the accept: 403, as uvicorn and gunicorn do.
                out.extend_from_slice(&crate::app::error_response(403, "Forbidden", ""));
                self.phase = Phase::Closed;
                self.finished = true;
                self.disconnect = Some((1006, String::new()));
                Ok(())
            }
            ("websocket.close", Phase::Open) => {
                let code = match get(msg, intern!(py, "code"))? {
                    Some(c) if !c.is_none() => c.extract::<u16>()?,
                    _ => 1000,
                };
                let reason = match get(msg, intern!(py, "reason"))? {
                    Some(r) if !r.is_none() => r.extract::<String>()?,
                    _ => String::new(),
                };
                ws::encode_close(out, code, &reason);
                self.phase = Phase::Closing;
                Ok(())
            }
            ("websocket.close", Phase::Closing | Phase::Closed) => Ok(()),
            ("websocket.http.response.start", Phase::Connecting) => {
                let status: u16 = get(msg, intern!(py, "status"))?
                    .ok_or_else(|| PyValueError::new_err("no 'status'"))?
                    .extract()?;
                let headers = headers_of(msg)?;
                let framing = closing_head(out, status, &headers)
                    .map_err(|e| PyValueError::new_err(format!("Invalid ASGI response: {e}")))?;
                self.denial = Some(BodyEncoder::new(&framing));
                self.phase = Phase::Denying;
                Ok(())
            }
            ("websocket.http.response.body", Phase::Denying) => {
                let more = get(msg, intern!(py, "more_body"))?
                    .map(|m| m.is_truthy())
                    .transpose()?
                    .unwrap_or(false);
                let enc = self.denial.as_mut().expect("denying");
                if let Some(b) = get(msg, intern!(py, "body"))? {
                    let b: PyBackedBytes = b.extract().map_err(Into::<PyErr>::into)?;
                    enc.chunk(&b, out);
                }
                if !more {
                    enc.finish(out);
                    self.phase = Phase::Closed;
                    self.finished = true;
                    self.disconnect = Some((1006, String::new()));
                }
                Ok(())
            }
            (kind, phase) => Err(PyRuntimeError::new_err(format!(
                "Unexpected ASGI message '{kind}' in WebSocket state {phase:?}"
            ))),
        }
    }

    /// One data message of the app's, compressed when agreed.
    fn data(&mut self, out: &mut Vec<u8>, opcode: ws::Opcode, payload: &[u8]) {
        match &mut self.deflater {
            Some(d) => d.encode(out, opcode, payload),
            None => ws::encode_frame(out, opcode, payload),
        }
    }

    /// The app's call is over (`failed`: it raised): what it left unsaid.
    pub fn end(&mut self, py: Python<'_>, failed: bool, out: &mut Vec<u8>) {
        match self.phase {
            Phase::Connecting => {
                if !failed {
                    crate::glogging::error!("ASGI callable returned without sending handshake.");
                }
                out.extend_from_slice(&crate::app::error_response(
                    500,
                    "Internal Server Error",
                    "",
                ));
            }
            Phase::Denying => {}
            Phase::Open => {
                if !self.eof {
                    ws::encode_close(out, if failed { 1011 } else { 1000 }, "");
                }
            }
            Phase::Closing | Phase::Closed => {}
        }
        self.phase = Phase::Closed;
        self.finished = true;
        for f in [self.receiver.take(), self.writer.take()]
            .into_iter()
            .flatten()
        {
            let _ = f.bind(py).call_method0(intern!(py, "cancel"));
        }
    }

    /// A graceful stop: close an open WebSocket with 1001, or 1012 when the
    /// worker is being replaced (`restart`); the client's close reply ends it.
    pub fn going_away(&mut self, out: &mut Vec<u8>, restart: bool) -> bool {
        if self.phase == Phase::Open && !self.eof {
            if restart {
                ws::encode_close(out, 1012, "service restart");
            } else {
                ws::encode_close(out, 1001, "server shutting down");
            }
            self.phase = Phase::Closing;
            return true;
        }
        false
    }
}

/// The `headers` of a message, as bytes pairs.
fn headers_of(msg: &Bound<'_, PyAny>) -> PyResult<Vec<(PyBackedBytes, PyBackedBytes)>> {
    let py = msg.py();
    let mut out = Vec::new();
    if let Some(hs) = get(msg, intern!(py, "headers"))? {
        for item in hs.try_iter()? {
            let item = item?;
            let name: PyBackedBytes = item.get_item(0)?.extract().map_err(Into::<PyErr>::into)?;
            let value: PyBackedBytes = item.get_item(1)?.extract().map_err(Into::<PyErr>::into)?;
            out.push((name, value));
        }
    }
    Ok(out)
}

/// The head of an HTTP response to an upgrade request that is not accepted
/// (a denial, a refused handshake), closing the connection.
pub fn closing_head<N: AsRef<[u8]>, V: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(N, V)],
) -> Result<ferricorn_http::response::Framing, ferricorn_http::Error> {
    let line = format!("{status} {}", ferricorn_http::error::reason_phrase(status));
    let ctx = ferricorn_http::response::ResponseContext {
        method: b"GET",
        version: (1, 1),
        request_keep_alive: false,
        server_allows_keep_alive: false,
        server_header: crate::util::server_header(),
    };
    crate::app::with_date(|d| encode_head(out, line.as_bytes(), headers, &ctx, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(interval_ms: u64, timeout_ms: Option<u64>) -> PingPolicy {
        PingPolicy {
            interval: Duration::from_millis(interval_ms),
            timeout: timeout_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn policy_from_settings() {
        assert_eq!(PingPolicy::from_secs(0.0, 20.0), None);
        assert_eq!(PingPolicy::from_secs(-1.0, 20.0), None);
        assert_eq!(
            PingPolicy::from_secs(0.5, 20.0),
            Some(policy(500, Some(20_000)))
        );
        assert_eq!(PingPolicy::from_secs(0.5, 0.0), Some(policy(500, None)));
    }

    #[test]
    fn pings_every_interval_while_answered() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = Keepalive::new(policy(100, Some(50)), t0);
        assert_eq!(k.poll(ms(99)), Beat::Idle);
        assert_eq!(k.poll(ms(100)), Beat::Ping(1));
        assert!(k.waiting());
        // One ping outstanding at a time.
        assert_eq!(k.poll(ms(120)), Beat::Idle);
        k.pong();
        assert!(!k.waiting());
        assert_eq!(k.poll(ms(150)), Beat::Idle);
        assert_eq!(k.poll(ms(200)), Beat::Ping(2));
        k.pong();
        assert_eq!(k.poll(ms(310)), Beat::Ping(3));
    }

    #[test]
    fn times_out_without_a_pong() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = Keepalive::new(policy(100, Some(300)), t0);
        assert_eq!(k.poll(ms(100)), Beat::Ping(1));
        // The timeout may outlast the interval: no second ping meanwhile.
        assert_eq!(k.poll(ms(250)), Beat::Idle);
        assert_eq!(k.poll(ms(399)), Beat::Idle);
        assert_eq!(k.poll(ms(400)), Beat::TimedOut);
    }

    #[test]
    fn without_a_timeout_pings_go_on() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut k = Keepalive::new(policy(100, None), t0);
        assert_eq!(k.poll(ms(100)), Beat::Ping(1));
        assert!(!k.waiting());
        assert_eq!(k.poll(ms(200)), Beat::Ping(2));
        assert_eq!(k.poll(ms(10_000)), Beat::Ping(3));
    }
}
