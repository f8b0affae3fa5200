"""An app that writes to stdout and stderr, for --capture-output."""

import os
import sys


def app(environ, start_response):
    print("printed to stdout", flush=True)
    sys.stderr.write("written to stderr\n")
    sys.stderr.flush()
    os.write(2, b"raw fd 2 write\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
