//! What every app interface needs, whatever it speaks (WSGI now, ASGI
//! next): loading the app, the thread state an app thread keeps, the
//! `Date` header cache, complete error responses, and tracebacks for the
//! error log. The protocol-specific parts live in `wsgi/` (and `asgi/`).
//!
//! gunicorn counterpart: `util.import_app`, `Worker.load_wsgi`,
//! `Worker.handle_error`, `util.http_date`.

pub mod loader;

use std::cell::RefCell;

use ferricorn_http::date::DateCache;
use pyo3::prelude::*;

thread_local! {
    static DATE: RefCell<DateCache> = RefCell::new(DateCache::new());
}

/// Run `f` with this thread's cached `Date` header, refreshed at most once a second.
pub fn with_date<R>(f: impl FnOnce(&DateCache) -> R) -> R {
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        d.refresh();
        f(&d)
    })
}

/// Run `f`, a thread's whole life, with one Python thread state kept for
/// it. `f` attaches (`Python::attach`) per request; without an outer
/// attachment each of those creates and destroys a thread state (and
/// CPython maps and unmaps its 16 KiB frame stack), which docs/profile.md
/// measured on every gthread request. The GIL is released while `f` runs.
pub fn keep_thread_state<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    Python::attach(|py| py.detach(f))
}

/// A complete error response (`Connection: close`) for `status`.
pub fn error_response(status: u16, reason: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::new();
    with_date(|d| ferricorn_http::response::error_response(status, reason, message, d, &mut out));
    out
}

/// Render a Python exception with its traceback, as `traceback.format_exception` does.
pub fn format_traceback(py: Python<'_>, err: &PyErr) -> String {
    let formatted = py
        .import("traceback")
        .and_then(|tb| {
            tb.call_method1(
                "format_exception",
                (err.get_type(py), err.value(py), err.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>());
    match formatted {
        Ok(lines) => lines.concat().trim_end().to_string(),
        Err(_) => err.to_string(),
    }
}
