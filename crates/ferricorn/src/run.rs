//! The `ferricorn` entry point: settings, logging, sockets, pidfile, then
//! the master loop. Glue only.
//!
//! gunicorn counterpart: `app/base.py` (`Application.run`), `app/wsgiapp.py`,
//! `Arbiter.start`.

use pyo3::prelude::*;

use crate::arbiter::{self, Arbiter, shell::Shell};
use crate::config::{self, ConfigError, Settings, Value, cli};
use crate::errors::{STARTUP_ERROR, USAGE_ERROR};
use crate::glogging::{self, Level};
use crate::pidfile::Pidfile;
use crate::sock;
use crate::workers::heartbeat::Heartbeats;
use crate::wsgi::loader::{self, LoadError};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
const USAGE: &str = "usage: ferricorn [OPTIONS] [APP_MODULE]";

fn usage_error(msg: &str) -> i32 {
    eprintln!("{USAGE}\nferricorn: error: {msg}");
    USAGE_ERROR
}

/// The worker classes ferricorn implements, by every name gunicorn accepts for them.
fn resolve_worker_class(name: &str, threads: usize) -> Result<&'static str, String> {
    let class = match name {
        "sync" | "egg:gunicorn#sync" | "gunicorn.workers.sync.SyncWorker" => "sync",
        "gthread" | "egg:gunicorn#gthread" | "gunicorn.workers.gthread.ThreadWorker" => {
            return Err(format!(
                "Worker class {name:?} (worker_class) is not supported by ferricorn yet; use -k sync"
            ));
        }
        other => {
            return Err(format!(
                "Worker class {other:?} (worker_class) is not available in ferricorn; use -k sync"
            ));
        }
    };
    if threads > 1 {
        // gunicorn turns sync with threads > 1 into gthread.
        return Err("Setting threads (--threads) above 1 needs the gthread worker, which ferricorn does not support yet".into());
    }
    Ok(class)
}

fn help_text() -> String {
    let mut out = format!(
        "{USAGE}\n\nA pre-fork WSGI HTTP server: gunicorn rebuilt in Rust.\n\npositional arguments:\n  APP_MODULE            the WSGI application, e.g. module:app\n\noptions:\n  -h, --help            show this help message and exit\n  -v, --version         show program's version number and exit\n"
    );
    let mut section = "";
    for row in config::ROWS {
        if row.flags.is_empty() {
            continue;
        }
        if row.section != section {
            section = row.section;
            out.push_str(&format!("\n{section}:\n"));
        }
        let takes = matches!(row.action, config::Action::Store | config::Action::Append);
        let flags: Vec<String> = row
            .flags
            .iter()
            .map(|f| {
                if takes {
                    format!("{f} {}", row.meta)
                } else {
                    f.to_string()
                }
            })
            .collect();
        let mut text = row.short.to_string();
        if !row.supported {
            text.push_str(" [not supported yet]");
        }
        out.push_str(&format!("  {:<30} {}\n", flags.join(", "), text));
    }
    out
}

/// Build settings from the command line. `Err(code)` means exit with it now.
fn load_settings(argv: &[String]) -> Result<Settings, i32> {
    let parsed =
        cli::parse(argv.get(1..).unwrap_or_default()).map_err(|e| usage_error(&e.to_string()))?;
    if parsed.help {
        print!("{}", help_text());
        return Err(0);
    }
    if parsed.version {
        println!("ferricorn (version {VERSION})");
        return Err(0);
    }
    let mut settings = Settings::new();
    for (row, value) in parsed.values {
        settings
            .set_value(row.name, value)
            .map_err(|e| usage_error(&e.to_string()))?;
    }
    match parsed.positional.as_slice() {
        [] => {}
        [app] => settings
            .set_value("wsgi_app", Value::Str(app.clone()))
            .map_err(|e| usage_error(&e.to_string()))?,
        [_, extra @ ..] => {
            return Err(usage_error(&format!(
                "unrecognized arguments: {}",
                extra.join(" ")
            )));
        }
    }
    if let Err(e) = settings.check_supported() {
        eprintln!("Error: {e}");
        return Err(USAGE_ERROR);
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
    Ok(settings)
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
    let settings = match load_settings(&argv) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(app_spec) = settings.wsgi_app().map(str::to_string) else {
        eprintln!("Error: No application module specified.");
        return STARTUP_ERROR;
    };
    let syslog_prefix = settings
        .syslog_prefix()
        .map(str::to_string)
        .unwrap_or_else(|| settings.proc_name().unwrap_or(&app_spec).replace(':', "."));
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
        statsd_host: settings.statsd_host(),
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
    if let Some(dir) = settings.chdir() {
        if let Err(e) = std::env::set_current_dir(&dir) {
            eprintln!(
                "Error: Invalid value for chdir: {:?}: {e}",
                dir.display().to_string()
            );
            return USAGE_ERROR;
        }
    }
    if let Err(e) = apply_raw_env(py, &settings) {
        eprintln!("Error: {e}");
        return USAGE_ERROR;
    }
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into());
    if let Err(e) = loader::extend_sys_path(py, &settings.pythonpath(), &cwd) {
        eprintln!("Error: {e}");
        return STARTUP_ERROR;
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
        assert!(
            resolve_worker_class("sync", 4)
                .unwrap_err()
                .contains("threads")
        );
    }

    #[test]
    fn help_lists_sections_and_flags() {
        let h = help_text();
        assert!(
            h.contains("Server Socket:") && h.contains("-b ADDRESS, --bind ADDRESS"),
            "{h}"
        );
    }
}
