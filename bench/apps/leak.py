"""A leaking app for bench/max_requests.py: every request keeps 100 KiB
(touched, so it counts in RSS) and answers with the worker's pid."""

import os

KEPT = []
CHUNK = 100 * 1024


def app(environ, start_response):
    KEPT.append(b"x" * CHUNK)
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
