"""The gthread worker: keep-alive, threads, the poller, limits, shutdown.
The keep-alive tests run under evloop too (its own tests: test_evloop.py).
App: tests/apps/shapes.py."""

import json
import signal
import socket
import subprocess
import time

import pytest

from conftest import PYTHON, ROOT, wait_until
from wsgi_helpers import Client, start

GTHREAD = ["-k", "gthread", "-b", "127.0.0.1:0"]
# The keep-alive workers, for the tests both must pass.
KEEP_ALIVE = {
    "gthread": [*GTHREAD, "--threads", "2"],
    "evloop": ["-k", "evloop", "-b", "127.0.0.1:0"],
}


@pytest.fixture(scope="module")
def gt(tmp_path_factory):
    srv = start(tmp_path_factory, *GTHREAD, "--threads", "2", "shapes:app")
    yield srv
    srv.stop()


@pytest.fixture(scope="module", params=sorted(KEEP_ALIVE))
def ka(request, tmp_path_factory):
    srv = start(tmp_path_factory, *KEEP_ALIVE[request.param], "shapes:app")
    yield srv
    srv.stop()


def test_ten_thousand_requests_on_one_connection(ka):
    c = Client(ka.port)
    try:
        req = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
        for _ in range(10_000):
            c.send(req)
            status, headers, body = c.read_response()
            assert status == 200 and body == b"ok"
        assert headers["connection"] == "keep-alive"
    finally:
        c.close()


def test_pipelined_requests_are_all_answered(ka):
    c = Client(ka.port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 20 + b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for _ in range(20):
            assert c.read_response()[2] == b"ok"
        status, headers, body = c.read_response()
        assert status == 200 and headers["connection"] == "close" and "pid" in json.loads(body)
    finally:
        c.close()


def test_slow_reader_does_not_block_other_connections(gt):
    slow = socket.create_connection(("127.0.0.1", gt.port))
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        # 128 MiB that the client never reads: its thread stays blocked in a write.
        slow.sendall(b"GET /big-fixed?2048 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert slow.recv(100).startswith(b"HTTP/1.1 200")
        start_t = time.monotonic()
        for _ in range(20):
            c = Client(gt.port, timeout=5)
            try:
                assert c.request("/")[2] == b"ok"
            finally:
                c.close()
        assert time.monotonic() - start_t < 5
    finally:
        slow.close()


@pytest.mark.parametrize("worker", sorted(KEEP_ALIVE))
def test_keep_alive_idle_timeout_closes(tmp_path_factory, worker):
    srv = start(tmp_path_factory, *KEEP_ALIVE[worker], "--keep-alive", "1", "shapes:app")
    try:
        c = Client(srv.port, timeout=10)
        assert c.request("/")[1]["connection"] == "keep-alive"
        t0 = time.monotonic()
        assert c.sock.recv(10) == b""  # the server closes the idle connection
        waited = time.monotonic() - t0
        assert 0.5 < waited < 5, waited
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("worker", sorted(KEEP_ALIVE))
def test_keep_alive_zero_closes_after_each_response(tmp_path_factory, worker):
    srv = start(tmp_path_factory, *KEEP_ALIVE[worker], "--keep-alive", "0", "shapes:app")
    try:
        c = Client(srv.port)
        assert c.request("/")[1]["connection"] == "close"
        assert c.sock.recv(10) == b""
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize("worker", sorted(KEEP_ALIVE))
def test_worker_connections_caps_open_connections(tmp_path_factory, worker):
    srv = start(tmp_path_factory, *KEEP_ALIVE[worker], "--worker-connections", "1", "shapes:app")
    try:
        first = Client(srv.port)
        assert first.request("/")[2] == b"ok"  # now idle, kept alive, holding the only slot
        second = Client(srv.port, timeout=1.0)
        second.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        with pytest.raises(socket.timeout):
            second.sock.recv(10)  # not accepted while the first is open
        first.close()
        second.sock.settimeout(10)
        assert second.read_response()[2] == b"ok"
        second.close()
    finally:
        srv.stop()


def test_a_fresh_worker_answers_concurrent_first_requests(tmp_path_factory):
    """A new worker's threads once hung on their first concurrent requests:
    one held the environ's cache lock while it let go of the GIL (the first
    use of an interned string does), another took the GIL and waited for the
    lock. Each round meets a fresh worker (`--max-requests 4` replaces it);
    five rounds failed 5 runs in 6 before the fix."""
    srv = start(tmp_path_factory, *GTHREAD, "--threads", "4", "--max-requests", "4", "shapes:app")
    try:
        for rnd in range(10):
            # Only the fresh worker is left to accept.
            srv.wait_booted(rnd + 1)
            wait_until(lambda: srv.count(r"Worker exiting") >= rnd, what="the old worker's exit", log=srv.log)
            clients = [Client(srv.port, timeout=5) for _ in range(4)]
            for c in clients:
                c.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            for c in clients:
                assert c.read_response()[2] == b"ok", srv.log()
                c.close()
    finally:
        srv.stop()


def test_heartbeat_stays_live_during_a_long_request(tmp_path_factory):
    srv = start(tmp_path_factory, *GTHREAD, "--threads", "2", "--timeout", "1", "shapes:app")
    try:
        c = Client(srv.port, timeout=15)
        status, _, body = c.request("/sleep?2.5", headers="Connection: close\r\n")
        c.close()
        assert status == 200 and json.loads(body) == {"slept": 2.5}
        assert "WORKER TIMEOUT" not in srv.log()
    finally:
        srv.stop()


@pytest.mark.parametrize("worker", sorted(KEEP_ALIVE))
def test_term_finishes_in_flight_and_closes_idle(tmp_path_factory, worker):
    markers = tmp_path_factory.mktemp("markers")
    srv = start(tmp_path_factory, *KEEP_ALIVE[worker], "shapes:app", env={"FERRICORN_TEST_MARKERS": str(markers)})
    try:
        idle = Client(srv.port)
        assert idle.request("/")[2] == b"ok"
        # evloop: a connection that never sends anything gets a second after TERM.
        silent = Client(srv.port, timeout=15) if worker == "evloop" else None
        busy = Client(srv.port, timeout=15)
        busy.send(b"GET /sleep?1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = time.monotonic() + 10
        while not (markers / "sleep").exists():
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.02)  # poll the marker until the deadline
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        idle.sock.settimeout(10)
        assert idle.sock.recv(10) == b""  # idle keep-alive connection closed
        status, headers, body = busy.read_response()
        assert status == 200 and json.loads(body) == {"slept": 1.5}
        assert headers["connection"] == "close"
        assert srv.wait_exit(20) == 0
        if silent:
            # It did not hold the exit for the header timeout (10 s).
            assert time.monotonic() - t0 < 6
            assert silent.sock.recv(10) == b""
            silent.close()
        idle.close()
        busy.close()
    finally:
        srv.stop()


def test_sync_with_threads_becomes_gthread(tmp_path_factory):
    srv = start(tmp_path_factory, "-k", "sync", "--threads", "3", "-b", "127.0.0.1:0", "shapes:app")
    try:
        c = Client(srv.port)
        status, headers, body = c.request("/environ")
        assert json.loads(body)["multithread"] is True
        assert headers["connection"] == "keep-alive"
        c.close()
    finally:
        srv.stop()


@pytest.mark.parametrize(
    "name,mentions",
    [
        ("gevent", "event-loop"),
        ("eventlet", "event-loop"),
        ("tornado", "event-loop"),
        ("gunicorn.workers.ggevent.GeventWorker", "event-loop"),
        ("myproject.workers.CustomWorker", "Python worker classes"),
    ],
)
def test_unsupported_worker_classes_fail_clearly(name, mentions, tmp_path):
    p = subprocess.run(
        [PYTHON, "-m", "ferricorn", "-k", name, "shapes:app"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode != 0
    assert name in p.stderr and mentions in p.stderr and "gthread" in p.stderr, p.stderr


def test_gunicorn_class_paths_are_accepted(tmp_path_factory):
    srv = start(
        tmp_path_factory,
        "-k",
        "gunicorn.workers.gthread.ThreadWorker",
        "-b",
        "127.0.0.1:0",
        "shapes:app",
    )
    try:
        c = Client(srv.port)
        assert c.request("/")[1]["connection"] == "keep-alive"
        c.close()
    finally:
        srv.stop()
    assert ROOT.exists()
