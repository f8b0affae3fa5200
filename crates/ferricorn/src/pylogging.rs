//! `--log-config` / `--log-config-json` / `logconfig_dict`: route log records
//! through Python's `logging` with the handlers the user configured, under the
//! logger names `gunicorn.error` and `gunicorn.access`.
//!
//! Precedence as in gunicorn: `logconfig_dict`, then `logconfig_json`, then
//! `logconfig`. `logconfig_dict` is the object the config file holds, given
//! to `logging.config.dictConfig` as is (formatter and handler classes may
//! be the class objects themselves).
//!
//! Only used when one of those settings is given; the default logging path
//! is pure Rust and never takes the GIL. The records handlers receive are
//! gunicorn's: an access record is `gunicorn.access` at INFO with `msg` the
//! access-log format and `args` the atoms dict (gunicorn's `SafeAtoms`:
//! the one-letter atoms, `{header}i`, `{header}o`, `{var}e`, `"` escaped,
//! `-` for a missing key), so a JSON formatter can read `record.args`; an
//! error record is `gunicorn.error` at its level with the finished text as
//! `msg` and no args. The environ for the `{var}e` atoms is the request's,
//! left by `hooks::serve` in a thread-local (`remember_environ`) for the
//! access record that the same thread logs next.
//!
//! Defaults applied before the user's configuration are gunicorn's:
//! `gunicorn.error` → stderr, `gunicorn.access` → stdout, format
//! `%(asctime)s [%(process)d] [%(levelname)s] %(message)s`, date format
//! `[%Y-%m-%d %H:%M:%S %z]`.
//!
//! gunicorn counterpart: `glogging.CONFIG_DEFAULTS`, `Logger.setup`
//! (the `logconfig` / `logconfig_json` branches), `Logger.reopen_files`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::glogging::access::{self, AtomValue};
use crate::glogging::{self, Level};

const SETUP: &std::ffi::CStr = cr#"
import copy, json, logging, logging.config, os

DEFAULTS = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": ["console"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["error_console"],
                           "propagate": True, "qualname": "gunicorn.error"},
        "gunicorn.access": {"level": "INFO", "handlers": ["console"],
                            "propagate": True, "qualname": "gunicorn.access"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "generic",
                    "stream": "ext://sys.stdout"},
        "error_console": {"class": "logging.StreamHandler", "formatter": "generic",
                          "stream": "ext://sys.stderr"},
    },
    "formatters": {
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(message)s",
                    "datefmt": "[%Y-%m-%d %H:%M:%S %z]", "class": "logging.Formatter"},
    },
}

class Atoms(dict):
    """gunicorn's SafeAtoms: '"' escaped in strings, '-' for a missing key,
    {..} keys looked up lower-cased."""

    def __init__(self, atoms):
        dict.__init__(self)
        for key, value in atoms.items():
            self[key] = value.replace('"', '\\"') if isinstance(value, str) else value

    def __getitem__(self, key):
        if key.startswith("{"):
            key = key.lower()
        return dict.__getitem__(self, key) if key in self else "-"


def access(logger, fmt, atoms, req_headers, resp_headers, environ):
    for name, value in req_headers:
        atoms["{%s}i" % name.lower()] = value
    for name, value in resp_headers:
        atoms["{%s}o" % name.lower()] = value
    if environ is not None:
        for name, value in environ.items():
            atoms["{%s}e" % str(name).lower()] = value
    logger.info(fmt, Atoms(atoms))


def setup(ini, json_path, user_dict, level):
    error_log = logging.getLogger("gunicorn.error")
    error_log.setLevel(level)
    logging.getLogger("gunicorn.access").setLevel(logging.INFO)
    if user_dict:
        config = copy.deepcopy(DEFAULTS)
        config.update(user_dict)
        try:
            logging.config.dictConfig(config)
        except (AttributeError, ImportError, ValueError, TypeError) as exc:
            raise RuntimeError(str(exc)) from exc
    elif json_path is not None:
        config = copy.deepcopy(DEFAULTS)
        if os.path.exists(json_path):
            with open(json_path) as f:
                config.update(json.load(f))
            logging.config.dictConfig(config)
    elif ini is not None:
        if not os.path.exists(ini):
            raise RuntimeError("Error: log config '%s' not found" % ini)
        defaults = dict(DEFAULTS)
        defaults["__file__"] = ini
        defaults["here"] = os.path.dirname(ini)
        logging.config.fileConfig(ini, defaults=defaults, disable_existing_loggers=False)

def reopen():
    for name in list(logging.root.manager.loggerDict):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    if handler.stream:
                        handler.close()
                        handler.stream = handler._open()
                finally:
                    handler.release()
"#;

/// Whether Python logging receives the records (set once by `install`).
static ACTIVE: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The environ of the request this thread served last, for its access record.
    static ENVIRON: RefCell<Option<Py<PyDict>>> = const { RefCell::new(None) };
}

/// Keep a served request's environ for the `{var}e` atoms of the access
/// record this thread logs next. Does nothing unless Python logging is on.
pub fn remember_environ(py: Python<'_>, environ: &Py<PyDict>) {
    if ACTIVE.load(Ordering::Relaxed) {
        ENVIRON.with(|e| *e.borrow_mut() = Some(environ.clone_ref(py)));
    }
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

/// Log one access record to `gunicorn.access` as gunicorn does:
/// `logger.info(access_log_format, atoms)`.
fn log_access(
    py: Python<'_>,
    module: &Bound<'_, PyAny>,
    logger: &Bound<'_, PyAny>,
    rec: &access::Record,
    fmt: &str,
) -> PyResult<()> {
    let atoms = PyDict::new(py);
    for (name, value) in access::plain_atoms(rec) {
        match value {
            AtomValue::Str(s) => atoms.set_item(name, s)?,
            AtomValue::Int(n) => atoms.set_item(name, n)?,
            AtomValue::None => atoms.set_item(name, py.None())?,
        }
    }
    let req = PyList::empty(py);
    for (k, v) in rec.request_headers {
        req.append((latin1(k).to_ascii_uppercase(), latin1(v)))?;
    }
    let resp = PyList::empty(py);
    for (k, v) in rec.response_headers {
        resp.append((latin1(k), latin1(v)))?;
    }
    let environ = ENVIRON.with(|e| e.borrow_mut().take());
    module
        .getattr("access")?
        .call1((logger, fmt, atoms, req, resp, environ))?;
    Ok(())
}

/// Configure Python logging and make it the destination of every record.
/// `user_dict` is `logconfig_dict` as the configuration holds it.
pub fn install(
    py: Python<'_>,
    ini: Option<&str>,
    json: Option<&str>,
    user_dict: Option<&Py<PyAny>>,
    level: Level,
) -> Result<(), String> {
    let module = PyModule::from_code(py, SETUP, c"ferricorn_logging.py", c"_ferricorn_logging")
        .map_err(|e| e.to_string())?;
    module
        .getattr("setup")
        .and_then(|f| f.call1((ini, json, user_dict, level as i32)))
        .map_err(|e| e.value(py).to_string())?;
    let logging = py.import("logging").map_err(|e| e.to_string())?;
    let get = |name: &str| -> Result<Py<PyAny>, String> {
        logging
            .call_method1("getLogger", (name,))
            .map(Bound::unbind)
            .map_err(|e| e.to_string())
    };
    let error_logger = get("gunicorn.error")?;
    let access_logger = get("gunicorn.access")?;
    let reopen: Py<PyAny> = module
        .getattr("reopen")
        .map(Bound::unbind)
        .map_err(|e| e.to_string())?;
    let module: Py<PyAny> = module.into_any().unbind();
    let access_errors = get("gunicorn.error")?;
    ACTIVE.store(true, Ordering::Relaxed);
    glogging::set_python(glogging::PySinks {
        error: Box::new(move |level, msg| {
            Python::attach(|py| {
                // A failing handler must not take the server down; Python's
                // logging already reports handler errors on stderr.
                let _ = error_logger
                    .bind(py)
                    .call_method1("log", (level as i32, msg));
            });
        }),
        access: Box::new(move |rec, fmt| {
            Python::attach(|py| {
                // gunicorn logs a failure to build the record and goes on.
                if let Err(e) = log_access(py, module.bind(py), access_logger.bind(py), rec, fmt) {
                    let _ = access_errors
                        .bind(py)
                        .call_method1("error", (format!("Failed to log the access record: {e}"),));
                }
            });
        }),
        reopen: Box::new(move || {
            Python::attach(|py| {
                let _ = reopen.bind(py).call0();
            });
        }),
    });
    Ok(())
}
