//! Error and access logging in gunicorn's formats, written from Rust.
//!
//! Error log line: `[YYYY-MM-DD HH:MM:SS +ZZZZ] [PID] [LEVEL] message`.
//! Sinks: `-` (stderr for the error log, stdout for the access log) or a file
//! opened for append; `reopen()` reopens files (USR1, log rotation).
//!
//! Also: syslog (`syslog.rs`), StatsD counters per level and per request
//! (`crate::instrument`), `--capture-output` (fds 1/2 onto the error file).
//! The default path is pure Rust and never takes the GIL.
//!
//! Invariant: one `write(2)` per line, so lines from several processes
//! appending to one file never interleave.
//!
//! gunicorn counterpart: `gunicorn/glogging.py` (`Logger`, `CONFIG_DEFAULTS`, `atoms`).

pub mod access;
pub mod syslog;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use crate::instrument::{self, Statsd};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
    Critical = 50,
}

impl Level {
    pub fn parse(name: &str) -> Option<Level> {
        Some(match name.to_ascii_lowercase().as_str() {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "warning" | "warn" => Level::Warning,
            "error" => Level::Error,
            "critical" => Level::Critical,
            _ => return None,
        })
    }
    fn label(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }
}

enum Sink {
    Stderr,
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(target: &str, dash_is_stdout: bool) -> io::Result<Sink> {
        if target == "-" {
            return Ok(if dash_is_stdout {
                Sink::Stdout
            } else {
                Sink::Stderr
            });
        }
        let path = PathBuf::from(target);
        let file = open_append(&path)?;
        Ok(Sink::File { path, file })
    }

    fn write_line(&mut self, line: &[u8]) {
        // A failed log write has nowhere to be reported; dropping it is the
        // only choice that never takes the server down.
        let _ = match self {
            Sink::Stderr => io::stderr().lock().write_all(line),
            Sink::Stdout => io::stdout().lock().write_all(line),
            Sink::File { file, .. } => file.write_all(line),
        };
    }

    /// Point fds 1 and 2 at this sink's file (`--capture-output`).
    fn capture_stdio(&self) -> io::Result<()> {
        if let Sink::File { file, .. } = self {
            nix::unistd::dup2_stdout(file).map_err(io::Error::from)?;
            nix::unistd::dup2_stderr(file).map_err(io::Error::from)?;
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        if let Sink::File { path, file } = self {
            *file = open_append(path)?;
        }
        Ok(())
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("Error opening log file {}: {e}", path.display()),
            )
        })
}

struct Logger {
    level: Level,
    error: Mutex<Sink>,
    /// The access sink; `None` when `--access-logfile` is not given.
    access_sink: Option<Mutex<Sink>>,
    access_format: access::Format,
    /// Access records also go to syslog (`--log-syslog` without
    /// `--disable-redirect-access-to-syslog`).
    access_to_syslog: bool,
    syslog: Option<syslog::Syslog>,
    statsd: Option<Statsd>,
    /// `--capture-output` with a file error log: fds 1 and 2 point at it.
    capture_output: bool,
}

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

type PyForward = Box<dyn Fn(Level, &str) + Send + Sync>;
/// An access record and the access-log format string.
type PyAccess = Box<dyn Fn(&access::Record, &str) + Send + Sync>;
type PyReopen = Box<dyn Fn() + Send + Sync>;

/// Where records go when Python `logging` is configured.
pub struct PySinks {
    /// An error-log record (`gunicorn.error`): its level and finished text.
    pub error: PyForward,
    /// An access record, for `gunicorn.access` with the atoms as its args.
    pub access: PyAccess,
    /// `USR1`: reopen the handlers' files.
    pub reopen: PyReopen,
}

/// Set when `--log-config` / `--log-config-json` / `logconfig_dict` hand
/// records to Python's `logging` (installed by the L2 `pylogging` module);
/// `None` otherwise.
static PYTHON: RwLock<Option<PySinks>> = RwLock::new(None);

/// Route every error and access record through Python `logging` from now on.
pub fn set_python(sinks: PySinks) {
    *PYTHON.write().unwrap_or_else(|e| e.into_inner()) = Some(sinks);
}

/// Hand an error record to Python logging if it is configured; true when it was.
fn to_python(level: Level, msg: &str) -> bool {
    let guard = PYTHON.read().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(sinks) => {
            (sinks.error)(level, msg);
            true
        }
        None => false,
    }
}

/// What the logger needs from the settings.
pub struct LogConfig<'a> {
    pub errorlog: &'a str,
    pub loglevel: &'a str,
    pub accesslog: Option<&'a str>,
    pub access_log_format: &'a str,
    /// `--capture-output`.
    pub capture_output: bool,
    /// `--log-syslog`, `--log-syslog-to`, `--log-syslog-facility`.
    pub syslog: bool,
    pub syslog_addr: &'a str,
    pub syslog_facility: &'a str,
    /// The part after `gunicorn.` in syslog tags: `--log-syslog-prefix`, else
    /// the process name with `:` replaced by `.`.
    pub syslog_prefix: &'a str,
    pub disable_redirect_access_to_syslog: bool,
    /// `--statsd-host`, `--statsd-prefix`, `--dogstatsd-tags`.
    pub statsd_host: Option<&'a str>,
    pub statsd_prefix: &'a str,
    pub dogstatsd_tags: &'a str,
}

impl Default for LogConfig<'_> {
    fn default() -> Self {
        LogConfig {
            errorlog: "-",
            loglevel: "info",
            accesslog: None,
            access_log_format: "",
            capture_output: false,
            syslog: false,
            syslog_addr: "udp://localhost:514",
            syslog_facility: "user",
            syslog_prefix: "",
            disable_redirect_access_to_syslog: false,
            statsd_host: None,
            statsd_prefix: "",
            dogstatsd_tags: "",
        }
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Set up (or replace) the process's logger.
pub fn init(cfg: &LogConfig) -> io::Result<()> {
    let level = Level::parse(cfg.loglevel).unwrap_or(Level::Info);
    let error_sink = Sink::open(cfg.errorlog, false)?;
    let capture_output = cfg.capture_output && cfg.errorlog != "-";
    if capture_output {
        error_sink.capture_stdio()?;
    }
    let access_sink = match cfg.accesslog {
        Some(target) => Some(Mutex::new(Sink::open(target, true)?)),
        None => None,
    };
    let syslog = if cfg.syslog {
        let facility = syslog::facility(cfg.syslog_facility)
            .ok_or_else(|| invalid("unknown facility name".into()))?;
        let addr = syslog::parse_address(cfg.syslog_addr).map_err(invalid)?;
        Some(
            syslog::Syslog::connect(&addr, facility, cfg.syslog_prefix).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("Cannot connect to syslog at {}: {e}", cfg.syslog_addr),
                )
            })?,
        )
    } else {
        None
    };
    let statsd = match cfg.statsd_host {
        Some(host) => Some(Statsd::new(
            &instrument::parse_target(host)
                .map_err(|e| invalid(format!("Invalid value for statsd_host: {host:?}: {e}")))?,
            cfg.statsd_prefix,
            cfg.dogstatsd_tags,
        )),
        None => None,
    };
    let mut guard = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    *guard = Some(Logger {
        level,
        error: Mutex::new(error_sink),
        access_sink,
        access_format: access::Format::parse(cfg.access_log_format),
        access_to_syslog: cfg.syslog && !cfg.disable_redirect_access_to_syslog,
        syslog,
        statsd,
        capture_output,
    });
    Ok(())
}

/// Reopen log files (after rotation): USR1 in the master and in each worker.
pub fn reopen() -> io::Result<()> {
    if let Some(sinks) = PYTHON.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        (sinks.reopen)();
    }
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(logger) = guard.as_ref() {
        let mut error = logger.error.lock().unwrap_or_else(|e| e.into_inner());
        error.reopen()?;
        if logger.capture_output {
            error.capture_stdio()?;
        }
        drop(error);
        if let Some(sink) = &logger.access_sink {
            sink.lock().unwrap_or_else(|e| e.into_inner()).reopen()?;
        }
    }
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    if PYTHON.read().unwrap_or_else(|e| e.into_inner()).is_some() {
        // Python's logger levels decide (the user's config may lower them).
        return true;
    }
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .map_or(level >= Level::Info, |l| level >= l.level)
}

/// The `[YYYY-MM-DD HH:MM:SS +ZZZZ]` timestamp of error-log lines.
pub fn error_timestamp() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%d %H:%M:%S %z")
        .to_string()
}

/// Write one error-log line (multi-line messages, e.g. tracebacks, are written whole).
pub fn log(level: Level, msg: &str) {
    log_record(level, msg, false, counter_for(level));
}

/// Write an error-log line even below the configured level (boot failures).
pub fn log_always(level: Level, msg: &str) {
    log_record(level, msg, true, counter_for(level));
}

/// An error with a traceback (gunicorn's `log.exception`): logged at ERROR,
/// counted as `gunicorn.log.exception`.
pub fn exception(msg: &str) {
    log_record(Level::Error, msg, false, Some("gunicorn.log.exception"));
}

fn counter_for(level: Level) -> Option<&'static str> {
    match level {
        Level::Critical => Some("gunicorn.log.critical"),
        Level::Error => Some("gunicorn.log.error"),
        Level::Warning => Some("gunicorn.log.warning"),
        _ => None,
    }
}

fn log_record(level: Level, msg: &str, force: bool, counter: Option<&str>) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    let Some(logger) = guard.as_ref() else {
        if level >= Level::Info || force {
            Sink::Stderr.write_line(format_error_line(level, msg).as_bytes());
        }
        return;
    };
    if let (Some(statsd), Some(name)) = (&logger.statsd, counter) {
        statsd.increment(name, 1);
    }
    if to_python(level, msg) {
        return;
    }
    if !force && level < logger.level {
        return;
    }
    logger
        .error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .write_line(format_error_line(level, msg).as_bytes());
    if let Some(sl) = &logger.syslog {
        sl.send(level, "error", msg);
    }
}

fn format_error_line(level: Level, msg: &str) -> String {
    let mut line = format!(
        "[{}] [{}] [{}] {}",
        error_timestamp(),
        std::process::id(),
        level.label(),
        msg
    );
    if !line.ends_with('\n') {
        line.push('\n');
    }
    line
}

/// Send a gauge to StatsD, if configured (`gunicorn.workers`).
pub fn gauge(name: &str, value: i64) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(statsd) = guard.as_ref().and_then(|l| l.statsd.as_ref()) {
        statsd.gauge(name, value);
    }
}

/// Send a histogram value to StatsD, if configured (`gunicorn.backlog`).
pub fn histogram(name: &str, value: i64) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(statsd) = guard.as_ref().and_then(|l| l.statsd.as_ref()) {
        statsd.histogram(name, value);
    }
}

/// Whether anything consumes access records (file, syslog or StatsD), so
/// the worker can skip collecting them.
pub fn access_enabled() -> bool {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .is_some_and(|l| l.access_sink.is_some() || l.access_to_syslog || l.statsd.is_some())
        || PYTHON.read().unwrap_or_else(|e| e.into_inner()).is_some()
}

/// Render and write one access-log line; send the request's StatsD metrics.
pub fn access(record: &access::Record) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    let Some(logger) = guard.as_ref() else { return };
    let python = PYTHON.read().unwrap_or_else(|e| e.into_inner());
    if let Some(sinks) = python.as_ref() {
        (sinks.access)(record, logger.access_format.source());
    } else if logger.access_sink.is_some() || logger.access_to_syslog {
        let mut line = Vec::with_capacity(256);
        logger.access_format.render(record, &mut line);
        if let (true, Some(sl)) = (logger.access_to_syslog, &logger.syslog) {
            sl.send(Level::Info, "access", &String::from_utf8_lossy(&line));
        }
        if let Some(sink) = &logger.access_sink {
            line.push(b'\n');
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_line(&line);
        }
    }
    if let Some(statsd) = &logger.statsd {
        let code = record
            .status
            .split(|&b| b == b' ')
            .next()
            .unwrap_or_default();
        if let Some(code) = std::str::from_utf8(code).ok().and_then(|c| c.parse().ok()) {
            statsd.request(code, record.duration);
        }
    }
}

macro_rules! debug {
    ($($arg:tt)*) => { if $crate::glogging::enabled($crate::glogging::Level::Debug) { $crate::glogging::log($crate::glogging::Level::Debug, &format!($($arg)*)) } };
}
macro_rules! info {
    ($($arg:tt)*) => { $crate::glogging::log($crate::glogging::Level::Info, &format!($($arg)*)) };
}
macro_rules! warning {
    ($($arg:tt)*) => { $crate::glogging::log($crate::glogging::Level::Warning, &format!($($arg)*)) };
}
macro_rules! error {
    ($($arg:tt)*) => { $crate::glogging::log($crate::glogging::Level::Error, &format!($($arg)*)) };
}
#[allow(unused_macros)]
macro_rules! critical {
    ($($arg:tt)*) => { $crate::glogging::log($crate::glogging::Level::Critical, &format!($($arg)*)) };
}
#[allow(unused_imports)]
pub(crate) use {critical, debug, error, info, warning};

/// Write text to the error log as-is (no prefix): `wsgi.errors`, captured output.
pub fn write_raw(data: &[u8]) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    match guard.as_ref() {
        Some(logger) => logger
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_line(data),
        None => Sink::Stderr.write_line(data),
    }
}
