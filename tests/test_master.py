"""The master's lifecycle seen from outside: signals, replacement, timeouts, exit codes."""

import os
import re
import signal
import socket
import threading
import time

import pytest

from conftest import get


def worker_pids(srv):
    import re

    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", srv.log())]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_boot_log_lines_and_worker_count(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "3", "basic:app", workers_booted=3)
    srv.wait_for(r"\[INFO\] Starting ferricorn ")
    srv.wait_for(r"^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} [+-]\d{4}\] \[%d\] \[INFO\] Listening at: http://127\.0\.0\.1:\d+ \(%d\)$" % (srv.master_pid, srv.master_pid))
    srv.wait_for(r"\[INFO\] Using worker: sync")
    assert len(set(worker_pids(srv))) == 3


def test_term_is_graceful_and_removes_pidfile(start_server, tmp_path):
    pidfile = tmp_path / "ferricorn.pid"
    started = tmp_path / "started"
    srv = start_server("-b", "127.0.0.1:0", "-p", str(pidfile), "basic:app", env={"FERRICORN_TEST_STARTED_MARKER": str(started)})
    assert pidfile.read_text().strip() == str(srv.master_pid)
    result = {}

    def slow():
        result["resp"] = get(srv.port, "/sleep?1.5")

    t = threading.Thread(target=slow)
    t.start()
    # TERM only once the app is inside the request.
    deadline = time.monotonic() + 10
    while not started.exists():
        assert time.monotonic() < deadline, srv.log()
        t.join(0.02)
    srv.signal(signal.SIGTERM)
    t.join(10)
    assert result["resp"][0] == 200 and result["resp"][2] == b"slept"
    assert srv.wait_exit() == 0
    srv.wait_for(r"Handling signal: term")
    srv.wait_for(r"Shutting down: Master")
    assert not pidfile.exists()


def test_int_and_quit_stop_quickly(start_server):
    for sig in (signal.SIGINT, signal.SIGQUIT):
        srv = start_server("-b", "127.0.0.1:0", "basic:app")
        start = time.monotonic()
        srv.signal(sig)
        assert srv.wait_exit() == 0
        assert time.monotonic() - start < 5
        srv.wait_for(r"Shutting down: Master")


def test_dead_worker_is_replaced(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "basic:app", workers_booted=2)
    first = worker_pids(srv)[0]
    os.kill(first, signal.SIGKILL)
    srv.wait_for(r"Worker \(pid:%d\) was sent SIGKILL! Perhaps out of memory\?" % first)
    srv.wait_booted(3)
    assert get(srv.port)[0] == 200


def test_stuck_worker_is_killed_after_timeout(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-t", "2", "basic:app")
    first = worker_pids(srv)[0]
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.wait_for(r"\[CRITICAL\] WORKER TIMEOUT \(pid:%d\)" % first, timeout=10)
    elapsed = time.monotonic() - start
    assert elapsed < 2 + 2 + 1.5, elapsed
    srv.wait_for(r"Worker \(pid:%d\) exited with code 1" % first)
    srv.wait_booted(2)
    assert not alive(first)
    assert get(srv.port)[0] == 200


def test_import_error_halts_with_code_3(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "broken_import:app", wait=False)
    assert srv.wait_exit() == 3
    log = srv.log()
    assert "RuntimeError: this module cannot be imported" in log
    assert "Traceback (most recent call last)" in log
    # gunicorn 27 logs the whole halt of a failed boot at ERROR.
    assert re.search(r"\[ERROR\] Worker \(pid:\d+\) exited with code 3\.$", log, re.M), log
    assert "[ERROR] Shutting down: Master" in log
    assert "[ERROR] Reason: Worker failed to boot." in log
    # No fork loop: each of the two workers booted at most once.
    assert srv.count(r"Booting worker with pid") <= 2


def test_missing_attribute_halts_with_code_4(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:nope", wait=False)
    assert srv.wait_exit() == 4
    log = srv.log()
    assert "Failed to find attribute 'nope' in 'basic'." in log
    assert "Reason: App failed to load." in log


@pytest.mark.parametrize(
    "app, code, reason",
    [
        ("broken_import:app", 3, "this module cannot be imported"),
        ("basic:nope", 4, "Failed to find attribute 'nope' in 'basic'."),
    ],
)
def test_boot_failure_reason_on_stderr_when_error_log_is_a_file(start_server, tmp_path, app, code, reason):
    # gunicorn prints the exception's message on stderr besides logging it, so
    # a shell user learns why the server stopped even with --error-logfile FILE.
    errlog = tmp_path / "error.log"
    srv = start_server("-b", "127.0.0.1:0", "--error-logfile", str(errlog), app, wait=False)
    assert srv.wait_exit() == code
    assert any(line.strip() == reason for line in srv.lines), srv.log()
    assert "Reason:" in errlog.read_text()


def test_bad_flag_and_bad_value_fail_before_binding(start_server):
    srv = start_server("--no-such-flag", "basic:app", wait=False)
    assert srv.wait_exit() == 2
    assert "unrecognized arguments: --no-such-flag" in srv.log()
    srv = start_server("-w", "lots", "basic:app", wait=False)
    assert srv.wait_exit() == 2
    assert "workers" in srv.log() and "lots" in srv.log()
    srv = start_server("--dirty-workers", "2", "basic:app", wait=False)
    assert srv.wait_exit() == 2
    assert "dirty_workers" in srv.log() and "not supported" in srv.log()


def test_no_app_is_an_error(start_server):
    srv = start_server("-b", "127.0.0.1:0", wait=False)
    assert srv.wait_exit() == 1
    assert "No application module specified." in srv.log()


def test_version(start_server):
    srv = start_server("--version", wait=False)
    assert srv.wait_exit() == 0
    assert srv.log().startswith("ferricorn (version ")


def test_flask_app(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "flask_app:app", workers_booted=2)
    status, _, body = get(srv.port, "/")
    assert (status, body) == (200, b"Hello from Flask")
    payload = b'{"a": [1, 2]}'
    status, headers, body = get(
        srv.port, "/json?k=v", method="POST", headers="Content-Type: application/json\r\nContent-Length: %d\r\n" % len(payload), body=payload
    )
    import json

    assert status == 200
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"received": {"a": [1, 2]}, "method": "POST", "args": {"k": "v"}}
    status, _, _ = get(srv.port, "/fail")
    assert status == 500
    srv.wait_for(r"RuntimeError: flask view failed")
