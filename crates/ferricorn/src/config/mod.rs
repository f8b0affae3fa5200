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
pub mod pyfile;
pub mod table;
pub mod validate;
pub mod value;

use std::path::PathBuf;

pub use table::{Action, CliType, Kind, ROWS, Setting};
pub use validate::{Input, parse_python_int};
pub use value::Value;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A command-line mistake (argparse's usage errors).
    #[error("{0}")]
    Usage(String),
    #[error("Invalid value for {name}: {value}: {why}")]
    Invalid {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error(
        "Setting {name} ({flag}) is not supported by ferricorn yet; remove it or leave it at its default ({default}): {}",
        validate::instead_of(name)
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

    /// Set an already validated value.
    pub fn set_value(&mut self, name: &str, value: Value) -> Result<(), ConfigError> {
        let (i, _) = table::find(name)
            .ok_or_else(|| ConfigError::Usage(format!("unknown setting {name}")))?;
        self.values[i] = value;
        self.set[i] = true;
        Ok(())
    }

    /// Validate `input` with the row's validator and set it (gunicorn's `Config.set`).
    pub fn apply(&mut self, row: &'static Setting, input: Input) -> Result<(), ConfigError> {
        let text = input.text();
        let value = validate::validate(row, input).map_err(|why| ConfigError::Invalid {
            name: row.name,
            value: text,
            why,
        })?;
        self.set_value(row.name, value)
    }

    /// Rows in table order with their current values.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Setting, &Value)> {
        ROWS.iter().zip(self.values.iter())
    }

    /// Every reason ferricorn cannot run this configuration, one line each,
    /// so one start-up (or `--check-config`) names them all: each
    /// unsupported setting given a non-default value, then a worker class
    /// ferricorn does not have. Each line says what to do instead; with more
    /// than one, a last line counts them.
    pub fn refusals(&self) -> Vec<String> {
        self.refusals_with(&[])
    }

    /// [`Settings::refusals`], knowing the bases of a Python worker class
    /// (see [`validate::worker_class_in`]).
    pub fn refusals_with(&self, worker_bases: &[String]) -> Vec<String> {
        let mut out: Vec<String> = self
            .iter()
            .filter(|(row, value)| !row.supported && **value != (row.default)())
            .map(|(row, _)| {
                ConfigError::Unsupported {
                    name: row.name,
                    flag: row
                        .flags
                        .last()
                        .map_or_else(|| "config file".to_string(), |f| f.to_string()),
                    default: (row.default)().to_string(),
                }
                .to_string()
            })
            .collect();
        if let Err(why) = validate::worker_class_in(self.worker_class(), worker_bases) {
            out.push(why);
        }
        if out.len() > 1 {
            out.push(format!(
                "ferricorn cannot run this configuration ({} reasons); see {}",
                out.len(),
                validate::REFUSALS_DOC
            ));
        }
        out
    }

    /// `--print-config`: every setting sorted by name, `name` padded, ` = `,
    /// the value as gunicorn renders it.
    pub fn render(&self) -> String {
        let width = ROWS.iter().map(|r| r.name.len()).max().unwrap_or(0);
        let mut rows: Vec<_> = self
            .iter()
            .filter(|(r, v)| !table::FERRICORN_ONLY.contains(&r.name) || **v != (r.default)())
            .collect();
        rows.sort_by_key(|(r, _)| r.name);
        let mut out = String::new();
        for (row, value) in rows {
            out.push_str(&format!("{:width$} = {value}\n", row.name));
        }
        out
    }

    /// gunicorn's `Current configuration:` debug dump: `  name: value` per
    /// setting, in the table's order (gunicorn's definition order).
    pub fn render_current(&self) -> String {
        let rows: Vec<String> = self
            .iter()
            .filter(|(r, v)| !table::FERRICORN_ONLY.contains(&r.name) || **v != (r.default)())
            .map(|(r, v)| format!("  {}: {v}", r.name))
            .collect();
        rows.join("\n")
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
    /// The worker class as gunicorn names it in `Using worker:` and
    /// `cfg.worker_class_str`: a sync class with more than one thread is
    /// `gthread`, anything else the setting as given.
    pub fn worker_class_str(&self) -> &str {
        let class = self.worker_class();
        if (class == "sync" || class.ends_with("SyncWorker")) && self.threads() > 1 {
            "gthread"
        } else {
            class
        }
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
    pub fn logconfig(&self) -> Option<&str> {
        self.get("logconfig").as_str()
    }
    pub fn logconfig_json(&self) -> Option<&str> {
        self.get("logconfig_json").as_str()
    }
    /// `logconfig_dict` as Python literal text, `None` when empty (unset).
    pub fn logconfig_dict(&self) -> Option<String> {
        match self.get("logconfig_dict") {
            Value::Map(pairs) if pairs.is_empty() => None,
            Value::None => None,
            v => Some(v.to_string()),
        }
    }
    pub fn capture_output(&self) -> bool {
        self.get("capture_output").as_bool()
    }
    pub fn syslog(&self) -> bool {
        self.get("syslog").as_bool()
    }
    pub fn syslog_addr(&self) -> &str {
        self.get("syslog_addr").as_str().unwrap_or_default()
    }
    pub fn syslog_prefix(&self) -> Option<&str> {
        self.get("syslog_prefix").as_str()
    }
    pub fn syslog_facility(&self) -> &str {
        self.get("syslog_facility").as_str().unwrap_or("user")
    }
    pub fn disable_redirect_access_to_syslog(&self) -> bool {
        self.get("disable_redirect_access_to_syslog").as_bool()
    }
    /// `HOST:PORT` or `unix://PATH`, from the value as gunicorn stores it
    /// (a `('host', port)` tuple or a socket path).
    pub fn statsd_host(&self) -> Option<String> {
        match self.get("statsd_host") {
            Value::Str(path) => Some(format!("unix://{path}")),
            Value::Object(tuple) => {
                let inner = tuple.trim_start_matches('(').trim_end_matches(')');
                let (host, port) = inner.rsplit_once(", ")?;
                Some(format!("{}:{}", host.trim_matches('\''), port.trim()))
            }
            _ => None,
        }
    }
    pub fn statsd_prefix(&self) -> &str {
        self.get("statsd_prefix").as_str().unwrap_or_default()
    }
    pub fn dogstatsd_tags(&self) -> &str {
        self.get("dogstatsd_tags").as_str().unwrap_or_default()
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
        let _ = (
            s.capture_output(),
            s.syslog(),
            s.syslog_addr(),
            s.syslog_prefix(),
        );
        let _ = (s.syslog_facility(), s.disable_redirect_access_to_syslog());
        let _ = (s.statsd_host(), s.statsd_prefix(), s.dogstatsd_tags());
        let _ = (s.logconfig(), s.logconfig_json());
    }

    #[test]
    fn every_gunicorn_setting_has_a_row() {
        assert_eq!(ROWS.len(), 120 + table::FERRICORN_ONLY.len());
    }

    #[test]
    fn print_config_pads_and_sorts() {
        let out = Settings::new().render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 120);
        assert_eq!(
            lines[0],
            format!(
                "{:34} = {}",
                "access_log_format",
                (table::find("access_log_format").unwrap().1.default)()
            )
        );
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        assert!(
            out.contains("\nworkers                            = 1\n")
                || std::env::var_os("WEB_CONCURRENCY").is_some()
        );
        assert!(out.contains("on_starting                        = <OnStarting.on_starting()>\n"));
    }

    #[test]
    fn apply_validates_and_names_the_setting() {
        let mut s = Settings::new();
        let row = table::find("workers").unwrap().1;
        let err = s.apply(row, Input::Int(-2)).unwrap_err().to_string();
        assert!(
            err.contains("workers") && err.contains("-2") && err.contains("positive"),
            "{err}"
        );
        s.apply(row, Input::Str("3".into())).unwrap();
        assert_eq!(s.workers(), 3);
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
    fn every_refusal_reported_at_once() {
        let mut s = Settings::new();
        for (name, input) in [
            ("logger_class", Input::Str("my.Logger".into())),
            ("protocol", Input::Str("uwsgi".into())),
            ("uwsgi_allow_ips", Input::Str("10.0.0.1".into())),
            ("worker_class", Input::Str("gevent".into())),
        ] {
            s.apply(table::find(name).unwrap().1, input).unwrap();
        }
        let lines = s.refusals();
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].starts_with("Setting logger_class (--logger-class) is not supported"));
        assert!(lines[1].contains("protocol") && lines[1].contains("only HTTP"));
        assert!(lines[2].contains("uwsgi_allow_ips"));
        assert!(lines[3].contains("\"gevent\"") && lines[3].contains("-k gthread"));
        assert!(lines[4].contains("4 reasons") && lines[4].contains("migrating.md"));
        assert!(Settings::new().refusals().is_empty());
        let mut one = Settings::new();
        one.set_value("dirty_workers", Value::Int(2)).unwrap();
        assert_eq!(one.refusals().len(), 1, "a single reason needs no summary");
    }

    #[test]
    fn logger_class_refusal_says_why() {
        let mut s = Settings::new();
        s.set_value("logger_class", Value::Str("my.Logger".into()))
            .unwrap();
        let lines = s.refusals();
        assert!(lines[0].contains("Setting logger_class (--logger-class) is not supported"));
        assert!(lines[0].contains("logconfig_dict"), "{lines:?}");
    }

    #[test]
    fn small_settings_gunicorn_accepts_are_accepted() {
        let mut s = Settings::new();
        for (name, value) in [
            ("tmp_upload_dir", Value::Str("/tmp".into())),
            ("http_parser", Value::Str("python".into())),
            ("spew", Value::Bool(true)),
            ("reload", Value::Bool(true)),
            ("reuse_port", Value::Bool(true)),
            ("control_socket", Value::Str("/tmp/x.ctl".into())),
        ] {
            s.set_value(name, value).unwrap();
        }
        assert!(s.refusals().is_empty(), "{:?}", s.refusals());
    }
}
