"""Read deadlines of a connection (workers/conn.rs): the header timeout
until a head is in, --timeout for a body, and the header timeout again for
the next head of a kept connection, however the previous request went
(no body, a body, the app's own reads on gunicorn.socket). The worker only
switches them when needed, so these check each path. App: lazysock.py."""

import socket
import time

import pytest

from conftest import classes, get, serve, worker_args
from wsgi_helpers import Client, slow_head_gets_408


# evloop keeps its own deadlines (tests/test_evloop.py).
@pytest.fixture(scope="module", params=classes("sync", "gthread"))
def srv(request):
    return serve(request, *worker_args(request.param), "-b", "127.0.0.1:0",
                 "--header-timeout", "1", "--timeout", "30", "lazysock:app")


def test_slow_body_gets_the_io_timeout(srv):
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: 4\r\n\r\n")
        time.sleep(1.5)  # a body slower than the header timeout (the point of the test)
        s.sendall(b"body")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nbody"), data


@pytest.mark.parametrize("first", [
    ("/untouched", "GET", b""),
    ("/echo", "POST", b"some body"),
    ("/touch", "GET", b""),
])
def test_next_head_gets_the_header_timeout_again(srv, first):
    path, method, body = first
    c = Client(srv.port)
    try:
        status, headers, _ = c.request(path, method, body)
        assert status == 200
        if headers.get("connection") != "close":
            slow_head_gets_408(c.sock)
            return
    finally:
        c.close()
    # Not kept (sync): a fresh connection's first head, the same deadline.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        slow_head_gets_408(s)


def test_a_silent_connection_made_while_the_worker_boots_is_let_go(start_server):
    # The connection waits in the backlog while the worker imports the app:
    # it was made from the listener as the master left it, and the worker
    # trusts it to carry the deadlines (workers/conn.rs, arm_listeners_from).
    # Without them a silent client would hold a sync worker for good (a
    # gthread worker keeps a silent one in its poller, costing no thread).
    srv = start_server("-k", "sync", "-b", "127.0.0.1:0", "--header-timeout", "1",
                       "slowboot:app", workers_booted=0, env={"SLOWBOOT": "1"})
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        srv.wait_booted()
        started = time.monotonic()
        assert s.recv(10) == b""  # closed, nothing sent: it never began a request
        assert time.monotonic() - started < 6
    assert get(srv.port)[0] == 200
