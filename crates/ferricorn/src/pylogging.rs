//! `--log-config` / `--log-config-json` / `logconfig_dict`: route log records
//! through Python's `logging` with the handlers the user configured, under the
//! logger names `gunicorn.error` and `gunicorn.access`.
//!
//! Precedence as in gunicorn: `logconfig_dict`, then `logconfig_json`, then
//! `logconfig`. `logconfig_dict` arrives as the Python literal text the
//! configuration kept (`str(dict)`) and is read back with `ast.literal_eval`,
//! so it may hold strings, numbers, booleans, `None`, lists and dicts.
//!
//! Only used when one of those settings is given; the default logging path
//! is pure Rust and never takes the GIL. Records are still rendered in Rust
//! (access lines included); Python receives the finished message text.
//!
//! Defaults applied before the user's configuration are gunicorn's:
//! `gunicorn.error` → stderr, `gunicorn.access` → stdout, format
//! `%(asctime)s [%(process)d] [%(levelname)s] %(message)s`, date format
//! `[%Y-%m-%d %H:%M:%S %z]`.
//!
//! gunicorn counterpart: `glogging.CONFIG_DEFAULTS`, `Logger.setup`
//! (the `logconfig` / `logconfig_json` branches), `Logger.reopen_files`.

use pyo3::prelude::*;

use crate::glogging::{self, Channel, Level};

const SETUP: &std::ffi::CStr = cr#"
import ast, copy, json, logging, logging.config, os

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

def setup(ini, json_path, dict_text, level):
    error_log = logging.getLogger("gunicorn.error")
    error_log.setLevel(level)
    logging.getLogger("gunicorn.access").setLevel(logging.INFO)
    if dict_text is not None:
        try:
            user = ast.literal_eval(dict_text)
        except (ValueError, SyntaxError) as exc:
            raise RuntimeError(
                "logconfig_dict must hold only literals (str, number, bool, None, "
                "list, dict): %s" % exc) from exc
        config = copy.deepcopy(DEFAULTS)
        config.update(user)
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

/// Configure Python logging and make it the destination of every record.
pub fn install(
    py: Python<'_>,
    ini: Option<&str>,
    json: Option<&str>,
    dict_text: Option<&str>,
    level: Level,
) -> Result<(), String> {
    let module = PyModule::from_code(py, SETUP, c"ferricorn_logging.py", c"_ferricorn_logging")
        .map_err(|e| e.to_string())?;
    module
        .getattr("setup")
        .and_then(|f| f.call1((ini, json, dict_text, level as i32)))
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
    glogging::set_python(
        Box::new(move |channel, level, msg| {
            Python::attach(|py| {
                let logger = match channel {
                    Channel::Error => &error_logger,
                    Channel::Access => &access_logger,
                };
                // A failing handler must not take the server down; Python's
                // logging already reports handler errors on stderr.
                let _ = logger.bind(py).call_method1("log", (level as i32, msg));
            });
        }),
        Box::new(move || {
            Python::attach(|py| {
                let _ = reopen.bind(py).call0();
            });
        }),
    );
    Ok(())
}
