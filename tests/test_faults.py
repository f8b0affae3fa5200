"""Faults an operator meets (issue 20): `--max-requests` bounds what a worker
serves (so it bounds a leak), and `QUIT`/`INT` stop a worker at once, even
one stuck in the app."""

import signal
import threading
import time
from collections import Counter

import pytest
from conftest import get, gunicorn_cmd, parse_response, raw_request, wait_until, worker_args, worker_classes
from wsgi_helpers import Client

BUDGET = 20


@worker_classes()
@pytest.mark.parametrize("workers", [1, 2])
def test_max_requests_bounds_what_each_worker_serves(start_server, worker, workers):
    # One client, one request at a time, new connection each: nothing is in
    # flight when a budget runs out, so no worker may serve past it. Before:
    # the old worker served on until the master's tick and its replacement's
    # boot (123 of 20 with -w 2); then gthread 21 or 22 of 20 in 2 runs of 5
    # (its poller took the next connection before a thread reported).
    srv = start_server("-b", "127.0.0.1:0", "-w", str(workers), "--max-requests", str(BUDGET),
                       *worker_args(worker), "basic:app", workers_booted=workers)
    served = Counter()
    for _ in range(150):
        status, _, body = get(srv.port, "/pid", headers="Connection: close\r\n")
        assert status == 200, body
        served[int(body)] += 1
    assert max(served.values()) <= BUDGET, served
    # Replacements took over without a failed request, and every worker
    # but the current ones served its whole budget.
    assert len(served) >= 150 // (BUDGET + 1)


SLOW_CLOSE_APP = """
import os, time


class Body:
    def __init__(self, data):
        self.data = data

    def __iter__(self):
        yield self.data

    def close(self):
        time.sleep(0.2)


def app(environ, start_response):
    data = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(data)))])
    return Body(data)
"""


@worker_classes()
def test_max_requests_counts_a_request_the_client_has_before_the_server_is_done(start_server, tmp_path, worker):
    # The app's `close()` runs on after the client has its whole response
    # (by Content-Length) and has gone on to its next connection. Before:
    # gthread counted a request only once its thread was done, and took
    # the next connections meanwhile (12 of 8 with 4 threads).
    budget = 8
    (tmp_path / "slowclose.py").write_text(SLOW_CLOSE_APP)
    srv = start_server("-b", "127.0.0.1:0", "--max-requests", str(budget), "--pythonpath", str(tmp_path),
                       *worker_args(worker), "slowclose:app")
    served = Counter()
    for _ in range(3 * budget):
        c = Client(srv.port)
        try:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            status, _, body = c.read_response()
        finally:
            c.close()
        assert status == 200, body
        served[int(body)] += 1
    assert max(served.values()) <= budget, served
    assert len(served) >= 3, served


def _quick_stop(start_server, tmp_path, args, sig, cmd=None):
    """A server with `/sleep?30` in flight gets `sig`: (the client's answer or
    error, seconds from the signal to its answer, seconds to the master's
    exit, what `worker_int` recorded)."""
    marker, hooked, conf = tmp_path / "started", tmp_path / "worker_int", tmp_path / "conf.py"
    conf.write_text("def worker_int(worker):\n    open(%r, 'a').write('worker_int\\n')\n" % str(hooked))
    srv = start_server("-b", "127.0.0.1:0", "-c", str(conf), "--graceful-timeout", "20", *args, "basic:app",
                       env={"FERRICORN_TEST_STARTED_MARKER": str(marker)}, cmd=cmd)
    got = {}

    def client():
        try:
            got["answer"] = raw_request(srv.port, b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n", timeout=25)
        except OSError as e:
            got["answer"] = e
        got["at"] = time.monotonic()

    t = threading.Thread(target=client, daemon=True)
    t.start()
    wait_until(marker.exists, timeout=15, what="the app call", log=srv.log)
    sent = time.monotonic()
    srv.signal(sig)
    srv.wait_exit(timeout=25)
    exited = time.monotonic() - sent
    t.join(25)
    assert not t.is_alive()
    recorded = hooked.read_text() if hooked.exists() else ""
    return got["answer"], got["at"] - sent, exited, recorded


@worker_classes("sync", "evloop")
@pytest.mark.parametrize("sig", [signal.SIGQUIT, signal.SIGINT], ids=["QUIT", "INT"])
def test_quick_stop_interrupts_the_app_and_answers_500(start_server, tmp_path, worker, sig):
    # Before: the worker waited for the app (a 200 after 30 s, the master
    # KILLed it at --graceful-timeout); gunicorn 27: a 500 at 0.1 s, gone at 0.5 s.
    answer, answered, exited, recorded = _quick_stop(start_server, tmp_path, worker_args(worker), sig)
    assert isinstance(answer, bytes) and answer, (answer, answered)
    status, headers, _ = parse_response(answer)
    assert status == 500, answer
    assert headers.get("connection") == "close", headers
    assert answered < 3, answered
    assert exited < 3, exited
    assert recorded == "worker_int\n"


def test_quick_stop_gthread_leaves_at_once(start_server, tmp_path):
    # gthread's main thread leaves at once; the app thread goes with it.
    answer, answered, exited, recorded = _quick_stop(start_server, tmp_path, worker_args("gthread"), signal.SIGQUIT)
    assert answered < 3 and exited < 3, (answered, exited)
    assert recorded == "worker_int\n"


def test_quick_stop_matches_gunicorn(start_server, tmp_path):
    # The reference: gunicorn 27's sync worker raises SystemExit in the app
    # from its QUIT handler (after `worker_int` and a 0.1 s sleep).
    answer, answered, exited, recorded = _quick_stop(start_server, tmp_path, [], signal.SIGQUIT, cmd=gunicorn_cmd())
    assert parse_response(answer)[0] == 500
    assert answered < 3 and exited < 3, (answered, exited)
    assert recorded == "worker_int\n"


@worker_classes("gthread", "evloop")
def test_slow_clients_hold_no_thread(start_server, worker):
    # 20 clients send part of a head and stall (slowloris) against 2 threads:
    # a whole request still gets its answer at once, and each slow one gets
    # its 408 within --header-timeout of its accept, however it trickles.
    # Before (gthread): each slow head held a thread until its header
    # timeout, so the whole request waited for ten of them in turn.
    import socket

    srv = start_server("-b", "127.0.0.1:0", "-w", "1", "--header-timeout", "3",
                       *worker_args(worker, threads=2), "basic:app")
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        slow.append((s, time.monotonic()))
    started = time.monotonic()
    status, _, _ = get(srv.port, "/", headers="Connection: close\r\n")
    assert status == 200
    assert time.monotonic() - started < 2, time.monotonic() - started
    # One keeps trickling header lines: that does not extend its deadline.
    trickler, opened = slow[0]
    got = b""
    while not got:
        try:
            trickler.sendall(b"X-Slow: 1\r\n")
        except OSError:
            pass
        trickler.settimeout(0.5)
        try:
            got = trickler.recv(65536) or b"<closed>"
        except socket.timeout:
            assert time.monotonic() - opened < 8, "no answer to a slow head"
    assert got.startswith(b"HTTP/1.1 408"), got
    assert time.monotonic() - opened < 3 + 1.5, time.monotonic() - opened
    for s, _ in slow[1:]:
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 408")
    for s, _ in slow:
        s.close()


def test_gthread_bounds_a_slow_body_by_the_timeout(start_server):
    # A body trickling a byte a second, each within --timeout of the last:
    # before, it held its thread as long as it trickled (the main thread
    # beats, so the master never times the worker out); now the whole body
    # must be in within --timeout of the request's start.
    import socket

    srv = start_server("-b", "127.0.0.1:0", "-w", "1", "--timeout", "3",
                       *worker_args("gthread", threads=2), "basic:app")
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
    opened = time.monotonic()
    s.settimeout(1)
    got = b""
    while time.monotonic() - opened < 15:
        try:
            s.sendall(b"x")
        except OSError:
            break
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    elapsed = time.monotonic() - opened
    s.close()
    assert elapsed < 3 + 2, (elapsed, got)
    assert not got.startswith(b"HTTP/1.1 200"), got


def _background_get(port, path):
    got = {}

    def run():
        try:
            got["answer"] = raw_request(port, ("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                                               % path).encode(), timeout=40)
        except OSError as e:
            got["answer"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, got


def test_gthread_reports_a_request_past_the_timeout_once(start_server):
    # Its main thread beats for the worker, so the master cannot see a stuck
    # request: the worker says so itself, once, with the thread's stack; the
    # request goes on (the other thread serves meanwhile).
    srv = start_server("-b", "127.0.0.1:0", "-w", "1", "--timeout", "2",
                       *worker_args("gthread", threads=2), "basic:app")
    t, got = _background_get(srv.port, "/sleep?5")
    srv.wait_for(r"Request running past --timeout \(2(\.0)? s\) for 2\.\d s: GET /sleep\?5 HTTP/1\.1", timeout=8)
    assert get(srv.port, "/", headers="Connection: close\r\n")[0] == 200
    t.join(15)
    assert parse_response(got["answer"])[0] == 200
    log = srv.log()
    assert srv.count(r"Request running past --timeout") == 1, log
    assert "time.sleep(seconds)" in log, log
    assert "WORKER TIMEOUT" not in log


def test_gthread_worker_with_every_thread_stuck_is_timed_out(start_server):
    # Every thread stuck past --timeout: the worker serves nothing, so it
    # stops beating and the master times it out (stacks logged) and replaces
    # it. Before: it stayed, serving nothing, for as long as the app hung.
    srv = start_server("-b", "127.0.0.1:0", "-w", "1", "--timeout", "2",
                       *worker_args("gthread", threads=2), "basic:app")
    stuck = [_background_get(srv.port, "/sleep?30") for _ in range(2)]
    started = time.monotonic()
    srv.wait_for(r"all 2 threads run requests past --timeout", timeout=8)
    srv.wait_for(r"WORKER TIMEOUT \(pid:\d+\)", timeout=10)
    assert time.monotonic() - started < 9
    srv.wait_booted(2, timeout=15)
    assert get(srv.port, "/", headers="Connection: close\r\n")[0] == 200
    for t, _ in stuck:
        t.join(15)
