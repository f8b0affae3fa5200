"""Request and response bodies of every size class the request path treats
differently: bodies read straight from the socket into `bytes`, bodies
larger than that fast path, and response chunks large enough to be written
with writev instead of being copied (see docs/profile.md)."""

import hashlib
import json
import os

MARKER_DIR = os.environ.get("FERRICORN_TEST_MARKERS")


def pattern(n):
    """`n` bytes that are not all alike, so a misplaced slice shows."""
    block = bytes(range(251))
    return (block * (n // len(block) + 1))[:n]


def _json(start_response, obj):
    body = json.dumps(obj).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _digest(data):
    return {"len": len(data), "sha": hashlib.sha256(data).hexdigest()}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    qs = environ.get("QUERY_STRING", "")
    inp = environ["wsgi.input"]
    if path == "/read-whole":
        data = inp.read()
        again = inp.read()
        return _json(start_response, dict(_digest(data), again=len(again)))
    if path == "/read-by":
        n = int(qs)
        parts = []
        while True:
            piece = inp.read(n)
            if not piece:
                break
            assert len(piece) <= n
            parts.append(piece)
        return _json(start_response, _digest(b"".join(parts)))
    if path == "/read-whole-guarded":
        try:
            inp.read()
            outcome = "no error"
        except OSError as e:
            outcome = "OSError " + type(e).__name__
        with open(os.path.join(MARKER_DIR, "guarded"), "a") as f:
            f.write(outcome + "\n")
        return _json(start_response, {})
    if path == "/echo":
        body = inp.read()
        headers = [("Content-Type", "application/octet-stream")]
        if qs != "chunked":
            headers.append(("Content-Length", str(len(body))))
        start_response("200 OK", headers)
        return [body]
    if path == "/list":
        # qs: size[,declared]: one chunk of `size` bytes, Content-Length `declared` (default: size).
        size, _, declared = qs.partition(",")
        start_response("200 OK", [("Content-Length", declared or size)])
        return [pattern(int(size))]
    if path == "/gen":
        # qs: "n,size[,length]": a generator of n chunks, Content-Length when "length".
        n, size, *rest = qs.split(",")
        n, size = int(n), int(size)
        headers = [("Content-Type", "application/octet-stream")]
        if rest == ["length"]:
            headers.append(("Content-Length", str(n * size)))
        start_response("200 OK", headers)
        data = pattern(n * size)
        return (data[i * size : (i + 1) * size] for i in range(n))
    if path == "/write":
        size = int(qs)
        write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
        write(b"<")
        write(pattern(size))
        write(b">")
        return []
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
