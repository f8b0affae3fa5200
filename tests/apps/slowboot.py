"""An app whose import takes SLOWBOOT seconds (default 2): the worker boots
slowly while clients already connect (tests/test_conn_timeouts.py)."""

import os
import time

time.sleep(float(os.environ.get("SLOWBOOT", "2")))


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
