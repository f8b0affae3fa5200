//! Loading the WSGI application from its spec (`module:callable`,
//! `module`, `module:factory(args)`), through `ferricorn._util.import_app`.
//!
//! gunicorn counterpart: `util.import_app`, `Worker.load_wsgi`.

use pyo3::prelude::*;

/// Why loading failed, mapped to the worker's exit code by the caller.
pub enum LoadError {
    /// `AppImportError`: not found / not callable (exit 4). Message only.
    App(String),
    /// Any other exception while importing (exit 3). Message and traceback,
    /// and the source files the traceback names (what `--reload` watches).
    Boot {
        message: String,
        traceback: String,
        files: Vec<String>,
    },
}

/// Put `--pythonpath` entries and the working directory at the front of `sys.path`.
pub fn extend_sys_path(py: Python<'_>, entries: &[String], cwd: &str) -> PyResult<()> {
    let path = py.import("sys")?.getattr("path")?;
    for entry in entries.iter().rev() {
        path.call_method1("insert", (0, entry))?;
    }
    if !path.contains(cwd)? {
        path.call_method1("insert", (0, cwd))?;
    }
    Ok(())
}

pub fn load(py: Python<'_>, spec: &str) -> Result<Py<PyAny>, LoadError> {
    let result = py
        .import("ferricorn._util")
        .and_then(|m| m.getattr("import_app"))
        .and_then(|f| f.call1((spec,)));
    match result {
        Ok(app) => Ok(app.unbind()),
        Err(err) => {
            let is_app_error = py
                .import("ferricorn._util")
                .and_then(|m| m.getattr("AppImportError"))
                .map(|cls| err.get_type(py).is_subclass(&cls).unwrap_or(false))
                .unwrap_or(false);
            let message = err.value(py).to_string();
            if is_app_error {
                Err(LoadError::App(message))
            } else {
                let files = py
                    .import("ferricorn._reload")
                    .and_then(|m| m.call_method1("error_files", (err.value(py),)))
                    .and_then(|f| f.extract())
                    .unwrap_or_default();
                Err(LoadError::Boot {
                    message,
                    traceback: super::format_traceback(py, &err),
                    files,
                })
            }
        }
    }
}
