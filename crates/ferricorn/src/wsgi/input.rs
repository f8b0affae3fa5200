//! `wsgi.input`: the request body, streamed from the socket on demand.
//!
//! Reads release the GIL while waiting for the client. The reader never
//! consumes bytes past the end of the body, so a pipelined next request stays
//! in `leftover()`. `Expect: 100-continue` is answered at the first read, so
//! an app that refuses the request early never makes the client send the body.
//!
//! gunicorn counterpart: `http.body.Body` (`read`, `readline`, `readlines`, `__iter__`).

use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use ferricorn_http::body::Decoder;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::sock::Stream;

const READ_CHUNK: usize = 64 * 1024;

pub struct BodyReader {
    stream: Arc<Stream>,
    decoder: Decoder,
    /// Raw bytes read from the socket, not yet decoded, from `raw_pos`.
    raw: Vec<u8>,
    raw_pos: usize,
    /// Decoded body bytes not yet handed to the app, from `dec_pos`.
    decoded: Vec<u8>,
    dec_pos: usize,
    send_continue: bool,
    /// A framing error met while decoding (the server answers with its status).
    pub error: Option<ferricorn_http::Error>,
}

impl BodyReader {
    pub fn new(
        stream: Arc<Stream>,
        decoder: Decoder,
        leftover: Vec<u8>,
        send_continue: bool,
    ) -> Self {
        BodyReader {
            stream,
            decoder,
            raw: leftover,
            raw_pos: 0,
            decoded: Vec::new(),
            dec_pos: 0,
            send_continue,
            error: None,
        }
    }

    fn available(&self) -> &[u8] {
        &self.decoded[self.dec_pos..]
    }

    /// Decode more body bytes; `Ok(false)` at the end of the body.
    fn fill(&mut self) -> io::Result<bool> {
        if self.dec_pos > 0 && self.dec_pos == self.decoded.len() {
            self.decoded.clear();
            self.dec_pos = 0;
        }
        loop {
            if self.decoder.is_done() {
                return Ok(false);
            }
            if self.raw_pos < self.raw.len() {
                let before = self.decoded.len();
                let used = self
                    .decoder
                    .decode(&self.raw[self.raw_pos..], &mut self.decoded)
                    .map_err(|e| {
                        let err = io::Error::new(io::ErrorKind::InvalidData, e.to_string());
                        self.error = Some(e);
                        err
                    })?;
                self.raw_pos += used;
                if self.decoded.len() > before {
                    return Ok(true);
                }
                if used > 0 {
                    continue;
                }
            }
            if self.send_continue {
                self.send_continue = false;
                (&*self.stream).write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
            }
            // Need more raw bytes: compact and read.
            self.raw.drain(..self.raw_pos);
            self.raw_pos = 0;
            let start = self.raw.len();
            let want = match self.decoder.remaining() {
                Some(n) => (n as usize).clamp(1, READ_CHUNK),
                None => READ_CHUNK,
            };
            self.raw.resize(start + want, 0);
            let n = loop {
                match (&*self.stream).read(&mut self.raw[start..]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        self.raw.truncate(start);
                        return Err(e);
                    }
                }
            };
            self.raw.truncate(start + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client disconnected before the end of the body",
                ));
            }
        }
    }

    /// Read up to `limit` bytes (all remaining when `None`).
    pub fn read(&mut self, limit: Option<usize>) -> io::Result<Vec<u8>> {
        self.read_until(limit, false)
    }

    /// Read one line (up to and including `\n`), at most `limit` bytes.
    pub fn readline(&mut self, limit: Option<usize>) -> io::Result<Vec<u8>> {
        self.read_until(limit, true)
    }

    /// Read up to `limit` bytes, stopping after the first `\n` when `line` is set.
    fn read_until(&mut self, limit: Option<usize>, line: bool) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let want = limit.map_or(usize::MAX, |l| l - out.len());
            if want == 0 {
                break;
            }
            if self.available().is_empty() && !self.fill()? {
                break;
            }
            let avail = self.available();
            let window = &avail[..avail.len().min(want)];
            let newline = if line {
                window.iter().position(|&b| b == b'\n')
            } else {
                None
            };
            let take = newline.map_or(window.len(), |nl| nl + 1);
            out.extend_from_slice(&window[..take]);
            self.dec_pos += take;
            if newline.is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// Read and discard the rest of the body (before reusing the connection).
    pub fn drain(&mut self, max: u64) -> io::Result<bool> {
        let mut total = 0u64;
        loop {
            total += self.available().len() as u64;
            self.dec_pos = self.decoded.len();
            if total > max {
                return Ok(false);
            }
            if !self.fill()? {
                return Ok(true);
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// Bytes read from the socket after the end of the body (a pipelined request).
    pub fn leftover(&self) -> &[u8] {
        &self.raw[self.raw_pos..]
    }
}

fn to_py_err(e: io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

/// The `wsgi.input` object handed to the app.
#[pyclass(module = "ferricorn", name = "Input", frozen)]
pub struct Input {
    pub reader: Arc<Mutex<BodyReader>>,
}

fn size_arg(size: Option<isize>) -> Option<usize> {
    match size {
        Some(n) if n >= 0 => Some(n as usize),
        _ => None,
    }
}

impl Input {
    fn with_reader<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut BodyReader) -> io::Result<T> + Send,
    ) -> PyResult<T> {
        let reader = &self.reader;
        py.detach(|| {
            let mut guard = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut guard)
        })
        .map_err(to_py_err)
    }
}

#[pymethods]
impl Input {
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let data = self.with_reader(py, |r| r.read(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let limit = size_arg(size);
        let data = self.with_reader(py, |r| r.readline(limit))?;
        Ok(PyBytes::new(py, &data))
    }

    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let hint = size_arg(hint).filter(|h| *h > 0);
        let list = PyList::empty(py);
        let mut total = 0usize;
        loop {
            let line = self.with_reader(py, |r| r.readline(None))?;
            if line.is_empty() {
                break;
            }
            total += line.len();
            list.append(PyBytes::new(py, &line))?;
            if hint.is_some_and(|h| total >= h) {
                break;
            }
        }
        Ok(list)
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.with_reader(py, |r| r.readline(None))?;
        Ok(if line.is_empty() {
            None
        } else {
            Some(PyBytes::new(py, &line))
        })
    }
}
