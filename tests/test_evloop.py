"""The evloop worker: one thread, a readiness loop over many keep-alive
connections, the app called inline. Pipelining, fairness, partial heads,
timeouts, shutdown and recycling; the keep-alive tests it shares with gthread
(10,000 requests on a connection, idle timeout, connection cap, graceful
TERM with a request in flight, no request lost when workers are replaced, a
burst of connections spread over the workers) are in test_gthread.py.
App: tests/apps/shapes.py."""

import json
import re
import signal
import socket
import threading
import time

import pytest

from conftest import serve
from wsgi_helpers import Client

EVLOOP = ["-k", "evloop", "-b", "127.0.0.1:0"]


@pytest.fixture(scope="module")
def ev(request):
    return serve(request, *EVLOOP, "shapes:app")


def test_pipelined_requests_are_all_answered_in_order(ev):
    c = Client(ev.port)
    try:
        # More than one turn's fair share, and more than one read's worth.
        batch = b"".join(b"GET /?%d HTTP/1.1\r\nHost: t\r\n\r\n" % i for i in range(300))
        c.send(batch + b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        for _ in range(300):
            assert c.read_response()[2] == b"ok"
        status, headers, body = c.read_response()
        assert status == 200 and headers["connection"] == "close" and "pid" in json.loads(body)
        c.assert_closed()
    finally:
        c.close()


def test_held_responses_go_out_before_an_error_answer_and_the_close(ev):
    # A response held back for the batch is sent before the 400 of a bad
    # request pipelined behind it, and before the connection is shut down.
    c = Client(ev.port)
    try:
        c.send(b"GET /?1 HTTP/1.1\r\nHost: t\r\n\r\nGET /?2 HTTP/1.1\r\nHost: t\r\n\r\n"
               b"GET / HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n")
        assert c.read_response()[2] == b"ok"
        assert c.read_response()[2] == b"ok"
        status, headers, _ = c.read_response()
        assert status == 400 and headers["connection"] == "close"
        c.assert_closed()
    finally:
        c.close()
    c = Client(ev.port)
    try:
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.0\r\n\r\n")
        assert c.read_response()[2] == b"ok"
        status, headers, body = c.read_response()
        assert status == 200 and body == b"ok"
        c.assert_closed()
    finally:
        c.close()


def test_a_request_split_across_reads(ev):
    c = Client(ev.port)
    try:
        for piece in (b"GET / HT", b"TP/1.1\r\nHo", b"st: t\r\n", b"\r\n"):
            c.send(piece)
            time.sleep(0.01)  # let each piece arrive on its own
        assert c.read_response()[2] == b"ok"
        body = b"x" * 50_000
        status, _, got = c.request("/read-all", "POST", body)
        assert status == 200 and json.loads(got)["data"] == body.decode()
    finally:
        c.close()


def test_partial_heads_on_interleaved_connections(ev):
    # One parser serves every connection: a head left half-parsed on one must
    # not leak into another's.
    a, b = Client(ev.port), Client(ev.port)
    try:
        a.send(b"GET /pid HTTP/1.1\r\nHost: t\r\nX-Long-Header-Name: aaaaaaaaaaaaaaaa")
        b.send(b"GET / HTTP/1.1\r\nHo")
        time.sleep(0.05)  # let both partial heads be read
        assert a.sock.send(b"aaaa\r\n\r\n")
        assert "pid" in json.loads(a.read_response()[2])
        b.send(b"st: t\r\n\r\n")
        assert b.read_response()[2] == b"ok"
        c = Client(ev.port)
        c.send(b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
        assert c.read_response()[0] == 200
        c.close()
    finally:
        a.close()
        b.close()


def test_many_concurrent_keep_alive_connections_on_one_thread(ev):
    clients = [Client(ev.port) for _ in range(200)]
    try:
        pids = set()
        for rnd in range(3):
            for c in clients:
                c.send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            for c in clients:
                status, headers, body = c.read_response()
                assert status == 200 and headers["connection"] == "keep-alive"
                got = json.loads(body)
                pids.add((got["pid"], got["thread"]))
        assert len(pids) == 1  # one worker process, one thread
    finally:
        for c in clients:
            c.close()


@pytest.mark.parametrize("path, body", [("/", b"ok"), ("/stream", b"one two three")])
def test_a_batch_of_ready_connections_is_answered_at_once(start_server, tmp_path_factory, path, body):
    # Connections that are ready together are served as one batch with their
    # responses held back until the batch ends, then sent together: a list
    # body ("/") waits in memory (left behind, its client would wait for its
    # 10 s timeout), a streamed one ("/stream") is written corked (left
    # corked, the kernel would send it only after 200 ms).
    markers = tmp_path_factory.mktemp("markers")
    srv = start_server(*EVLOOP, "shapes:app", env={"FERRICORN_TEST_MARKERS": str(markers)})
    blocker = Client(srv.port)
    clients = [Client(srv.port) for _ in range(8)]
    try:
        waited = []
        for _ in range(5):
            (markers / "sleep").unlink(missing_ok=True)
            blocker.send(b"GET /sleep?0.05 HTTP/1.1\r\nHost: t\r\n\r\n")
            deadline = time.monotonic() + 10
            while not (markers / "sleep").exists():
                assert time.monotonic() < deadline, srv.log()
                time.sleep(0.005)  # poll the marker until the deadline
            # The worker is inside the app: these eight become ready together.
            for c in clients:
                c.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
            assert blocker.read_response()[0] == 200
            t0 = time.monotonic()
            for c in clients:
                assert c.read_response()[2] == body
            waited.append(time.monotonic() - t0)
        assert sum(waited) < 0.5, waited
    finally:
        blocker.close()
        for c in clients:
            c.close()


def test_header_timeout_answers_408_and_idle_first_connection_closes(start_server):
    srv = start_server(*EVLOOP, "--header-timeout", "1", "shapes:app")
    partial = Client(srv.port, timeout=10)
    silent = Client(srv.port, timeout=10)
    partial.send(b"GET / HTTP/1.1\r\nHost: t\r\n")
    t0 = time.monotonic()
    status, headers, _ = partial.read_response()
    assert status == 408 and headers["connection"] == "close"
    assert silent.sock.recv(10) == b""  # nothing sent: closed without a response
    assert 0.5 < time.monotonic() - t0 < 5
    # Other clients were served all along.
    c = Client(srv.port)
    assert c.request("/")[2] == b"ok"
    for x in (partial, silent, c):
        x.close()


def test_quit_leaves_at_once(start_server):
    srv = start_server(*EVLOOP, "shapes:app")
    idle = Client(srv.port, timeout=15)
    assert idle.request("/")[2] == b"ok"
    silent = Client(srv.port, timeout=15)  # connected, nothing sent yet
    partial = Client(srv.port, timeout=15)
    partial.send(b"GET / HTTP/1.1\r\n")
    t0 = time.monotonic()
    srv.signal(signal.SIGQUIT)
    assert srv.wait_exit(10) == 0
    assert time.monotonic() - t0 < 5
    for c in (idle, silent, partial):
        assert c.sock.recv(10) == b""
        c.close()


def test_timeout_kills_a_stuck_request(start_server):
    srv = start_server(*EVLOOP, "-t", "2", "shapes:app")
    stuck = Client(srv.port, timeout=15)
    stuck.send(b"GET /sleep?30 HTTP/1.1\r\nHost: t\r\n\r\n")
    srv.wait_for(r"\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\)", timeout=10)
    srv.wait_for(r"Worker timed out while serving: GET /sleep\?30 HTTP/1\.1")
    with pytest.raises((EOFError, ConnectionResetError)):
        stuck.read_response()
    stuck.close()
    srv.wait_booted(2)
    c = Client(srv.port)
    assert c.request("/")[2] == b"ok"
    c.close()


def test_heartbeat_stays_live_while_idle_with_open_connections(start_server):
    srv = start_server(*EVLOOP, "-t", "1", "--keep-alive", "10", "shapes:app")
    c = Client(srv.port, timeout=10)
    assert c.request("/")[2] == b"ok"
    # Idle with an open connection for more than twice the timeout: no kill.
    with pytest.raises(AssertionError):
        srv.wait_for(r"WORKER TIMEOUT", timeout=2.5)
    assert c.request("/")[2] == b"ok"
    c.close()


class KeepAliveLoop:
    """GET / over keep-alive connections in a thread, reconnecting whenever
    the server answers `Connection: close`; counts failures."""

    def __init__(self, port, seconds=45.0):
        self.port = port
        self.ok = 0
        self.failures = []
        self._stop = threading.Event()
        self._until = time.monotonic() + seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        c = None
        while not self._stop.is_set() and time.monotonic() < self._until:
            try:
                if c is None:
                    c = Client(self.port)
                status, headers, body = c.request("/")
                if status == 200 and body == b"ok":
                    self.ok += 1
                else:
                    self.failures.append("status %d" % status)
                if headers.get("connection") == "close":
                    c.close()
                    c = None
            except Exception as e:  # noqa: BLE001 - any failure counts
                self.failures.append(repr(e))
                c = None
        if c is not None:
            c.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def test_max_requests_recycles_without_failed_requests(start_server):
    srv = start_server(*EVLOOP, "-w", "2", "--max-requests", "50", "shapes:app", workers_booted=2)
    with KeepAliveLoop(srv.port) as a, KeepAliveLoop(srv.port) as b:
        deadline = time.monotonic() + 40
        while srv.count(r"Replacing worker \(pid:\d+\): max requests reached") < 3:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)  # poll the log until the deadline
    assert a.failures == [] and b.failures == [], (a.failures[:5], b.failures[:5])
    assert a.ok + b.ok >= 150
    assert srv.count(r"Autorestarting worker after current request\.") >= 3
    srv.wait_for(r"Worker exiting \(pid: \d+\)", timeout=15)


def test_threads_setting_is_reported_as_ignored(start_server):
    srv = start_server(*EVLOOP, "--threads", "4", "shapes:app")
    srv.wait_for(r"--threads has no effect on the evloop worker")
    c = Client(srv.port)
    assert json.loads(c.request("/environ")[2])["multithread"] is False
    c.close()
