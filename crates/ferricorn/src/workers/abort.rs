//! A timed-out worker's report: the master sends `ABRT`; the worker logs the
//! Python stack of every thread, each named with the request line it was
//! serving, as one record in the error log (file, stderr or syslog, in the
//! usual `[time] [pid] [ERROR]` format), then exits 1.
//!
//! How it runs outside signal context: the OS-level handler
//! (`sys::signals::via_python`) only sets flags; CPython runs the
//! Python-level handler registered here in the worker's main thread at its
//! next bytecode boundary (a sync worker stuck in the app), or the worker's
//! loop notices the pending `ABRT` and calls `PyErr_CheckSignals` (an idle
//! sync worker, or gthread's poller thread while app threads are stuck).
//! Code stuck in C while holding the GIL never lets it run; the master's
//! `KILL` follows one second after the `ABRT` anyway. Request lines come from
//! `sys::signals`' per-thread table (the first 64 threads of a worker).
//!
//! After the report the `worker_abort(worker)` hook runs, then the worker
//! exits 1 through the usual exit path (`worker_exit`), as in gunicorn.
//!
//! A gthread worker's main thread beats while its app threads run, so the
//! master never times it out for one stuck request: the main thread reports
//! each request running past `--timeout` itself, once, with the stack of
//! the thread running it (`report_overdue`), and stops beating once every
//! app thread is stuck so (`workers::gthread`), which brings this `ABRT`.
//!
//! gunicorn counterpart: `Worker.handle_abort` (which exits 1 without a
//! stack; the reports are ferricorn's addition).

use nix::sys::signal::Signal;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::glogging::{self, Level};
use crate::sys::signals;

/// Register the `ABRT` handler. Call in the worker's main thread after fork,
/// after `faulthandler.enable` (which it overrides for `ABRT` only).
pub fn install(py: Python<'_>) -> PyResult<()> {
    let handler = wrap_pyfunction!(on_abort, py)?;
    py.import("signal")?
        .call_method1("signal", (Signal::SIGABRT as i32, handler))?;
    signals::via_python(Signal::SIGABRT)
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))
}

/// Run the Python-level `ABRT` handler now if `ABRT` is pending (called by
/// the worker loops, which may hold the GIL or not).
pub fn run_pending() {
    Python::attach(|py| {
        if let Err(e) = py.check_signals() {
            glogging::error!("Exception in the ABRT handler: {e}");
        }
    });
}

#[pyfunction]
fn on_abort(py: Python<'_>, _signum: i32, _frame: Bound<'_, PyAny>) {
    let report = match stacks_report(py) {
        Ok(r) => r,
        Err(e) => format!("Worker timed out (no Python stack: {e})"),
    };
    glogging::log_always(Level::Error, &report);
    // gunicorn's `handle_abort`: `worker_abort(worker)`, then the exit path.
    if let Err(tb) = crate::hooks::worker(py, "worker_abort") {
        glogging::error!("Exception in worker_abort hook\n{tb}");
    }
    glogging::info!("Worker exiting (pid: {})", std::process::id());
    super::exit_worker(py, 1)
}

/// The request the asgi worker's running task serves (its loop runs on the
/// main thread), when the `asgi` worker is the class.
fn asgi_request(py: Python<'_>) -> Option<String> {
    let modules = py.import("sys").ok()?.getattr("modules").ok()?;
    let module = modules.get_item("ferricorn._asgi").ok()?;
    let line: Option<String> = module.call_method0("request_line").ok()?.extract().ok()?;
    line.map(|l| l.trim_start_matches("ferricorn: ").to_string())
}

/// One record: a first line naming what was in flight, then every thread's
/// stack (threads serving a request first), oldest call first as in a
/// Python traceback.
fn stacks_report(py: Python<'_>) -> PyResult<String> {
    let frames = py
        .import("sys")?
        .call_method0("_current_frames")?
        .cast_into::<PyDict>()?;
    let threading = py.import("threading")?;
    let traceback = py.import("traceback")?;
    let mut names = std::collections::HashMap::new();
    for t in threading.call_method0("enumerate")?.try_iter()? {
        let t = t?;
        if let Ok(ident) = t.getattr("ident")?.extract::<u64>() {
            names.insert(ident, t.getattr("name")?.extract::<String>()?);
        }
    }
    let main_ident: u64 = threading
        .call_method0("main_thread")?
        .getattr("ident")?
        .extract()?;
    let mut serving = Vec::new();
    let mut blocks = Vec::new();
    for (ident, frame) in frames.iter() {
        let ident: u64 = ident.extract()?;
        let (rust_name, mut request) = signals::current_request(ident);
        if request.is_none() && ident == main_ident {
            request = asgi_request(py);
        }
        let name = names
            .get(&ident)
            .cloned()
            .or(rust_name)
            .unwrap_or_else(|| format!("0x{ident:016x}"));
        let stack = format_stack(&traceback, &frame)?;
        let head = match &request {
            Some(line) => format!("Thread {name} serving {line} (most recent call last):"),
            None => format!("Thread {name} (most recent call last):"),
        };
        let block = format!("{head}\n{stack}");
        if let Some(line) = request {
            serving.push(line);
            blocks.insert(serving.len() - 1, block);
        } else {
            blocks.push(block);
        }
    }
    let first = if serving.is_empty() {
        "Worker timed out while idle".to_string()
    } else {
        format!("Worker timed out while serving: {}", serving.join(", "))
    };
    Ok(format!("{first}\n{}", blocks.join("\n")))
}

/// A frame's stack as a traceback prints it, oldest call first.
fn format_stack(traceback: &Bound<'_, PyModule>, frame: &Bound<'_, PyAny>) -> PyResult<String> {
    let stack: Vec<String> = traceback
        .call_method1("format_stack", (frame,))?
        .extract()?;
    Ok(stack.concat().trim_end().to_string())
}

/// Log each request running past `--timeout` (`limit_s`), with the stack of
/// the thread running it, as one error record each.
pub fn report_overdue(py: Python<'_>, overdue: &[signals::Overdue], limit_s: f64) {
    let frames = py
        .import("sys")
        .and_then(|sys| sys.call_method0("_current_frames"))
        .and_then(|f| Ok(f.cast_into::<PyDict>()?));
    let traceback = py.import("traceback");
    for o in overdue {
        let name = signals::current_request(o.ident)
            .0
            .unwrap_or_else(|| format!("0x{:016x}", o.ident));
        let stack = match (&frames, &traceback) {
            (Ok(frames), Ok(tb)) => match frames.get_item(o.ident) {
                Ok(Some(frame)) => format_stack(tb, &frame).unwrap_or_else(|e| e.to_string()),
                _ => "(no Python frame)".to_string(),
            },
            (Err(e), _) | (_, Err(e)) => e.to_string(),
        };
        glogging::log_always(
            Level::Error,
            &format!(
                "Request running past --timeout ({limit_s} s) for {:.1} s: {}\nThread {name} serving {} (most recent call last):\n{stack}",
                o.running_ms as f64 / 1000.0,
                o.line,
                o.line
            ),
        );
    }
}
