//! All `unsafe` of the server lives here, each block with a `SAFETY:` note.
//!
//! - `signals`: async-signal-safe handlers that record pending signals in an
//!   atomic mask and wake a self-pipe (gunicorn: `signal.signal` + `PIPE`).
//! - `shm`: anonymous shared memory for the heartbeat table, created before
//!   the first fork so master and workers see the same pages.
//! - `process`: `_exit`.
//! - `sockinfo`: `TCP_INFO` of a listening socket (backlog metric).
//! - `privileges`: workers' user and groups, `--umask` (safe `nix` calls,
//!   kept here with the other process-level primitives).
//! - `proctitle`: process titles (rewrites the argv area, `prctl`).
//! - `pycall`: two CPython calls of the asgi request path pyo3 has no safe
//!   form of (`PyIter_Send`, vectorcall with a keyword).
#![allow(unsafe_code)]

pub mod fd;
pub mod privileges;
pub mod process;
pub mod proctitle;
pub mod pycall;
pub mod shm;
pub mod signals;
pub mod sockinfo;
