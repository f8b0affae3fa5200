//! The `ferricorn` entry point: settings, logging, sockets, pidfile, then
//! the master loop. Glue only.
//!
//! gunicorn counterpart: `app/base.py` (`Application.run`), `app/wsgiapp.py`,
//! `Arbiter.start`.

use pyo3::PyTypeInfo;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::app::loader::{self, LoadError};
use crate::arbiter::shell::{Launch, ReloadFn, Reloaded, Shell};
use crate::config::pyfile::{self, LoadFailure, USAGE};
use crate::config::{ConfigError, Settings};
use crate::errors::{STARTUP_ERROR, USAGE_ERROR};
use crate::glogging::{self, Level};
use crate::pidfile::Pidfile;
use crate::sock;
use crate::workers::heartbeat::Heartbeats;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

fn usage_error(msg: &str) -> i32 {
    eprintln!("{USAGE}\nferricorn: error: {msg}");
    USAGE_ERROR
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
            for line in msg.lines() {
                eprintln!("Error: {line}");
            }
            return Err(USAGE_ERROR);
        }
    };
    let settings = &loaded.settings;
    if settings.get("print_config").as_bool() {
        return Ok(loaded);
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
    // The heartbeat lives in shared memory, not in a file there; the
    // directory is still checked, as gunicorn would fail to use it.
    if let Some(dir) = settings.get("worker_tmp_dir").as_str() {
        if !std::path::Path::new(dir).is_dir() {
            eprintln!("Error: Invalid value for worker_tmp_dir: {dir:?}: not a directory");
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
    if settings.get("check_config").as_bool() {
        // A clean check means the server would start: its TLS files too.
        if let Err(e) = crate::tls::load(settings) {
            eprintln!("Error: {e}");
            return STARTUP_ERROR;
        }
    }
    if let Err(code) = prepare_app_environment(py, settings) {
        return code;
    }
    match loader::load(py, app_spec, serves_asgi(settings)) {
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
        // One listener per address, shared by every worker, with
        // SO_REUSEPORT set (docs/workers.md, "reuse_port").
        reuse_port: settings.get("reuse_port").as_bool(),
    };
    let mut listeners = Vec::new();
    for raw in settings.bind() {
        let addr = sock::parse_address(raw).map_err(|e| e.to_string())?;
        let mut tries = 0;
        loop {
            // --umask sets a unix socket's mode; it then belongs to --user/--group.
            let umask = settings.get("umask").as_int() as u32;
            match crate::sys::privileges::with_umask(umask, || sock::bind(&addr, &opts)) {
                Ok(l) => {
                    if let sock::Address::Unix(path) = &addr {
                        let (uid, gid) = (settings.get("user"), settings.get("group"));
                        crate::sys::privileges::give_to(
                            path,
                            uid.as_int() as u32,
                            gid.as_int() as u32,
                        )?;
                    }
                    listeners.push(l);
                    break;
                }
                Err(sock::BindError::InUse(label)) if tries < 4 => {
                    tries += 1;
                    glogging::error!("Connection in use: {label}");
                    glogging::error!("Retrying in 1 second.");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
                Err(sock::BindError::InUse(label)) => {
                    glogging::error!("Connection in use: {label}");
                    return Err(format!("Can't connect to {label}"));
                }
                Err(e) => return Err(format!("{e}")),
            }
        }
    }
    Ok(listeners)
}

/// Whether the configured worker class is the asgi worker.
fn serves_asgi(settings: &Settings) -> bool {
    crate::workers::resolve_class(settings.worker_class(), settings.threads())
        == Ok(crate::workers::Class::Asgi)
}

/// Load the app in the master when `--preload` is set. `Err` carries the
/// exit code after logging why.
fn preload(py: Python<'_>, settings: &Settings, app_spec: &str) -> Result<Option<Py<PyAny>>, i32> {
    if !settings.preload_app() {
        return Ok(None);
    }
    match loader::load(py, app_spec, serves_asgi(settings)) {
        Ok(app) => Ok(Some(app)),
        Err(LoadError::App(msg)) => {
            glogging::log_always(Level::Error, &msg);
            Err(crate::errors::APP_LOAD_ERROR)
        }
        Err(LoadError::Boot { traceback, .. }) => {
            glogging::log_always(
                Level::Error,
                &format!("Exception in master process\n{traceback}"),
            );
            Err(crate::errors::WORKER_BOOT_ERROR)
        }
    }
}

/// `--pythonpath` (and the working directory) onto `sys.path`.
fn extend_sys_path(py: Python<'_>, settings: &Settings) -> Result<(), String> {
    let cwd = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| ".".into());
    loader::extend_sys_path(py, &settings.pythonpath(), &cwd).map_err(|e| e.to_string())
}

/// A hook of the master's start-up (`nworkers_changed`, `on_starting`,
/// `when_ready`); one that raises stops ferricorn (exit 1), as in gunicorn.
fn startup_hook(
    name: &'static str,
    view: &crate::hooks::MasterView,
    args: crate::hooks::Args,
) -> Result<(), i32> {
    crate::hooks::master(name, view, args).map_err(|tb| {
        glogging::log_always(Level::Error, &format!("Exception in {name} hook\n{tb}"));
        STARTUP_ERROR
    })
}

/// `HUP`: the configuration from scratch, with the same command line.
fn reload_fn(argv: Vec<String>) -> ReloadFn {
    Box::new(move |py| {
        let loaded = load_settings(py, &argv)
            .map_err(|code| format!("invalid configuration (status {code})"))?;
        let settings = loaded.settings;
        let app_spec = loaded.app_spec.ok_or("No application module specified.")?;
        // A bad file keeps the running configuration, its certificate included.
        let tls = crate::tls::load(&settings)?;
        apply_raw_env(py, &settings)?;
        extend_sys_path(py, &settings)?;
        let preloaded = preload(py, &settings, &app_spec)
            .map_err(|code| format!("the application failed to load (status {code})"))?;
        crate::hooks::install(py, loaded.hooks, &settings, &app_spec)
            .map_err(|e| format!("cannot set up the server hooks: {e}"))?;
        Ok(Reloaded {
            settings,
            preloaded,
            app_spec,
            tls,
        })
    })
}

/// Pop `name` from `os.environ` (so Python and the C environment agree).
fn pop_env(py: Python<'_>, name: &str) -> Option<String> {
    py.import("os")
        .and_then(|os| os.getattr("environ"))
        .and_then(|env| env.call_method1("pop", (name, py.None())))
        .and_then(|v| v.extract::<Option<String>>())
        .ok()
        .flatten()
}

/// Listening sockets handed over by a previous master (`GUNICORN_FD`) or by
/// systemd (`LISTEN_FDS`), if any. The variables are removed once read.
fn inherited_listeners(
    py: Python<'_>,
    pid: u32,
) -> Result<Option<(Vec<sock::Listener>, bool)>, String> {
    let listen_pid = pop_env(py, "LISTEN_PID");
    let listen_fds = pop_env(py, "LISTEN_FDS");
    let n = crate::systemd::listen_fds(listen_pid.as_deref(), listen_fds.as_deref(), pid);
    let (fds, systemd): (Vec<i32>, bool) = if n > 0 {
        (
            (0..n as i32)
                .map(|i| crate::systemd::LISTEN_FDS_START + i)
                .collect(),
            true,
        )
    } else if let Some(list) = pop_env(py, "GUNICORN_FD") {
        let fds = list
            .split(',')
            .map(|f| {
                f.trim()
                    .parse::<i32>()
                    .map_err(|_| format!("Invalid GUNICORN_FD: {list:?}"))
            })
            .collect::<Result<Vec<i32>, String>>()?;
        (fds, false)
    } else {
        return Ok(None);
    };
    let listeners = fds
        .into_iter()
        .map(|fd| sock::adopt_fd(fd).map_err(|e| format!("Cannot use inherited fd {fd}: {e}")))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some((listeners, systemd)))
}

/// What `--reload` cannot do with these settings, said once at start-up:
/// with `--preload` the workers are forked with the master's copy of the
/// code, and a pattern that matches nothing yet (gunicorn warns too).
fn reload_warnings(py: Python<'_>, settings: &Settings) {
    if settings.get("preload_app").as_bool() {
        glogging::warning!(
            "--reload has no effect with --preload: workers are forked with the code the master \
             imported, so code changes need a restart of ferricorn"
        );
    }
    let extra = settings.get("reload_extra_files").as_list().to_vec();
    let unmatched: Vec<String> = py
        .import("ferricorn._reload")
        .and_then(|m| m.call_method1("unmatched_patterns", (extra,)))
        .and_then(|r| r.extract())
        .unwrap_or_default();
    for pattern in unmatched {
        glogging::warning!("Pattern {pattern} currently matches no files.");
    }
}

/// Open the control socket unless `--no-control-socket`. A live socket at
/// the path (another running server) is never taken: with the default path
/// this server runs without one and says so; with a path the user gave,
/// start-up fails. Other errors are warnings with the default path and
/// fatal with a given one. A re-executed master (`take_over`) replaces its
/// parent's socket.
fn open_control_socket(
    settings: &Settings,
    take_over: bool,
) -> Result<Option<crate::control::server::Server>, String> {
    use crate::control::server::{OpenError, Server};
    if settings.get("control_socket_disable").as_bool() {
        glogging::debug!("Control socket disabled");
        return Ok(None);
    }
    let given = settings.get("control_socket").as_str().unwrap_or_default();
    let path = std::path::Path::new(&crate::config::validate::getcwd()).join(given);
    let mode = settings.get("control_socket_mode").as_int() as u32 & 0o7777;
    let explicit = settings.is_set("control_socket");
    match Server::open(&path, mode, take_over) {
        Ok(server) => {
            glogging::info!("Control socket listening at {}", path.display());
            Ok(Some(server))
        }
        Err(e @ OpenError::InUse(_)) if !explicit => {
            glogging::warning!(
                "{e}; running without a control socket (give this server its own with --control-socket PATH)"
            );
            Ok(None)
        }
        Err(e) if !explicit => {
            glogging::warning!("{e}; running without a control socket");
            Ok(None)
        }
        Err(e) => Err(format!("{e} (--control-socket)")),
    }
}

pub fn run(py: Python<'_>, argv: Vec<String>) -> i32 {
    // gunicorn's `env_orig`: restored on HUP, handed to a USR2 child.
    let env_orig = match py
        .import("os")
        .and_then(|os| os.getattr("environ"))
        .and_then(|env| env.call_method0("copy"))
        .and_then(|d| PyDict::type_object(py).call1((d,)))
        .and_then(|d| d.cast_into::<PyDict>().map_err(Into::into))
    {
        Ok(d) => d.unbind(),
        Err(e) => {
            eprintln!("Error: cannot read the environment: {e}");
            return STARTUP_ERROR;
        }
    };
    let start_cwd = std::env::current_dir().unwrap_or_else(|_| "/".into());
    let loaded = match load_settings(py, &argv) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if let Some(server) = pyfile::server_header(py) {
        crate::util::set_server_header(server);
    }
    let settings = loaded.settings;
    let user_hooks = loaded.hooks;
    let app_spec = loaded.app_spec.unwrap_or_default();
    if settings.get("print_config").as_bool() || settings.get("check_config").as_bool() {
        return print_or_check(py, &settings, &app_spec);
    }
    // TLS files: read and checked now, as root if started so, before any
    // fork; a bad one stops the start with a line naming it.
    if *settings.get("ssl_version") != crate::config::Value::Int(2) {
        eprintln!("Warning: ssl_version is deprecated and ignored: TLS 1.2 and 1.3 are served");
    }
    match crate::tls::load(&settings) {
        Ok(server) => crate::tls::install(server),
        Err(e) => {
            eprintln!("Error: {e}");
            return STARTUP_ERROR;
        }
    }
    if settings.get("daemon").as_bool() {
        let inherit = settings.get("enable_stdio_inheritance").as_bool();
        if let Err(e) = crate::daemon::daemonize(py, inherit) {
            eprintln!("Error: cannot daemonize: {e}");
            return STARTUP_ERROR;
        }
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
    crate::arbiter::shell::give_logs_to_workers(&settings);
    let logconfig_dict = loaded
        .logconfig_dict
        .filter(|_| settings.logconfig_dict().is_some());
    if settings.logconfig().is_some()
        || settings.logconfig_json().is_some()
        || logconfig_dict.is_some()
    {
        let level = Level::parse(settings.loglevel()).unwrap_or(Level::Info);
        if let Err(e) = crate::pylogging::install(
            py,
            settings.logconfig(),
            settings.logconfig_json(),
            logconfig_dict.as_ref(),
            level,
        ) {
            eprintln!("Error: {e}");
            return STARTUP_ERROR;
        }
    }
    if let Err(code) = prepare_app_environment(py, &settings) {
        return code;
    }
    if let Err(e) = crate::hooks::install(py, user_hooks, &settings, &app_spec) {
        eprintln!("Error: cannot set up the server hooks: {e}");
        return STARTUP_ERROR;
    }
    let mut view = crate::hooks::MasterView {
        num_workers: settings.workers(),
        reexec_pid: 0,
        master_pid: 0,
    };
    let counts = crate::hooks::Args::Counts {
        new: settings.workers(),
        old: None,
    };
    if let Err(code) = startup_hook("nworkers_changed", &view, counts) {
        return code;
    }

    let preloaded = match preload(py, &settings, &app_spec) {
        Ok(p) => p,
        Err(code) => return code,
    };

    let pid = std::process::id();
    // Started by a master's USR2: it lives until we are promoted.
    let parent_master = pop_env(py, "GUNICORN_PID")
        .and_then(|p| p.trim().parse::<i32>().ok())
        .unwrap_or(0);
    if parent_master != 0 {
        // Keep it visible to hooks and children, as gunicorn does.
        let _ = py
            .import("os")
            .and_then(|os| os.getattr("environ"))
            .and_then(|env| env.set_item("GUNICORN_PID", parent_master.to_string()));
    }
    glogging::debug!("Current configuration:\n{}", settings.render_current());
    glogging::info!("Starting ferricorn {VERSION}");
    if settings.get("reload").as_bool() {
        reload_warnings(py, &settings);
    }
    view.master_pid = parent_master;
    if let Err(code) = startup_hook("on_starting", &view, crate::hooks::Args::None) {
        return code;
    }
    let (listeners, systemd) = match inherited_listeners(py, pid) {
        Ok(Some(found)) => found,
        Ok(None) => match bind_all(&settings) {
            Ok(l) => (l, false),
            Err(e) => {
                glogging::error!("{e}");
                glogging::error!("Shutting down: Master");
                return STARTUP_ERROR;
            }
        },
        Err(e) => {
            glogging::error!("{e}");
            return STARTUP_ERROR;
        }
    };
    let pidfile = match settings.pidfile() {
        Some(path) => {
            // A re-executed master writes PIDFILE.2 until its parent exits.
            let path = if parent_master != 0 {
                let mut p = path.into_os_string();
                p.push(".2");
                std::path::PathBuf::from(p)
            } else {
                path
            };
            match Pidfile::create(&path, pid) {
                Ok(p) => Some(p),
                Err(e) => {
                    glogging::error!("{e}");
                    return STARTUP_ERROR;
                }
            }
        }
        None => None,
    };
    crate::hooks::set_listeners(&listeners);
    glogging::debug!("Arbiter booted");
    crate::workers::conn::arm_listeners_from(&listeners, &settings);
    for l in &listeners {
        glogging::info!("Listening at: {l} ({pid})");
    }
    glogging::info!("Using worker: {}", settings.worker_class_str());
    if serves_asgi(&settings) {
        crate::workers::asgi::announce(&settings);
    }

    // Made once per master and kept for its life (see `Launch::heartbeats`).
    let heartbeats: &'static Heartbeats = match Heartbeats::new() {
        Ok(h) => Box::leak(Box::new(h)),
        Err(e) => {
            glogging::error!("Cannot create the heartbeat table: {e}");
            return STARTUP_ERROR;
        }
    };
    if let Err(code) = startup_hook("when_ready", &view, crate::hooks::Args::None) {
        if let Some(pf) = pidfile {
            pf.unlink();
        }
        return code;
    }
    let control = match open_control_socket(&settings, parent_master != 0) {
        Ok(c) => c,
        Err(e) => {
            glogging::error!("{e}");
            if let Some(pf) = pidfile {
                pf.unlink();
            }
            return STARTUP_ERROR;
        }
    };
    let launch = Launch {
        control,
        settings,
        listeners,
        heartbeats,
        preloaded,
        app_spec,
        pidfile,
        env_orig,
        start_cwd,
        parent_master,
        systemd,
        reload: reload_fn(argv),
        bind: bind_all,
    };
    let mut shell = match Shell::new(launch) {
        Ok(s) => s,
        Err(e) => {
            glogging::error!("Cannot set up the master: {e}");
            return STARTUP_ERROR;
        }
    };
    crate::systemd::notify("READY=1");
    py.detach(|| shell.run())
}
