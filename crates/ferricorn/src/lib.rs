//! ferricorn: a pre-fork WSGI HTTP server, gunicorn rebuilt in Rust.
//!
//! The Python package `ferricorn` starts the process and calls
//! `_ferricorn.run(argv)`; everything after that runs here. See
//! `docs/design.md` for the process model and the module layers.

pub mod app;
pub mod arbiter;
pub mod asgi;
pub mod config;
pub mod control;
pub mod daemon;
pub mod errors;
pub mod glogging;
pub mod hooks;
pub mod instrument;
pub mod lifecycle;
pub mod pidfile;
pub mod pylogging;
pub mod reloader;
pub mod request;
pub mod run;
pub mod sock;
pub mod stream;
pub mod sys;
pub mod systemd;
pub mod tls;
pub mod util;
pub mod workers;
pub mod wsgi;

use pyo3::prelude::*;

/// Run the server with the given argv (including the program name); returns the exit code.
#[pyfunction(name = "run")]
fn run_py(py: Python<'_>, argv: Vec<String>) -> i32 {
    run::run(py, argv)
}

/// The settings table as `(name, flags, action, supported)` rows, for
/// `ferricorn.app.base` to turn programmatic settings into arguments.
#[pyfunction(name = "_settings")]
fn settings_py() -> Vec<(&'static str, Vec<&'static str>, &'static str, bool)> {
    config::ROWS
        .iter()
        .map(|r| {
            let action = match r.action {
                config::Action::Store | config::Action::OptionalConst(_) => "store",
                config::Action::StoreTrue => "store_true",
                config::Action::StoreFalse => "store_false",
                config::Action::Append => "append",
            };
            (r.name, r.flags.to_vec(), action, r.supported)
        })
        .collect()
}

#[pymodule]
fn _ferricorn(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", run::VERSION)?;
    m.add_function(wrap_pyfunction!(run_py, m)?)?;
    m.add_function(wrap_pyfunction!(settings_py, m)?)?;
    m.add_class::<wsgi::file_wrapper::FileWrapper>()?;
    config::pyfile::register(m)?;
    hooks::register(m)?;
    Ok(())
}
