"""Python side of ``--reload``: which files a worker watches, and the app a
worker serves while the application cannot be imported.

The watching itself (mtime polling or inotify) runs in Rust, on a thread of
each worker; it calls ``snapshot`` about once a second.

gunicorn counterpart: ``ReloaderBase.get_files`` in ``gunicorn/reloader.py``,
``Worker.load_wsgi`` and ``util.make_fail_app``.
"""

import glob
import os
import sys


def is_pattern(entry):
    """An extra file containing ``*``, ``?`` or ``[`` is a glob pattern."""
    return any(c in entry for c in "*?[")


def _source(path):
    # A module loaded from bytecode is edited as its source.
    if path.endswith((".pyc", ".pyo")):
        return path[:-1]
    return path


def snapshot(extra, known_modules):
    """``(module count, absolute paths to watch)``, or ``None`` when
    ``sys.modules`` still has ``known_modules`` entries and no extra entry is
    a pattern (nothing can have changed). Patterns are expanded on every call
    (``**`` recursive), so files created later are watched too."""
    modules = tuple(sys.modules.values())
    patterns = [e for e in extra if is_pattern(e)]
    if len(modules) == known_modules and not patterns:
        return None
    files = set()
    for module in modules:
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path:
            files.add(os.path.abspath(_source(path)))
    for entry in extra:
        if entry in patterns:
            files.update(os.path.abspath(p) for p in glob.glob(entry, recursive=True))
        else:
            files.add(os.path.abspath(entry))
    return len(modules), sorted(files)


def unmatched_patterns(extra):
    """The patterns among ``extra`` that match no file now (warned about at start-up)."""
    return [e for e in extra if is_pattern(e) and not glob.glob(e, recursive=True)]


def error_files(exc):
    """Source files an import error points at: every frame of its traceback,
    and the file of a ``SyntaxError``. A module that failed to import is no
    longer in ``sys.modules``, so these are what must be watched to see the fix."""
    files = []
    tb = exc.__traceback__
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    if isinstance(exc, SyntaxError) and exc.filename:
        files.append(exc.filename)
    return [os.path.abspath(f) for f in files if f and os.path.isfile(f)]


def fail_app(text):
    """A WSGI app answering every request with 500 and ``text`` (the traceback)."""
    body = text.encode("utf-8", "replace")

    def app(environ, start_response):
        start_response(
            "500 Internal Server Error",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


def fail_asgi_app(text):
    """``fail_app`` for the asgi worker: every HTTP request gets the 500,
    a WebSocket is refused (the same 500), lifespan completes."""
    body = text.encode("utf-8", "replace")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] == "websocket":
            await receive()
            prefix = "websocket.http.response"
        else:
            prefix = "http.response"
        await send({"type": prefix + ".start", "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": prefix + ".body", "body": body})

    return app
