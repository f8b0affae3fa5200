"""Faults an operator meets (issue 20): `--max-requests` bounds what a worker
serves (so it bounds a leak), and `QUIT`/`INT` stop a worker at once, even
one stuck in the app."""

import signal
import threading
import time
from collections import Counter

import pytest
from conftest import get, gunicorn_cmd, parse_response, raw_request, wait_until, worker_args, worker_classes

BUDGET = 20


@worker_classes()
@pytest.mark.parametrize("workers", [1, 2])
def test_max_requests_bounds_what_each_worker_serves(start_server, worker, workers):
    # One client, one request at a time, new connection each: nothing is in
    # flight when a budget runs out, so no worker may serve past it (one
    # request of slack). Before: the old worker served on until the
    # master's tick and its replacement's boot (123 of 20 with -w 2).
    srv = start_server("-b", "127.0.0.1:0", "-w", str(workers), "--max-requests", str(BUDGET),
                       *worker_args(worker), "basic:app", workers_booted=workers)
    served = Counter()
    for _ in range(150):
        status, _, body = get(srv.port, "/pid", headers="Connection: close\r\n")
        assert status == 200, body
        served[int(body)] += 1
    assert max(served.values()) <= BUDGET + 1, served
    # Replacements took over without a failed request, and every worker
    # but the current ones served its whole budget.
    assert len(served) >= 150 // (BUDGET + 1)


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
