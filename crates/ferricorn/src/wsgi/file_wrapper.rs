//! `wsgi.file_wrapper`: iterates a file-like object in blocks and closes it.
//! When the wrapped object is a real file (`fileno()` names a regular file),
//! the server sends it with `sendfile(2)` from its current position instead
//! (see `wsgi::send_body`), unless `--no-sendfile`.
//!
//! gunicorn counterpart: `http.wsgi.FileWrapper`, `Response.sendfile`.

use std::os::fd::OwnedFd;

use pyo3::prelude::*;

/// A regular file to send with sendfile(2): a private descriptor, the
/// offset to start at and the bytes left in the file from there.
pub struct FileSource {
    pub fd: OwnedFd,
    pub offset: i64,
    pub len: u64,
}

#[pyclass(module = "ferricorn", name = "FileWrapper")]
pub struct FileWrapper {
    #[pyo3(get)]
    filelike: Py<PyAny>,
    #[pyo3(get)]
    blksize: usize,
}

impl FileWrapper {
    /// The wrapped object as a regular file, or `None` to fall back to reads.
    pub fn file_source(&self, py: Python<'_>) -> Option<FileSource> {
        let f = self.filelike.bind(py);
        let raw: i32 = f.call_method0("fileno").ok()?.extract().ok()?;
        let offset: i64 = f.call_method0("tell").ok()?.extract().ok()?;
        let fd = crate::sys::fd::dup_borrowed(raw).ok()?;
        let st = nix::sys::stat::fstat(&fd).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG || offset < 0 {
            return None;
        }
        let len = u64::try_from(st.st_size.saturating_sub(offset)).unwrap_or(0);
        Some(FileSource { fd, offset, len })
    }
}

#[pymethods]
impl FileWrapper {
    #[new]
    #[pyo3(signature = (filelike, blksize = 8192))]
    fn new(filelike: Py<PyAny>, blksize: usize) -> Self {
        FileWrapper {
            filelike,
            blksize: blksize.max(1),
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let data = self
            .filelike
            .bind(py)
            .call_method1("read", (self.blksize,))?;
        if data.is_truthy()? {
            Ok(Some(data.unbind()))
        } else {
            Ok(None)
        }
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let f = self.filelike.bind(py);
        if f.hasattr("close")? {
            f.call_method0("close")?;
        }
        Ok(())
    }
}
