//! Loading the application from its spec (`module:callable`,
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

/// Import the app from `spec`; `asgi`: the worker class serves ASGI (`-k
/// asgi`). An app of the other interface is refused with the class to use.
pub fn load(py: Python<'_>, spec: &str, asgi: bool) -> Result<Py<PyAny>, LoadError> {
    let result = py
        .import("ferricorn._util")
        .and_then(|m| m.getattr("import_app"))
        .and_then(|f| f.call1((spec,)));
    match result {
        Ok(app) if !asgi && is_asgi(py, &app) => Err(LoadError::App(format!(
            "Application object {spec:?} is an ASGI app (an async callable taking scope, receive, send): \
             ferricorn's WSGI workers (sync, gthread, evloop) cannot serve it; run it with -k asgi"
        ))),
        Ok(app) if asgi && is_wsgi(py, &app) => Err(LoadError::App(format!(
            "Application object {spec:?} is a WSGI app (a callable taking environ, start_response): \
             the asgi worker cannot serve it; run it with -k sync, -k gthread or -k evloop"
        ))),
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

/// Whether the loaded object is an ASGI 3 application rather than a WSGI
/// one: a coroutine function of `(scope, receive, send)`, or an object whose
/// `__call__` is one (FastAPI, Starlette, Django's `ASGIHandler`). Serving
/// it as WSGI would answer every request with a `TypeError`, so loading
/// refuses it instead. Anything that cannot be inspected counts as WSGI.
pub fn is_asgi(py: Python<'_>, app: &Bound<'_, PyAny>) -> bool {
    let Some((is_coroutine, params)) = inspector(py) else {
        return false;
    };
    let target = if is_coroutine(app) {
        app.clone()
    } else {
        match app.getattr("__call__") {
            Ok(call) if is_coroutine(&call) => call,
            _ => return false,
        }
    };
    params(&target) == Some(3)
}

/// Whether the loaded object is plainly a WSGI app, for the asgi worker's
/// refusal: no coroutine function (itself or its `__call__`) and a
/// signature of two parameters (`environ, start_response`). Anything else
/// (an ASGI app with an unusual signature, say) is given the benefit of
/// the doubt.
pub fn is_wsgi(py: Python<'_>, app: &Bound<'_, PyAny>) -> bool {
    let Some((is_coroutine, params)) = inspector(py) else {
        return false;
    };
    if is_coroutine(app) || app.getattr("__call__").is_ok_and(|c| is_coroutine(&c)) {
        return false;
    }
    params(app) == Some(2)
}

type Probe<'py, T> = Box<dyn Fn(&Bound<'py, PyAny>) -> T + 'py>;

/// `inspect`'s answers: is it a coroutine function; how many parameters
/// its signature has (None when it has none to inspect).
fn inspector<'py>(py: Python<'py>) -> Option<(Probe<'py, bool>, Probe<'py, Option<usize>>)> {
    let inspect = py.import("inspect").ok()?;
    let inspect2 = inspect.clone();
    let is_coroutine = Box::new(move |f: &Bound<'py, PyAny>| {
        inspect
            .call_method1("iscoroutinefunction", (f,))
            .and_then(|r| r.is_truthy())
            .unwrap_or(false)
    });
    let params = Box::new(move |f: &Bound<'py, PyAny>| {
        inspect2
            .call_method1("signature", (f,))
            .and_then(|sig| sig.getattr("parameters"))
            .and_then(|params| params.len())
            .ok()
    });
    Some((is_coroutine, params))
}
