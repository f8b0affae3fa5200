//! The settings table: one row per gunicorn 27 setting, the single source of truth.
//!
//! Each row names the setting, its section, its command-line flags, how the flag
//! is parsed (`Action`), how values are validated (`Kind`), its default, whether
//! ferricorn implements it, and a one-line description. The CLI parser, config
//! files, `GUNICORN_CMD_ARGS`, `--help`, `--print-config` and `docs/settings.md`
//! are all driven from `ROWS`.
//!
//! gunicorn counterpart: `gunicorn/config.py` (`KNOWN_SETTINGS`, `Setting` subclasses).

use super::value::Value;

/// How a command-line flag consumes arguments (argparse's `action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `--flag VALUE`
    Store,
    /// `--flag` sets true.
    StoreTrue,
    /// `--flag` sets false.
    StoreFalse,
    /// `--flag VALUE`, repeatable; values accumulate in a list.
    Append,
}

/// The type and validator of a setting's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bool,
    /// Any integer.
    Int,
    /// A non-negative integer.
    PosInt,
    /// An integer or a float, non-negative (e.g. `timeout` accepts `30` or `0.5`).
    Number,
    /// A string.
    Str,
    /// A string or None.
    OptStr,
    /// A list of strings.
    List,
    /// A Python callable with the given number of arguments (server hooks).
    Hook(u8),
    /// A string that must be one of the given choices.
    Choice(&'static [&'static str]),
}

/// How the default value is produced. A function so env-derived defaults
/// (`PORT`, `WEB_CONCURRENCY`) are read when settings are built, not at compile time.
pub type DefaultFn = fn() -> Value;

#[derive(Debug)]
pub struct Setting {
    pub name: &'static str,
    pub section: &'static str,
    pub flags: &'static [&'static str],
    pub meta: &'static str,
    pub action: Action,
    pub kind: Kind,
    pub default: DefaultFn,
    /// Whether ferricorn implements the setting. An unsupported setting is
    /// accepted at its default; any other value stops start-up naming it.
    pub supported: bool,
    pub short: &'static str,
}

fn d_none() -> Value {
    Value::None
}
fn d_false() -> Value {
    Value::Bool(false)
}
fn d_empty_list() -> Value {
    Value::List(Vec::new())
}
fn d_bind() -> Value {
    let addr = match std::env::var("PORT") {
        Ok(port) if !port.is_empty() => format!("0.0.0.0:{port}"),
        _ => "127.0.0.1:8000".to_string(),
    };
    Value::List(vec![addr])
}
fn d_workers() -> Value {
    let n = std::env::var("WEB_CONCURRENCY")
        .ok()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(1);
    Value::Int(n)
}
fn d_worker_class() -> Value {
    Value::Str("sync".into())
}
fn d_one() -> Value {
    Value::Int(1)
}
fn d_zero() -> Value {
    Value::Int(0)
}
fn d_thirty() -> Value {
    Value::Int(30)
}
fn d_keepalive() -> Value {
    Value::Int(2)
}
fn d_backlog() -> Value {
    Value::Int(2048)
}
fn d_worker_connections() -> Value {
    Value::Int(1000)
}
fn d_dash() -> Value {
    Value::Str("-".into())
}
fn d_info() -> Value {
    Value::Str("info".into())
}
fn d_limit_line() -> Value {
    Value::Int(4094)
}
fn d_limit_fields() -> Value {
    Value::Int(100)
}
fn d_limit_field_size() -> Value {
    Value::Int(8190)
}
fn d_access_log_format() -> Value {
    Value::Str(r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#.into())
}
fn d_cwd() -> Value {
    match std::env::current_dir() {
        Ok(p) => Value::Str(p.to_string_lossy().into_owned()),
        Err(_) => Value::Str(".".into()),
    }
}
fn d_config() -> Value {
    Value::Str("./gunicorn.conf.py".into())
}

macro_rules! row {
    ($name:literal, $section:literal, [$($flag:literal),*], $meta:literal, $action:ident, $kind:expr, $default:expr, $supported:literal, $short:literal) => {
        Setting {
            name: $name,
            section: $section,
            flags: &[$($flag),*],
            meta: $meta,
            action: Action::$action,
            kind: $kind,
            default: $default,
            supported: $supported,
            short: $short,
        }
    };
}

/// Every setting, in gunicorn's order within each section.
pub static ROWS: &[Setting] = &[
    row!(
        "config",
        "Config File",
        ["-c", "--config"],
        "CONFIG",
        Store,
        Kind::Str,
        d_config,
        true,
        "Python configuration file (or python:module) to load."
    ),
    row!(
        "wsgi_app",
        "Config File",
        [],
        "",
        Store,
        Kind::OptStr,
        d_none,
        true,
        "A WSGI application path in pattern $(MODULE_NAME):$(VARIABLE_NAME)."
    ),
    row!(
        "bind",
        "Server Socket",
        ["-b", "--bind"],
        "ADDRESS",
        Append,
        Kind::List,
        d_bind,
        true,
        "The socket to bind: HOST, HOST:PORT, [V6]:PORT, unix:PATH or fd://FD. Repeatable."
    ),
    row!(
        "backlog",
        "Server Socket",
        ["--backlog"],
        "INT",
        Store,
        Kind::PosInt,
        d_backlog,
        true,
        "The maximum number of pending connections."
    ),
    row!(
        "workers",
        "Worker Processes",
        ["-w", "--workers"],
        "INT",
        Store,
        Kind::PosInt,
        d_workers,
        true,
        "The number of worker processes for handling requests."
    ),
    row!(
        "worker_class",
        "Worker Processes",
        ["-k", "--worker-class"],
        "STRING",
        Store,
        Kind::Str,
        d_worker_class,
        true,
        "The type of workers to use."
    ),
    row!(
        "threads",
        "Worker Processes",
        ["--threads"],
        "INT",
        Store,
        Kind::PosInt,
        d_one,
        true,
        "The number of worker threads for handling requests (gthread)."
    ),
    row!(
        "worker_connections",
        "Worker Processes",
        ["--worker-connections"],
        "INT",
        Store,
        Kind::PosInt,
        d_worker_connections,
        true,
        "The maximum number of simultaneous clients per worker."
    ),
    row!(
        "max_requests",
        "Worker Processes",
        ["--max-requests"],
        "INT",
        Store,
        Kind::PosInt,
        d_zero,
        true,
        "Restart a worker after it has served this many requests (0 disables)."
    ),
    row!(
        "max_requests_jitter",
        "Worker Processes",
        ["--max-requests-jitter"],
        "INT",
        Store,
        Kind::PosInt,
        d_zero,
        true,
        "Add a random 0..N to max_requests per worker to stagger restarts."
    ),
    row!(
        "max_worker_memory",
        "Worker Processes",
        ["--max-worker-memory"],
        "MB",
        Store,
        Kind::PosInt,
        d_zero,
        true,
        "ferricorn only: retire a worker whose private memory (USS) exceeds this many MiB, after its current request and once its replacement has booted (0 disables)."
    ),
    row!(
        "timeout",
        "Worker Processes",
        ["-t", "--timeout"],
        "INT",
        Store,
        Kind::Number,
        d_thirty,
        true,
        "Workers silent for more than this many seconds are killed and restarted (0 disables)."
    ),
    row!(
        "graceful_timeout",
        "Worker Processes",
        ["--graceful-timeout"],
        "INT",
        Store,
        Kind::Number,
        d_thirty,
        true,
        "Seconds workers get to finish in-flight requests after a graceful stop."
    ),
    row!(
        "keepalive",
        "Worker Processes",
        ["--keep-alive"],
        "INT",
        Store,
        Kind::Number,
        d_keepalive,
        true,
        "Seconds to wait for requests on a Keep-Alive connection."
    ),
    row!(
        "limit_request_line",
        "Security",
        ["--limit-request-line"],
        "INT",
        Store,
        Kind::PosInt,
        d_limit_line,
        true,
        "The maximum size of an HTTP request line in bytes (0 = unlimited)."
    ),
    row!(
        "limit_request_fields",
        "Security",
        ["--limit-request-fields"],
        "INT",
        Store,
        Kind::PosInt,
        d_limit_fields,
        true,
        "The maximum number of header fields in a request."
    ),
    row!(
        "limit_request_field_size",
        "Security",
        ["--limit-request-field_size"],
        "INT",
        Store,
        Kind::PosInt,
        d_limit_field_size,
        true,
        "The maximum size of a request header field in bytes (0 = unlimited)."
    ),
    row!(
        "preload_app",
        "Server Mechanics",
        ["--preload"],
        "",
        StoreTrue,
        Kind::Bool,
        d_false,
        false,
        "Load application code before the worker processes are forked."
    ),
    row!(
        "chdir",
        "Server Mechanics",
        ["--chdir"],
        "",
        Store,
        Kind::Str,
        d_cwd,
        true,
        "Change directory to this one before loading apps."
    ),
    row!(
        "daemon",
        "Server Mechanics",
        ["-D", "--daemon"],
        "",
        StoreTrue,
        Kind::Bool,
        d_false,
        false,
        "Daemonize the ferricorn process."
    ),
    row!(
        "raw_env",
        "Server Mechanics",
        ["-e", "--env"],
        "ENV",
        Append,
        Kind::List,
        d_empty_list,
        true,
        "Set environment variables in the execution environment (KEY=VALUE). Repeatable."
    ),
    row!(
        "pidfile",
        "Server Mechanics",
        ["-p", "--pid"],
        "FILE",
        Store,
        Kind::OptStr,
        d_none,
        true,
        "A filename to use for the PID file."
    ),
    row!(
        "pythonpath",
        "Server Mechanics",
        ["--pythonpath"],
        "STRING",
        Store,
        Kind::OptStr,
        d_none,
        true,
        "A comma-separated list of directories to add to the Python path."
    ),
    row!(
        "accesslog",
        "Logging",
        ["--access-logfile"],
        "FILE",
        Store,
        Kind::OptStr,
        d_none,
        true,
        "The access log file to write to ('-' means stdout)."
    ),
    row!(
        "access_log_format",
        "Logging",
        ["--access-logformat"],
        "STRING",
        Store,
        Kind::Str,
        d_access_log_format,
        true,
        "The access log format."
    ),
    row!(
        "errorlog",
        "Logging",
        ["--error-logfile", "--log-file"],
        "FILE",
        Store,
        Kind::Str,
        d_dash,
        true,
        "The error log file to write to ('-' means stderr)."
    ),
    row!(
        "loglevel",
        "Logging",
        ["--log-level"],
        "LEVEL",
        Store,
        Kind::Choice(&["debug", "info", "warning", "error", "critical"]),
        d_info,
        true,
        "The granularity of error log outputs."
    ),
    row!(
        "proc_name",
        "Process Naming",
        ["-n", "--name"],
        "STRING",
        Store,
        Kind::OptStr,
        d_none,
        true,
        "A base to use with setproctitle for process naming."
    ),
];

/// Look a row up by setting name.
pub fn find(name: &str) -> Option<(usize, &'static Setting)> {
    ROWS.iter().enumerate().find(|(_, s)| s.name == name)
}
