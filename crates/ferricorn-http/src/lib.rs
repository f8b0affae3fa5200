//! Sans-IO HTTP/1.1 for ferricorn: bytes in, events out; no sockets, no
//! threads, no Python.
//!
//! - [`parse`]: request line and header section ([`parse::Parser`]).
//! - [`body`]: Content-Length and chunked body decoders ([`body::Decoder`]).
//! - [`response`]: status line, headers and body framing for responses.
//! - [`date`]: the `Date` header, formatted at most once a second.
//! - [`h1`]: one connection's state: read buffer, pipelining, body,
//!   `100 Continue`, the keep-alive and lingering-close verdicts ([`h1::Conn`]).
//! - [`proxy`]: PROXY protocol v1 and v2 headers.
//! - [`error`]: every refusal, each with its HTTP status.
//! - [`ws`]: WebSocket (RFC 6455) handshake checks, frame decoder and encoder.
//!
//! The behaviour follows gunicorn 27 (`gunicorn/http/`); `docs/http.md` lists
//! what is accepted and refused and where ferricorn deliberately differs.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod chars;

pub mod body;
pub mod date;
pub mod error;
pub mod h1;
pub mod parse;
pub mod proxy;
pub mod response;
pub mod ws;

pub use body::Decoder;
pub use date::DateCache;
pub use error::Error;
pub use parse::{BodyKind, Head, HeaderMap, Options, Parser};
pub use response::{
    BodyEncoder, BodyFraming, Framing, ResponseContext, encode_head, error_response,
};
