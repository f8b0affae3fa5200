//! Error and access logging in gunicorn's formats, written from Rust.
//!
//! Error log line: `[YYYY-MM-DD HH:MM:SS +ZZZZ] [PID] [LEVEL] message`.
//! Sinks: `-` (stderr for the error log, stdout for the access log) or a file
//! opened for append; `reopen()` reopens files (USR1, log rotation).
//!
//! Invariant: one `write(2)` per line, so lines from several processes
//! appending to one file never interleave.
//!
//! gunicorn counterpart: `gunicorn/glogging.py` (`Logger`, `CONFIG_DEFAULTS`, `atoms`).

pub mod access;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

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
    access: Option<(Mutex<Sink>, access::Format)>,
}

static LOGGER: RwLock<Option<Logger>> = RwLock::new(None);

/// What the logger needs from the settings.
pub struct LogConfig<'a> {
    pub errorlog: &'a str,
    pub loglevel: &'a str,
    pub accesslog: Option<&'a str>,
    pub access_log_format: &'a str,
}

/// Set up (or replace) the process's logger.
pub fn init(cfg: &LogConfig) -> io::Result<()> {
    let level = Level::parse(cfg.loglevel).unwrap_or(Level::Info);
    let error = Mutex::new(Sink::open(cfg.errorlog, false)?);
    let access = match cfg.accesslog {
        Some(target) => Some((
            Mutex::new(Sink::open(target, true)?),
            access::Format::parse(cfg.access_log_format),
        )),
        None => None,
    };
    let mut guard = LOGGER.write().unwrap_or_else(|e| e.into_inner());
    *guard = Some(Logger {
        level,
        error,
        access,
    });
    Ok(())
}

/// Reopen log files (after rotation).
pub fn reopen() -> io::Result<()> {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(logger) = guard.as_ref() {
        logger
            .error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reopen()?;
        if let Some((sink, _)) = &logger.access {
            sink.lock().unwrap_or_else(|e| e.into_inner()).reopen()?;
        }
    }
    Ok(())
}

pub fn enabled(level: Level) -> bool {
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
    log_forced(level, msg, false);
}

/// Write an error-log line even below the configured level (boot failures).
pub fn log_always(level: Level, msg: &str) {
    log_forced(level, msg, true);
}

fn log_forced(level: Level, msg: &str, force: bool) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
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
    match guard.as_ref() {
        Some(logger) if force || level >= logger.level => {
            logger
                .error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_line(line.as_bytes());
        }
        Some(_) => {}
        None if level >= Level::Info || force => Sink::Stderr.write_line(line.as_bytes()),
        None => {}
    }
}

/// Whether an access log is configured (lets the worker skip collecting the record).
pub fn access_enabled() -> bool {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().is_some_and(|l| l.access.is_some())
}

/// Render and write one access-log line.
pub fn access(record: &access::Record) {
    let guard = LOGGER.read().unwrap_or_else(|e| e.into_inner());
    if let Some(Some((sink, format))) = guard.as_ref().map(|l| l.access.as_ref()) {
        let mut line = Vec::with_capacity(256);
        format.render(record, &mut line);
        line.push(b'\n');
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_line(&line);
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
