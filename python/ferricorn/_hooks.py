"""The objects ferricorn passes to server hooks, shaped like gunicorn's.

The Rust core (``crates/ferricorn/src/hooks.rs``) builds them and calls the
hooks; nothing here runs unless the configuration sets a hook.

- ``Config`` is ``server.cfg`` / ``worker.cfg``: every setting as an attribute
  under gunicorn's name, plus the derived names hook code reads
  (``proc_name``, ``worker_class_str``, ``env``, ``is_ssl``, ``address``).
- ``Logger`` is ``server.log`` / ``worker.log``: ``debug/info/warning/error/
  critical/exception/log`` with ``%``-style arguments, written to ferricorn's
  error log.
- ``Arbiter`` is ``server``, ``Worker`` (as ``SyncWorker``,
  ``ThreadWorker`` or ``EvloopWorker``) for its ``Worker``, ``TCPSocket`` and
  friends for its listeners (``server.LISTENERS``),
  ``Request`` for ``gunicorn.http.message.Request`` and ``Response`` for
  ``gunicorn.http.wsgi.Response`` (as ``post_request`` sees it).

gunicorn counterpart: ``gunicorn.config.Config``, ``gunicorn.glogging.Logger``,
``gunicorn.arbiter.Arbiter``, ``gunicorn.workers.base.Worker``.
"""

import os
import re
import signal
import socket
import sys
import traceback

from ferricorn import _ferricorn

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "critical": 50}


def _noop(*_args):
    """A hook left at its default."""


_SSL_SETTINGS = ("keyfile", "certfile", "ssl_version", "cert_reqs", "ca_certs",
                 "suppress_ragged_eofs", "do_handshake_on_connect", "ciphers")


class Config:
    """Settings as attributes: ``cfg.workers``, ``cfg.bind``, ``cfg.post_request``...

    plus what gunicorn's Config derives from them: ``address`` (parsed by
    the server's own parser: ``(host, port)`` tuples, unix paths as
    strings, ``fd://N`` as ints), ``worker_class`` (a class),
    ``worker_class_str``, ``proc_name``, ``uid``/``gid``, ``is_ssl``,
    ``env``, ``sendfile``, ``ssl_options``, ``paste_global_conf``,
    ``logger_class``, ``usage``/``prog``.
    """

    def __init__(self, values, hooks, derived):
        self.__dict__.update(values)
        self.__dict__.update(hooks)
        if self.__dict__.get("proc_name") is None:
            self.__dict__["proc_name"] = values.get("default_proc_name")
        self.worker_class_str = derived["worker_class_str"]
        self.worker_class = WORKER_CLASSES.get(derived["worker_kind"], SyncWorker)
        self.address = list(derived["address"])
        self.uid = values.get("user")
        self.gid = values.get("group")
        self.is_ssl = values.get("certfile") or values.get("keyfile")
        self.ssl_options = {name: values.get(name) for name in _SSL_SETTINGS}
        self.logger_class = Logger
        self.usage = "%(prog)s [OPTIONS] [APP_MODULE]"
        self.prog = "ferricorn"
        if values.get("sendfile") is not None:
            self.sendfile = False
        elif "SENDFILE" in os.environ:
            self.sendfile = os.environ["SENDFILE"].lower() in ("y", "1", "yes", "true")
        else:
            self.sendfile = True
        env = {}
        for item in values.get("raw_env") or []:
            key, _, value = item.partition("=")
            env[key] = value
        self.env = env
        raw_conf = values.get("raw_paste_global_conf")
        if raw_conf is None:
            self.paste_global_conf = None
        else:
            conf = {}
            for item in raw_conf:
                key, value = re.split(r"(?<!\\)=", item, maxsplit=1)
                conf[key.replace("\\=", "=")] = value.replace("\\=", "=")
            self.paste_global_conf = conf

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


class WSGIApplication:
    """``server.app``: what gunicorn's WSGIApplication offers hook code."""

    def __init__(self, cfg, app_uri):
        self.cfg = cfg
        self.app_uri = app_uri
        self.callable = None
        self.usage = cfg.usage
        self.prog = cfg.prog
        self.logger = None


def _signals(names):
    return [getattr(signal, "SIG" + name) for name in names.split()]


class BaseSocket:
    """A listener in ``server.LISTENERS`` / ``worker.sockets``: gunicorn's
    socket wrapper, on a duplicate of the server's listening descriptor.
    Socket methods (``getsockname``, ``fileno``...) reach ``sock``."""

    def __init__(self, sock, text):
        self.sock = sock
        self._text = text

    def __str__(self):
        return self._text

    def __getattr__(self, name):
        return getattr(self.sock, name)

    def close(self):
        self.sock.close()


class TCPSocket(BaseSocket):
    FAMILY = socket.AF_INET


class TCP6Socket(TCPSocket):
    FAMILY = socket.AF_INET6


class UnixSocket(BaseSocket):
    FAMILY = socket.AF_UNIX


def listener(fd, text):
    """Wrap a duplicate of listening descriptor ``fd`` (shown as ``text``)."""
    sock = socket.socket(fileno=os.dup(fd))
    kinds = {socket.AF_UNIX: UnixSocket, socket.AF_INET6: TCP6Socket}
    return kinds.get(sock.family, TCPSocket)(sock, text)


class Arbiter:
    """``server`` in master hooks, shaped like gunicorn's Arbiter."""

    WORKER_BOOT_ERROR = 3
    APP_LOAD_ERROR = 4
    SIGNALS = _signals("HUP QUIT INT TERM TTIN TTOU USR1 USR2 WINCH")
    SIG_NAMES = dict(
        (getattr(signal, name), name[3:].lower())
        for name in dir(signal)
        if name[:3] == "SIG" and name[3] != "_"
    )

    def __init__(self, cfg, pid, app_uri):
        self.cfg = cfg
        self.app = WSGIApplication(cfg, app_uri)
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
        self.START_CTX = {"args": list(sys.argv), "cwd": os.getcwd(), 0: sys.executable}
        # No dirty-app pool (refused at start-up): gunicorn's values without one.
        self.dirty_arbiter = None
        self.dirty_arbiter_pid = 0
        self.dirty_pidfile = None

    def kill_worker(self, pid, sig):
        """Send ``sig`` to worker ``pid`` (gone already: forgotten, as in gunicorn)."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self.WORKERS.pop(pid, None)

    def kill_workers(self, sig):
        for pid in list(self.WORKERS):
            self.kill_worker(pid, sig)


class Worker:
    """``worker`` in worker hooks and in ``pre_fork``/``child_exit``; an
    instance of ``server.worker_class`` (``SyncWorker``, ``ThreadWorker``
    or ``EvloopWorker``), as gunicorn's worker is of its class."""

    SIGNALS = _signals("ABRT HUP QUIT INT TERM USR1 USR2 WINCH CHLD")

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
        self.reloader = None

    def notify(self):
        """The heartbeat is ferricorn's own (shared memory): nothing to do."""


class SyncWorker(Worker):
    pass


class ThreadWorker(Worker):
    pass


class EvloopWorker(Worker):
    pass


WORKER_CLASSES = {"sync": SyncWorker, "gthread": ThreadWorker, "evloop": EvloopWorker}


class Request:
    """``req`` in ``pre_request``/``post_request``: the parsed request head."""

    __slots__ = ("method", "uri", "path", "query", "fragment", "version", "headers", "scheme",
                 "peer_addr", "remote_addr", "cfg", "limit_request_line", "limit_request_fields",
                 "limit_request_field_size", "must_close", "proxy_protocol_info")

    def __init__(self, method, uri, path, query, fragment, version, headers, scheme, peer_addr, worker):
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
        cfg = worker.cfg
        self.cfg = cfg
        self.limit_request_line = cfg.limit_request_line
        self.limit_request_fields = cfg.limit_request_fields
        self.limit_request_field_size = cfg.limit_request_field_size
        self.must_close = False
        self.proxy_protocol_info = None

    def should_close(self):
        if self.must_close:
            return True
        for name, value in self.headers:
            if name == "CONNECTION":
                value = value.lower().strip(" \t")
                if value == "close":
                    return True
                if value == "keep-alive":
                    return False
                break
        return tuple(self.version) <= (1, 0)

    def __repr__(self):
        return "<Request %s %s>" % (self.method, self.uri)


class Response:
    """``resp`` in ``post_request`` (``None`` when no response was started).
    ``version`` is the server's name, as gunicorn's is (``req.version`` has
    the HTTP version)."""

    __slots__ = ("status", "status_code", "headers", "sent", "response_length", "version", "req",
                 "cfg", "must_close", "headers_sent", "chunked", "upgrade")

    def __init__(self, status, headers, sent, server, req, must_close, http_version):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0]) if status else None
        except ValueError:
            self.status_code = None
        self.headers = headers
        self.sent = sent
        self.response_length = None
        self.upgrade = False
        for name, value in headers:
            lname = name.lower()
            if lname == "content-length":
                try:
                    self.response_length = int(value)
                except ValueError:
                    pass
            elif lname == "upgrade" and self.status_code == 101:
                self.upgrade = True
        self.version = server
        self.req = req
        self.cfg = req.cfg
        self.must_close = must_close
        self.headers_sent = True
        self.chunked = not (
            self.response_length is not None
            or tuple(http_version) <= (1, 0)
            or req.method == "HEAD"
            or self.status_code in (204, 304)
        )

    def __repr__(self):
        return "<Response %s>" % self.status


def defaults(names):
    """No-op callables for the hooks the configuration leaves unset."""
    return {name: _noop for name in names}
