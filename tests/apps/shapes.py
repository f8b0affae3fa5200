"""Every request/response shape the WSGI tests exercise, as one app.

`app` is the plain app; `validated` is the same app wrapped in
`wsgiref.validate.validator` with `WSGIWarning` turned into an error, so any
PEP 3333 slip of the server fails the request (and shows in the log).
"""

import json
import os
import sys
import tempfile
import threading
import time
import warnings
from wsgiref.validate import WSGIWarning, validator

IMPORT_PID = os.getpid()
MARKER_DIR = os.environ.get("FERRICORN_TEST_MARKERS")
warnings.simplefilter("error", WSGIWarning)


def _mark(name, text):
    if MARKER_DIR:
        with open(os.path.join(MARKER_DIR, name), "a") as f:
            f.write(text + "\n")


class Closing:
    """A response iterable that records each close() call."""

    def __init__(self, name, chunks):
        self.name = name
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        _mark(self.name, "closed")


def _big_chunks(n, size):
    block = b"x" * size
    for _ in range(n):
        yield block


_KEPT = []  # gunicorn.socket objects /socket-keep held on to


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _read_all_by(inp, n):
    out = b""
    while True:
        piece = inp.read(n)
        if not piece:
            return out
        out += piece


# One header list object passed to start_response again and again, its
# tuples replaced in place between requests (/reused-headers).
REUSED_HEADERS = [("Content-Type", "text/plain"), ("X-Reused", "0")]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    inp = environ["wsgi.input"]
    qs = environ.get("QUERY_STRING", "")
    if path == "/read-n":
        data = _read_all_by(inp, int(qs or "7"))
        return _json(start_response, {"len": len(data), "data": data.decode("latin-1")})
    if path == "/read-all":
        # read(size) with a size larger than the body, then at EOF.
        data = inp.read(1 << 30)
        again = inp.read(10)
        return _json(start_response, {"data": data.decode("latin-1"), "again": again.decode()})
    if path == "/readline-n":
        lines = []
        while True:
            line = inp.readline(int(qs or "4"))
            if not line:
                break
            lines.append(line.decode("latin-1"))
        return _json(start_response, lines)
    if path == "/readlines-hint":
        first = inp.readlines(int(qs or "1"))
        rest = inp.readlines()
        return _json(start_response, {"first": [x.decode() for x in first], "rest": [x.decode() for x in rest]})
    if path == "/iterate":
        return _json(start_response, [line.decode() for line in inp])
    if path == "/upload-size":
        total = 0
        while True:
            piece = inp.read(65536)
            if not piece:
                break
            total += len(piece)
        return _json(start_response, {"total": total})
    if path == "/input-error":
        try:
            while inp.read(4096):
                pass
            _mark("input-error", "no error")
        except OSError as e:
            _mark("input-error", "OSError %s" % type(e).__name__)
            raise
        return _json(start_response, {})
    if path == "/reused-headers":
        if qs == "bad":
            REUSED_HEADERS[1] = ("X-Reused", "a\r\nInjected: yes")
        elif qs == "more":
            REUSED_HEADERS.append(("X-More", "yes"))
        elif qs:
            REUSED_HEADERS[1] = ("X-Reused", qs)
            del REUSED_HEADERS[2:]
        start_response("200 OK", REUSED_HEADERS)
        return [b"reused"]
    if path == "/environ-values":
        # The str values; with ?mutate the app then overwrites, deletes and
        # adds keys: no later request may see any of that.
        values = {k: v for k, v in environ.items() if isinstance(v, str)}
        values["types"] = sorted({type(v).__name__ for v in values.values()})
        if qs == "mutate":
            for k in list(environ):
                environ[k] = "mutated"
            del environ["PATH_INFO"]
            environ["EXTRA_KEY"] = "added"
        return _json(start_response, values)
    if path == "/environ":
        keys = sorted(environ.keys())
        return _json(
            start_response,
            {
                "keys": keys,
                "multithread": environ["wsgi.multithread"],
                "terminated": environ.get("wsgi.input_terminated"),
                "scheme": environ["wsgi.url_scheme"],
            },
        )
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"legacy ")
        write(b"")
        write(b"write")
        return []
    if path == "/empty-then-raise":
        # Headers go out with the first non-empty chunk: an error before it is still a 500.
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b""
            raise RuntimeError("failed before any body")

        return gen()
    if path == "/exc-info-late":
        start_response("200 OK", [("Content-Type", "text/plain")])

        def gen():
            yield b"partial"
            try:
                raise KeyError("late")
            except KeyError:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
            yield b"never"

        return gen()
    if path == "/bad-header":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Bad Name", "x")])
        return [b"never"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing("stream", [b"one ", b"two ", b"three"])
    if path == "/big":
        # A large streamed response whose close() is recorded.
        n = int(qs or "2000")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Closing("big", _big_chunks(n, 65536))
    if path == "/big-fixed":
        n = int(qs or "2000")
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(n * 65536))])
        return _big_chunks(n, 65536)
    if path == "/file":
        # qs: "real" (a regular file, sendfile), "real-offset" (from byte 10), "bytesio".
        payload = bytes(range(256)) * 400
        if qs.startswith("real"):
            f = tempfile.TemporaryFile()
            f.write(payload)
            f.seek(10 if qs == "real-offset" else 0)
        else:
            import io

            f = io.BytesIO(payload)
        headers = [("Content-Type", "application/octet-stream")]
        if qs == "real-length":
            headers.append(("Content-Length", "1000"))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/errors":
        environ["wsgi.errors"].write("shapes: to wsgi.errors\n")
        environ["wsgi.errors"].flush()
        return _json(start_response, {})
    if path == "/pid":
        return _json(start_response, {"import_pid": IMPORT_PID, "pid": os.getpid(), "thread": threading.get_ident()})
    if path == "/sleep":
        _mark("sleep", "started")
        time.sleep(float(qs or "1"))
        return _json(start_response, {"slept": float(qs or "1")})
    if path == "/early-hints":
        hints = environ["wsgi.early_hints"]
        hints([("Link", "</s.css>; rel=preload; as=style")])
        hints([(b"Link", b"</a.js>; rel=preload"), ("X-Two", " padded\t")])
        errors = []
        for bad in ([("Bad Name", "v")], [("X-Bad", "a\r\nInjected: yes")]):
            try:
                hints(bad)
            except ValueError as e:
                errors.append(str(e))
        start_response("200 OK", [("Content-Type", "text/plain")])

        def body():
            yield ("|".join(errors) + "\n").encode()
            hints([("Link", "</late.css>")])  # after the head: ignored
            yield b"end"

        return body()
    if path == "/socket-keep":
        # Keep a reference past the request (and the connection).
        sock = environ["gunicorn.socket"]
        _KEPT.append(sock)
        info = {"fileno": sock.fileno(), "same": len(_KEPT) > 1 and _KEPT[-2] is sock}
        return _json(start_response, info)
    if path == "/socket-kept":
        filenos = [s.fileno() for s in _KEPT]
        del _KEPT[:]
        return _json(start_response, {"filenos": filenos})
    if path == "/socket":
        sock = environ["gunicorn.socket"]
        info = {
            "type": "%s.%s" % (type(sock).__module__, type(sock).__name__),
            "peer": list(sock.getpeername()[:2]),
            "remote": [environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])],
            "timeout": sock.gettimeout(),
        }
        sock.close()  # the app's object only: the connection goes on
        return _json(start_response, info)
    if path == "/":
        body = b"ok"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


validated = validator(app)
