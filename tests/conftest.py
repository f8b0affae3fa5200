"""Fixtures that start a real ferricorn server and talk to it over sockets.

Rules: bind port 0 and read the real port from the `Listening at:` line; wait
with deadlines, never sleep to wait; every server runs in its own process
group, killed in the finalizer.

Worker classes: WORKER_CLASSES is the one matrix (name -> command-line
arguments); a test runs over classes with `@worker_classes(...)` (all of them
when none are named; the test gets `worker`), a fixture with
`params=classes(...)`, and builds the command line with `worker_args(worker)`.
A new class or variant is one line in WORKER_CLASSES.

Servers: `start_server(*args)` (a test's), `serve(request, *args)` (any
fixture's, stopped when that fixture is torn down, so a module-scoped fixture
gives a module-scoped server) and `Server(...)` itself are all stopped by a
finalizer even when the test fails part way; no test writes try/finally to
stop one. A test may still stop a server itself (`stop` is idempotent).
"""

import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"
PYTHON = os.environ.get("FERRICORN_PYTHON") or sys.executable
LISTEN_RE = re.compile(r"Listening at: (\S+) \((\d+)\)")

# The worker classes every class-parametrized test runs under: name -> the
# arguments that select it. Add a class (or a variant such as TLS) here.
WORKER_CLASSES = {
    "sync": ["-k", "sync"],
    "gthread": ["-k", "gthread", "--threads", "4"],
    "evloop": ["-k", "evloop"],
}
# The classes that keep connections alive (sync closes after each response).
KEEP_ALIVE_CLASSES = tuple(sorted(name for name in WORKER_CLASSES if name != "sync"))


def classes(*names):
    """The named worker classes (all when none are named), checked against
    WORKER_CLASSES: the `params` of a class-parametrized fixture."""
    unknown = [name for name in names if name not in WORKER_CLASSES]
    assert not unknown, "not in WORKER_CLASSES: %s" % unknown
    return list(names or WORKER_CLASSES)


def worker_classes(*names):
    """Run a test once per named worker class (all when none are named); the
    test takes the class name as `worker`."""
    return pytest.mark.parametrize("worker", classes(*names))


def worker_args(name, threads=None):
    """The command-line arguments that select worker class `name`; `threads`
    replaces the class's own `--threads` (classes without threads keep none)."""
    args = list(WORKER_CLASSES[name])
    if threads is not None and "--threads" in args:
        args[args.index("--threads") + 1] = str(threads)
    return args


class Server:
    """A running `CMD ARGS` with its log lines collected; `cmd` defaults to
    `python -m ferricorn` (gunicorn's, or a script, otherwise)."""

    def __init__(self, args, cwd, env=None, cmd=None):
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = str(APPS)
        # Each server its own default control socket ($XDG_RUNTIME_DIR/gunicorn.ctl),
        # in a short path (a unix socket path is limited to 107 bytes).
        self.runtime_dir = tempfile.mkdtemp(prefix="fc-")
        full_env["XDG_RUNTIME_DIR"] = self.runtime_dir
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            (cmd or [PYTHON, "-m", "ferricorn"]) + list(args),
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines = []
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = None
        self.port = None
        self.master_pid = self.proc.pid
        self._stopped = False
        _SERVERS.append(self)

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._new:
                self.lines.append(line)
                self._new.notify_all()
        with self._new:
            self._new.notify_all()

    def wait_for(self, pattern, timeout=15.0, start=0):
        """Wait until a log line (from index `start`) matches; return the match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._new:
            i = start
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        "no log line matching %r within %.1fs; log:\n%s" % (pattern, timeout, "\n".join(self.lines))
                    )
                self._new.wait(min(left, 0.2))

    def count(self, pattern):
        rx = re.compile(pattern)
        with self._lock:
            return sum(1 for line in self.lines if rx.search(line))

    def log(self):
        with self._lock:
            return "\n".join(self.lines)

    def wait_listening(self, timeout=20.0):
        m = self.wait_for(LISTEN_RE.pattern, timeout)
        self.url = m.group(1)
        if self.url.startswith(("http://", "https://")):
            self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def wait_booted(self, n=1, timeout=20.0):
        deadline = time.monotonic() + timeout
        while self.count(r"Booting worker with pid") < n:
            if time.monotonic() > deadline:
                raise AssertionError("workers did not boot:\n" + self.log())
            self.wait_for(r"Booting worker with pid", timeout=max(0.1, deadline - time.monotonic()))
            with self._new:
                self._new.wait(0.05)
        return self

    def wait_exit(self, timeout=20.0):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("server did not exit; log:\n" + self.log())
        # The exit can be seen before the reader thread has taken the last
        # lines from the pipe: let it reach EOF (briefly: a child that
        # outlives the master, a re-exec'd one or a daemon, keeps the pipe open).
        self._reader.join(1.0)
        return code

    def signal(self, sig):
        os.kill(self.master_pid, sig)

    def stop(self):
        """Stop the server's whole process group; a second call does nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        self._reader.join(5)
        shutil.rmtree(self.runtime_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def own_runtime_dir(monkeypatch):
    """Servers a test starts outside `Server` get a default control socket
    path of their own too, never the user's real $XDG_RUNTIME_DIR."""
    d = tempfile.mkdtemp(prefix="fc-")
    monkeypatch.setenv("XDG_RUNTIME_DIR", d)
    yield d
    shutil.rmtree(d, ignore_errors=True)


# The Servers started and not yet reaped, in order: the finalizers below stop
# those a test or a module started, whichever way it started them (so a
# session-scoped fixture's server would not outlive its first module).
_SERVERS = []


def _stop_started_since(first):
    for srv in _SERVERS[first:]:
        srv.stop()
    del _SERVERS[first:]


@pytest.fixture(autouse=True, scope="module")
def _stop_module_servers():
    first = len(_SERVERS)
    yield
    _stop_started_since(first)


@pytest.fixture(autouse=True)
def _stop_test_servers():
    # Set up after the module-scoped fixtures: their servers are not the test's.
    first = len(_SERVERS)
    yield
    _stop_started_since(first)


def serve(request, *args, cwd=None, env=None, cmd=None, wait=True, booted=1):
    """Start a server for the fixture or test that owns `request`, stopped
    when it is torn down (a module-scoped fixture: at the end of its module or
    parameter). `cwd` defaults to a fresh directory; with `wait`, return once
    it listens and `booted` workers have booted."""
    if cwd is None:
        cwd = request.getfixturevalue("tmp_path_factory").mktemp("srv")
    srv = Server(list(args), cwd=cwd, env=env, cmd=cmd)
    request.addfinalizer(srv.stop)
    if wait:
        srv.wait_listening()
        if booted:
            srv.wait_booted(booted)
    return srv


@pytest.fixture
def start_server(request, tmp_path):
    """`start_server(*args, ...)`: a server run in `tmp_path`, stopped after
    the test (see `serve`; `workers_booted` is its `booted`)."""

    def start(*args, wait=True, env=None, workers_booted=1, cmd=None, cwd=None):
        return serve(request, *args, cwd=tmp_path if cwd is None else cwd, env=env, cmd=cmd, wait=wait,
                     booted=workers_booted)

    return start


def pinned_to_one_cpu():
    """A command that starts ferricorn with the whole process tree on one
    cpu: the worker that wakes first runs while the others wait for it."""
    cpu = min(os.sched_getaffinity(0))
    return [PYTHON, "-c",
            f"import os, sys; os.sched_setaffinity(0, {{{cpu}}}); "
            "os.execv(sys.executable, [sys.executable, '-m', 'ferricorn'] + sys.argv[1:])"]


def gunicorn_cmd():
    """gunicorn 27.0.1 (tests/requirements.txt) in the interpreter that runs ferricorn."""
    out = subprocess.run([PYTHON, "-c", "import gunicorn; print(gunicorn.__version__)"], capture_output=True)
    assert out.stdout.strip() == b"27.0.1", "gunicorn 27.0.1 must be installed (tests/requirements.txt): %r" % out
    return [PYTHON, "-m", "gunicorn", "--no-control-socket"]


def raw_request(port, data, timeout=10.0, host="127.0.0.1"):
    """Send raw bytes, read until the server closes; return the bytes received."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def parse_head(head):
    """Split a response head (no blank line) into (status_code, headers dict lower-cased)."""
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), v.strip())
    return status, headers


def parse_response(raw):
    """Split a raw HTTP/1.x response into (status_code, headers dict lower-cased, body)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return status, headers, body


def dechunk(data):
    """Decode a complete chunked body; fail the test on bad framing."""
    out = b""
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        assert sep, "truncated chunked body"
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            assert data.startswith(b"\r\n") or data == b"" or b"\r\n\r\n" in data, data
            return out
        out += data[:size]
        assert data[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        data = data[size + 2 :]


def get(port, path="/", headers="", method="GET", body=b"", version="HTTP/1.1"):
    req = ("%s %s %s\r\nHost: 127.0.0.1\r\n%s\r\n" % (method, path, version, headers)).encode("latin-1") + body
    return parse_response(raw_request(port, req))


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie counts as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout=20.0, what="condition", log=None):
    """Poll `cond` until it is true; fail after `timeout` seconds (with `log()`'s text)."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out waiting for %s\n%s" % (what, log() if log else "")
        time.sleep(0.02)


def wait_file(path, pattern, timeout=15.0):
    """Wait until the file's text matches `pattern` (multi-line); return the text."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if rx.search(text):
            return text
        time.sleep(0.05)
    raise AssertionError("no match for %r in %s within %.1fs:\n%s" % (pattern, path, timeout, text))
