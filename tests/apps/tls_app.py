"""basic.py's and bodies.py's paths under TLS (bodies' under /b/), and a
large file sent with wsgi.file_wrapper (/bigfile: bodies.pattern(BIG))."""

import os
import tempfile

import basic
import bodies

BIG = 3 * 1024 * 1024 + 17
_BIGFILE = os.path.join(tempfile.mkdtemp(prefix="fc-tls-"), "big.bin")
with open(_BIGFILE, "wb") as _f:
    _f.write(bodies.pattern(BIG))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/b/"):
        environ["PATH_INFO"] = path[2:]
        return bodies.app(environ, start_response)
    if path == "/bigfile":
        start_response("200 OK", [("Content-Length", str(BIG))])
        return environ["wsgi.file_wrapper"](open(_BIGFILE, "rb"), 65536)
    if path == "/socket":
        try:
            environ["gunicorn.socket"].fileno()
            body = b"usable"
        except OSError as e:
            body = ("refused: %s" % e).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    return basic.app(environ, start_response)
