"""`gunicorn.socket` is made on first use (wsgi/extras.rs), under every
worker class: an app that never touches it costs no descriptor; one that
does gets a working socket; references kept past the request are inert;
and whatever the app keeps, the client sees the end of its response."""

import json
import socket
import time

import pytest

from conftest import classes, raw_request, serve, worker_args
from wsgi_helpers import Client, one_request


@pytest.fixture(scope="module", params=classes())
def srv(request):
    server = serve(request, *worker_args(request.param), "-b", "127.0.0.1:0",
                   "--header-timeout", "1", "--timeout", "30", "lazysock:app")
    server.worker = request.param
    return server


def get_json(port, path):
    status, _, body = one_request(port, path)
    assert status == 200, body
    return json.loads(body)


def test_untouched_socket_makes_no_descriptor_touched_one_works(srv):
    got = get_json(srv.port, "/touch")
    assert got["isinstance"] and got["not_str"]
    assert got["still"] == got["before"]  # nothing made yet
    assert got["fileno"] >= 0 and got["touched"] == got["before"] + 1
    assert got["plain"]  # a plain socket.socket from then on
    assert got["peer"] == got["remote"]
    assert got["timeout"] is None
    assert got["nodelay"] != 0
    # --timeout 30 both ways (reads: since the app touched the object).
    assert got["SO_SNDTIMEO"] == got["SO_RCVTIMEO"] == 30, got
    assert got["closed"] == got["before"]  # the app's close() closed its duplicate only
    # The worker's connections are unaffected.
    assert get_json(srv.port, "/untouched")["fds"] >= 1
    c = Client(srv.port)
    try:
        for _ in range(2):  # the same connection, kept alive where the worker allows it
            _, headers, body = c.request("/touch")
            assert json.loads(body)["peer"] == list(c.sock.getsockname())
            if headers.get("connection") == "close":
                break
    finally:
        c.close()


def test_kept_untouched_socket_is_inert(srv):
    get_json(srv.port, "/keep-untouched")
    got = get_json(srv.port, "/use-kept")
    assert got["filenos"] == [-1] and got["send_errors"] == 1, got


@pytest.mark.parametrize("path", ["/keep-file", "/keep-input"])
def test_client_sees_eof_when_the_app_keeps_the_connection(srv, path):
    # A close-delimited response (HTTP/1.0, no length): the client reads to EOF, which the worker
    # must give (shutdown) although a kept object still holds the connection.
    started = time.monotonic()
    raw = raw_request(srv.port, b"GET %s HTTP/1.0\r\nHost: x\r\n\r\n"
                      % path.encode(), timeout=10)
    assert raw.endswith(b"\r\n\r\nno length: ends at EOF"), raw
    assert time.monotonic() - started < 5
    get_json(srv.port, "/drop-kept")


def test_app_reads_on_the_socket_get_the_io_timeout(srv):
    # The head came without a body, so the worker left the 1 s header
    # timeout on the connection; the app's own read must get --timeout.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /recv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        time.sleep(1.5)  # a client slower than the header timeout (the point of the test)
        s.sendall(b"late")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert data.endswith(b'{"got": "late"}'), data

