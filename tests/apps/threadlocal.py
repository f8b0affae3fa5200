"""Counts requests in a `threading.local`: per app thread, across requests."""

import threading

local = threading.local()


def app(environ, start_response):
    local.n = getattr(local, "n", 0) + 1
    body = ("%d %d" % (local.n, threading.get_ident())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
