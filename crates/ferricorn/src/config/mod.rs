//! Settings: the values of every row of the settings table, built from
//! defaults, then the sources in gunicorn's order (config file,
//! `GUNICORN_CMD_ARGS`, command line), then validated.
//!
//! Invariant: `Settings` holds one value per row of `table::ROWS`, already
//! validated against the row's kind; the typed getters below never fail.
//!
//! gunicorn counterpart: `gunicorn.config.Config` and `Application.load_config`.

pub mod cli;
pub mod doc;
pub mod table;
pub mod value;

use std::path::PathBuf;

pub use table::{Action, Kind, ROWS, Setting};
pub use value::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    #[error("Invalid value for {name}: {value:?}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "Setting {name} ({flag}) is not supported by ferricorn yet; remove it or leave it at its default ({default})"
    )]
    Unsupported {
        name: &'static str,
        flag: String,
        default: String,
    },
}

#[derive(Clone, Debug)]
pub struct Settings {
    values: Vec<Value>,
    /// Which rows were set by a source other than the default.
    set: Vec<bool>,
}

impl Default for Settings {
    fn default() -> Self {
        Self::new()
    }
}

impl Settings {
    /// All rows at their defaults.
    pub fn new() -> Self {
        Settings {
            values: ROWS.iter().map(|r| (r.default)()).collect(),
            set: vec![false; ROWS.len()],
        }
    }

    /// The value of a setting by name. Panics only on a name that is not in
    /// the table, which the getter tests rule out.
    pub fn get(&self, name: &str) -> &Value {
        match table::find(name) {
            Some((i, _)) => &self.values[i],
            None => panic!("unknown setting name {name:?}"),
        }
    }

    pub fn is_set(&self, name: &str) -> bool {
        table::find(name).is_some_and(|(i, _)| self.set[i])
    }

    /// Set a validated value.
    pub fn set_value(&mut self, name: &str, value: Value) -> Result<(), ConfigError> {
        let (i, _) = table::find(name)
            .ok_or_else(|| ConfigError::Usage(format!("unknown setting {name}")))?;
        self.values[i] = value;
        self.set[i] = true;
        Ok(())
    }

    /// Rows in table order with their current values.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Setting, &Value)> {
        ROWS.iter().zip(self.values.iter())
    }

    /// Refuse any unsupported setting that was given a non-default value.
    pub fn check_supported(&self) -> Result<(), ConfigError> {
        for (row, value) in self.iter() {
            if !row.supported && *value != (row.default)() {
                return Err(ConfigError::Unsupported {
                    name: row.name,
                    flag: row
                        .flags
                        .last()
                        .map_or_else(|| row.name.to_string(), |f| f.to_string()),
                    default: (row.default)().to_string(),
                });
            }
        }
        Ok(())
    }

    // ---- typed getters ----

    pub fn bind(&self) -> &[String] {
        self.get("bind").as_list()
    }
    pub fn backlog(&self) -> i32 {
        self.get("backlog").as_int().clamp(0, i32::MAX as i64) as i32
    }
    pub fn workers(&self) -> usize {
        self.get("workers").as_int().max(0) as usize
    }
    pub fn worker_class(&self) -> &str {
        self.get("worker_class").as_str().unwrap_or("sync")
    }
    pub fn threads(&self) -> usize {
        self.get("threads").as_int().max(1) as usize
    }
    pub fn max_requests(&self) -> u64 {
        self.get("max_requests").as_int().max(0) as u64
    }
    pub fn max_requests_jitter(&self) -> u64 {
        self.get("max_requests_jitter").as_int().max(0) as u64
    }
    /// `--max-worker-memory` in MiB (0 disables).
    pub fn max_worker_memory(&self) -> u64 {
        self.get("max_worker_memory").as_int().max(0) as u64
    }
    /// Worker timeout in seconds (0 disables).
    pub fn timeout(&self) -> f64 {
        self.get("timeout").as_f64()
    }
    pub fn graceful_timeout(&self) -> f64 {
        self.get("graceful_timeout").as_f64()
    }
    pub fn keepalive(&self) -> f64 {
        self.get("keepalive").as_f64()
    }
    pub fn limit_request_line(&self) -> usize {
        self.get("limit_request_line").as_int().max(0) as usize
    }
    pub fn limit_request_fields(&self) -> usize {
        self.get("limit_request_fields").as_int().max(0) as usize
    }
    pub fn limit_request_field_size(&self) -> usize {
        self.get("limit_request_field_size").as_int().max(0) as usize
    }
    pub fn chdir(&self) -> Option<PathBuf> {
        self.get("chdir").as_str().map(PathBuf::from)
    }
    pub fn pidfile(&self) -> Option<PathBuf> {
        self.get("pidfile").as_str().map(PathBuf::from)
    }
    pub fn pythonpath(&self) -> Vec<String> {
        self.get("pythonpath")
            .as_str()
            .map(|s| {
                s.split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }
    pub fn raw_env(&self) -> &[String] {
        self.get("raw_env").as_list()
    }
    pub fn accesslog(&self) -> Option<&str> {
        self.get("accesslog").as_str()
    }
    pub fn access_log_format(&self) -> &str {
        self.get("access_log_format").as_str().unwrap_or_default()
    }
    pub fn errorlog(&self) -> &str {
        self.get("errorlog").as_str().unwrap_or("-")
    }
    pub fn loglevel(&self) -> &str {
        self.get("loglevel").as_str().unwrap_or("info")
    }
    pub fn proc_name(&self) -> Option<&str> {
        self.get("proc_name").as_str()
    }
    pub fn wsgi_app(&self) -> Option<&str> {
        self.get("wsgi_app").as_str()
    }
    pub fn preload_app(&self) -> bool {
        self.get("preload_app").as_bool()
    }
}

/// Validate a string from the command line (or `GUNICORN_CMD_ARGS`) for a row.
pub fn parse_cli_value(row: &Setting, raw: &str) -> Result<Value, ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid {
        name: row.name,
        value: raw.to_string(),
        why: why.to_string(),
    };
    Ok(match row.kind {
        Kind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "y" | "on" => Value::Bool(true),
            "false" | "0" | "no" | "n" | "off" => Value::Bool(false),
            _ => return Err(invalid("not a boolean")),
        },
        Kind::Int | Kind::PosInt => {
            let v: i64 = parse_python_int(raw).ok_or_else(|| invalid("not an integer"))?;
            if row.kind == Kind::PosInt && v < 0 {
                return Err(invalid("must be a positive integer"));
            }
            Value::Int(v)
        }
        Kind::Number => {
            if let Some(i) = parse_python_int(raw) {
                if i < 0 {
                    return Err(invalid("must be a positive number"));
                }
                Value::Int(i)
            } else {
                let f: f64 = raw.trim().parse().map_err(|_| invalid("not a number"))?;
                if f.is_nan() || f < 0.0 {
                    return Err(invalid("must be a positive number"));
                }
                Value::Float(f)
            }
        }
        Kind::Str | Kind::OptStr => Value::Str(raw.trim().to_string()),
        Kind::List => Value::List(vec![raw.trim().to_string()]),
        Kind::Hook(_) => return Err(invalid("hooks can only be set in a configuration file")),
        Kind::Choice(choices) => {
            let v = raw.trim().to_ascii_lowercase();
            if !choices.contains(&v.as_str()) {
                return Err(invalid(&format!("must be one of {}", choices.join(", "))));
            }
            Value::Str(v)
        }
    })
}

/// Python's `int(str)`: optional sign, digits, underscores between digits, surrounding whitespace.
fn parse_python_int(raw: &str) -> Option<i64> {
    let s = raw.trim();
    let (neg, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let v: i64 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_getter_reads_a_row() {
        let s = Settings::new();
        // Each getter panics if its row is missing; call them all.
        let _ = (
            s.bind(),
            s.backlog(),
            s.workers(),
            s.worker_class(),
            s.threads(),
        );
        let _ = (
            s.max_requests(),
            s.max_requests_jitter(),
            s.timeout(),
            s.graceful_timeout(),
        );
        let _ = (
            s.keepalive(),
            s.limit_request_line(),
            s.limit_request_fields(),
        );
        let _ = (
            s.limit_request_field_size(),
            s.chdir(),
            s.pidfile(),
            s.pythonpath(),
        );
        let _ = (
            s.raw_env(),
            s.accesslog(),
            s.access_log_format(),
            s.errorlog(),
            s.loglevel(),
        );
        let _ = (s.proc_name(), s.wsgi_app(), s.preload_app());
    }

    #[test]
    fn row_names_are_unique() {
        let mut names: Vec<_> = ROWS.iter().map(|r| r.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }

    #[test]
    fn python_int_rules() {
        assert_eq!(parse_python_int(" 12 "), Some(12));
        assert_eq!(parse_python_int("+3"), Some(3));
        assert_eq!(parse_python_int("-3"), Some(-3));
        assert_eq!(parse_python_int("1_000"), Some(1000));
        assert_eq!(parse_python_int("0x10"), None);
        assert_eq!(parse_python_int(""), None);
        assert_eq!(parse_python_int("1.5"), None);
    }

    #[test]
    fn unsupported_setting_refused_when_changed() {
        let mut s = Settings::new();
        assert!(s.check_supported().is_ok());
        s.set_value("daemon", Value::Bool(true)).unwrap();
        let err = s.check_supported().unwrap_err().to_string();
        assert!(err.contains("daemon"), "{err}");
        assert!(err.contains("not supported"), "{err}");
    }
}
