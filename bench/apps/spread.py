"""For bench/reuse_port.py: answers with the worker's pid; `/slow` first waits 50 ms."""

import os
import time

PID = str(os.getpid()).encode()


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(PID)))])
    return [PID]
