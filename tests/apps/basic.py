"""A plain WSGI app with one route per behaviour the tests check."""

import json
import os
import sys
import time

CLOSE_MARKER = os.environ.get("FERRICORN_TEST_CLOSE_MARKER")


class ClosingBody:
    """An iterable whose close() leaves a mark, to prove close() is called."""

    def __init__(self, chunks, fail=False):
        self.chunks = chunks
        self.fail = fail

    def __iter__(self):
        for c in self.chunks:
            if self.fail:
                raise RuntimeError("boom while iterating")
            yield c

    def close(self):
        if CLOSE_MARKER:
            with open(CLOSE_MARKER, "a") as f:
                f.write("closed\n")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/":
        body = b"Hello, world!"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    if path == "/environ":
        keys = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        keys["wsgi.input.type"] = type(environ["wsgi.input"]).__name__
        keys["wsgi.errors.has_write"] = hasattr(environ["wsgi.errors"], "write")
        body = json.dumps(keys).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/echo":
        data = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/lines":
        inp = environ["wsgi.input"]
        first = inp.readline()
        rest = inp.readlines()
        body = json.dumps({"first": first.decode(), "rest": [r.decode() for r in rest]}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/iter-input":
        lines = [line.decode() for line in environ["wsgi.input"]]
        body = json.dumps(lines).encode()
        start_response("200 OK", [])
        return [body]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (("chunk%d\n" % i).encode() for i in range(5))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return [b"and returned"]
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"a", b"b"])
    if path == "/close-fail":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody([b"a"], fail=True)
    if path == "/error":
        raise ValueError("deliberate failure")
    if path == "/exc-info":
        try:
            raise KeyError("first")
        except KeyError:
            start_response("200 OK", [])
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"replaced"]
    if path == "/bad-header":
        start_response("200 OK", [("X-Bad", "a\r\nInjected: yes")])
        return [b"never"]
    if path == "/no-content":
        start_response("204 No Content", [])
        return []
    if path == "/sleep":
        marker = os.environ.get("FERRICORN_TEST_STARTED_MARKER")
        if marker:
            with open(marker, "w") as f:
                f.write("started")
        seconds = float(environ.get("QUERY_STRING") or "1")
        time.sleep(seconds)
        body = b"slept"
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/errors-stream":
        environ["wsgi.errors"].write("message to wsgi.errors\n")
        start_response("200 OK", [])
        return [b"ok"]
    if path == "/file":
        fname = os.path.join(os.path.dirname(__file__), "basic.py")
        f = open(fname, "rb")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](f, 1024)
    if path == "/pid":
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


application = app


def create_app(greeting="factory"):
    def factory_app(environ, start_response):
        body = greeting.encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    return factory_app
