"""Answers with the Python name and type of the thread serving the request."""

import threading


def app(e, s):
    s("200 OK", [("Content-Type", "text/plain")])
    t = threading.current_thread()
    return [("%s|%s|%s" % (t.name, type(t).__name__, threading.get_ident() == t.ident)).encode()]
