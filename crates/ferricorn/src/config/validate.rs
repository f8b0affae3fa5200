//! Validators: turn a value from the command line or a config file into a
//! setting's `Value`, with gunicorn's rules for each `Kind`.
//!
//! Input arrives as `Input`, a plain mirror of the Python value (a config file
//! may hold `workers = "4"`, `bind = "x:1"` or `bind = ["x:1"]`); the command
//! line gives strings already converted by the row's `CliType`. Errors are the
//! "why" part of `ConfigError::Invalid`.
//!
//! gunicorn counterpart: the `validate_*` functions of `gunicorn/config.py`
//! and `auto_int`.

use std::path::{Component, Path, PathBuf};

use super::table::{CliType, Kind, Setting};
use super::value::{Value, py_repr_float, py_repr_str};

/// A value as given, before validation: a mirror of the Python object.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A list, tuple or other sequence.
    Seq(Vec<Input>),
    /// A dict, as its items; `text` is Python's `str()` of it.
    Dict {
        items: Vec<(Input, Input)>,
        text: String,
    },
    /// A class or function object; `text` is `<qualname()>`.
    Callable {
        text: String,
    },
    /// Anything else: Python's `str()` of it and its type name.
    Other {
        text: String,
        type_name: String,
    },
}

impl Input {
    /// Python's `str()` of the value, for messages.
    pub fn text(&self) -> String {
        match self {
            Input::None => "None".into(),
            Input::Bool(b) => if *b { "True" } else { "False" }.into(),
            Input::Int(i) => i.to_string(),
            Input::Float(f) => py_repr_float(*f),
            Input::Str(s) => s.clone(),
            Input::Seq(items) => {
                let items: Vec<String> = items.iter().map(Input::repr).collect();
                format!("[{}]", items.join(", "))
            }
            Input::Dict { text, .. } | Input::Callable { text } | Input::Other { text, .. } => {
                text.clone()
            }
        }
    }

    fn repr(&self) -> String {
        match self {
            Input::Str(s) => py_repr_str(s),
            other => other.text(),
        }
    }

    fn type_name(&self) -> &str {
        match self {
            Input::None => "NoneType",
            Input::Bool(_) => "bool",
            Input::Int(_) => "int",
            Input::Float(_) => "float",
            Input::Str(_) => "str",
            Input::Seq(_) => "list",
            Input::Dict { .. } => "dict",
            Input::Callable { .. } => "type",
            Input::Other { type_name, .. } => type_name,
        }
    }

    /// Python truthiness.
    fn is_truthy(&self) -> bool {
        match self {
            Input::None => false,
            Input::Bool(b) => *b,
            Input::Int(i) => *i != 0,
            Input::Float(f) => *f != 0.0,
            Input::Str(s) => !s.is_empty(),
            Input::Seq(v) => !v.is_empty(),
            Input::Dict { items, .. } => !items.is_empty(),
            Input::Callable { .. } | Input::Other { .. } => true,
        }
    }
}

/// Python's `int(text, base)` for base 10 or 0 (0: `0x`/`0o`/`0b` prefixes,
/// no leading zeros on decimals). Underscores between digits, surrounding
/// whitespace and a sign are allowed.
pub fn parse_python_int(raw: &str, base: u32) -> Option<i64> {
    let s = raw.trim();
    let (neg, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = rest.to_ascii_lowercase();
    let (radix, digits) = if base == 0 {
        match lower.get(..2) {
            Some("0x") => (16, lower[2..].strip_prefix('_').unwrap_or(&lower[2..])),
            Some("0o") => (8, lower[2..].strip_prefix('_').unwrap_or(&lower[2..])),
            Some("0b") => (2, lower[2..].strip_prefix('_').unwrap_or(&lower[2..])),
            _ => (10, lower.as_str()),
        }
    } else {
        (base, lower.as_str())
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c == '_' || c.is_digit(radix))
    {
        return None;
    }
    let clean = digits.replace('_', "");
    if base == 0 && radix == 10 && clean.len() > 1 && clean.starts_with('0') {
        // Base 0 refuses "010" (ambiguous octal) but allows "00".
        if clean.bytes().any(|b| b != b'0') {
            return None;
        }
    }
    let v = i64::from_str_radix(&clean, radix).ok()?;
    Some(if neg { -v } else { v })
}

/// Convert command-line text by the row's argparse `type=`. The error is argparse's.
pub fn convert_cli(row: &Setting, raw: &str) -> Result<Input, String> {
    match row.cli_type {
        CliType::Str => Ok(Input::Str(raw.to_string())),
        CliType::Int => parse_python_int(raw, 10)
            .map(Input::Int)
            .ok_or_else(|| format!("invalid int value: {}", py_repr_str(raw))),
        CliType::AutoInt => {
            let b = raw.as_bytes();
            let text = if b.len() >= 2 && b[0] == b'0' && b[1].is_ascii_digit() {
                format!("0o{}", &raw[1..])
            } else {
                raw.to_string()
            };
            parse_python_int(&text, 0)
                .map(Input::Int)
                .ok_or_else(|| format!("invalid auto_int value: {}", py_repr_str(raw)))
        }
        CliType::Float => raw
            .trim()
            .parse::<f64>()
            .map(Input::Float)
            .map_err(|_| format!("invalid float value: {}", py_repr_str(raw))),
    }
}

/// gunicorn's `util.getcwd`: `$PWD` when it names the current directory (keeps symlinks).
pub fn getcwd() -> String {
    use std::os::unix::fs::MetadataExt;
    let real = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| ".".into());
    if let Ok(pwd) = std::env::var("PWD") {
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&pwd), std::fs::metadata(&real)) {
            if a.ino() == b.ino() && a.dev() == b.dev() {
                return pwd;
            }
        }
    }
    real
}

/// Python's `os.path.abspath(os.path.normpath(path))` relative to `base`, lexically.
pub fn abspath(base: &str, path: &str) -> String {
    let joined = Path::new(base).join(path);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out.to_string_lossy().into_owned()
}

/// `"a, b,,c"` → `["a", "b", "c"]` (gunicorn keeps items that are blank only after stripping).
pub fn split_commas(s: &str) -> Vec<String> {
    if s.is_empty() {
        return Vec::new();
    }
    s.split(',')
        .filter(|v| !v.is_empty())
        .map(|v| v.trim().to_string())
        .collect()
}

/// Python's `ipaddress.ip_network(text)` (strict): an address or address/prefix with no host bits set.
pub fn check_ip_network(text: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "{} does not appear to be an IPv4 or IPv6 network",
            py_repr_str(text)
        )
    };
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
    let (bits, width): (u128, u32) = match ip {
        std::net::IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
        std::net::IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let prefix = match prefix {
        None => width,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= width)
            .ok_or_else(bad)?,
        Some(p) => match (ip, p.parse::<std::net::Ipv4Addr>()) {
            (std::net::IpAddr::V4(_), Ok(mask)) => {
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() != 32 {
                    return Err(bad());
                }
                m.leading_ones()
            }
            _ => return Err(bad()),
        },
    };
    let host_mask: u128 = if prefix >= width {
        0
    } else {
        (1u128 << (width - prefix)) - 1
    };
    if bits & host_mask != 0 {
        return Err(format!("{text} has host bits set"));
    }
    Ok(())
}

/// `validate_statsd_address`: what gunicorn's `parse_address` makes of the text
/// (a path, an fd, or a `(host, port)` tuple, kept as its text).
fn statsd_address(s: &str) -> Result<Value, String> {
    let bad = || "Value must be one of ('host:port', 'unix://PATH')".to_string();
    if let Some(n) = s.strip_prefix("unix:") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Value::Object(format!(
                "('unix', {})",
                n.parse::<i64>().map_err(|_| bad())?
            )));
        }
        let rest = s.rsplit("unix:").next().unwrap_or_default();
        return Ok(Value::Str(
            rest.strip_prefix("//").unwrap_or(rest).to_string(),
        ));
    }
    if let Some(fd) = s.strip_prefix("fd://") {
        return parse_python_int(fd, 10).map(Value::Int).ok_or_else(bad);
    }
    let netloc = s.strip_prefix("tcp://").unwrap_or(s);
    let (host, port) = if netloc.contains('[') && netloc.contains(']') {
        let host = netloc
            .split(']')
            .next()
            .unwrap_or_default()
            .get(1..)
            .unwrap_or_default();
        let port = netloc.split("]:").nth(1).unwrap_or("8125");
        (host.to_string(), port.to_string())
    } else if let Some((h, rest)) = netloc.split_once(':') {
        (
            h.to_string(),
            rest.split(':').next().unwrap_or_default().to_string(),
        )
    } else if netloc.is_empty() {
        ("0.0.0.0".to_string(), "8125".to_string())
    } else {
        (netloc.to_string(), "8125".to_string())
    };
    let port = parse_python_int(&port, 10).ok_or_else(bad)?;
    Ok(Value::Object(format!(
        "({}, {port})",
        py_repr_str(&host.to_lowercase())
    )))
}

/// Where every refusal points: the section of `docs/migrating.md` that
/// lists each setting ferricorn refuses and what to do instead.
pub const REFUSALS_DOC: &str = "docs/migrating.md#settings-ferricorn-refuses";

/// What to do instead of a gunicorn setting ferricorn does not support yet
/// (one clause, appended to the refusal; `docs/migrating.md` says the same).
pub fn instead_of(name: &str) -> &'static str {
    match name {
        "logger_class" => {
            "drop it; shape the logs with logconfig_dict / logconfig / logconfig_json, --access-logformat or a logging.Formatter"
        }
        "ssl_context" => {
            "ferricorn serves TLS with rustls and cannot use an ssl.SSLContext: say what the hook did with certfile, keyfile, ca_certs, cert_reqs and ciphers (TLS 1.2 is the minimum version already) — docs/tls.md"
        }
        "protocol" | "uwsgi_allow_ips" => {
            "only HTTP is spoken: let the front server proxy HTTP to ferricorn (nginx: proxy_pass instead of uwsgi_pass)"
        }
        "http_protocols"
        | "http2_cleartext"
        | "http2_max_concurrent_streams"
        | "http2_initial_window_size"
        | "http2_max_frame_size"
        | "http2_max_header_list_size" => {
            "HTTP/2 is not supported yet: leave http_protocols at h1 and let a front proxy speak HTTP/2 to clients"
        }
        "dirty_apps"
        | "dirty_workers"
        | "dirty_timeout"
        | "dirty_threads"
        | "dirty_graceful_timeout"
        | "on_dirty_starting"
        | "dirty_post_fork"
        | "dirty_worker_init"
        | "dirty_worker_exit" => {
            "dirty app pools are not supported yet: run that work in a separate service or task queue"
        }
        _ => "drop it",
    }
}

/// `--worker-class NAME` as one of the classes ferricorn implements
/// (`sync`, `gthread`, `evloop`), by every spelling gunicorn accepts for
/// them; otherwise why it cannot run, with what to use instead.
pub fn worker_class(name: &str) -> Result<&'static str, String> {
    worker_class_in(name, &[])
}

/// [`worker_class`], knowing what a Python worker class inherits from
/// (`module.QualName` of each base, nearest first; empty when it could not be
/// imported): a subclass of an ASGI or greenlet worker is refused for that
/// reason, so the advice does not point an ASGI app at a WSGI worker.
pub fn worker_class_in(name: &str, bases: &[String]) -> Result<&'static str, String> {
    match name {
        "sync" | "egg:gunicorn#sync" | "gunicorn.workers.sync.SyncWorker" => return Ok("sync"),
        "gthread" | "egg:gunicorn#gthread" | "gunicorn.workers.gthread.ThreadWorker" => {
            return Ok("gthread");
        }
        "evloop" => return Ok("evloop"),
        _ => {}
    }
    if ASGI_ALIASES.contains(&name) {
        return Ok("asgi");
    }
    let mut subclasses = ASGI_SUBCLASSES.lock().unwrap_or_else(|e| e.into_inner());
    if subclasses.iter().any(|s| s == name) {
        return Ok("asgi");
    }
    if bases.iter().any(|b| ASGI_ALIASES.contains(&b.as_str())) {
        // Remembered for the workers, which resolve the name without its bases.
        subclasses.push(name.to_string());
        return Ok("asgi");
    }
    drop(subclasses);
    let kind = |n: &str| {
        let lower = n.to_ascii_lowercase();
        if lower.contains("uvicorn") || lower.contains("asgi") {
            Some(WorkerKind::Asgi)
        } else if ["gevent", "eventlet", "tornado"]
            .iter()
            .any(|k| lower.contains(k))
        {
            Some(WorkerKind::Greenlet)
        } else {
            None
        }
    };
    let (found, via) = match kind(name) {
        Some(k) => (Some(k), None),
        None => bases
            .iter()
            .find_map(|b| kind(b).map(|k| (Some(k), Some(b.as_str()))))
            .unwrap_or((None, None)),
    };
    let why = match found {
        Some(WorkerKind::Asgi) => {
            "ferricorn serves ASGI apps with -k asgi (uvicorn.workers.UvicornWorker and gunicorn.workers.gasgi.ASGIWorker are accepted as the same class); this name is none of them"
        }
        Some(WorkerKind::Greenlet) => {
            "ferricorn has no greenlet/tornado event-loop workers; for a WSGI app use -k gthread --threads N for concurrency, or -k evloop for many keep-alive clients of a fast app"
        }
        None => {
            "ferricorn does not load Python worker classes; use -k sync, -k gthread --threads N for concurrency, or -k evloop for many keep-alive clients of a fast app"
        }
    };
    let via = via.map_or_else(String::new, |b| format!(" (a subclass of {b})"));
    Err(format!(
        "Worker class {name:?} (worker_class){via} is not available: {why} (see {REFUSALS_DOC})"
    ))
}

/// What a worker class's `CONFIG_KWARGS` set (`setting=value`) and left
/// unapplied (uvicorn keywords without a ferricorn meaning), for the INFO
/// line at start.
static WORKER_KWARGS: std::sync::Mutex<(Vec<String>, Vec<String>)> =
    std::sync::Mutex::new((Vec::new(), Vec::new()));

/// Record what [`crate::config::pyfile`] made of a worker class's `CONFIG_KWARGS`.
pub fn note_worker_kwargs(applied: &[String], ignored: &[String]) {
    *WORKER_KWARGS.lock().unwrap_or_else(|e| e.into_inner()) = (applied.to_vec(), ignored.to_vec());
}

/// What [`note_worker_kwargs`] recorded.
pub fn worker_kwargs() -> (Vec<String>, Vec<String>) {
    WORKER_KWARGS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// Python worker classes found (by their bases) to subclass an ASGI worker.
static ASGI_SUBCLASSES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The names an ASGI worker class goes by in gunicorn 27 and uvicorn
/// configurations; ferricorn's `asgi` worker serves them all (a Python
/// subclass of one of them too, see [`worker_class_in`]).
pub const ASGI_ALIASES: &[&str] = &[
    "asgi",
    "egg:gunicorn#asgi",
    "gunicorn.workers.gasgi.ASGIWorker",
    "uvicorn.workers.UvicornWorker",
    "uvicorn.workers.UvicornH11Worker",
    "uvicorn_worker.UvicornWorker",
    "uvicorn_worker.UvicornH11Worker",
];

#[derive(Clone, Copy)]
enum WorkerKind {
    Asgi,
    Greenlet,
}

fn not_a_string(v: &Input) -> String {
    format!("Not a string: {}", v.text())
}

/// `validate_string`: None stays None, strings are stripped.
fn string(v: Input) -> Result<Option<String>, String> {
    match v {
        Input::None => Ok(None),
        Input::Str(s) => Ok(Some(s.trim().to_string())),
        other => Err(not_a_string(&other)),
    }
}

fn opt_str(v: Option<String>) -> Value {
    v.map_or(Value::None, Value::Str)
}

/// `validate_pos_int` without the sign check.
fn integer(v: Input) -> Result<i64, String> {
    match v {
        Input::Bool(b) => Ok(i64::from(b)),
        Input::Int(i) => Ok(i),
        Input::Str(s) => parse_python_int(&s, 0)
            .ok_or_else(|| format!("invalid literal for int() with base 0: {}", py_repr_str(&s))),
        _ => Err("int() can't convert non-string with explicit base".into()),
    }
}

fn pos_int(v: Input) -> Result<i64, String> {
    let i = integer(v)?;
    if i < 0 {
        return Err(format!("Value must be positive: {i}"));
    }
    Ok(i)
}

/// A non-negative finite number (Python's `float()` of it).
fn pos_float(v: Input) -> Result<f64, String> {
    let f = match v {
        Input::Bool(b) => f64::from(u8::from(b)),
        Input::Int(i) => i as f64,
        Input::Float(f) => f,
        Input::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("could not convert string to float: {}", py_repr_str(&s)))?,
        other => {
            return Err(format!(
                "float() argument must be a string or a real number, not '{}'",
                other.type_name()
            ));
        }
    };
    if !f.is_finite() || f < 0.0 {
        return Err(format!(
            "Value must be a positive number of seconds: {}",
            py_repr_float(f)
        ));
    }
    Ok(f)
}

fn list_str(v: Input) -> Result<Vec<String>, String> {
    if !v.is_truthy() {
        return Ok(Vec::new());
    }
    let items = match v {
        Input::Str(s) => return Ok(vec![s.trim().to_string()]),
        Input::Seq(items) => items,
        Input::Dict { items, .. } => items.into_iter().map(|(k, _)| k).collect(),
        other => return Err(format!("'{}' object is not iterable", other.type_name())),
    };
    items
        .into_iter()
        .map(|i| match i {
            Input::Str(s) => Ok(s.trim().to_string()),
            other => Err(not_a_string(&other)),
        })
        .collect()
}

fn str_to_list(v: Input) -> Result<Vec<String>, String> {
    Ok(string(v)?.map(|s| split_commas(&s)).unwrap_or_default())
}

/// A lowercase, stripped string that must be one of `choices`.
fn choice(v: Input, choices: &[&str], what: &str) -> Result<String, String> {
    let Input::Str(s) = v else {
        return Err(format!("Invalid type for casting: {}", v.text()));
    };
    let s = s.trim().to_ascii_lowercase();
    if choices.contains(&s.as_str()) {
        Ok(s)
    } else {
        Err(format!(
            "Invalid {what}: {s} (expected one of: {})",
            choices.join(", ")
        ))
    }
}

fn user_or_group(
    v: Input,
    what: &str,
    lookup: fn(&str) -> Option<i64>,
    own: fn() -> Value,
) -> Result<Value, String> {
    match v {
        Input::None => Ok(own()),
        Input::Int(i) => Ok(Value::Int(i)),
        Input::Bool(b) => Ok(Value::Bool(b)),
        Input::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<i64>().map(Value::Int).map_err(|e| e.to_string())
        }
        Input::Str(s) => lookup(&s)
            .map(Value::Int)
            .ok_or_else(|| format!("No such {what}: '{s}'")),
        other => Err(format!(
            "'{}' object has no attribute 'isdigit'",
            other.type_name()
        )),
    }
}

fn lookup_user(name: &str) -> Option<i64> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| i64::from(u.uid.as_raw()))
}

fn lookup_group(name: &str) -> Option<i64> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| i64::from(g.gid.as_raw()))
}

/// The log levels `loglevel` accepts, compared case-insensitively.
pub const LOG_LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

/// Validate `v` for `row`. Hooks are validated by `pyfile` (they need Python).
pub fn validate(row: &Setting, v: Input) -> Result<Value, String> {
    let value = validate_kind(row, v)?;
    // Deliberate difference (docs/compat.md): gunicorn takes any string and
    // quietly logs at info; a typo here is refused.
    if row.name == "loglevel" {
        if let Value::Str(level) = &value {
            if !LOG_LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(format!(
                    "unknown log level; use one of {}",
                    LOG_LEVELS.join(", ")
                ));
            }
        }
    }
    Ok(value)
}

fn validate_kind(row: &Setting, v: Input) -> Result<Value, String> {
    Ok(match row.kind {
        Kind::Bool => match v {
            Input::None => Value::None,
            Input::Bool(b) => Value::Bool(b),
            Input::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("Invalid boolean: {s}")),
            },
            other => return Err(format!("Invalid type for casting: {}", other.text())),
        },
        Kind::PosInt => Value::Int(pos_int(v)?),
        Kind::PosFloat => match v {
            Input::None => Value::None,
            v => Value::Float(pos_float(v)?),
        },
        Kind::Http2Window => {
            let i = pos_int(v)?;
            if i > (1 << 31) - 1 {
                return Err(format!(
                    "HTTP/2 window size must be at most 2147483647: {i}"
                ));
            }
            Value::Int(i)
        }
        Kind::Http2Streams => {
            let i = pos_int(v)?;
            if i < 1 {
                return Err(format!(
                    "HTTP/2 max concurrent streams must be at least 1: {i}"
                ));
            }
            Value::Int(i)
        }
        Kind::Http2Frame => {
            let i = integer(v)?;
            if !(16384..=16_777_215).contains(&i) {
                return Err(format!(
                    "http2_max_frame_size must be between 16384 and 16777215, got {i}"
                ));
            }
            Value::Int(i)
        }
        Kind::Str => opt_str(string(v)?),
        Kind::ListStr => Value::List(list_str(v)?),
        Kind::FilesOrPatterns => {
            let items = list_str(v)?;
            for item in &items {
                let glob = item.contains(['*', '?', '[']);
                if !glob && !Path::new(item).exists() {
                    return Err(format!("File {item} does not exists."));
                }
            }
            Value::List(items)
        }
        Kind::StrToList => Value::List(str_to_list(v)?),
        Kind::AddrList => {
            let items = str_to_list(v)?;
            for item in items.iter().filter(|i| *i != "*") {
                check_ip_network(item)?;
            }
            Value::List(items)
        }
        Kind::Dict => match v {
            Input::Dict { items, text } => {
                let pairs: Option<Vec<(String, String)>> = items
                    .into_iter()
                    .map(|(k, v)| match (k, v) {
                        (Input::Str(k), Input::Str(v)) => Some((k, v)),
                        _ => None,
                    })
                    .collect();
                pairs.map_or(Value::Object(text), Value::Map)
            }
            other => return Err(format!("Value is not a dictionary: {} ", other.text())),
        },
        Kind::Class => match v {
            Input::Callable { text } => Value::Object(text),
            other => opt_str(string(other)?),
        },
        Kind::Hook(_) | Kind::PostRequestHook => {
            return Err("server hooks can only be set in a configuration file".into());
        }
        Kind::User => user_or_group(v, "user", lookup_user, || {
            Value::Int(i64::from(nix::unistd::geteuid().as_raw()))
        })?,
        Kind::Group => user_or_group(v, "group", lookup_group, || {
            Value::Int(i64::from(nix::unistd::getegid().as_raw()))
        })?,
        Kind::Chdir => {
            let given = string(v)?.unwrap_or_default();
            let path = abspath(&getcwd(), &given);
            if !Path::new(&path).exists() {
                return Err(format!("can't chdir to {}", py_repr_str(&given)));
            }
            Value::Str(path)
        }
        Kind::StatsdAddr => match string(v)? {
            None => Value::None,
            Some(s) => statsd_address(&s)?,
        },
        Kind::ReloadEngine => match v {
            Input::Str(s) if ["auto", "poll", "inotify"].contains(&s.as_str()) => Value::Str(s),
            other => {
                return Err(format!(
                    "Invalid reload_engine: {} (expected auto, poll or inotify)",
                    other.repr()
                ));
            }
        },
        Kind::SslVersion => match v {
            Input::Int(i) => Value::Int(i),
            Input::Str(s) => Value::Str(s),
            Input::None => Value::None,
            other => Value::Object(other.text()),
        },
        Kind::ProxyProtocol => match v {
            Input::None | Input::Bool(false) => Value::Str("off".into()),
            Input::Bool(true) => Value::Str("auto".into()),
            Input::Str(s) => Value::Str(
                match s.trim().to_ascii_lowercase().as_str() {
                    "false" | "off" | "0" | "none" => "off",
                    "true" | "auto" | "1" => "auto",
                    "v1" => "v1",
                    "v2" => "v2",
                    _ => return Err("proxy_protocol must be: off, v1, v2, or auto".into()),
                }
                .into(),
            ),
            _ => return Err("proxy_protocol must be string or bool".into()),
        },
        Kind::Http2Cleartext => match v {
            Input::None | Input::Bool(false) => Value::Str("off".into()),
            Input::Bool(true) => Value::Str("prior-knowledge".into()),
            other => Value::Str(choice(
                other,
                &["off", "prior-knowledge", "upgrade", "both"],
                "http2_cleartext",
            )?),
        },
        Kind::HttpProtocols => match v {
            Input::None => Value::List(vec!["h1".into()]),
            Input::Str(s) => {
                let protocols: Vec<String> = s
                    .split(',')
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect();
                if protocols.is_empty() {
                    return Ok(Value::List(vec!["h1".into()]));
                }
                for p in &protocols {
                    if p != "h1" && p != "h2" {
                        return Err(format!("Invalid protocol '{p}'. Valid protocols: h1, h2"));
                    }
                }
                if protocols.len() == 2 && protocols[0] == protocols[1] {
                    return Err("Duplicate protocols specified".into());
                }
                if protocols.len() > 2 {
                    return Err("Duplicate protocols specified".into());
                }
                Value::List(protocols)
            }
            _ => return Err("http_protocols must be a string".into()),
        },
        Kind::HeaderMap => match v {
            Input::None => Value::None,
            other => Value::Str(choice(
                other,
                &["drop", "refuse", "dangerous"],
                "header map behaviour",
            )?),
        },
        Kind::AsgiLoop => match v {
            Input::None => Value::Str("auto".into()),
            other => Value::Str(choice(other, &["auto", "asyncio", "uvloop"], "ASGI loop")?),
        },
        Kind::AsgiLifespan => match v {
            Input::None => Value::Str("auto".into()),
            other => Value::Str(choice(other, &["auto", "on", "off"], "ASGI lifespan")?),
        },
        Kind::HttpParser => match v {
            Input::None => Value::Str("auto".into()),
            other => Value::Str(choice(other, &["auto", "fast", "python"], "http_parser")?),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::table::find;

    fn row(name: &str) -> &'static Setting {
        find(name).unwrap().1
    }

    #[test]
    fn python_int_rules() {
        assert_eq!(parse_python_int(" 12 ", 10), Some(12));
        assert_eq!(parse_python_int("+3", 10), Some(3));
        assert_eq!(parse_python_int("-3", 10), Some(-3));
        assert_eq!(parse_python_int("1_000", 10), Some(1000));
        assert_eq!(parse_python_int("010", 10), Some(10));
        assert_eq!(parse_python_int("0x10", 10), None);
        assert_eq!(parse_python_int("0x10", 0), Some(16));
        assert_eq!(parse_python_int("0o17", 0), Some(15));
        assert_eq!(parse_python_int("010", 0), None);
        assert_eq!(parse_python_int("00", 0), Some(0));
        assert_eq!(parse_python_int("", 10), None);
        assert_eq!(parse_python_int("1.5", 10), None);
    }

    #[test]
    fn auto_int_reads_octal() {
        assert_eq!(convert_cli(row("umask"), "022"), Ok(Input::Int(0o22)));
        assert_eq!(convert_cli(row("umask"), "0x1f"), Ok(Input::Int(31)));
        assert!(convert_cli(row("workers"), "0x1f").is_err());
    }

    #[test]
    fn validators_follow_gunicorn() {
        let v = |name: &str, i: Input| validate(row(name), i);
        assert_eq!(v("workers", Input::Str("0x10".into())), Ok(Value::Int(16)));
        assert!(
            v("workers", Input::Int(-1))
                .unwrap_err()
                .contains("positive")
        );
        assert!(v("workers", Input::Float(1.5)).is_err());
        assert_eq!(
            v("daemon", Input::Str(" TRUE ".into())),
            Ok(Value::Bool(true))
        );
        assert!(v("daemon", Input::Str("yes".into())).is_err());
        assert_eq!(
            v("bind", Input::Str(" a:1 ".into())),
            Ok(Value::List(vec!["a:1".into()]))
        );
        assert_eq!(v("bind", Input::None), Ok(Value::List(vec![])));
        assert_eq!(
            v("forwarder_headers", Input::Str("A, B,,C".into())),
            Ok(Value::List(vec!["A".into(), "B".into(), "C".into()]))
        );
        assert!(v("forwarded_allow_ips", Input::Str("10.0.0.1/8".into())).is_err());
        assert!(
            v(
                "forwarded_allow_ips",
                Input::Str("10.0.0.0/8, *, ::1".into())
            )
            .is_ok()
        );
        assert_eq!(
            v("proxy_protocol", Input::Str("TRUE".into())),
            Ok(Value::Str("auto".into()))
        );
        assert_eq!(
            v("http_protocols", Input::Str("H2, h1".into())),
            Ok(Value::List(vec!["h2".into(), "h1".into()]))
        );
        assert!(v("http_protocols", Input::Str("h1,h1".into())).is_err());
        assert!(v("http2_max_frame_size", Input::Int(100)).is_err());
        assert_eq!(v("user", Input::Str("0".into())), Ok(Value::Int(0)));
        assert!(v("user", Input::Str("no-such-user-xyz".into())).is_err());
        assert!(v("chdir", Input::Str("/no/such/dir".into())).is_err());
        assert_eq!(
            v("chdir", Input::Str("/tmp/../tmp/".into())),
            Ok(Value::Str("/tmp".into()))
        );
    }

    #[test]
    fn statsd_addresses_render_like_gunicorn() {
        let v = |s: &str| validate(row("statsd_host"), Input::Str(s.into())).map(|v| v.to_string());
        assert_eq!(v("Localhost:9125"), Ok("('localhost', 9125)".into()));
        assert_eq!(v("localhost"), Ok("('localhost', 8125)".into()));
        assert_eq!(v("unix:///tmp/s"), Ok("/tmp/s".into()));
        assert_eq!(v("unix:8125"), Ok("('unix', 8125)".into()));
        assert!(v("host:port").is_err());
    }

    #[test]
    fn seconds_are_non_negative_finite_floats_or_none() {
        let v = |i: Input| validate(row("websocket_ping_interval"), i);
        assert_eq!(v(Input::None), Ok(Value::None));
        assert_eq!(v(Input::Int(2)), Ok(Value::Float(2.0)));
        assert_eq!(v(Input::Str(" 0.25 ".into())), Ok(Value::Float(0.25)));
        assert!(v(Input::Float(-0.5)).unwrap_err().contains("positive"));
        assert!(v(Input::Float(f64::INFINITY)).is_err());
        assert!(v(Input::Float(f64::NAN)).is_err());
        assert!(v(Input::Str("soon".into())).is_err());
        let cli = row("websocket_ping_timeout");
        assert_eq!(convert_cli(cli, "1.5"), Ok(Input::Float(1.5)));
        assert!(convert_cli(cli, "x").is_err());
    }

    #[test]
    fn unknown_log_level_is_refused() {
        assert!(validate(row("loglevel"), Input::Str("verbose".into())).is_err());
        assert_eq!(
            validate(row("loglevel"), Input::Str(" DEBUG ".into())),
            Ok(Value::Str("DEBUG".into()))
        );
    }

    #[test]
    fn ip_networks() {
        assert!(check_ip_network("127.0.0.1").is_ok());
        assert!(check_ip_network("10.0.0.0/255.0.0.0").is_ok());
        assert!(check_ip_network("fd00::/8").is_ok());
        assert!(check_ip_network("fd00::1/8").is_err());
        assert!(check_ip_network("nope").is_err());
    }
}
