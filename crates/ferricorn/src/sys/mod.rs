//! All `unsafe` of the server lives here, each block with a `SAFETY:` note.
//!
//! - `signals`: async-signal-safe handlers that record pending signals in an
//!   atomic mask and wake a self-pipe (gunicorn: `signal.signal` + `PIPE`).
//! - `shm`: anonymous shared memory for the heartbeat table, created before
//!   the first fork so master and workers see the same pages.
//! - `process`: `_exit`.
#![allow(unsafe_code)]

pub mod fd;
pub mod process;
pub mod shm;
pub mod signals;
