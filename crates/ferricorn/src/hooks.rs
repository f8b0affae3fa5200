//! Server hooks: the Python callables a configuration file sets
//! (`on_starting`, `pre_fork`, `post_request`, ...), the gunicorn-shaped
//! objects they receive (`python/ferricorn/_hooks.py`), and the calls.
//!
//! The master installs the hooks at start-up and again on every `HUP`
//! (`install`); a forked worker inherits them with the rest of the master's
//! memory. Master call sites are in `run.rs` and `arbiter/shell.rs`, worker
//! call sites in `workers/`; every hook runs in the process gunicorn runs it
//! in. A call returns `Err(traceback)` when the hook raised; the caller
//! decides, as gunicorn does, whether that is fatal or only logged.
//!
//! Invariants: with no hook configured nothing here takes the GIL or builds a
//! Python object; `pre_request`/`post_request` are looked up once when the
//! worker starts (`worker_started`), so a request pays one `OnceLock` read
//! when neither is set. The worker object a hook sees in `pre_fork` is the
//! same object the child's hooks see and the master's `child_exit` gets
//! (gunicorn forks its `Worker` instance the same way).
//!
//! gunicorn counterpart: the hook settings of `gunicorn/config.py` and their
//! calls in `arbiter.py`, `workers/base.py` and `workers/sync.py`.

use std::sync::{Mutex, OnceLock};

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};

use crate::app::format_traceback;
use crate::config::{Settings, Value, validate};
use crate::glogging::{self, Level};
use crate::request::Request;
use crate::sock;
use crate::wsgi::{self, Exchange, Outcome, environ::AppContext};

/// Every hook setting, in the settings table's order.
pub const NAMES: [&str; 16] = [
    "on_starting",
    "on_reload",
    "when_ready",
    "pre_fork",
    "post_fork",
    "post_worker_init",
    "worker_int",
    "worker_abort",
    "pre_exec",
    "pre_request",
    "post_request",
    "child_exit",
    "worker_exit",
    "nworkers_changed",
    "on_exit",
    "ssl_context",
];

/// The hooks of the current configuration and the `server` object.
struct Installed {
    server: Py<PyAny>,
    hooks: Vec<(&'static str, Py<PyAny>)>,
}

static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);
/// The worker object between `pre_fork` and the fork (in the child: its own).
static SPAWNING: Mutex<Option<Py<PyAny>>> = Mutex::new(None);
/// In a worker: its `worker` object.
static OWN: OnceLock<Py<PyAny>> = OnceLock::new();
/// In a worker: `pre_request` / `post_request`, when either is set.
static REQUEST: OnceLock<RequestHooks> = OnceLock::new();

fn installed() -> std::sync::MutexGuard<'static, Option<Installed>> {
    INSTALLED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether any hook is configured.
pub fn any() -> bool {
    installed().is_some()
}

/// Whether the hook `name` is configured.
pub fn is_set(name: &str) -> bool {
    installed()
        .as_ref()
        .is_some_and(|i| i.hooks.iter().any(|(n, _)| *n == name))
}

/// `(server, hook)` for a configured hook.
fn lookup(py: Python<'_>, name: &str) -> Option<(Py<PyAny>, Py<PyAny>)> {
    let guard = installed();
    let inst = guard.as_ref()?;
    let (_, f) = inst.hooks.iter().find(|(n, _)| *n == name)?;
    Some((inst.server.clone_ref(py), f.clone_ref(py)))
}

fn server(py: Python<'_>) -> Option<Py<PyAny>> {
    installed().as_ref().map(|i| i.server.clone_ref(py))
}

fn value_to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::None => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Int(i) => i.into_pyobject(py)?.into_any(),
        Value::Float(f) => f.into_pyobject(py)?.into_any(),
        Value::Str(s) | Value::Object(s) => s.into_pyobject(py)?.into_any(),
        Value::List(l) => PyList::new(py, l)?.into_any(),
        Value::Map(m) => {
            let d = PyDict::new(py);
            for (k, v) in m {
                d.set_item(k, v)?;
            }
            d.into_any()
        }
    })
}

/// Install the hooks of a freshly loaded configuration (start-up and `HUP`).
/// With none set, every call here becomes a no-op.
pub fn install(
    py: Python<'_>,
    hooks: Vec<(&'static str, Py<PyAny>)>,
    settings: &Settings,
    app_spec: &str,
) -> PyResult<()> {
    let mut guard = installed();
    if hooks.is_empty() {
        *guard = None;
        return Ok(());
    }
    let module = py.import("ferricorn._hooks")?;
    let values = PyDict::new(py);
    for (row, value) in settings.iter() {
        if !row.kind.is_hook() {
            values.set_item(row.name, value_to_py(py, value)?)?;
        }
    }
    let funcs = module.call_method1("defaults", (NAMES.to_vec(),))?;
    for (name, f) in &hooks {
        funcs.set_item(*name, f.bind(py))?;
    }
    // What gunicorn's Config derives from the settings, computed here with
    // the same parsers the server uses.
    let derived = PyDict::new(py);
    let address = PyList::empty(py);
    for raw in settings.bind() {
        match sock::parse_address(raw) {
            Ok(sock::Address::Tcp { host, port }) => address.append((host, port))?,
            Ok(sock::Address::Unix(path)) => address.append(path.to_string_lossy())?,
            Ok(sock::Address::Fd(fd)) => address.append(fd)?,
            Err(e) => return Err(pyo3::exceptions::PyValueError::new_err(e.to_string())),
        }
    }
    derived.set_item("address", address)?;
    let class_str = settings.worker_class_str();
    derived.set_item("worker_class_str", class_str)?;
    derived.set_item(
        "worker_kind",
        validate::worker_class(class_str).unwrap_or("sync"),
    )?;
    let cfg = module.getattr("Config")?.call1((values, funcs, derived))?;
    let server = module
        .getattr("Arbiter")?
        .call1((cfg, std::process::id(), app_spec))?;
    if let Some(old) = guard.as_ref() {
        // The live workers and the re-exec state outlive a reload.
        let old = old.server.bind(py);
        for attr in [
            "WORKERS",
            "LISTENERS",
            "master_pid",
            "reexec_pid",
            "master_name",
            "worker_age",
        ] {
            server.setattr(attr, old.getattr(attr)?)?;
        }
    }
    *guard = Some(Installed {
        server: server.unbind(),
        hooks,
    });
    Ok(())
}

/// What the master knows when it calls a hook; copied onto `server`.
#[derive(Clone, Copy, Debug)]
pub struct MasterView {
    pub num_workers: usize,
    pub reexec_pid: i32,
    /// The master that re-executed us (`GUNICORN_PID`), or 0.
    pub master_pid: i32,
}

fn update_server(server: &Bound<'_, PyAny>, view: &MasterView) -> PyResult<()> {
    server.setattr("num_workers", view.num_workers)?;
    server.setattr("reexec_pid", view.reexec_pid)?;
    server.setattr("master_pid", view.master_pid)?;
    server.setattr(
        "master_name",
        if view.master_pid != 0 {
            "Master.2"
        } else {
            "Master"
        },
    )?;
    Ok(())
}

/// The extra arguments of a master hook after `server`.
pub enum Args {
    /// `hook(server)`
    None,
    /// `nworkers_changed(server, new, old)`; `old` is `None` at start-up.
    Counts { new: usize, old: Option<usize> },
}

/// Call a master hook that takes `server` (and for `nworkers_changed` the
/// counts). `Ok` when it is not set or returned.
pub fn master(name: &'static str, view: &MasterView, args: Args) -> Result<(), String> {
    if !is_set(name) {
        return Ok(());
    }
    Python::attach(|py| {
        let Some((server, f)) = lookup(py, name) else {
            return Ok(());
        };
        let server = server.bind(py);
        let called = update_server(server, view).and_then(|()| match args {
            Args::None => f.call1(py, (server,)),
            Args::Counts { new, old } => f.call1(py, (server, new, old)),
        });
        called.map(|_| ()).map_err(|e| format_traceback(py, &e))
    })
}

/// Run `f` with the `server` object when hooks are installed; a Python
/// error comes back as its traceback.
fn with_server(
    f: impl FnOnce(Python<'_>, &Bound<'_, PyAny>) -> PyResult<()>,
) -> Result<(), String> {
    if !any() {
        return Ok(());
    }
    Python::attach(|py| {
        let Some(server) = server(py) else {
            return Ok(());
        };
        f(py, server.bind(py)).map_err(|e| format_traceback(py, &e))
    })
}

/// A fresh `worker` object of age `age`, an instance of `server.worker_class`.
fn new_worker<'py>(server: &Bound<'py, PyAny>, age: u64) -> PyResult<Bound<'py, PyAny>> {
    server.getattr("worker_class")?.call1((server, age))
}

/// Before forking a worker of age `age`: build its `worker` object and call
/// `pre_fork(server, worker)`.
pub fn pre_fork(view: &MasterView, age: u64) -> Result<(), String> {
    with_server(|py, server| {
        update_server(server, view)?;
        server.setattr("worker_age", age)?;
        let worker = new_worker(server, age)?;
        *SPAWNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(worker.clone().unbind());
        if let Some((_, f)) = lookup(py, "pre_fork") {
            f.call1(py, (server, worker))?;
        }
        Ok(())
    })
}

/// In the master after the fork: the worker object gets its pid and joins
/// `server.WORKERS`.
pub fn spawned(pid: i32) {
    let Some(worker) = SPAWNING.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let _ = with_server(|py, server| {
        worker.bind(py).setattr("pid", pid)?;
        server.getattr("WORKERS")?.set_item(pid, worker.bind(py))
    });
}

/// `server.LISTENERS` (and every `worker.sockets`, the same list): Python
/// socket objects shaped like gunicorn's `TCPSocket` / `TCP6Socket` /
/// `UnixSocket`, on duplicates of the listening descriptors, so a hook
/// learns the real port of a `:0` bind. Called once the master has its
/// listeners (after `on_starting`, as in gunicorn) and after a `HUP`.
pub fn set_listeners(listeners: &[sock::Listener]) {
    let set = with_server(|py, server| {
        let make = py.import("ferricorn._hooks")?.getattr("listener")?;
        let list = server.getattr("LISTENERS")?;
        for old in list.try_iter()? {
            old?.call_method0("close")?;
        }
        list.call_method0("clear")?;
        for l in listeners {
            list.call_method1("append", (make.call1((l.raw_fd(), l.to_string()))?,))?;
        }
        Ok(())
    });
    if let Err(tb) = set {
        glogging::error!("Cannot give the listeners to the hooks:\n{tb}");
    }
}

/// Close the hooks' duplicates of the listeners (the master stops
/// listening), so no descriptor keeps a closed port open.
pub fn close_listeners() {
    let _ = with_server(|_py, server| {
        let list = server.getattr("LISTENERS")?;
        for l in list.try_iter()? {
            l?.call_method0("close")?;
        }
        list.call_method0("clear")?;
        Ok(())
    });
}

/// `child_exit(server, worker)` for a reaped worker.
pub fn child_exit(view: &MasterView, pid: i32, age: u64) -> Result<(), String> {
    with_server(|py, server| {
        let known = server
            .getattr("WORKERS")?
            .call_method1("pop", (pid, py.None()))?;
        let Some((_, f)) = lookup(py, "child_exit") else {
            return Ok(());
        };
        update_server(server, view)?;
        let worker = if known.is_none() {
            let w = new_worker(server, age)?;
            w.setattr("pid", pid)?;
            w
        } else {
            known
        };
        f.call1(py, (server, worker))?;
        Ok(())
    })
}

// ---- in a worker ----

/// In a freshly forked worker: take the worker object built by `pre_fork`,
/// give it this pid and the master's, and look up the request hooks.
pub fn worker_started(py: Python<'_>, master_pid: i32) {
    let Some(worker) = SPAWNING.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    let bound = worker.bind(py);
    let _ = bound.setattr("pid", std::process::id());
    let _ = bound.setattr("ppid", master_pid);
    let pre = lookup(py, "pre_request").map(|(_, f)| f);
    let post = lookup(py, "post_request").map(|(_, f)| f);
    if pre.is_some() || post.is_some() {
        let classes = py.import("ferricorn._hooks").and_then(|m| {
            Ok((
                m.getattr("Request")?.unbind(),
                m.getattr("Response")?.unbind(),
            ))
        });
        match classes {
            Ok((request, response)) => {
                let _ = REQUEST.set(RequestHooks {
                    worker: worker.clone_ref(py),
                    pre,
                    post,
                    request,
                    response,
                });
            }
            Err(e) => glogging::error!("Cannot set up the request hooks: {e}"),
        }
    }
    let _ = OWN.set(worker);
}

/// Call a worker hook: `worker_int`/`worker_abort`/`post_worker_init` take
/// `(worker)`, `post_fork`/`worker_exit` take `(server, worker)`.
pub fn worker(py: Python<'_>, name: &'static str) -> Result<(), String> {
    let Some(own) = OWN.get() else {
        return Ok(());
    };
    let own = own.bind(py);
    let update = |attr: &str, value: bool| own.setattr(attr, value).map_err(|e| e.to_string());
    match name {
        "worker_int" | "worker_abort" | "worker_exit" => update("alive", false)?,
        _ => {}
    }
    if name == "worker_abort" {
        update("aborted", true)?;
    }
    let Some((server, f)) = lookup(py, name) else {
        return Ok(());
    };
    let called = match name {
        "post_fork" | "worker_exit" => f.call1(py, (server, own)),
        _ => f.call1(py, (own,)),
    };
    let result = called.map(|_| ()).map_err(|e| format_traceback(py, &e));
    if name == "post_worker_init" && result.is_ok() {
        update("booted", true)?;
    }
    result
}

/// `worker_exit(server, worker)` just before a worker exits; a raising hook
/// is logged as a warning (gunicorn's "Exception during worker exit").
pub fn worker_exit(py: Python<'_>) {
    if let Err(tb) = worker(py, "worker_exit") {
        glogging::warning!("Exception during worker exit:\n{tb}");
    }
}

// ---- per request ----

struct RequestHooks {
    worker: Py<PyAny>,
    pre: Option<Py<PyAny>>,
    post: Option<Py<PyAny>>,
    request: Py<PyAny>,
    response: Py<PyAny>,
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

impl RequestHooks {
    fn request<'py>(&self, py: Python<'py>, req: &Request<'_>) -> PyResult<Bound<'py, PyAny>> {
        let head = req.head();
        let headers = PyList::empty(py);
        for (name, value) in &head.headers {
            headers.append((latin1(name).to_ascii_uppercase(), latin1(value)))?;
        }
        let peer = match req.peer.port {
            Some(port) => (req.peer.addr.as_str(), port).into_pyobject(py)?.into_any(),
            None => req.peer.addr.as_str().into_pyobject(py)?.into_any(),
        };
        self.request.bind(py).call1((
            latin1(&head.method),
            latin1(head.target),
            latin1(head.path),
            latin1(head.query),
            latin1(head.fragment),
            PyTuple::new(py, [head.version.0, head.version.1])?,
            headers,
            req.scheme,
            peer,
            &self.worker,
        ))
    }

    fn post(
        &self,
        py: Python<'_>,
        req: &Bound<'_, PyAny>,
        outcome: &Outcome,
        version: (u8, u8),
    ) -> PyResult<()> {
        let Some(post) = &self.post else {
            return Ok(());
        };
        let resp = match &outcome.status_line {
            Some(status) => {
                let headers = PyList::empty(py);
                for (k, v) in outcome.response_headers.iter() {
                    headers.append((latin1(k), latin1(v)))?;
                }
                let server = crate::util::server_header().map(latin1);
                self.response.bind(py).call1((
                    status.as_str(),
                    headers,
                    outcome.sent.unwrap_or(0),
                    server,
                    req,
                    !matches!(outcome.response, ferricorn_http::h1::Response::Complete(f) if f.keep_alive),
                    PyTuple::new(py, [version.0, version.1])?,
                ))?
            }
            None => py.None().into_bound(py),
        };
        post.call1(py, (&self.worker, req, outcome.environ.bind(py), resp))?;
        Ok(())
    }
}

/// Serve one parsed request through `wsgi::serve`, with `pre_request` and
/// `post_request` around it when the configuration sets them. Every worker
/// class calls the app through here.
///
/// As in gunicorn: a raising `pre_request` fails the request with a 500 (the
/// app is not called) and `post_request` still runs, with an empty environ
/// and no response; a raising `post_request` is logged.
pub fn serve(py: Python<'_>, app: &AppContext, req: &Request<'_>, ex: Exchange<'_>) -> Outcome {
    let outcome = serve_with_hooks(py, app, req, ex);
    // Python logging's access record carries the environ (`{var}e` atoms).
    crate::pylogging::remember_environ(py, &outcome.environ);
    outcome
}

fn serve_with_hooks(
    py: Python<'_>,
    app: &AppContext,
    req: &Request<'_>,
    ex: Exchange<'_>,
) -> Outcome {
    let Some(hooks) = REQUEST.get() else {
        return wsgi::serve(py, app, req, ex);
    };
    let hook_req = match hooks.request(py, req) {
        Ok(r) => r,
        Err(e) => {
            glogging::error!(
                "Cannot build the request object for the request hooks: {}",
                format_traceback(py, &e)
            );
            return wsgi::serve(py, app, req, ex);
        }
    };
    let pre = match &hooks.pre {
        Some(pre) => pre.call1(py, (&hooks.worker, &hook_req)).map(|_| ()),
        None => Ok(()),
    };
    let outcome = match pre {
        Ok(()) => wsgi::serve(py, app, req, ex),
        Err(e) => {
            glogging::exception(&format!(
                "Error handling request {} {}\n{}",
                String::from_utf8_lossy(req.method()),
                String::from_utf8_lossy(req.raw_target()),
                format_traceback(py, &e)
            ));
            let out = crate::app::error_response(500, "Internal Server Error", "");
            py.detach(|| {
                let w = ex.response.lock().unwrap_or_else(|e| e.into_inner());
                let _ = w.write_raw(&out);
            });
            Outcome {
                status: b"500".to_vec(),
                status_line: None,
                sent: Some(0),
                response_headers: Default::default(),
                // The body (if any) was not read.
                response: ferricorn_http::h1::Response::Refused,
                environ: PyDict::new(py).unbind(),
                failed: true,
            }
        }
    };
    if let Err(e) = hooks.post(py, &hook_req, &outcome, req.version()) {
        glogging::exception(&format!(
            "Exception in post_request hook\n{}",
            format_traceback(py, &e)
        ));
    }
    outcome
}

/// The asgi worker's request object for `pre_request`/`post_request`
/// (`None` when neither hook is set): gunicorn's asgi worker calls them
/// around the app's call, as the WSGI workers do.
pub fn asgi_request(py: Python<'_>, req: &Request<'_>) -> Option<Py<PyAny>> {
    let hooks = REQUEST.get()?;
    match hooks.request(py, req) {
        Ok(r) => Some(r.unbind()),
        Err(e) => {
            glogging::error!(
                "Cannot build the request object for the request hooks: {}",
                format_traceback(py, &e)
            );
            None
        }
    }
}

/// `pre_request(worker, req)` before an ASGI app's call; an error fails
/// the request (500), as in gunicorn's asgi worker.
pub fn asgi_pre(py: Python<'_>, req: &Py<PyAny>) -> PyResult<()> {
    match REQUEST
        .get()
        .and_then(|h| h.pre.as_ref().map(|pre| (h, pre)))
    {
        Some((hooks, pre)) => pre.call1(py, (&hooks.worker, req)).map(drop),
        None => Ok(()),
    }
}

/// `post_request(worker, req, environ, resp)` after an ASGI app's call
/// (`environ` the few request facts gunicorn's asgi worker gives it); a
/// raising hook is logged.
pub fn asgi_post(
    py: Python<'_>,
    req: &Py<PyAny>,
    status: u16,
    headers: &[(Vec<u8>, Vec<u8>)],
    sent: u64,
    version: (u8, u8),
) {
    let Some(hooks) = REQUEST.get() else { return };
    let Some(post) = &hooks.post else { return };
    let called = (|| -> PyResult<()> {
        let list = PyList::empty(py);
        for (k, v) in headers {
            list.append((latin1(k), latin1(v)))?;
        }
        let line = format!("{status} {}", ferricorn_http::error::reason_phrase(status));
        let server = crate::util::server_header().map(latin1);
        let resp = hooks.response.bind(py).call1((
            line.as_str(),
            list,
            sent,
            server,
            req.bind(py),
            true,
            PyTuple::new(py, [version.0, version.1])?,
        ))?;
        let environ = PyDict::new(py);
        post.call1(py, (&hooks.worker, req, environ, resp))?;
        Ok(())
    })();
    if let Err(e) = called {
        glogging::exception(&format!(
            "Exception in post_request hook\n{}",
            format_traceback(py, &e)
        ));
    }
}

/// The `setproctitle` package's `setproctitle`, when it is installed.
static SETPROCTITLE: OnceLock<Option<Py<PyAny>>> = OnceLock::new();

/// Set the process title to `ferricorn: {title}`. With the `setproctitle`
/// package installed the title goes through it, as gunicorn's does, so a
/// hook's `setproctitle.getproctitle()` returns ferricorn's title and its
/// `setproctitle.setproctitle(...)` replaces it (two writers of one argv
/// area would not see each other); `comm` is set either way. Without the
/// package, `sys::proctitle` writes the argv area itself.
pub fn set_proctitle(title: &str) {
    let full = format!("ferricorn: {title}");
    let through_package = Python::attach(|py| {
        let f = SETPROCTITLE.get_or_init(|| {
            py.import("setproctitle")
                .and_then(|m| m.getattr("setproctitle"))
                .ok()
                .map(Bound::unbind)
        });
        f.as_ref().is_some_and(|f| f.call1(py, (&full,)).is_ok())
    });
    if through_package {
        crate::sys::proctitle::set_comm(&full);
    } else {
        crate::sys::proctitle::set(&full);
    }
}

/// `_ferricorn._hook_log(level, text)`: `server.log.info(...)` and friends.
#[pyfunction]
fn _hook_log(level: i32, text: &str) {
    let level = match level {
        ..=10 => Level::Debug,
        11..=20 => Level::Info,
        21..=30 => Level::Warning,
        31..=40 => Level::Error,
        _ => Level::Critical,
    };
    if glogging::enabled(level) {
        glogging::log(level, text);
    }
}

/// `_ferricorn._hook_reopen_logs()`: `server.log.reopen_files()`.
#[pyfunction]
fn _hook_reopen_logs() {
    if let Err(e) = glogging::reopen() {
        glogging::error!("{e}");
    }
}

/// Add the hook helpers to the extension module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_hook_log, m)?)?;
    m.add_function(wrap_pyfunction!(_hook_reopen_logs, m)?)?;
    m.add("_HOOK_NAMES", NAMES.to_vec())?;
    Ok(())
}
