//! Loading the whole configuration: defaults, the Python config file, the
//! `*_CMD_ARGS` environment variables and the command line, in gunicorn's
//! order, into plain `Settings` plus the server hooks the user set.
//!
//! Order (later wins): env-derived defaults (`PORT`, `WEB_CONCURRENCY`,
//! `FORWARDED_ALLOW_IPS`); the config file (`-c` on the command line, else `-c`
//! in `GUNICORN_CMD_ARGS`/`FERRICORN_CMD_ARGS`, else `./ferricorn.conf.py` or
//! `./gunicorn.conf.py` when present); `GUNICORN_CMD_ARGS`;
//! `FERRICORN_CMD_ARGS`; the command line.
//!
//! Invariants: `load` restores and keeps nothing between calls, so HUP can call
//! it again to reload from scratch; the only side effects are executing the
//! config file (in the master, under the GIL) and `sys.modules['__config__']`.
//! Settings stay plain Rust values; hooks are returned separately.
//!
//! gunicorn counterpart: `Application.load_config`,
//! `load_config_from_module_name_or_filename`, `WSGIApplication.init`.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use super::cli::{self, Parsed};
use super::table::{self, Kind};
use super::validate::Input;
use super::{ConfigError, Settings, Value};

/// Everything start-up (and HUP) needs from the configuration.
pub struct Loaded {
    pub settings: Settings,
    /// Server hooks set by the user (config file), by setting name. Hooks left
    /// at gunicorn's no-op default are not listed.
    pub hooks: Vec<(&'static str, Py<PyAny>)>,
    /// The application to load: the positional argument, else `wsgi_app`.
    pub app_spec: Option<String>,
    /// `logconfig_dict` as the config file holds it, handed to
    /// `logging.config.dictConfig` as is (it may name formatter and handler
    /// classes by the class objects themselves); `settings` keeps its text.
    pub logconfig_dict: Option<Py<PyAny>>,
}

/// Why loading stopped. Each carries the complete text to show.
#[derive(Debug)]
pub enum LoadFailure {
    /// `--help` / `--version`: print to stdout and exit 0.
    Info(String),
    /// A command-line mistake: print with the usage line, exit 2.
    Usage(String),
    /// A bad configuration: print as `Error: ...`, exit 1.
    Config(String),
    /// Settings ferricorn does not implement were changed, or the worker
    /// class is not one of ferricorn's: one `Error: ...` line per reason, exit 2.
    Unsupported(String),
}

impl From<ConfigError> for LoadFailure {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Usage(m) => LoadFailure::Usage(m),
            e @ ConfigError::Unsupported { .. } => LoadFailure::Unsupported(e.to_string()),
            other => LoadFailure::Config(other.to_string()),
        }
    }
}

pub const USAGE: &str = "usage: ferricorn [OPTIONS] [APP_MODULE]";

/// The environment variables holding extra arguments, applied in this order.
pub const ENV_ARGS: [&str; 2] = ["GUNICORN_CMD_ARGS", "FERRICORN_CMD_ARGS"];

fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("ferricorn._config")?.getattr(name)
}

fn py_err(py: Python<'_>, e: &PyErr) -> String {
    e.value(py).to_string()
}

/// Mirror a Python value as an `Input` for the validators.
fn to_input(v: &Bound<'_, PyAny>) -> Input {
    if v.is_none() {
        return Input::None;
    }
    if let Ok(b) = v.cast::<PyBool>() {
        return Input::Bool(b.is_true());
    }
    let text = || v.str().map(|s| s.to_string()).unwrap_or_default();
    if v.cast::<PyInt>().is_ok() {
        return match v.extract::<i64>() {
            Ok(i) => Input::Int(i),
            Err(_) => Input::Other {
                text: text(),
                type_name: "int".into(),
            },
        };
    }
    if let Ok(f) = v.cast::<PyFloat>() {
        return Input::Float(f.value());
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Input::Str(s.to_string());
    }
    if let Ok(l) = v.cast::<PyList>() {
        return Input::Seq(l.iter().map(|i| to_input(&i)).collect());
    }
    if let Ok(t) = v.cast::<PyTuple>() {
        return Input::Seq(t.iter().map(|i| to_input(&i)).collect());
    }
    if let Ok(d) = v.cast::<PyDict>() {
        return Input::Dict {
            items: d
                .iter()
                .map(|(k, v)| (to_input(&k), to_input(&v)))
                .collect(),
            text: text(),
        };
    }
    if v.is_callable() {
        let qualname = v
            .getattr("__qualname__")
            .map(|q| q.to_string())
            .unwrap_or_else(|_| text());
        return Input::Callable {
            text: format!("<{qualname}()>"),
        };
    }
    Input::Other {
        text: text(),
        type_name: v
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    }
}

/// Split an `*_CMD_ARGS` value with shell rules and parse it.
fn parse_env_args(py: Python<'_>, var: &str) -> Result<Option<Parsed>, LoadFailure> {
    let Ok(text) = std::env::var(var) else {
        return Ok(None);
    };
    let words: Vec<String> = helper(py, "split_args")
        .and_then(|f| f.call1((text,)))
        .and_then(|w| w.extract())
        .map_err(|e| LoadFailure::Usage(format!("{var}: {}", py_err(py, &e))))?;
    let parsed = cli::parse(&words).map_err(|e| LoadFailure::Usage(format!("{var}: {e}")))?;
    Ok(Some(parsed))
}

fn apply_parsed(settings: &mut Settings, parsed: &Parsed) -> Result<(), ConfigError> {
    for (row, input) in &parsed.values {
        settings.apply(row, input.clone())?;
    }
    Ok(())
}

/// The config file to read when `-c` was not given: ferricorn's own name first.
fn default_config_file() -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    ["ferricorn.conf.py", "gunicorn.conf.py"]
        .iter()
        .map(|name| cwd.join(name))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Execute a config file and apply every setting it names; other names are ignored.
fn apply_config_file(
    py: Python<'_>,
    location: &str,
    settings: &mut Settings,
    hooks: &mut Vec<(&'static str, Py<PyAny>)>,
    logconfig_dict: &mut Option<Py<PyAny>>,
) -> Result<(), LoadFailure> {
    let namespace = helper(py, "read")
        .and_then(|f| f.call1((location,)))
        .map_err(|e| LoadFailure::Config(py_err(py, &e)))?;
    let namespace = namespace
        .cast::<PyDict>()
        .map_err(|_| LoadFailure::Config(format!("{location}: not a namespace")))?;
    for (key, value) in namespace.iter() {
        let Ok(key) = key.extract::<String>() else {
            continue;
        };
        let Some((_, row)) = table::find(&key) else {
            continue;
        };
        match row.kind {
            Kind::Hook(_) | Kind::PostRequestHook => {
                apply_hook(py, row, &value, settings, hooks)?;
            }
            _ => {
                settings.apply(row, to_input(&value))?;
                if row.name == "logconfig_dict" {
                    *logconfig_dict = Some(value.clone().unbind());
                }
            }
        }
    }
    Ok(())
}

/// Check a server hook (arity, import path) as gunicorn does and record it.
fn apply_hook(
    py: Python<'_>,
    row: &'static table::Setting,
    value: &Bound<'_, PyAny>,
    settings: &mut Settings,
    hooks: &mut Vec<(&'static str, Py<PyAny>)>,
) -> Result<(), LoadFailure> {
    let arity: i32 = match row.kind {
        Kind::Hook(n) => i32::from(n),
        _ => -1,
    };
    let checked = helper(py, "hook")
        .and_then(|f| f.call1((row.name, arity, value)))
        .and_then(|r| r.extract::<(Py<PyAny>, String)>());
    let (callable, text) = checked.map_err(|e| {
        LoadFailure::Config(
            ConfigError::Invalid {
                name: row.name,
                value: to_input(value).text(),
                why: py_err(py, &e),
            }
            .to_string(),
        )
    })?;
    settings.set_value(row.name, Value::Object(text))?;
    hooks.retain(|(n, _)| *n != row.name);
    hooks.push((row.name, callable));
    Ok(())
}

/// Hooks set on a `ferricorn.app.base` application (no command-line form).
fn apply_embedded_hooks(
    py: Python<'_>,
    settings: &mut Settings,
    hooks: &mut Vec<(&'static str, Py<PyAny>)>,
) -> Result<(), LoadFailure> {
    let embedded: Vec<(String, Py<PyAny>)> = helper(py, "embedded_hooks")
        .and_then(|f| f.call0())
        .and_then(|l| l.extract())
        .map_err(|e| LoadFailure::Config(py_err(py, &e)))?;
    for (name, value) in embedded {
        if let Some((_, row)) = table::find(&name).filter(|(_, r)| r.kind.is_hook()) {
            apply_hook(py, row, value.bind(py), settings, hooks)?;
        }
    }
    Ok(())
}

/// `--paste FILE[#name]` on the command line: the app comes from the ini
/// file, which names the processes and, with a `[loggers]` section, logging.
fn paste_init(py: Python<'_>, settings: &mut Settings, paste: &str) -> Result<String, LoadFailure> {
    // PasteDeploy is optional; without it `--paste` cannot work (as in gunicorn).
    py.import("paste.deploy")
        .map_err(|e| LoadFailure::Config(py_err(py, &e)))?;
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| ".".into());
    let uri = super::validate::abspath(&cwd, paste.trim());
    let file = uri.split('#').next().unwrap_or_default().to_string();
    let text = std::fs::read_to_string(&file).map_err(|_| {
        LoadFailure::Config(format!("{} not found", super::value::py_repr_str(&file)))
    })?;
    settings.set_value("default_proc_name", Value::Str(file.clone()))?;
    if text.lines().any(|l| l.trim() == "[loggers]") {
        settings.set_value("logconfig", Value::Str(file))?;
    }
    Ok(uri)
}

/// The app spec that loads a PasteDeploy app: a call of
/// `ferricorn._config.paste_app` with literal arguments, which the app loader
/// (`module:factory(args)`) runs wherever the app is loaded.
fn paste_spec(uri: &str, settings: &Settings) -> Result<String, LoadFailure> {
    use super::value::py_repr_str;
    let mut pairs = Vec::new();
    for item in settings.get("raw_paste_global_conf").as_list() {
        // KEY=VALUE, where `\=` is a literal `=` in either part.
        let split = item
            .char_indices()
            .find(|&(i, c)| c == '=' && !item[..i].ends_with('\\'))
            .map(|(i, _)| (&item[..i], &item[i + 1..]));
        let Some((k, v)) = split else {
            return Err(LoadFailure::Config(
                ConfigError::Invalid {
                    name: "raw_paste_global_conf",
                    value: item.clone(),
                    why: "expected KEY=VALUE".into(),
                }
                .to_string(),
            ));
        };
        let (k, v) = (k.replace("\\=", "="), v.replace("\\=", "="));
        pairs.push(format!("{}: {}", py_repr_str(&k), py_repr_str(&v)));
    }
    Ok(format!(
        "ferricorn._config:paste_app({}, {{{}}})",
        py_repr_str(uri),
        pairs.join(", ")
    ))
}

fn config_location(parsed: &Parsed) -> Option<String> {
    match parsed.get("config")? {
        Input::Str(s) => Some(s.trim().to_string()),
        _ => None,
    }
}

/// Load the configuration from scratch: defaults, config file, `*_CMD_ARGS`,
/// then `argv` (which includes the program name). Re-callable (HUP).
pub fn load(py: Python<'_>, argv: &[String]) -> Result<Loaded, LoadFailure> {
    let cli = cli::parse(argv.get(1..).unwrap_or_default())?;
    let mut env_parsed = Vec::new();
    for var in ENV_ARGS {
        if let Some(p) = parse_env_args(py, var)? {
            env_parsed.push(p);
        }
    }
    if cli.help || env_parsed.iter().any(|p| p.help) {
        return Err(LoadFailure::Info(super::doc::help_text(USAGE)));
    }
    if cli.version || env_parsed.iter().any(|p| p.version) {
        return Err(LoadFailure::Info(format!(
            "ferricorn (version {})\n",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let app_spec = match cli.positional.as_slice() {
        [] => None,
        [app] => Some(app.clone()),
        [_, extra @ ..] => {
            return Err(LoadFailure::Usage(format!(
                "unrecognized arguments: {}",
                extra.join(" ")
            )));
        }
    };

    let mut settings = Settings::new();
    let mut hooks = Vec::new();
    let mut logconfig_dict = None;
    let app_spec = match cli.get("paste") {
        Some(Input::Str(paste)) => Some(paste_init(py, &mut settings, paste)?),
        _ => {
            if let Some(app) = &app_spec {
                settings.set_value("default_proc_name", Value::Str(app.clone()))?;
            }
            app_spec
        }
    };
    let location = config_location(&cli)
        .or_else(|| env_parsed.iter().rev().find_map(config_location))
        .or_else(default_config_file);
    if let Some(location) = location {
        apply_config_file(
            py,
            &location,
            &mut settings,
            &mut hooks,
            &mut logconfig_dict,
        )?;
    }
    apply_embedded_hooks(py, &mut settings, &mut hooks)?;
    for parsed in &env_parsed {
        apply_parsed(&mut settings, parsed)?;
    }
    apply_parsed(&mut settings, &cli)?;

    let mut app_spec = app_spec.or_else(|| settings.wsgi_app().map(str::to_string));
    if !matches!(settings.get("paste"), Value::None) {
        app_spec = app_spec
            .map(|uri| paste_spec(&uri, &settings))
            .transpose()?;
    }
    if app_spec.is_none() {
        return Err(LoadFailure::Config(
            "No application module specified.".into(),
        ));
    }
    // `--print-config` shows everything as gunicorn would; any other run
    // (including `--check-config`) refuses what ferricorn cannot honour,
    // every reason at once, one per line. (gunicorn's own h2 cross-check,
    // "install h2", does not apply: HTTP/2 is refused as unsupported.)
    let bases = worker_class_bases(py, &settings);
    apply_worker_kwargs(py, &mut settings, &bases)?;
    if !settings.get("print_config").as_bool() {
        let refusals = settings.refusals_with(&bases);
        if !refusals.is_empty() {
            return Err(LoadFailure::Unsupported(refusals.join("\n")));
        }
    }
    Ok(Loaded {
        settings,
        hooks,
        app_spec,
        logconfig_dict,
    })
}

/// What a worker class given as a Python class path inherits from, when
/// ferricorn does not run it and it can be imported (gunicorn imports it too):
/// the reason it is refused then names an ASGI or greenlet base. Searched
/// with `--chdir` (or the working directory) and `--pythonpath` on
/// `sys.path`, as gunicorn has them when it loads the class.
fn worker_class_bases(py: Python<'_>, settings: &Settings) -> Vec<String> {
    let name = settings.worker_class();
    if super::validate::worker_class(name).is_ok() {
        return Vec::new();
    }
    let mut dirs: Vec<String> = settings.pythonpath();
    let cwd = settings
        .chdir()
        .or_else(|| std::env::current_dir().ok())
        .map(|p| p.display().to_string());
    dirs.extend(cwd);
    helper(py, "worker_class_bases")
        .and_then(|f| f.call1((name, dirs)))
        .and_then(|v| v.extract::<Vec<String>>())
        .unwrap_or_default()
}

/// A project's subclass of uvicorn's worker (served by the asgi worker)
/// sets uvicorn's config in `CONFIG_KWARGS`: those with a ferricorn setting
/// apply where the configuration left the setting at its default; the
/// rest are named in the INFO line the master logs at start
/// (`workers::asgi::announce`).
fn apply_worker_kwargs(
    py: Python<'_>,
    settings: &mut Settings,
    bases: &[String],
) -> Result<(), LoadFailure> {
    use super::validate::ASGI_ALIASES;
    let name = settings.worker_class().to_string();
    let subclass = bases.iter().any(|b| ASGI_ALIASES.contains(&b.as_str()))
        // Known from an earlier load (a HUP reload): no bases asked then.
        || super::validate::worker_class(&name) == Ok("asgi");
    if ASGI_ALIASES.contains(&name.as_str()) || !subclass {
        return Ok(());
    }
    let mut dirs: Vec<String> = settings.pythonpath();
    dirs.extend(
        settings
            .chdir()
            .or_else(|| std::env::current_dir().ok())
            .map(|p| p.display().to_string()),
    );
    let Ok(found) = helper(py, "worker_config_kwargs").and_then(|f| f.call1((&name, dirs))) else {
        return Ok(());
    };
    let Ok((mapped, ignored)) = found.extract::<(Vec<(String, Bound<'_, PyAny>)>, Vec<String>)>()
    else {
        return Ok(());
    };
    let mut applied = Vec::new();
    for (setting, value) in mapped {
        let Some((_, row)) = table::find(&setting) else {
            continue;
        };
        if *settings.get(row.name) != (row.default)() {
            continue; // the configuration's own value wins
        }
        settings.apply(row, to_input(&value))?;
        applied.push(format!("{}={}", row.name, settings.get(row.name)));
    }
    super::validate::note_worker_kwargs(&applied, &ignored);
    Ok(())
}

/// The `Server` header the configuration asks for, the way gunicorn users
/// change it: `ferricorn.SERVER = "..."` in the config file, or gunicorn's
/// own recipe, `gunicorn.SERVER = "..."` (when the file imported gunicorn).
/// `None` inside means no header (`SERVER = None`); the outer `None`, that
/// neither was changed.
pub fn server_header(py: Python<'_>) -> Option<Option<String>> {
    let modules = py.import("sys").and_then(|s| s.getattr("modules")).ok()?;
    for (module, default) in [("ferricorn", "ferricorn"), ("gunicorn", "gunicorn")] {
        let Ok(Some(m)) = modules
            .call_method1("get", (module,))
            .map(|m| (!m.is_none()).then_some(m))
        else {
            continue;
        };
        let Ok(value) = m.getattr("SERVER") else {
            continue;
        };
        if value.is_none() {
            return Some(None);
        }
        match value.extract::<String>() {
            Ok(v) if v != default => return Some(Some(v)),
            _ => {}
        }
    }
    None
}

/// `_ferricorn._load_config(argv)`: load as start-up would and return the
/// `--print-config` text, or raise `ValueError` with the message start-up
/// would print. For tests and tools; nothing is bound or started.
#[pyfunction]
fn _load_config(py: Python<'_>, argv: Vec<String>) -> PyResult<String> {
    match load(py, &argv) {
        Ok(loaded) => Ok(loaded.settings.render()),
        Err(
            LoadFailure::Info(m)
            | LoadFailure::Usage(m)
            | LoadFailure::Config(m)
            | LoadFailure::Unsupported(m),
        ) => Err(pyo3::exceptions::PyValueError::new_err(m)),
    }
}

/// `_ferricorn._settings_table()`: (name, section, flags, action, supported)
/// per row, so tests can compare the table with gunicorn's.
#[pyfunction]
fn _settings_table() -> Vec<(&'static str, &'static str, Vec<&'static str>, String, bool)> {
    table::ROWS
        .iter()
        .map(|r| {
            let action = match r.action {
                super::Action::Store => "store".to_string(),
                super::Action::StoreTrue => "store_true".into(),
                super::Action::StoreFalse => "store_const".into(),
                super::Action::Append => "append".into(),
                super::Action::OptionalConst(c) => format!("optional:{c}"),
            };
            (r.name, r.section, r.flags.to_vec(), action, r.supported)
        })
        .collect()
}

/// Add the configuration helpers to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_load_config, m)?)?;
    m.add_function(wrap_pyfunction!(_settings_table, m)?)?;
    Ok(())
}
