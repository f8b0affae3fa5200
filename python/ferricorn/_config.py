"""Thin Python helpers for loading configuration; the Rust core drives them.

``read(location)`` executes a configuration file (``PATH``, ``file:PATH``) or
imports a module (``python:MODULE``) and returns its namespace.
``paste_app(uri, global_conf)`` loads a PasteDeploy application (``--paste``).
``hook(name, arity, value)`` checks a server hook the way gunicorn does and
returns ``(callable, text)`` where ``text`` is what ``--print-config`` shows.
``EMBEDDED_HOOKS`` holds the hooks a ``ferricorn.app.base`` application set
(they have no command-line form); ``embedded_hooks()`` lists them.

gunicorn counterpart: ``Application.load_config_from_module_name_or_filename``
and ``config.validate_callable`` / ``validate_post_request``.
"""

import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import shlex
import sys
import traceback


class ConfigFileError(Exception):
    """The configuration file could not be read; the message is complete."""


EMBEDDED_HOOKS = {}


def embedded_hooks():
    return list(EMBEDDED_HOOKS.items())


def split_args(text):
    """``GUNICORN_CMD_ARGS`` is split with shell rules."""
    return shlex.split(text)


def read(location):
    if location.startswith("python:"):
        return dict(vars(importlib.import_module(location[len("python:"):])))
    filename = location[len("file:"):] if location.startswith("file:") else location
    if not os.path.exists(filename):
        raise ConfigFileError("%r doesn't exist" % filename)
    name = "__config__"
    try:
        if os.path.splitext(filename)[1] in (".py", ".pyc"):
            spec = importlib.util.spec_from_file_location(name, filename)
        else:
            sys.stderr.write("!!!\n!!! WARNING: configuration file should have a valid Python extension.\n!!!\n\n")
            loader = importlib.machinery.SourceFileLoader(name, filename)
            spec = importlib.util.spec_from_file_location(name, filename, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    except Exception:
        raise ConfigFileError("Failed to read config file: %s\n%s" % (filename, traceback.format_exc().rstrip()))
    return dict(vars(module))


def _positional_count(fn):
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(1 for p in inspect.signature(fn).parameters.values() if p.kind in kinds)


def _resolve(value):
    if isinstance(value, str):
        module_name, dot, attr = value.rpartition(".")
        if not dot:
            raise TypeError("Value '%s' is not import string. Format: module[.submodules...].object" % value)
        try:
            value = getattr(__import__(module_name, fromlist=[attr]), attr)
        except ImportError as e:
            raise TypeError(str(e))
        except AttributeError:
            raise TypeError("Can not load '%s' from '%s'" % (attr, module_name))
    if not callable(value):
        raise TypeError("Value is not callable: %s" % value)
    return value


def hook(name, arity, value):
    """Validate a hook; ``arity`` -1 means post_request (2, 3 or 4 arguments)."""
    fn = _resolve(value)
    n = _positional_count(fn)
    if arity == -1:
        if n == 4:
            return fn, "<%s()>" % fn.__qualname__
        if n == 3:
            def post_request(worker, req, environ, _resp):
                return fn(worker, req, environ)
        elif n == 2:
            def post_request(worker, req, _environ, _resp):
                return fn(worker, req)
        else:
            raise TypeError("Value must have an arity of: 4")
        # gunicorn wraps short post_request hooks in a lambda; print what it prints.
        return post_request, "<validate_post_request.<locals>.<lambda>()>"
    if n != arity:
        raise TypeError("Value must have an arity of: %s" % arity)
    return fn, "<%s()>" % fn.__qualname__


def worker_class_bases(path, dirs):
    """``module.QualName`` of each class a worker class path inherits from,
    nearest first; ``[]`` when the path does not name an importable class.
    ``dirs`` go on ``sys.path`` for the import only."""
    module_name, dot, attr = path.rpartition(".")
    if not dot or ":" in path:
        return []
    saved = list(sys.path)
    sys.path[:0] = list(dirs)
    try:
        cls = getattr(importlib.import_module(module_name), attr)
        if not inspect.isclass(cls):
            return []
        return ["%s.%s" % (c.__module__, c.__qualname__) for c in inspect.getmro(cls)[1:]]
    except Exception:
        return []
    finally:
        sys.path[:] = saved


# uvicorn's config keywords (a worker class's CONFIG_KWARGS) that have a
# ferricorn setting: keyword -> setting.
UVICORN_KWARGS = {
    "loop": "asgi_loop",
    "lifespan": "asgi_lifespan",
    "ws_max_size": "websocket_max_message_size",
    "ws_ping_interval": "websocket_ping_interval",
    "ws_ping_timeout": "websocket_ping_timeout",
    "ws_per_message_deflate": "websocket_per_message_deflate",
    "root_path": "root_path",
    "forwarded_allow_ips": "forwarded_allow_ips",
    "timeout_keep_alive": "keepalive",
    "timeout_graceful_shutdown": "graceful_timeout",
    "limit_max_requests": "max_requests",
    "limit_concurrency": "worker_connections",
    "backlog": "backlog",
}


def worker_config_kwargs(path, dirs):
    """A worker class's uvicorn CONFIG_KWARGS: ``[(setting, value)]`` for
    those with a ferricorn meaning, and the names of the others."""
    module_name, dot, attr = path.rpartition(".")
    if not dot:
        return [], []
    saved = list(sys.path)
    sys.path[:0] = list(dirs)
    try:
        kwargs = dict(getattr(getattr(importlib.import_module(module_name), attr), "CONFIG_KWARGS", {}) or {})
    except Exception:
        return [], []
    finally:
        sys.path[:] = saved
    mapped, ignored = [], []
    for key, value in kwargs.items():
        setting = UVICORN_KWARGS.get(key)
        if setting == "asgi_loop" and value not in ("auto", "asyncio", "uvloop"):
            setting = None  # "none" or a loop factory: no equivalent
        if setting is None:
            ignored.append(key)
        else:
            mapped.append((setting, value))
    return mapped, sorted(ignored)


def paste_app(uri, global_conf):
    """The WSGI app a PasteDeploy ini file describes (``PATH[#name]``)."""
    from paste.deploy import loadapp

    if ":" not in uri:
        uri = "config:" + uri
    return loadapp(uri, relative_to=os.getcwd(), global_conf=global_conf)
