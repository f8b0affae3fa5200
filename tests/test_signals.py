"""Master signals against the running server: backlog kept on TERM, USR2
re-exec with pidfile hand-over, HUP reload, max-requests recycling, and zero
failed requests under a request loop while each happens."""

import os
import re
import signal
import socket
import threading
import time

import pytest
from conftest import classes, get, parse_response, pid_alive, wait_until, worker_args, worker_classes


class RequestLoop:
    """GET / in a thread until stopped (bounded by count and time); counts failures."""

    def __init__(self, port, path="/", max_requests=20000, max_seconds=60.0):
        self.port = port
        self.path = path
        self.ok = 0
        self.failures = []
        self.bodies = set()
        self._stop = threading.Event()
        self._max = max_requests
        self._until = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set() and self.ok + len(self.failures) < self._max and time.monotonic() < self._until:
            try:
                status, _, body = get(self.port, self.path)
                if status == 200:
                    self.ok += 1
                    self.bodies.add(body)
                else:
                    self.failures.append("status %d" % status)
            except Exception as e:  # noqa: BLE001 - any failure counts
                self.failures.append(repr(e))

    def __enter__(self):
        self._thread.start()
        return self

    def wait_ok(self, n, timeout=20.0):
        deadline = time.monotonic() + timeout
        target = self.ok + n
        while self.ok < target:
            assert time.monotonic() < deadline, "request loop stalled: ok=%d failures=%r" % (self.ok, self.failures[:5])
            time.sleep(0.01)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)


def booted_pids(srv):
    return [int(p) for p in re.findall(r"\[(\d+)\] \[INFO\] Booting worker with pid: \1", srv.log())]


# Each class with its one slot busy, so that new connections wait in the
# kernel's listen backlog: sync serves one at a time, evloop does not accept
# while the app runs, gthread (one thread) is capped at one connection.
BACKLOG_WORKERS = {worker: worker_args(worker, threads=1) for worker in classes()}
BACKLOG_WORKERS["gthread"] += ["--worker-connections", "1"]


@worker_classes(*sorted(BACKLOG_WORKERS))
def test_term_serves_connections_already_in_the_backlog(start_server, tmp_path, worker):
    started = tmp_path / "started"
    srv = start_server("-b", "127.0.0.1:0", "-w", "1", *BACKLOG_WORKERS[worker], "basic:app",
                       env={"FERRICORN_TEST_STARTED_MARKER": str(started)})
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("slow", get(srv.port, "/sleep?1")))
    t.start()
    wait_until(started.exists, what="slow request to start", log=srv.log)
    # The only worker is busy: these wait in the kernel's listen backlog.
    queued = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        queued.append(s)
    srv.signal(signal.SIGTERM)
    t.join(15)
    assert result["slow"][0] == 200
    for s in queued:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        status, _, body = parse_response(data)
        assert (status, body) == (200, b"Hello, world!")
    assert srv.wait_exit() == 0
    srv.wait_for(r"Shutting down: Master")


def test_usr2_reexec_hands_over_pidfile_and_loses_no_request(start_server, tmp_path):
    pidfile = tmp_path / "app.pid"
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "-p", str(pidfile), "basic:app", workers_booted=2)
    old = srv.master_pid
    with RequestLoop(srv.port) as loop:
        loop.wait_ok(20)
        srv.signal(signal.SIGUSR2)
        m = srv.wait_for(r"\[(\d+)\] \[INFO\] Listening at: http://127\.0\.0\.1:%d \((?!%d\))\d+\)" % (srv.port, old))
        new = int(m.group(1))
        assert new != old
        wait_until(lambda: len(booted_pids(srv)) >= 4, what="new master's workers", log=srv.log)
        # gunicorn 27: PIDFILE keeps naming the old master, the new one writes PIDFILE.2.
        wait_until(lambda: (tmp_path / "app.pid.2").exists(), what="PIDFILE.2", log=srv.log)
        assert (tmp_path / "app.pid.2").read_text().strip() == str(new)
        assert pidfile.read_text().strip() == str(old)
        assert not (tmp_path / "app.pid.oldbin").exists()
        # A second USR2 while the child master lives is ignored.
        srv.signal(signal.SIGUSR2)
        srv.wait_for(r"USR2 signal ignored\. Child exists\.")
        os.kill(new, signal.SIGUSR2)
        srv.wait_for(r"USR2 signal ignored\. Parent exists\.")
        loop.wait_ok(20)
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0
        srv.wait_for(r"\[%d\] \[INFO\] Master has been promoted\." % new)
        wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new), what="pidfile takeover", log=srv.log)
        assert not (tmp_path / "app.pid.2").exists()
        assert not (tmp_path / "app.pid.oldbin").exists()
        loop.wait_ok(20)
    assert loop.failures == [], loop.failures[:5]
    assert loop.ok >= 60
    os.kill(new, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new), what="new master exit", log=srv.log)
    srv.wait_for(r"\[%d\] \[INFO\] Shutting down: Master" % new)
    assert not pidfile.exists()


def test_hup_reloads_the_app_and_loses_no_request(start_server, tmp_path):
    app = tmp_path / "hupapp.py"
    src = (
        "def app(environ, start_response):\n"
        "    body = b'%s'\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    app.write_text(src % "v1")
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "--pythonpath", str(tmp_path), "hupapp:app", workers_booted=2)
    first = booted_pids(srv)
    with RequestLoop(srv.port) as loop:
        loop.wait_ok(20)
        app.write_text(src % "version-two")
        srv.signal(signal.SIGHUP)
        srv.wait_for(r"Hang up: Master")
        wait_until(lambda: len(booted_pids(srv)) >= 4, what="new workers", log=srv.log)
        for pid in first:
            srv.wait_for(r"Worker exiting \(pid: %d\)" % pid)
        loop.wait_ok(20)
    assert loop.failures == [], loop.failures[:5]
    assert get(srv.port)[2] == b"version-two"
    log = srv.log()
    # Replace before retire: both new workers booted before an old one was told to go.
    new = booted_pids(srv)[2:4]
    last_boot = max(log.index("Booting worker with pid: %d" % p) for p in new)
    first_exit = min(log.index("Worker exiting (pid: %d)" % p) for p in first)
    assert last_boot < first_exit


def test_max_requests_recycles_workers_without_losing_requests(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "--max-requests", "15", "basic:app", workers_booted=2)
    with RequestLoop(srv.port, max_requests=200000, max_seconds=45) as loop:
        wait_until(lambda: len(booted_pids(srv)) >= 5, timeout=40, what="recycled workers", log=srv.log)
        loop.wait_ok(10)
    assert loop.failures == [], loop.failures[:5]
    assert srv.count(r"Autorestarting worker after current request\.") >= 3
    assert srv.count(r"Replacing worker \(pid:\d+\): max requests reached") >= 3


def test_ttin_ttou_lose_no_request(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "basic:app", workers_booted=2)
    with RequestLoop(srv.port) as loop:
        loop.wait_ok(10)
        srv.signal(signal.SIGTTIN)
        wait_until(lambda: len(booted_pids(srv)) >= 3, what="TTIN worker", log=srv.log)
        loop.wait_ok(10)
        srv.signal(signal.SIGTTOU)
        srv.wait_for(r"Handling signal: ttou")
        srv.wait_for(r"Worker exiting")
        loop.wait_ok(10)
        srv.signal(signal.SIGTTOU)
        wait_until(lambda: srv.count(r"Worker exiting") >= 2, what="second TTOU", log=srv.log)
        loop.wait_ok(10)
    assert loop.failures == [], loop.failures[:5]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_int_quit_unlink_unix_socket(start_server, tmp_path, sig):
    path = tmp_path / "s.sock"
    srv = start_server("-b", "unix:%s" % path, "basic:app")
    assert path.exists()
    srv.signal(sig)
    assert srv.wait_exit() == 0
    assert not path.exists()


def test_timeout_kills_within_deadline_and_dumps_the_stack(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-t", "2", "basic:app")
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n")
        srv.wait_for(r"Worker \(pid:\d+\) exited with code 1", timeout=10)
    assert time.monotonic() - start < 2 + 2, time.monotonic() - start
    srv.wait_for(r"\[CRITICAL\] WORKER TIMEOUT")
    # The request line, then the Python stack of the stuck request.
    srv.wait_for(r"\[ERROR\] Worker timed out while serving: GET /sleep\?30 HTTP/1\.1")
    srv.wait_for(r'File ".*basic\.py", line \d+, in app')
    srv.wait_booted(2)
    assert get(srv.port)[0] == 200


def test_max_worker_memory_replaces_workers_without_losing_requests(start_server):
    # 1 MiB is below any Python process's private memory: every worker asks to
    # be retired after its first request, and is replaced before it goes.
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "--max-worker-memory", "1", "basic:app", workers_booted=2)
    with RequestLoop(srv.port, max_requests=200000, max_seconds=45) as loop:
        wait_until(lambda: srv.count(r"Worker exiting") >= 3, timeout=30, what="memory retirements", log=srv.log)
        loop.wait_ok(5)
    assert loop.failures == [], loop.failures[:5]
    assert srv.count(r"Replacing worker \(pid:\d+\): memory limit exceeded") >= 3


def test_sd_notify_ready_and_stopping(start_server, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    srv = start_server("-b", "127.0.0.1:0", "basic:app", env={"NOTIFY_SOCKET": path})
    assert sock.recv(256) == b"READY=1"
    srv.signal(signal.SIGTERM)
    assert sock.recv(256) == b"STOPPING=1"
    assert srv.wait_exit() == 0
    sock.close()
