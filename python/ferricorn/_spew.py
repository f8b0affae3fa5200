"""``--spew``: print every Python line a worker executes, as a debugging aid.

Installed in each worker (``sys.settrace`` for its main thread, and
``threading.settrace`` for threads that Python's ``threading`` starts later)
before the application is imported, so the import is traced too. Lines go to
stdout as ``module:lineno: source``. Threads that ferricorn starts in Rust
(the gthread pool) are not traced, as gunicorn's thread pool is not.

gunicorn counterpart: ``gunicorn.debug.spew``.
"""

import linecache
import sys
import threading


def _line_tracer(frame, event, arg):
    if event == "line":
        module = frame.f_globals.get("__name__", "?")
        filename = frame.f_code.co_filename
        text = linecache.getline(filename, frame.f_lineno).rstrip()
        if not text:
            text = "<%s, no source>" % frame.f_code.co_name
        sys.stdout.write("%s:%d: %s\n" % (module, frame.f_lineno, text))
    return _line_tracer


def install():
    sys.settrace(_line_tracer)
    threading.settrace(_line_tracer)
