"""The gthread worker: keep-alive, threads, the poller, limits, shutdown.
The keep-alive tests run under evloop too (its own tests: test_evloop.py).
App: tests/apps/shapes.py."""

import collections
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import (KEEP_ALIVE_CLASSES, PYTHON, ROOT, classes, pid_alive, pinned_to_one_cpu, serve, wait_until,
                      worker_args, worker_classes)
from wsgi_helpers import Client

GTHREAD = ["-k", "gthread", "-b", "127.0.0.1:0"]
# The keep-alive workers (gthread with two threads), for the tests all must pass.
KEEP_ALIVE = {worker: [*worker_args(worker, threads=2), "-b", "127.0.0.1:0"] for worker in KEEP_ALIVE_CLASSES}


@pytest.fixture(scope="module")
def gt(request):
    return serve(request, *GTHREAD, "--threads", "2", "shapes:app")


@pytest.fixture(scope="module", params=classes(*KEEP_ALIVE_CLASSES))
def ka(request):
    return serve(request, *KEEP_ALIVE[request.param], "shapes:app")


def test_a_body_the_app_never_read_gets_no_late_continue(ka):
    # `Expect: 100-continue`, and the app answers without reading the body.
    # A 100 sent now would come after the final response, where the client
    # takes it for the start of the next one (and it would wait for a body
    # it was never asked for): the connection closes instead.
    with socket.create_connection(("127.0.0.1", ka.port), timeout=10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 "), data
    assert b"100 Continue" not in data, data


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


@worker_classes(*KEEP_ALIVE_CLASSES)
def test_keep_alive_idle_timeout_closes(start_server, worker):
    srv = start_server(*KEEP_ALIVE[worker], "--keep-alive", "1", "shapes:app")
    c = Client(srv.port, timeout=10)
    assert c.request("/")[1]["connection"] == "keep-alive"
    t0 = time.monotonic()
    assert c.sock.recv(10) == b""  # the server closes the idle connection
    waited = time.monotonic() - t0
    assert 0.5 < waited < 5, waited
    c.close()


@worker_classes(*KEEP_ALIVE_CLASSES)
def test_keep_alive_zero_closes_after_each_response(start_server, worker):
    srv = start_server(*KEEP_ALIVE[worker], "--keep-alive", "0", "shapes:app")
    c = Client(srv.port)
    assert c.request("/")[1]["connection"] == "close"
    assert c.sock.recv(10) == b""
    c.close()


@worker_classes(*KEEP_ALIVE_CLASSES)
def test_worker_connections_caps_open_connections(start_server, worker):
    srv = start_server(*KEEP_ALIVE[worker], "--worker-connections", "1", "shapes:app")
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


def test_a_fresh_worker_answers_concurrent_first_requests(start_server):
    """A new worker's threads once hung on their first concurrent requests:
    one held the environ's cache lock while it let go of the GIL (the first
    use of an interned string does), another took the GIL and waited for the
    lock. Each round meets a fresh worker (`--max-requests 4` replaces it);
    five rounds failed 5 runs in 6 before the fix."""
    srv = start_server(*GTHREAD, "--threads", "4", "--max-requests", "4", "shapes:app")
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


def test_heartbeat_stays_live_during_a_long_request(start_server):
    srv = start_server(*GTHREAD, "--threads", "2", "--timeout", "1", "shapes:app")
    c = Client(srv.port, timeout=15)
    status, _, body = c.request("/sleep?2.5", headers="Connection: close\r\n")
    c.close()
    assert status == 200 and json.loads(body) == {"slept": 2.5}
    assert "WORKER TIMEOUT" not in srv.log()


@worker_classes(*KEEP_ALIVE_CLASSES)
def test_term_finishes_in_flight_and_lets_idle_go_after_a_linger(start_server, tmp_path_factory, worker):
    markers = tmp_path_factory.mktemp("markers")
    srv = start_server(*KEEP_ALIVE[worker], "shapes:app", env={"FERRICORN_TEST_MARKERS": str(markers)})
    idle = Client(srv.port)
    assert idle.request("/")[2] == b"ok"
    late = Client(srv.port)
    assert late.request("/")[2] == b"ok"
    # A connection that never sends anything is let go too.
    silent = Client(srv.port, timeout=15)
    busy = Client(srv.port, timeout=15)
    busy.send(b"GET /sleep?1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    deadline = time.monotonic() + 10
    while not (markers / "sleep").exists():
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.02)  # poll the marker until the deadline
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    # The request in flight finishes, its response saying the worker
    # is stopping.
    status, headers, body = busy.read_response()
    assert status == 200 and json.loads(body) == {"slept": 1.5}
    assert headers["connection"] == "close"
    # A request on an idle keep-alive connection after TERM (within the
    # 2 s linger) is answered (and the connection closed after it), not
    # dropped.
    status, headers, body = late.request("/")
    assert (status, headers["connection"], body) == (200, "close", b"ok")
    late.assert_closed()
    # One that stays idle is closed once the stop's linger (2 s) is over.
    idle.assert_closed(timeout=10)
    assert 1.5 < time.monotonic() - t0 < 6, time.monotonic() - t0
    assert srv.wait_exit(20) == 0
    # The silent one did not hold the exit for the header timeout (10 s).
    assert time.monotonic() - t0 < 6
    silent.assert_closed()
    silent.close()
    idle.close()
    late.close()
    busy.close()


def keep_alive_load(port, stop, lost, served):
    """One client sending request after request on a keep-alive connection,
    reconnecting after a `Connection: close` response. A request that gets
    no response (EOF or reset instead) is lost."""
    c = None
    while not stop.is_set():
        try:
            if c is None:
                c = Client(port, timeout=10)
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, _ = c.read_response()
        except (OSError, EOFError) as e:
            lost.append(repr(e))
            if c is not None:
                c.close()
            c = None
            continue
        assert status == 200
        served.append(1)
        if headers.get("connection") == "close":
            c.close()
            c = None
    if c is not None:
        c.close()


@worker_classes(*KEEP_ALIVE_CLASSES)
@pytest.mark.parametrize("how", ["max-requests", "HUP"])
def test_replacing_workers_loses_no_keep_alive_request(start_server, worker, how):
    """Workers replaced under a keep-alive load (`--max-requests`, HUP):
    every request sent gets its response. A stopping worker answers a
    request that arrives on an idle keep-alive connection (with
    `Connection: close`) instead of closing the connection under it, as
    gunicorn 27's gthread does for 2 s."""
    extra = ["--max-requests", "200"] if how == "max-requests" else []
    srv = start_server(*KEEP_ALIVE[worker], "-w", "2", *extra, "shapes:app", workers_booted=2)
    stop, lost, served = threading.Event(), [], []
    clients = [threading.Thread(target=keep_alive_load, args=(srv.port, stop, lost, served), daemon=True)
               for _ in range(6)]
    try:
        for c in clients:
            c.start()
        for n in range(1, 7):
            if how == "HUP":
                wait_until(lambda: len(served) >= 300 * n, what="requests", log=srv.log)
                srv.signal(signal.SIGHUP)
            wait_until(lambda: srv.count(r"Worker exiting") >= 2 * n, timeout=30, what="worker exits", log=srv.log)
    finally:
        stop.set()
        for c in clients:
            c.join(15)
    assert lost == [], "%d of %d requests lost: %s" % (len(lost), len(served) + len(lost), lost[:3])


def test_an_orphaned_worker_with_a_stuck_request_leaves_after_the_graceful_timeout(start_server, tmp_path_factory):
    """Its master gone, a gthread worker stops; a request that does not end
    does not keep it (and its listening socket) alive past
    `--graceful-timeout`: no master is left to kill it."""
    markers = tmp_path_factory.mktemp("markers")
    srv = start_server(*GTHREAD, "--threads", "2", "--graceful-timeout", "2", "shapes:app",
                       env={"FERRICORN_TEST_MARKERS": str(markers)})
    stuck = Client(srv.port, timeout=30)
    worker = None
    try:
        worker = int(srv.wait_for(r"Booting worker with pid: (\d+)").group(1))
        stuck.send(b"GET /sleep?60 HTTP/1.1\r\nHost: t\r\n\r\n")
        wait_until((markers / "sleep").exists, what="the request to start", log=srv.log)
        os.kill(srv.master_pid, signal.SIGKILL)
        t0 = time.monotonic()
        srv.wait_for(r"Parent changed, shutting down: worker %d" % worker)
        wait_until(lambda: not pid_alive(worker), timeout=15, what="the worker's exit", log=srv.log)
        assert time.monotonic() - t0 < 6, time.monotonic() - t0
    finally:
        stuck.close()
        if worker is not None and pid_alive(worker):
            os.kill(worker, signal.SIGKILL)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity (Linux)")
@worker_classes(*KEEP_ALIVE_CLASSES)
def test_a_burst_of_keep_alive_connections_is_spread_over_the_workers(start_server, worker):
    # Keep-alive connections stay with the worker that accepted them. A
    # burst of new connections (a load generator or a proxy's pool opening
    # them at once) must not all land on the worker that happened to be
    # running: with the server on one cpu, accepting all that wait put all
    # 32 on one of four workers in every round, under evloop and gthread.
    workers, n = 4, 32
    srv = start_server(*KEEP_ALIVE[worker], "-w", str(workers), "shapes:app", cmd=pinned_to_one_cpu(),
                       workers_booted=workers)
    for _ in range(3):
        clients = []
        try:
            for _ in range(n):  # connect and send at once, as wrk does
                clients.append(Client(srv.port))
                clients[-1].send(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
            pids = collections.Counter(json.loads(c.read_response()[2])["pid"] for c in clients)
        finally:
            for c in clients:
                c.close()
        # Spread: on one cpu the split is usually 8 / 8 / 8 / 8 or near
        # it, now and then 19 / 9 / 3 / 1 or, about once in a hundred
        # rounds, 12 / 11 / 9 / 0 (a worker woken late finds the queue
        # taken). So under evloop: three workers or more got some, none more
        # than three quarters. gthread takes its share each turn without
        # evloop's wait (workers::accepts), so a worker the scheduler keeps
        # running takes several shares before the others wake: 25 / 7 / 0 /
        # 0 seen in two of about ten fresh-clone CI runs. What it must keep
        # is the fix itself: the burst is not all on one worker.
        if worker == "evloop":
            assert len(pids) >= workers - 1 and max(pids.values()) <= n * 3 // 4, pids
        else:
            assert len(pids) >= 2, pids


def test_sync_with_threads_becomes_gthread(start_server):
    srv = start_server("-k", "sync", "--threads", "3", "-b", "127.0.0.1:0", "shapes:app")
    c = Client(srv.port)
    status, headers, body = c.request("/environ")
    assert json.loads(body)["multithread"] is True
    assert headers["connection"] == "keep-alive"
    c.close()


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


def test_gunicorn_class_paths_are_accepted(start_server):
    srv = start_server(
        "-k",
        "gunicorn.workers.gthread.ThreadWorker",
        "-b",
        "127.0.0.1:0",
        "shapes:app",
    )
    c = Client(srv.port)
    assert c.request("/")[1]["connection"] == "keep-alive"
    c.close()
    assert ROOT.exists()
