"""sleep: waits 10 ms per request (a stand-in for I/O); measures concurrency, not speed."""

import time

BODY = b"slept 10 ms"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]
