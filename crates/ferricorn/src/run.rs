//! The `ferricorn` entry point: settings, logging, sockets, pidfile, then
//! the master loop. Glue only.
//!
//! gunicorn counterpart: `app/base.py` (`Application.run`), `app/wsgiapp.py`,
//! `Arbiter.start`.

use pyo3::prelude::*;

use crate::arbiter::{self, Arbiter, shell::Shell};
use crate::config::pyfile::{self, LoadFailure, USAGE};
use crate::config::{ConfigError, Settings};
use crate::errors::{STARTUP_ERROR, USAGE_ERROR};
use crate::glogging::{self, Level};
use crate::pidfile::Pidfile;
use crate::sock;
use crate::workers::heartbeat::Heartbeats;
use crate::wsgi::loader::{self, LoadError};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn usage_error(msg: &str) -> i32 {
    eprintln!("{USAGE}\nferricorn: error: {msg}");
    USAGE_ERROR
}

/// The worker classes ferricorn implements, by every name gunicorn accepts for them.
fn resolve_worker_class(name: &str, threads: usize) -> Result<&'static str, String> {
    crate::workers::resolve_class(name, threads).map(|c| match c {
        crate::workers::Class::Sync => "sync",
        crate::workers::Class::Gthread => "gthread",
    })
}

/// Load the configuration (`config::pyfile::load`) and check what only the
/// runner can check. `Err(code)` means exit with it now (message printed).
fn load_settings(py: Python<'_>, argv: &[String]) -> Result<pyfile::Loaded, i32> {
    let loaded = match pyfile::load(py, argv) {
        Ok(l) => l,
        Err(LoadFailure::Info(text)) => {
            print!("{text}");
            return Err(0);
        }
        Err(LoadFailure::Usage(msg)) => return Err(usage_error(&msg)),
        Err(LoadFailure::Config(msg)) => {
            eprintln!("Error: {msg}");
            return Err(STARTUP_ERROR);
        }
        Err(LoadFailure::Unsupported(msg)) => {
            eprintln!("Error: {msg}");
            return Err(USAGE_ERROR);
        }
    };
    let settings = &loaded.settings;
    if settings.get("print_config").as_bool() {
        return Ok(loaded);
    }
    if let Err(e) = resolve_worker_class(settings.worker_class(), settings.threads()) {
        eprintln!("Error: {e}");
        return Err(USAGE_ERROR);
    }
    for addr in settings.bind() {
        if let Err(e) = sock::parse_address(addr) {
            eprintln!(
                "Error: {}",
                ConfigError::Invalid {
                    name: "bind",
                    value: addr.clone(),
                    why: e.to_string()
                }
            );
            return Err(USAGE_ERROR);
        }
    }
    Ok(loaded)
}

/// What loading the app needs, in gunicorn's order: `--chdir`, `-e KEY=VALUE`,
/// then `--pythonpath` and the working directory on `sys.path`.
/// `Err(code)` means exit with it (message printed).
fn prepare_app_environment(py: Python<'_>, settings: &Settings) -> Result<(), i32> {
    if let Some(dir) = settings.chdir() {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!(
                "Error: Invalid value for chdir: {:?}: {e}",
                dir.display().to_string()
            );
            return Err(USAGE_ERROR);
        }
    }
    if let Err(e) = apply_raw_env(py, settings) {
        eprintln!("Error: {e}");
        return Err(USAGE_ERROR);
    }
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into());
    if let Err(e) = loader::extend_sys_path(py, &settings.pythonpath(), &cwd) {
        eprintln!("Error: {e}");
        return Err(STARTUP_ERROR);
    }
    Ok(())
}

/// `--print-config` / `--check-config`: print, then load the app once and exit.
fn print_or_check(py: Python<'_>, settings: &Settings, app_spec: &str) -> i32 {
    if settings.get("print_config").as_bool() {
        print!("{}", settings.render());
    }
    if let Err(code) = prepare_app_environment(py, settings) {
        return code;
    }
    match loader::load(py, app_spec) {
        Ok(_) => 0,
        Err(LoadError::App(msg)) => {
            eprintln!("\nError while loading the application:\n\n{msg}");
            STARTUP_ERROR
        }
        Err(LoadError::Boot { traceback, .. }) => {
            eprintln!("\nError while loading the application:\n\n{traceback}");
            STARTUP_ERROR
        }
    }
}

/// Apply `-e KEY=VALUE` through `os.environ` (so Python sees it too).
fn apply_raw_env(py: Python<'_>, settings: &Settings) -> Result<(), String> {
    let environ = py
        .import("os")
        .and_then(|os| os.getattr("environ"))
        .map_err(|e| e.to_string())?;
    for item in settings.raw_env() {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("Invalid value for raw_env: {item:?}: expected KEY=VALUE"))?;
        environ.set_item(k, v).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn bind_all(settings: &Settings) -> Result<Vec<sock::Listener>, String> {
    let opts = sock::BindOptions {
        backlog: settings.backlog(),
        reuse_port: false,
    };
    let mut listeners = Vec::new();
    for raw in settings.bind() {
        let addr = sock::parse_address(raw).map_err(|e| e.to_string())?;
        let mut tries = 0;
        loop {
            match sock::bind(&addr, &opts) {
                Ok(l) => {
                    listeners.push(l);
                    break;
                }
                Err(sock::BindError::InUse(label)) if tries < 4 => {
                    tries += 1;
                    glogging::error!("Connection in use: {label}");
                    glogging::error!("Retrying in 1 second.");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(e) => return Err(format!("{e}")),
            }
        }
    }
    Ok(listeners)
}

pub fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    let loaded = match load_settings(py, &argv) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let settings = loaded.settings;
    let app_spec = loaded.app_spec.unwrap_or_default();
    if settings.get("print_config").as_bool() || settings.get("check_config").as_bool() {
        return print_or_check(py, &settings, &app_spec);
    }
    let syslog_prefix = settings
        .syslog_prefix()
        .map(str::to_string)
        .unwrap_or_else(|| settings.proc_name().unwrap_or(&app_spec).replace(':', "."));
    let statsd_host = settings.statsd_host();
    if let Err(e) = glogging::init(&glogging::LogConfig {
        errorlog: settings.errorlog(),
        loglevel: settings.loglevel(),
        accesslog: settings.accesslog(),
        access_log_format: settings.access_log_format(),
        capture_output: settings.capture_output(),
        syslog: settings.syslog(),
        syslog_addr: settings.syslog_addr(),
        syslog_facility: settings.syslog_facility(),
        syslog_prefix: &syslog_prefix,
        disable_redirect_access_to_syslog: settings.disable_redirect_access_to_syslog(),
        statsd_host: statsd_host.as_deref(),
        statsd_prefix: settings.statsd_prefix(),
        dogstatsd_tags: settings.dogstatsd_tags(),
    }) {
        eprintln!("Error: {e}");
        return STARTUP_ERROR;
    }
    if settings.logconfig().is_some() || settings.logconfig_json().is_some() {
        let level = Level::parse(settings.loglevel()).unwrap_or(Level::Info);
        if let Err(e) =
            crate::pylogging::install(py, settings.logconfig(), settings.logconfig_json(), level)
        {
            eprintln!("Error: {e}");
            return STARTUP_ERROR;
        }
    }
    if let Err(code) = prepare_app_environment(py, &settings) {
        return code;
    }

    let preloaded = if settings.preload_app() {
        match loader::load(py, &app_spec) {
            Ok(app) => Some(app),
            Err(LoadError::App(msg)) => {
                glogging::log_always(Level::Error, &msg);
                return crate::errors::APP_LOAD_ERROR;
            }
            Err(LoadError::Boot { traceback, .. }) => {
                glogging::log_always(
                    Level::Error,
                    &format!("Exception in master process\n{traceback}"),
                );
                return crate::errors::WORKER_BOOT_ERROR;
            }
        }
    } else {
        None
    };

    let pid = std::process::id();
    glogging::info!("Starting ferricorn {VERSION}");
    let listeners = match bind_all(&settings) {
        Ok(l) => l,
        Err(e) => {
            glogging::error!("{e}");
            glogging::error!("Shutting down: Master");
            return STARTUP_ERROR;
        }
    };
    let pidfile = match settings.pidfile() {
        Some(path) => match Pidfile::create(&path, pid) {
            Ok(p) => Some(p),
            Err(e) => {
                glogging::error!("{e}");
                return STARTUP_ERROR;
            }
        },
        None => None,
    };
    for l in &listeners {
        glogging::info!("Listening at: {l} ({pid})");
    }
    glogging::info!("Using worker: {}", settings.worker_class());

    let heartbeats = match Heartbeats::new() {
        Ok(h) => h,
        Err(e) => {
            glogging::error!("Cannot create the heartbeat table: {e}");
            return STARTUP_ERROR;
        }
    };
    let arbiter = Arbiter::new(
        arbiter::Config {
            num_workers: settings.workers(),
            timeout_ms: (settings.timeout() * 1000.0) as u64,
            graceful_timeout_ms: (settings.graceful_timeout() * 1000.0) as u64,
            daemon: false,
        },
        heartbeats.capacity(),
    );
    let mut shell = match Shell::new(
        arbiter, listeners, heartbeats, &settings, preloaded, app_spec,
    ) {
        Ok(s) => s,
        Err(e) => {
            glogging::error!("Cannot set up the master: {e}");
            return STARTUP_ERROR;
        }
    };
    let code = py.detach(|| shell.run());
    if let Some(p) = pidfile {
        p.unlink();
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_class_names() {
        assert_eq!(resolve_worker_class("sync", 1), Ok("sync"));
        assert_eq!(
            resolve_worker_class("gunicorn.workers.sync.SyncWorker", 1),
            Ok("sync")
        );
        assert!(
            resolve_worker_class("gevent", 1)
                .unwrap_err()
                .contains("gevent")
        );
        assert_eq!(resolve_worker_class("sync", 4), Ok("gthread"));
        assert_eq!(
            resolve_worker_class("gunicorn.workers.gthread.ThreadWorker", 1),
            Ok("gthread")
        );
        assert!(
            resolve_worker_class("eventlet", 1)
                .unwrap_err()
                .contains("gthread")
        );
    }
}
