//! `wsgi.errors`: a file-like object whose writes go to the error log as-is.
//!
//! gunicorn counterpart: `http.wsgi.WSGIErrorsWrapper`.

use pyo3::prelude::*;

#[pyclass(module = "ferricorn", name = "ErrorsStream", frozen)]
pub struct ErrorsStream;

#[pymethods]
impl ErrorsStream {
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<usize> {
        let text: String = if let Ok(b) = data.cast::<pyo3::types::PyBytes>() {
            String::from_utf8_lossy(b.as_bytes()).into_owned()
        } else {
            data.extract()?
        };
        crate::glogging::write_raw(text.as_bytes());
        Ok(text.len())
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(&line?)?;
        }
        Ok(())
    }

    fn flush(&self) {}
}
