"""The server under test for the ASGI tests (tests/test_asgi_*.py).

`make test` runs them against ferricorn `-k asgi`. gunicorn 27.0.1's own
`-k asgi` worker is the oracle: FERRICORN_ASGI_SERVERS=gunicorn (or
`ferricorn,gunicorn`) runs the same tests against it, e.g.

    FERRICORN_ASGI_SERVERS=ferricorn,gunicorn .venv/bin/python -m pytest tests/test_asgi_spec.py

A fixture takes `params=ASGI_SERVERS` and starts its server with
`serve_asgi(request, request.param, ...)`.
"""

import os

from conftest import gunicorn_cmd, serve

ASGI_SERVERS = [s for s in os.environ.get("FERRICORN_ASGI_SERVERS", "ferricorn").split(",") if s]
assert set(ASGI_SERVERS) <= {"ferricorn", "gunicorn"}, ASGI_SERVERS


def asgi_cmd(server):
    """The command that runs `server` (None: conftest's ferricorn)."""
    return gunicorn_cmd() if server == "gunicorn" else None


def serve_asgi(request, server, *args, **kwargs):
    """`conftest.serve` with `-k asgi` on `server` (ferricorn or gunicorn)."""
    return serve(request, "-k", "asgi", "-b", "127.0.0.1:0", *args, cmd=asgi_cmd(server), **kwargs)
