"""The objects ferricorn passes to server hooks, shaped like gunicorn's.

The Rust core (``crates/ferricorn/src/hooks.rs``) builds them and calls the
hooks; nothing here runs unless the configuration sets a hook.

- ``Config`` is ``server.cfg`` / ``worker.cfg``: every setting as an attribute
  under gunicorn's name, plus the derived names hook code reads
  (``proc_name``, ``worker_class_str``, ``env``, ``is_ssl``, ``address``).
- ``Logger`` is ``server.log`` / ``worker.log``: ``debug/info/warning/error/
  critical/exception/log`` with ``%``-style arguments, written to ferricorn's
  error log.
- ``Server`` stands for gunicorn's ``Arbiter``, ``Worker`` for its ``Worker``,
  ``Request`` for ``gunicorn.http.message.Request`` and ``Response`` for
  ``gunicorn.http.wsgi.Response`` (as ``post_request`` sees it).

gunicorn counterpart: ``gunicorn.config.Config``, ``gunicorn.glogging.Logger``,
``gunicorn.arbiter.Arbiter``, ``gunicorn.workers.base.Worker``.
"""

import sys
import traceback

from ferricorn import _ferricorn

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


def _noop(*_args):
    """A hook left at its default."""


class Config:
    """Settings as attributes: ``cfg.workers``, ``cfg.bind``, ``cfg.post_request``..."""

    def __init__(self, values, hooks):
        self.__dict__.update(values)
        self.__dict__.update(hooks)
        if self.__dict__.get("proc_name") is None:
            self.__dict__["proc_name"] = values.get("default_proc_name")
        self.worker_class_str = values.get("worker_class")
        self.address = list(values.get("bind") or [])
        self.is_ssl = bool(values.get("certfile") or values.get("keyfile"))
        env = {}
        for item in values.get("raw_env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        self.env = env

    def __getattr__(self, name):
        # Only reached for names that are not settings.
        raise AttributeError("No configuration setting for: %s" % name)


class Logger:
    """Writes to ferricorn's error log at the given level."""

    def _emit(self, level, msg, args, kwargs):
        try:
            text = str(msg) % args if args else str(msg)
        except (TypeError, ValueError):
            text = "%s %r" % (msg, args)
        exc_info = kwargs.get("exc_info")
        if exc_info:
            if exc_info is True:
                exc_info = sys.exc_info()
            elif isinstance(exc_info, BaseException):
                exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
            if exc_info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*exc_info)).rstrip()
        _ferricorn._hook_log(level, text)

    def debug(self, msg, *args, **kwargs):
        self._emit(10, msg, args, kwargs)

    def info(self, msg, *args, **kwargs):
        self._emit(20, msg, args, kwargs)

    def warning(self, msg, *args, **kwargs):
        self._emit(30, msg, args, kwargs)

    warn = warning

    def error(self, msg, *args, **kwargs):
        self._emit(40, msg, args, kwargs)

    def critical(self, msg, *args, **kwargs):
        self._emit(50, msg, args, kwargs)

    def exception(self, msg, *args, **kwargs):
        kwargs.setdefault("exc_info", True)
        self._emit(40, msg, args, kwargs)

    def log(self, level, msg, *args, **kwargs):
        if isinstance(level, str):
            level = _LEVELS.get(level.lower(), 20)
        self._emit(int(level), msg, args, kwargs)

    def reopen_files(self):
        _ferricorn._hook_reopen_logs()

    def close_on_exec(self):
        """ferricorn's log files are already close-on-exec."""


LOG = Logger()


class App:
    """``server.app``: what gunicorn's Application offers hook code."""

    def __init__(self, cfg, app_uri):
        self.cfg = cfg
        self.app_uri = app_uri
        self.callable = None


class Server:
    """``server`` in master hooks (gunicorn's Arbiter)."""

    def __init__(self, cfg, pid, app_uri):
        self.cfg = cfg
        self.app = App(cfg, app_uri)
        self.log = LOG
        self.pid = pid
        self.num_workers = cfg.workers
        self.timeout = cfg.timeout
        self.proc_name = cfg.proc_name
        self.worker_class = cfg.worker_class
        self.address = cfg.address
        self.master_name = "Master"
        self.master_pid = 0
        self.reexec_pid = 0
        self.systemd = False
        self.pidfile = cfg.pidfile
        self.WORKERS = {}
        self.LISTENERS = []
        self.worker_age = 0


class Worker:
    """``worker`` in worker hooks and in ``pre_fork``/``child_exit``."""

    def __init__(self, server, age):
        cfg = server.cfg
        self.age = age
        self.pid = "[booting]"
        self.ppid = server.pid
        self.cfg = cfg
        self.log = LOG
        self.app = server.app
        self.sockets = server.LISTENERS
        self.timeout = cfg.timeout / 2.0
        self.booted = False
        self.aborted = False
        self.alive = True
        self.nr = 0
        self.max_requests = cfg.max_requests or sys.maxsize


class Request:
    """``req`` in ``pre_request``/``post_request``: the parsed request head."""

    __slots__ = ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme", "peer_addr", "remote_addr")

    def __init__(self, method, uri, path, query, fragment, version, headers, scheme, peer_addr):
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = fragment
        self.version = version
        self.headers = headers
        self.scheme = scheme
        self.peer_addr = peer_addr
        self.remote_addr = peer_addr

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.uri)


class Response:
    """``resp`` in ``post_request`` (``None`` when no response was started)."""

    __slots__ = ("status", "status_code", "headers", "sent", "response_length", "version")

    def __init__(self, status, headers, sent, version):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0]) if status else None
        except ValueError:
            self.status_code = None
        self.headers = headers
        self.sent = sent
        self.response_length = None
        for name, value in headers:
            if name.lower() == "content-length":
                try:
                    self.response_length = int(value)
                except ValueError:
                    pass
        self.version = version

    def __repr__(self):
        return "<Response %s>" % self.status


def defaults(names):
    """No-op callables for the hooks the configuration leaves unset."""
    return {name: _noop for name in names}
