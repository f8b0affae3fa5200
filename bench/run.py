#!/usr/bin/env python3
"""ferricorn's benchmark harness: ferricorn against gunicorn, granian, bjoern, uwsgi and uvicorn.

For every server x app x mode it starts the server (own process group, pinned with
taskset), waits until it answers, checks the response, warms up, runs wrk (or, for
the WebSocket echo app, bench/wsload), and records req/s, latency, errors, the
server tree's CPU time per request, the client's own CPU use and the server tree's
RSS (and idle PSS). WSGI servers run the WSGI apps, ASGI servers the ASGI apps. It
prints one markdown table and writes it to bench/results/latest.md (and latest.json).
With --rounds N it measures the whole matrix N times, interleaved, and reports each
row's medians and ferricorn's per-round ratios to its peers.

    bench/.venv/bin/python bench/run.py            # everything (~25 min on 2 cores)
    bench/.venv/bin/python bench/run.py --quick    # 2 s runs of the hello apps: a smoke test
    bench/.venv/bin/python bench/run.py --servers gunicorn,granian --apps hello
    bench/.venv/bin/python bench/run.py --servers asgi --apps asgi --modes keep-alive
    bench/.venv/bin/python bench/run.py --servers ferricorn-asgi,granian-asgi --apps asgi-hello --rounds 6

Standard library only. See docs/benchmarks.md for what the numbers mean.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
APPS_DIR = HERE / "apps"
BENCH_VENV = HERE / ".venv"
BENCH_BIN = BENCH_VENV / "bin"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"

START_TIMEOUT = 30.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
PROBE_TIMEOUT = 5.0  # seconds for one verification request


class BenchError(Exception):
    """A row could not be measured; the message says why (it goes into the report)."""


class Interrupted(BaseException):
    """SIGTERM/SIGINT to the harness: unwind through every `finally` and stop."""


# --------------------------------------------------------------------------- apps


@dataclasses.dataclass(frozen=True)
class App:
    name: str
    target: str  # module:callable inside bench/apps
    what: str
    check: Callable[[int, bytes], str | None]  # (status, body) -> problem or None
    post_bytes: int = 0  # >0: wrk POSTs this many bytes with post.lua
    interface: str = "wsgi"  # wsgi | asgi: which servers run it
    websocket: bool = False  # measured with bench/wsload (messages/s), not wrk

    @property
    def script(self) -> Path:
        return APPS_DIR / ("post.lua" if self.post_bytes else "report.lua")


def _expect_status_body(want: Callable[[bytes], bool], label: str):
    def check(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"status {status}, want 200"
        if not want(body):
            return f"body {body[:40]!r}... ({len(body)} bytes), want {label}"
        return None

    return check


def _is_flask_json(body: bytes) -> bool:
    try:
        return json.loads(body).get("message") == "Hello, world!"
    except (ValueError, AttributeError):
        return False


ECHO_BYTES = 64 * 1024
APPS = {
    a.name: a
    for a in (
        App("hello", "hello:app", "13-byte `Hello, world!`",
            _expect_status_body(lambda b: b == b"Hello, world!", "b'Hello, world!'")),
        App("flask", "flask_json:app", "Flask route returning a small JSON object",
            _expect_status_body(_is_flask_json, "Flask JSON")),
        App("big", "big:app", "1 MiB response body",
            _expect_status_body(lambda b: len(b) == 1 << 20, "1 MiB")),
        App("echo", "echo:app", "64 KiB POST echoed back",
            _expect_status_body(lambda b: len(b) == ECHO_BYTES and set(b) == {ord("a")},
                                "the 64 KiB request body"),
            post_bytes=ECHO_BYTES),
        App("sleep", "sleep:app", "sleeps 10 ms then answers 11 bytes",
            _expect_status_body(lambda b: b == b"slept 10 ms", "b'slept 10 ms'")),
        App("asgi-hello", "asgi_raw:hello", "raw ASGI: 13-byte `Hello, world!`",
            _expect_status_body(lambda b: b == b"Hello, world!", "b'Hello, world!'"), interface="asgi"),
        App("starlette", "starlette_text:app", "Starlette route returning plain-text `Hello, world!`",
            _expect_status_body(lambda b: b == b"Hello, world!", "b'Hello, world!'"), interface="asgi"),
        App("fastapi", "fastapi_json:app", "FastAPI route returning the Flask app's JSON object",
            _expect_status_body(_is_flask_json, "FastAPI JSON"), interface="asgi"),
        App("asgi-echo", "asgi_raw:echo", "raw ASGI: 64 KiB POST echoed back",
            _expect_status_body(lambda b: len(b) == ECHO_BYTES and set(b) == {ord("a")},
                                "the 64 KiB request body"),
            post_bytes=ECHO_BYTES, interface="asgi"),
        App("ws", "asgi_raw:ws", "raw ASGI WebSocket echo; req/s are messages/s (bench/wsload)",
            _expect_status_body(lambda b: b == b"websocket echo", "b'websocket echo'"), interface="asgi",
            websocket=True),
    )
}
# --apps also takes a bare interface name for all of its apps.
APP_GROUPS = {i: [a.name for a in APPS.values() if a.interface == i] for i in ("wsgi", "asgi")}
WSLOAD = HERE / "wsload" / "target" / "release" / "wsload"

MODES = {"keep-alive": [], "close": ["-H", "Connection: close"]}


# ------------------------------------------------------------------------ servers


@dataclasses.dataclass
class Server:
    key: str  # what --servers names
    name: str  # table column "server"
    kind: str  # worker kind: sync, gthread, ... (used to pair ratios)
    argv: Callable[[argparse.Namespace, App, int, int], list[str]]  # (opts, app, port, workers)
    available: Callable[[argparse.Namespace], str | None]  # None, or why it is skipped
    env: Callable[[argparse.Namespace], dict[str, str]] = lambda opts: {}
    multi_worker: bool = True
    interface: str = "wsgi"  # the apps it runs

    def worker_label(self, opts: argparse.Namespace) -> str:
        if self.kind in ("gthread", "wsgi"):
            return f"{self.kind} {opts.threads}t"
        return self.kind


def _bin(name: str) -> Path:
    return BENCH_BIN / name


def _need_bin(name: str) -> Callable[[argparse.Namespace], str | None]:
    def available(opts):
        if not os.access(_bin(name), os.X_OK):
            return f"{_bin(name).relative_to(ROOT)} not installed (run bash bench/setup.sh)"
        return None

    return available


def _bjoern_available(opts) -> str | None:
    python = _bin("python")
    if not os.access(python, os.X_OK):
        return "bench/.venv missing (run bash bench/setup.sh)"
    if subprocess.run([python, "-c", "import bjoern"], capture_output=True, timeout=30).returncode:
        reason = (BENCH_VENV / ".skip-bjoern")
        return "not installed" + (f": {reason.read_text()}" if reason.exists() else "")
    return None


def _uwsgi_available(opts) -> str | None:
    if not os.access(_bin("uwsgi"), os.X_OK):
        reason = BENCH_VENV / ".skip-uwsgi"
        return "not installed" + (f": {reason.read_text()}" if reason.exists() else "")
    return None


def _ferricorn_available(opts) -> str | None:
    path = Path(opts.ferricorn)
    if not os.access(path, os.X_OK):
        return f"{opts.ferricorn} not found (run make build)"
    return None


def _script_python(script: Path) -> str | None:
    """The interpreter a console script runs under (its shebang), if it has one."""
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return None
    if first.startswith(b"#!"):
        parts = first[2:].decode(errors="replace").split()
        if parts:
            return parts[0]
    return None


_ferricorn_env_cache: dict[str, dict[str, str]] = {}


def _ferricorn_env(opts) -> dict[str, str]:
    """Let ferricorn import the frameworks (Flask, Starlette, FastAPI, uvloop) from
    bench/.venv when its own venv lacks one of them.

    Only done when both interpreters are the same Python version (compiled wheels)."""
    if opts.ferricorn in _ferricorn_env_cache:
        return _ferricorn_env_cache[opts.ferricorn]
    env: dict[str, str] = {}
    python = _script_python(Path(opts.ferricorn))
    probe = ("import sys, importlib.util as u; print('%d.%d' % sys.version_info[:2], "
             "all(u.find_spec(m) for m in ('flask', 'starlette', 'fastapi', 'uvloop')))")
    try:
        theirs = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=30).stdout.split()
        ours = subprocess.run([_bin("python"), "-c", probe], capture_output=True, text=True, timeout=30).stdout.split()
        if len(theirs) == 2 and theirs[1] == "False" and ours and ours[0] == theirs[0]:
            site = subprocess.run(
                [_bin("python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                capture_output=True, text=True, timeout=30).stdout.strip()
            if site:
                env["PYTHONPATH"] = site
    except (OSError, subprocess.SubprocessError, TypeError):
        pass
    _ferricorn_env_cache[opts.ferricorn] = env
    return env


def ferricorn_build(opts) -> dict:
    """Which extension module ferricorn loads, and whether it is a debug build.

    A debug build (`make test MATURIN_FLAGS=`) is several times slower; it is
    recognised by Rust's overflow-check panic messages, which release builds
    (overflow checks off) do not contain. Returns {} if it cannot be told."""
    python = _script_python(Path(opts.ferricorn))
    if not python:
        return {}
    try:
        path = subprocess.run([python, "-c", "import ferricorn._ferricorn as m; print(m.__file__)"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
        if not path:
            return {}
        data = Path(path).read_bytes()
        st = os.stat(path)
    except (OSError, subprocess.SubprocessError):
        return {}
    profile = "debug" if b"attempt to add with overflow" in data else "release"
    mtime = datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return {"path": path, "profile": profile, "built": mtime, "size": st.st_size}


def _gunicorn(kind):
    def argv(opts, app, port, workers):
        cmd = [str(_bin("gunicorn")), "-w", str(workers), "-k", kind, "-b", f"{HOST}:{port}",
               "--pythonpath", str(APPS_DIR), "--log-level", "warning", "--backlog", "2048"]
        if kind == "gthread":
            cmd += ["--threads", str(opts.threads)]
        return cmd + [app.target]

    return argv


def _ferricorn(kind):
    def argv(opts, app, port, workers):
        cmd = [str(Path(opts.ferricorn).resolve()), "-w", str(workers), "-k", kind, "-b", f"{HOST}:{port}",
               "--pythonpath", str(APPS_DIR), "--log-level", "warning", "--backlog", "2048"]
        if kind == "gthread":
            cmd += ["--threads", str(opts.threads)]
        return cmd + [app.target]

    return argv


def _granian(opts, app, port, workers):
    return [str(_bin("granian")), "--interface", "wsgi", "--http", "1", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--blocking-threads", str(opts.threads), "--runtime-threads", "1",
            "--backlog", "2048", "--no-ws", "--log-level", "warning", "--working-dir", str(APPS_DIR),
            app.target]


def _granian_asgi(opts, app, port, workers):
    # WebSockets on (granian's default) for every ASGI app, as the other ASGI servers have them.
    return [str(_bin("granian")), "--interface", "asgi", "--http", "1", "--host", HOST, "--port", str(port),
            "--workers", str(workers), "--runtime-threads", "1", "--loop", "uvloop",
            "--backlog", "2048", "--log-level", "warning", "--working-dir", str(APPS_DIR), app.target]


def _uvicorn(opts, app, port, workers):
    return [str(_bin("uvicorn")), "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--http", "httptools", "--loop", "uvloop", "--ws", "websockets", "--lifespan", "auto",
            "--no-access-log", "--log-level", "warning", "--backlog", "2048", "--app-dir", str(APPS_DIR),
            app.target]


def _bjoern(opts, app, port, workers):
    return [str(_bin("python")), str(APPS_DIR / "bjoern_run.py"), app.target, HOST, str(port)]


def _uwsgi(opts, app, port, workers):
    # --http-socket + "Connection: close": one request per connection, like gunicorn's sync
    # worker. (--http11-socket keeps the first connection for the whole run and leaves
    # the other 63 in the accept queue, unanswered; it also ignores "Connection: close".)
    return [str(_bin("uwsgi")), "--http-socket", f"{HOST}:{port}", "--add-header", "Connection: close",
            "--home", str(BENCH_VENV), "--chdir", str(APPS_DIR), "--module", app.target,
            "--master", "--processes", str(workers), "--need-app", "--die-on-term", "--disable-logging",
            "--listen", "1024", "--buffer-size", "16384"]


SERVERS = {
    s.key: s
    for s in (
        Server("gunicorn-sync", "gunicorn", "sync", _gunicorn("sync"), _need_bin("gunicorn")),
        Server("gunicorn-gthread", "gunicorn", "gthread", _gunicorn("gthread"), _need_bin("gunicorn")),
        Server("granian", "granian", "wsgi", _granian, _need_bin("granian")),
        Server("bjoern", "bjoern", "single", _bjoern, _bjoern_available, multi_worker=False),
        Server("uwsgi", "uwsgi", "sync", _uwsgi, _uwsgi_available),
        Server("ferricorn-sync", "ferricorn", "sync", _ferricorn("sync"), _ferricorn_available, _ferricorn_env),
        Server("ferricorn-gthread", "ferricorn", "gthread", _ferricorn("gthread"), _ferricorn_available,
               _ferricorn_env),
        Server("ferricorn-evloop", "ferricorn", "evloop", _ferricorn("evloop"), _ferricorn_available,
               _ferricorn_env),
        Server("uvicorn", "uvicorn", "asgi", _uvicorn, _need_bin("uvicorn"), interface="asgi"),
        Server("granian-asgi", "granian", "asgi", _granian_asgi, _need_bin("granian"), interface="asgi"),
        Server("gunicorn-asgi", "gunicorn", "asgi", _gunicorn("asgi"), _need_bin("gunicorn"), interface="asgi"),
        Server("ferricorn-asgi", "ferricorn", "asgi", _ferricorn("asgi"), _ferricorn_available, _ferricorn_env,
               interface="asgi"),
    )
}
# --servers also takes a bare name for all of its worker kinds, or an interface for its servers.
SERVER_GROUPS = {
    "gunicorn": ["gunicorn-sync", "gunicorn-gthread", "gunicorn-asgi"],
    "ferricorn": ["ferricorn-sync", "ferricorn-gthread", "ferricorn-evloop", "ferricorn-asgi"],
    "wsgi": [k for k, s in SERVERS.items() if s.interface == "wsgi"],
    "asgi": [k for k, s in SERVERS.items() if s.interface == "asgi"],
}


# ---------------------------------------------------------------- process trees


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, cpu ticks incl. reaped children, starttime) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    # after "comm)": state ppid ... utime(11) stime(12) cutime(13) cstime(14) ... starttime(19)
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return ppid, ticks, int(fields[19])


def process_tree(root: int) -> dict[int, tuple[int, int]]:
    """{pid: (cpu ticks, starttime)} for root and all its live (or zombie) descendants."""
    stats = {}
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                stats[int(entry)] = st
                children.setdefault(st[0], []).append(int(entry))
    out = {}
    todo = [root] if root in stats else []
    while todo:
        pid = todo.pop()
        out[pid] = (stats[pid][1], stats[pid][2])
        todo.extend(children.get(pid, ()))
    return out


def session_members(sid: int) -> dict[int, tuple[int, int]]:
    """{pid: (0, starttime)} of the processes in session sid (a session we created)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2:].split()
        if int(fields[3]) == sid and int(entry) != sid:
            out[int(entry)] = (0, int(fields[19]))
    return out


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds of the tree: each process's utime+stime plus its reaped children's.

    Children that exited and were waited for are in their parent's cutime/cstime,
    so a worker that dies during the run is still counted."""
    return sum(t for t, _ in process_tree(root).values()) / CLK_TCK


# What tree_mib sums: (file under /proc/PID, its "Name:  N kB" line).
RSS = ("status", "VmRSS:")  # resident pages, each process counting its shared ones in full
PSS = ("smaps_rollup", "Pss:")  # proportional: a page shared by n processes counts 1/n in each


def kib_field(text: str, field: str) -> int | None:
    """The kB figure of the line starting with `field` (e.g. "Pss:") in a /proc file, or None."""
    for line in text.splitlines():
        if line.startswith(field):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def tree_mib(root: int, what: tuple[str, str] = RSS) -> float | None:
    """Sum of one memory figure (RSS or PSS) over root's process tree, in MiB.

    A process that is gone by the time its file is read counts nothing; None when
    no process's file could be read (no smaps_rollup on this kernel, or not ours
    to read), so the table shows "—" rather than a wrong 0."""
    name, field = what
    total_kib, read = 0, False
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                text = f.read()
        except (FileNotFoundError, ProcessLookupError):
            continue
        except OSError:
            return None
        read = True
        total_kib += kib_field(text, field) or 0
    return total_kib / 1024 if read else None


# ------------------------------------------------------------------- utilities


def system_ticks() -> dict[str, int]:
    """Machine-wide CPU ticks from /proc/stat: task time (user+nice+system), irq time, steal."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    v += [0] * (8 - len(v))
    return {"task": v[0] + v[1] + v[2], "irq": v[5] + v[6], "steal": v[7]}


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def parse_cpu_list(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def cpu_list_text(cpus: list[int]) -> str:
    return ",".join(str(c) for c in cpus)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])[-600:]


def request(port: int, app: App, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if app.post_bytes:
            conn.request("POST", "/", body=b"a" * app.post_bytes,
                         headers={"Content-Type": "application/octet-stream"})
        else:
            conn.request("GET", "/")
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_probe(port: int, timeout: float) -> str | None:
    """One WebSocket round trip: upgrade, a masked text message, its echo, a close.

    None if all was right, else what was wrong."""
    key = base64.b64encode(os.urandom(16))
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: " + f"{HOST}:{port}".encode() + b"\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return f"connection closed during the upgrade ({buf[:60]!r})"
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            return f"upgrade answered {head.splitlines()[0][:60]!r}"
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not re.search(rb"(?im)^sec-websocket-accept:[ \t]*" + re.escape(accept) + rb"[ \t]*\r?$", head):
            return "no or a wrong Sec-WebSocket-Accept"
        msg = "probe \u2713".encode()
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
        want = bytes([0x81, len(msg)]) + msg
        while len(rest) < len(want):
            chunk = s.recv(65536)
            if not chunk:
                return f"connection closed before the echo ({rest[:40]!r})"
            rest += chunk
        if rest[:len(want)] != want:
            return f"echo was {rest[:40]!r}, want {want!r}"
        s.sendall(bytes([0x88, 0x82]) + mask + bytes(b ^ mask[i] for i, b in enumerate(b"\x03\xe8")))
    return None


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout + out.stderr).strip().splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return "?"


# --------------------------------------------------------------- server control


class RunningServer:
    def __init__(self, server: Server, opts, app: App, workers: int, cpus: list[int] | None, logdir: Path):
        self.server = server
        self.port = free_port()
        self.log = logdir / f"{server.key}-{app.name}-{self.port}.log"
        argv = server.argv(opts, app, self.port, workers)
        if cpus is not None:
            argv = ["taskset", "-c", cpu_list_text(cpus)] + argv  # taskset execs: same pid
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(server.env(opts))
        env["PYTHONUNBUFFERED"] = "1"
        self.argv = argv
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                         cwd=APPS_DIR, env=env, start_new_session=True)

    def why_dead(self) -> str:
        return f"exited with status {self.proc.returncode}: {tail(self.log) or '(no output)'}"

    def wait_ready(self, app: App, timeout: float = START_TIMEOUT) -> tuple[int, bytes]:
        """Poll with a deadline until the server answers one request; return it."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(self.why_dead())
            try:
                return request(self.port, app, timeout=min(PROBE_TIMEOUT, max(0.1, deadline - time.monotonic())))
            except (OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}"
            time.sleep(0.05)
        raise BenchError(f"not answering after {timeout:.0f}s ({last}); log: {tail(self.log)}")

    def stop(self) -> None:
        """SIGTERM the server's process group, SIGKILL after a deadline; then any straggler we saw."""
        # Ours: the server's tree, and whatever is left in the session it leads
        # (start_new_session: its pid is the session and group id).
        seen = process_tree(self.proc.pid) if self.proc.poll() is None else {}
        seen.update(session_members(self.proc.pid))
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
        # Descendants that left the group (or outlived the master): only the exact
        # processes we saw, matched by start time so a reused pid is never hit.
        deadline = time.monotonic() + STOP_TIMEOUT
        for pid, (_, started) in seen.items():
            if pid == self.proc.pid:
                continue
            while time.monotonic() < deadline:
                st = _stat(pid)
                if st is None or st[2] != started:
                    break
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                time.sleep(0.05)


# ---------------------------------------------------------------------- wrk


@dataclasses.dataclass
class WrkResult:
    stats: dict
    cpu_s: float
    wall_s: float


def run_wrk(opts, app: App, mode: str, port: int, duration: int, cpus: list[int] | None,
            threads: int, on_tick: Callable[[], None] | None = None) -> WrkResult:
    """One client run: wrk, or bench/wsload for a WebSocket app (same summary keys)."""
    if app.websocket:
        argv = [str(WSLOAD), "--url", f"ws://{HOST}:{port}/", "-c", str(opts.connections), "-d", str(duration),
                "--warmup", "0", "--size", str(opts.ws_size), "--window", str(opts.ws_window)]
    else:
        argv = ["wrk", f"-t{threads}", f"-c{opts.connections}", f"-d{duration}s", "--latency",
                "--timeout", f"{opts.wrk_timeout:g}s", "-s", str(app.script), *MODES[mode],
                f"http://{HOST}:{port}/"]
    client = Path(argv[0]).name
    if cpus is not None:
        argv = ["taskset", "-c", cpu_list_text(cpus)] + argv
    env = dict(os.environ)
    if app.post_bytes:
        env["BENCH_POST_BYTES"] = str(app.post_bytes)
    deadline = duration + max(30.0, opts.wrk_timeout * 3)
    with tempfile.TemporaryFile() as out:
        started = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        rusage = None
        try:
            next_tick = started
            while True:
                pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    rusage = ru
                    break
                now = time.monotonic()
                if now - started > deadline:
                    raise BenchError(f"{client} still running after {deadline:.0f}s")
                if on_tick and now >= next_tick:
                    on_tick()
                    next_tick = now + 1.0
                time.sleep(0.1)
        finally:
            if rusage is None:  # timed out or interrupted: end our wrk, reap it
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=STOP_TIMEOUT)
        wall = time.monotonic() - started
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        first = text.strip().splitlines()[:1] or ["(no output)"]
        raise BenchError(f"{client} exited {proc.returncode}: {first[0][:300]}")
    m = re.search(r"^BENCH_JSON (\{.*\})$", text, re.M)
    if not m:
        raise BenchError(f"no summary from {client}: {' | '.join(text.strip().splitlines()[-3:])[:300]}")
    return WrkResult(json.loads(m.group(1)), rusage.ru_utime + rusage.ru_stime, wall)


# ----------------------------------------------------------------------- rows


@dataclasses.dataclass
class Row:
    server: str  # display name
    key: str  # SERVERS key
    kind: str
    worker: str
    app: str
    mode: str
    workers: int
    server_cpus: str = ""
    wrk_cpus: str = ""
    status: str = "ok"  # ok | failed | skipped
    reason: str = ""
    rps: float | None = None
    requests: int | None = None
    cpu_us_per_req: float | None = None
    server_cpu_pct: float | None = None
    other_cpu_pct: float | None = None
    irq_cpu_pct: float | None = None
    steal_cpu_pct: float | None = None
    wrk_cpu_pct: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int | None = None
    error_detail: dict | None = None
    bytes_per_req: float | None = None
    rss_idle_mib: float | None = None
    rss_load_mib: float | None = None
    pss_idle_mib: float | None = None
    vs_gunicorn: dict | None = None
    vs_granian: dict | None = None
    vs_uvicorn: dict | None = None  # asgi rows; in the per-round summary, not a column
    round: int = 1  # which round of --rounds measured it
    # A row of medians (--rounds > 1): over how many rounds, and CPU µs/req's spread.
    rounds: int | None = None
    rounds_failed: int = 0
    cpu_us_per_req_min: float | None = None
    cpu_us_per_req_max: float | None = None
    started: str = ""
    build: dict | None = None  # ferricorn rows: the extension module measured


def measure(opts, server: Server, app: App, mode: str, workers: int, server_cpus: list[int] | None,
            wrk_cpus: list[int] | None, wrk_threads: int, logdir: Path) -> Row:
    row = Row(server.name, server.key, server.kind, server.worker_label(opts), app.name, mode, workers,
              cpu_list_text(server_cpus) if server_cpus is not None else "any",
              cpu_list_text(wrk_cpus) if wrk_cpus is not None else "any")
    row.started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if server.name == "ferricorn":
        row.build = ferricorn_build(opts)
    running = None
    try:
        running = RunningServer(server, opts, app, workers, server_cpus, logdir)
        status, body = running.wait_ready(app)
        problem = app.check(status, body)
        if problem:
            raise BenchError(f"wrong response: {problem}")
        if app.websocket:
            if not os.access(WSLOAD, os.X_OK):
                raise BenchError(f"{WSLOAD.relative_to(ROOT)} not built (run bash bench/setup.sh)")
            problem = ws_probe(running.port, PROBE_TIMEOUT)
            if problem:
                raise BenchError(f"WebSocket echo: {problem}")
        row.rss_idle_mib = tree_mib(running.proc.pid, RSS)
        row.pss_idle_mib = tree_mib(running.proc.pid, PSS)
        if opts.warmup > 0:
            run_wrk(opts, app, mode, running.port, opts.warmup, wrk_cpus, wrk_threads)
        if running.proc.poll() is not None:
            raise BenchError("died during warm-up: " + running.why_dead())
        rss_peak = [tree_mib(running.proc.pid, RSS)]

        def tick():
            rss_peak.append(tree_mib(running.proc.pid, RSS))

        sys0, self0 = system_ticks(), self_cpu_seconds()
        cpu0 = tree_cpu_seconds(running.proc.pid)
        res = run_wrk(opts, app, mode, running.port, opts.duration, wrk_cpus, wrk_threads, on_tick=tick)
        cpu1 = tree_cpu_seconds(running.proc.pid)
        sys1, self1 = system_ticks(), self_cpu_seconds()
        tick()
        if running.proc.poll() is not None:
            raise BenchError("died during the run: " + running.why_dead())
        s = res.stats
        run_s = s["duration_us"] / 1e6
        row.requests = s["requests"]
        row.rps = s["requests"] / run_s if run_s > 0 else 0.0
        srv_cpu = max(0.0, cpu1 - cpu0)
        row.server_cpu_pct = 100 * srv_cpu / run_s if run_s > 0 else None
        row.cpu_us_per_req = 1e6 * srv_cpu / s["requests"] if s["requests"] else None
        row.wrk_cpu_pct = 100 * res.cpu_s / res.wall_s if res.wall_s > 0 else None
        if res.wall_s > 0:
            # Everyone else on the machine: task time not spent by the server, wrk or us.
            task = (sys1["task"] - sys0["task"]) / CLK_TCK
            other = task - srv_cpu - res.cpu_s - (self1 - self0)
            row.other_cpu_pct = max(0.0, 100 * other / res.wall_s)
            row.irq_cpu_pct = 100 * (sys1["irq"] - sys0["irq"]) / CLK_TCK / res.wall_s
            row.steal_cpu_pct = 100 * (sys1["steal"] - sys0["steal"]) / CLK_TCK / res.wall_s
        row.p50_ms = s["p50_us"] / 1000
        row.p99_ms = s["p99_us"] / 1000
        detail = {k: s[k] for k in ("status", "connect", "read", "write", "timeout")}
        row.errors = sum(detail.values())
        row.error_detail = {k: v for k, v in detail.items() if v}
        row.bytes_per_req = s["bytes"] / s["requests"] if s["requests"] else None
        row.rss_load_mib = max((v for v in rss_peak if v is not None), default=None)
        if not s["requests"]:
            row.status, row.reason = "failed", "no request completed"
    except BenchError as e:
        row.status, row.reason = "failed", str(e)
    except OSError as e:
        row.status, row.reason = "failed", f"{type(e).__name__}: {e}"
    finally:
        if running is not None:
            running.stop()
    return row


def add_ratios(rows: list[Row]) -> None:
    """For each ferricorn row: req/s and CPU-per-request ratios to gunicorn and granian."""
    def find(key, app, mode, workers):
        for r in rows:
            if r.key == key and r.app == app and r.mode == mode and r.workers == workers and r.status == "ok":
                return r
        return None

    def ratio(ours: Row, peer: Row | None):
        if peer is None or not peer.rps or ours.rps is None:
            return None
        out = {"peer": f"{peer.server} {peer.worker}", "rps": ours.rps / peer.rps}
        if ours.cpu_us_per_req and peer.cpu_us_per_req:
            out["cpu_per_req"] = ours.cpu_us_per_req / peer.cpu_us_per_req
        return out

    for r in rows:
        if r.server != "ferricorn" or r.status != "ok":
            continue
        # evloop is a keep-alive worker: its gunicorn peer is gthread. asgi pairs with asgi.
        gkey = {"gthread": "gunicorn-gthread", "evloop": "gunicorn-gthread", "asgi": "gunicorn-asgi"}.get(
            r.kind, "gunicorn-sync")
        r.vs_gunicorn = ratio(r, find(gkey, r.app, r.mode, r.workers))
        r.vs_granian = ratio(r, find("granian-asgi" if r.kind == "asgi" else "granian", r.app, r.mode, r.workers))
        if r.kind == "asgi":
            r.vs_uvicorn = ratio(r, find("uvicorn", r.app, r.mode, r.workers))


# Row fields that a row of medians takes from its rounds (errors are summed instead).
MEDIAN_FIELDS = ("rps", "requests", "cpu_us_per_req", "server_cpu_pct", "other_cpu_pct", "irq_cpu_pct",
                 "steal_cpu_pct", "wrk_cpu_pct", "p50_ms", "p99_ms", "bytes_per_req", "rss_idle_mib",
                 "rss_load_mib", "pss_idle_mib")


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def combine_rounds(measured: list[Row]) -> list[Row]:
    """One row per server x app x mode x workers (in the order first measured) from
    the rounds' measurements: the median of each figure over the rounds that
    succeeded, CPU µs/req's min and max, errors summed. No round succeeded: the
    first failure. Ratios are left to add_ratios (on the medians)."""
    groups: dict[tuple, list[Row]] = {}
    for m in measured:
        groups.setdefault((m.key, m.app, m.mode, m.workers), []).append(m)
    out = []
    for runs in groups.values():
        ok = [m for m in runs if m.status == "ok"]
        failed = [m for m in runs if m.status != "ok"]
        row = dataclasses.replace(ok[0] if ok else runs[0], round=0, rounds=len(runs), rounds_failed=len(failed),
                                  vs_gunicorn=None, vs_granian=None, vs_uvicorn=None)
        if ok:
            for name in MEDIAN_FIELDS:
                setattr(row, name, _median(getattr(m, name) for m in ok))
            cpu = [m.cpu_us_per_req for m in ok if m.cpu_us_per_req is not None]
            row.cpu_us_per_req_min, row.cpu_us_per_req_max = (min(cpu), max(cpu)) if cpu else (None, None)
            row.errors = sum(m.errors or 0 for m in ok)
            detail: dict[str, int] = {}
            for m in ok:
                for k, v in (m.error_detail or {}).items():
                    detail[k] = detail.get(k, 0) + v
            row.error_detail = detail
            row.reason = failed[0].reason if failed else ""
        out.append(row)
    return out


def per_round_ratios(measured: list[Row]) -> list[dict]:
    """ferricorn's CPU µs/req ÷ granian's (and uvicorn's, for ASGI apps) round by
    round, from the measurements' own ratios (add_ratios run on each round):
    one entry per ferricorn row and peer, with the median and the rounds in
    which ferricorn spent less."""
    pairs: dict[tuple, dict] = {}
    for m in measured:
        if m.server != "ferricorn" or m.status != "ok":
            continue
        for d in (m.vs_granian, m.vs_uvicorn):
            if not d or d.get("cpu_per_req") is None:
                continue
            entry = pairs.setdefault((m.key, m.app, m.mode, m.workers, d["peer"]), {
                "ferricorn": f"{m.server} {m.worker}", "peer": d["peer"], "app": m.app, "mode": m.mode,
                "workers": m.workers, "rounds": [], "cpu_ratios": [], "rps_ratios": []})
            entry["rounds"].append(m.round)
            entry["cpu_ratios"].append(d["cpu_per_req"])
            entry["rps_ratios"].append(d["rps"])
    for entry in pairs.values():
        entry["median"] = statistics.median(entry["cpu_ratios"])
        entry["lower"] = sum(1 for x in entry["cpu_ratios"] if x < 1)
    return list(pairs.values())


def render_per_round(entries: list[dict], with_workers: bool) -> list[str]:
    if not entries:
        return []
    out = ["Per round: ferricorn's CPU µs/req ÷ the peer's, both measured in the same round "
           "(below 1: ferricorn spends less):", ""]
    for e in entries:
        where = f"{e['app']} {e['mode']}" + (f" w={e['workers']}" if with_workers else "")
        inverse = f"{1 / e['median']:.2f}×" if e["median"] else "—"
        out.append(f"- {where}, {e['ferricorn']} ÷ {e['peer']}: "
                   + ", ".join(f"{x:.2f}" for x in e["cpu_ratios"])
                   + f"; median {e['median']:.2f} ({e['peer']} ÷ ferricorn {inverse}), "
                   f"ferricorn lower in {e['lower']} of {len(e['cpu_ratios'])} rounds")
    return out


# -------------------------------------------------------------------- report


def _num(v, fmt="{:.0f}"):
    return "—" if v is None else fmt.format(v)


def _ratio_cell(d):
    if not d:
        return "—"
    cpu = d.get("cpu_per_req")
    return f"{d['rps']:.2f}× ({cpu:.2f}×)" if cpu else f"{d['rps']:.2f}×"


def render_table(rows: list[Row], with_workers: bool, rounds: int = 1) -> str:
    """The markdown table; rounds > 1: rows of medians (combine_rounds), with CPU µs/req's min–max."""
    spread = rounds > 1
    head = ["server", "worker"] + (["w", "server cpus", "wrk cpus"] if with_workers else []) + [
        "app", "mode"] + (["req/s median", "CPU µs/req median", "CPU µs/req min–max"] if spread else [
            "req/s", "CPU µs/req"]) + [
        "server CPU %", "wrk CPU %", "other CPU %", "p50 ms", "p99 ms", "errors",
        "RSS MiB idle/load", "PSS MiB idle", "vs gunicorn", "vs granian"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    notes: dict[tuple[str, str, str], list[str]] = {}  # (server, status, reason) -> rows; numbered in order

    def note(r: Row, status: str) -> int:
        key = (f"{r.server} {r.worker}", status, " ".join(r.reason.split()))
        notes.setdefault(key, []).append(f"{r.app} {r.mode}")
        return list(notes).index(key) + 1

    for r in rows:
        lead = [r.server, r.worker] + ([str(r.workers), r.server_cpus, r.wrk_cpus] if with_workers else []) + [
            r.app, r.mode]
        if r.status != "ok":
            status = r.status + (f" in all {r.rounds} rounds" if spread and r.rounds else "")
            cells = lead + [f"{r.status} [{note(r, status)}]"] + ["—"] * (len(head) - len(lead) - 1)
        else:
            err = str(r.errors)
            if r.error_detail:
                err += " (" + ", ".join(f"{k} {v}" for k, v in r.error_detail.items()) + ")"
            rps = _num(r.rps)
            if r.rounds_failed:
                rps += f" [{note(r, f'failed in {r.rounds_failed} of {r.rounds} rounds (medians of the rest)')}]"
            cells = lead + [rps, _num(r.cpu_us_per_req)] + (
                [f"{_num(r.cpu_us_per_req_min)}–{_num(r.cpu_us_per_req_max)}"] if spread else []) + [
                _num(r.server_cpu_pct), _num(r.wrk_cpu_pct),
                _num(r.other_cpu_pct),
                _num(r.p50_ms, "{:.2f}"), _num(r.p99_ms, "{:.2f}"), err,
                f"{_num(r.rss_idle_mib, '{:.1f}')} / {_num(r.rss_load_mib, '{:.1f}')}",
                _num(r.pss_idle_mib, "{:.1f}"),
                _ratio_cell(r.vs_gunicorn) if r.server == "ferricorn" else "",
                _ratio_cell(r.vs_granian) if r.server == "ferricorn" else "",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    if notes:
        lines.append("")
        for i, ((who, status, reason), which) in enumerate(notes.items(), 1):
            lines.append(f"[{i}] {who} ({', '.join(which)}): {status}: {reason}")
    return "\n".join(lines)


def machine_info() -> dict:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions(opts, ferricorn_ok: bool) -> dict:
    v = {"wrk": re.sub(r"^wrk\s+", "", version_of(["wrk", "-v"]).split(" [")[0])}
    probe = ("import importlib.metadata as m\n"
             "for n in ('gunicorn','granian','flask','bjoern','uwsgi','uvicorn','uvloop','httptools',"
             "'websockets','starlette','fastapi'):\n"
             "    try: print(n, m.version(n))\n"
             "    except m.PackageNotFoundError: print(n, '-')\n")
    try:
        out = subprocess.run([_bin("python"), "-c", probe], capture_output=True, text=True, timeout=30).stdout
        for line in out.splitlines():
            name, _, ver = line.partition(" ")
            v[name] = ver
    except (OSError, subprocess.SubprocessError):
        pass
    if ferricorn_ok:
        raw = version_of([opts.ferricorn, "--version"])
        m = re.search(r"version\s+(\S+?)\)?$", raw)
        v["ferricorn"] = (m.group(1) if m else raw) + f" at {opts.ferricorn}"
        inside = Path(opts.ferricorn).resolve().is_relative_to(ROOT)
        try:
            if not inside:
                raise OSError("ferricorn is not this checkout's build")
            rev = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                                 capture_output=True, text=True, timeout=10).stdout.strip()
            if rev:
                v["ferricorn"] += f" (checkout at git {rev} when the run started)"
        except (OSError, subprocess.SubprocessError):
            pass
        b = ferricorn_build(opts)
        if b:
            v["ferricorn"] += f", {b['profile']} build of {b['built']}"
    return v


def _wrk_line(opts, scaling) -> str:
    """How wrk ran and where the server and wrk were pinned."""
    threads = f"{opts.threads} threads for gthread/granian"
    if scaling and not opts.worker_counts:
        return (f"- wrk: -c{opts.connections} -d{opts.duration}s after a {opts.warmup}s warm-up; for -w N the "
                f"server is pinned to the first N cpus and wrk, one thread per cpu, to the rest; {threads}")
    line = f"- wrk: -t{opts.wrk_threads} -c{opts.connections} -d{opts.duration}s after a {opts.warmup}s warm-up"
    every = "every -w with the server" if scaling else "server"
    line += f"; {every} on cpu {opts.server_cpus}, wrk on cpu {opts.wrk_cpus}" if opts.pin else "; not pinned"
    return line + (f"; {threads}" if scaling else f"; {opts.workers} worker(s), {threads}")


def render_report(opts, info, vers, rows, skipped, scaling, command, started, measured=None) -> str:
    """The report: rows are the table's (medians when --rounds > 1), measured every single measurement."""
    measured = rows if measured is None else measured
    rounds = getattr(opts, "rounds", 1)
    now = datetime.datetime.now(datetime.timezone.utc)
    out = [
        f"## ferricorn benchmark — {started:%Y-%m-%d %H:%M}–{now:%H:%M} UTC",
        "",
        f"- command: `{command}`",
        f"- machine: {info['nproc']} CPUs ({info['cpu_model']}), {info['memory']}, Linux {info['kernel']}, "
        f"Python {info['python']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v and v != "-"),
        _wrk_line(opts, scaling),
    ] + ([f"- rounds: {rounds}, interleaved (every row once per round, then the next round); each row shows "
          f"the median of its rounds"] if rounds > 1 else []) + [
        "",
        "CPU µs/req: the server's whole process tree (master, workers, reaped children), "
        "user+system, over the run, divided by requests. server CPU % and wrk CPU % are shares "
        "of one core; wrk near 100 % means the client, not the server, set the pace. "
        "other CPU %: task time of every other process on the machine during the run "
        "(/proc/stat minus server, wrk and harness); more than a few % means the row was disturbed. "
        "vs gunicorn / vs granian: ferricorn's req/s ÷ the peer's (same run, same app and mode; "
        "gunicorn of the same worker kind), with the CPU-per-request ratio in brackets (below 1 is better). "
        "PSS MiB idle: proportional set size summed over the tree at idle; unlike RSS it counts the pages "
        "a master shares with its forked workers once.",
        "",
    ]
    if rounds > 1:
        out += ["With --rounds: req/s and CPU µs/req are medians over the rounds, CPU µs/req min–max their "
                    "spread; the other figures are medians too, errors the total; the vs columns are ratios of "
                    "the medians.", ""]
    if scaling:
        out.append(f"### Scaling ({opts.apps}, {opts.modes})")
        out.append("")
    out.append(render_table(rows, with_workers=scaling, rounds=rounds))
    if rounds > 1:
        per_round = render_per_round(per_round_ratios(measured), with_workers=scaling)
        if per_round:
            out += [""] + per_round
    builds = {(b["profile"], b["built"]) for r in measured if r.server == "ferricorn" and (b := r.build)}
    if any(p == "debug" for p, _ in builds):
        out += ["", "Warning: ferricorn was a **debug build** (overflow checks on) in some or all rows: "
                    "its numbers are not representative; run `make build` (release) and measure again."]
    if len(builds) > 1:
        out += ["", "Warning: ferricorn's extension module was rebuilt during the run: "
                    + "; ".join(f"{p} built {t}" for p, t in sorted(builds, key=lambda b: b[1]))
                    + ". Rows of different builds are not comparable."]
    noisy = [r for r in measured if r.other_cpu_pct is not None and r.other_cpu_pct > opts.max_other_cpu]
    if noisy:
        what = "measurement" if rounds > 1 else "row"
        out += ["", f"Warning: {len(noisy)} {what}(s) ran while other processes used more than "
                    f"{opts.max_other_cpu:g} % of a core (other CPU %), even after retries; compare them with care."]
    if any(APPS[r.app].websocket for r in measured if r.app in APPS):
        out += ["", f"ws rows: req/s are WebSocket messages echoed per second and CPU µs/req is per message "
                    f"(bench/wsload: {opts.connections} connections, {opts.ws_window} {opts.ws_size}-byte text "
                    f"message(s) in flight on each; wrk CPU % is wsload's)."]
    if skipped:
        out += ["", "Skipped servers: " + "; ".join(f"{k} ({why})" for k, why in skipped.items())]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- main


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # no "(default: False)" on flags
        if action.nargs == 0:
            return action.help
        return super()._get_help_string(action)


def _counts(text: str) -> list[int]:
    try:
        counts = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of worker counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be 1 or more: {text!r}")
    return counts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=_Help)
    p.add_argument("--ferricorn", default=str(ROOT / ".venv" / "bin" / "ferricorn"),
                   help="ferricorn executable (skipped, and reported, if missing)")
    p.add_argument("--servers", default="all",
                   help="comma list of " + ", ".join(list(SERVERS) + list(SERVER_GROUPS)) + ", or all")
    p.add_argument("--apps", default=None, help="comma list of " + ", ".join(list(APPS) + list(APP_GROUPS))
                   + ", or all "
                   "(default: all; hello and asgi-hello with --quick or --scaling)")
    p.add_argument("--modes", default=None, help="comma list of " + ", ".join(MODES) + ", or all "
                   "(default: all; keep-alive with --scaling)")
    p.add_argument("--retries", type=int, default=2,
                   help="re-run a row up to this many times while other processes disturb it "
                        "(other CPU %% above --max-other-cpu); the quietest run is kept")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the whole matrix this many times, interleaved (every row once per round), "
                        "and report each row's median, CPU µs/req's min–max and ferricorn's per-round ratios")
    p.add_argument("--max-other-cpu", type=float, default=10.0,
                   help="other processes' CPU use (%% of one core) above which a row counts as disturbed")
    p.add_argument("--workers", type=int, default=1, help="server worker processes")
    p.add_argument("--threads", type=int, default=4, help="threads for gthread workers and granian")
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (wrk takes whole seconds)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of wrk before each measured run (0: none)")
    p.add_argument("--connections", type=int, default=64, help="wrk -c")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t")
    p.add_argument("--wrk-timeout", type=float, default=5.0, help="wrk --timeout seconds")
    p.add_argument("--ws-size", type=int, default=64, help="bytes per WebSocket message (ws app)")
    p.add_argument("--ws-window", type=int, default=1,
                   help="WebSocket messages in flight per connection (ws app); more lowers the client's cost")
    p.add_argument("--server-cpus", default="0", help="taskset cpu list for the server")
    p.add_argument("--wrk-cpus", default="1", help="taskset cpu list for wrk (and this harness)")
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 2 s runs, 1 s warm-up, hello and asgi-hello only")
    p.add_argument("--scaling", action="store_true",
                   help="instead of the matrix: hello (and asgi-hello), keep-alive, -w 1,2,4.. up to nproc-1, "
                        "server on cpus 0..w-1, wrk on the rest")
    p.add_argument("--worker-counts", type=_counts, default=None,
                   help="with --scaling: these -w values (e.g. 1,2,4,8,16), each with the ordinary "
                        "pinning (--server-cpus, --wrk-cpus): for an app that waits rather than computes "
                        "(sleep), whose workers need no core each")
    p.add_argument("--out", default=str(HERE / "results"), help="directory for latest.md and latest.json")
    opts = p.parse_args(argv)
    if opts.worker_counts and not opts.scaling:
        p.error("--worker-counts goes with --scaling")
    if opts.rounds < 1:
        p.error("--rounds must be >= 1")
    if opts.duration < 1 or opts.warmup < 0:
        p.error("--duration must be >= 1 and --warmup >= 0 (whole seconds)")
    if opts.quick:
        opts.duration = 2
        opts.warmup = 1
    if opts.apps is None:
        opts.apps = "hello,asgi-hello" if (opts.quick or opts.scaling) else "all"
    if opts.modes is None:
        opts.modes = "keep-alive" if opts.scaling else "all"
    return opts


def pick(text: str, known: dict, groups: dict | None = None, what: str = "") -> list[str]:
    if text == "all":
        return list(known)
    out = []
    for name in (n.strip() for n in text.split(",")):
        if not name:
            continue
        if groups and name in groups:
            out += groups[name]
        elif name in known:
            out.append(name)
        else:
            sys.exit(f"bench: unknown {what} {name!r}; known: {', '.join(list(known) + list(groups or {}))}")
    return list(dict.fromkeys(out))


def _raise_interrupted(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def main(argv=None) -> int:
    opts = parse_args(argv)
    server_keys = pick(opts.servers, SERVERS, SERVER_GROUPS, "server")
    app_keys = pick(opts.apps, APPS, APP_GROUPS, what="app")
    mode_keys = pick(opts.modes, MODES, what="mode")
    if not shutil.which("wrk"):
        sys.exit("bench: wrk not found (run bash bench/setup.sh)")

    usable = sorted(os.sched_getaffinity(0))
    if opts.pin and not shutil.which("taskset"):
        print("bench: taskset not found: not pinning", file=sys.stderr)
        opts.pin = False
    if opts.pin and len(usable) < 2 and not (opts.scaling and not opts.worker_counts):
        print("bench: fewer than 2 usable CPUs: not pinning", file=sys.stderr)
        opts.pin = False
    server_cpus = parse_cpu_list(opts.server_cpus) if opts.pin else None
    wrk_cpus = parse_cpu_list(opts.wrk_cpus) if opts.pin else None
    for cpus in (server_cpus, wrk_cpus):
        if cpus is not None and (not cpus or not set(cpus) <= set(usable)):
            sys.exit(f"bench: cpu list {cpus} not within usable cpus {usable}")

    signal.signal(signal.SIGTERM, _raise_interrupted)
    signal.signal(signal.SIGINT, _raise_interrupted)

    skipped = {}
    servers = []
    for key in server_keys:
        why = SERVERS[key].available(opts)
        if why:
            skipped[key] = why
            print(f"bench: skipping {key}: {why}", file=sys.stderr)
        else:
            servers.append(SERVERS[key])

    def pairs(srv: Server) -> list[tuple[str, str]]:
        """The (app, mode) runs of a server: apps of its interface; a WebSocket only keep-alive."""
        return [(a, m) for a in app_keys for m in mode_keys
                if APPS[a].interface == srv.interface and not (APPS[a].websocket and m != "keep-alive")]

    for srv in list(servers):
        if not pairs(srv):
            want = sorted(n for n in APP_GROUPS[srv.interface] if n in APPS)
            skipped[srv.key] = (f"no {srv.interface.upper()} app among --apps {opts.apps} / --modes {opts.modes} "
                                f"({', '.join(want)}; ws runs keep-alive only)")
            print(f"bench: skipping {srv.key}: {skipped[srv.key]}", file=sys.stderr)
            servers.remove(srv)

    # plan: (server, app, mode, workers, server cpus, wrk cpus, wrk threads)
    plan = []
    if opts.scaling:
        n = len(usable)
        counts = []
        w = 1
        while w <= max(1, n - 1):
            counts.append(w)
            w *= 2
        if n > 1 and counts[-1] != n - 1:
            counts.append(n - 1)
        if opts.worker_counts:
            counts = opts.worker_counts
        for w in counts:
            if opts.worker_counts:  # the ordinary pinning, whatever -w
                s_cpus, c_cpus = server_cpus, wrk_cpus
            else:
                s_cpus = usable[:w] if n > 1 and opts.pin else None
                c_cpus = usable[w:] if n > 1 and opts.pin else None
            for srv in servers:
                if w > 1 and not srv.multi_worker:
                    continue
                for a, m in pairs(srv):
                    wt = len(c_cpus) if c_cpus and not opts.worker_counts else opts.wrk_threads
                    plan.append((srv, APPS[a], m, w, s_cpus, c_cpus, wt))
    else:
        for srv in servers:
            if opts.workers > 1 and not srv.multi_worker:
                skipped[srv.key] = "runs a single process; --workers > 1"
                continue
            for a, m in pairs(srv):
                plan.append((srv, APPS[a], m, opts.workers, server_cpus, wrk_cpus, opts.wrk_threads))

    harness_cpus = wrk_cpus if opts.pin and wrk_cpus else None
    if opts.scaling and not opts.worker_counts and len(usable) > 1 and opts.pin:
        harness_cpus = [usable[-1]]
    if harness_cpus:
        os.sched_setaffinity(0, harness_cpus)  # keep our polling off the server's core

    started = datetime.datetime.now(datetime.timezone.utc)
    info = machine_info()
    vers = versions(opts, _ferricorn_available(opts) is None)
    command = " ".join(["bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    measured: list[Row] = []  # every measurement, round by round
    per_run = opts.duration + opts.warmup + 2  # start, probe and stop take about 2 s
    total = len(plan) * opts.rounds
    print(f"bench: {total} runs, about {total * per_run / 60:.1f} min", file=sys.stderr)
    interrupted = None
    with tempfile.TemporaryDirectory(prefix="ferricorn-bench-") as logdir:
        try:
            # Round-major: a slow spell of the host hits every server, not one row's repeats.
            for rnd in range(1, opts.rounds + 1):
                for i, (srv, app, mode, w, s_cpus, c_cpus, wt) in enumerate(plan, 1):
                    label = f"[{(rnd - 1) * len(plan) + i}/{total}] {srv.key} w={w} {app.name} {mode}"
                    if opts.rounds > 1:
                        label += f" (round {rnd}/{opts.rounds})"
                    print(f"bench: {label} ...", file=sys.stderr, flush=True)
                    row = measure(opts, srv, app, mode, w, s_cpus, c_cpus, wt, Path(logdir))
                    for attempt in range(opts.retries):
                        if row.status != "ok" or (row.other_cpu_pct or 0) <= opts.max_other_cpu:
                            break
                        print(f"bench: {label}: other processes used {row.other_cpu_pct:.0f}% of a core; "
                              f"again ({attempt + 1}/{opts.retries})", file=sys.stderr, flush=True)
                        again = measure(opts, srv, app, mode, w, s_cpus, c_cpus, wt, Path(logdir))
                        if again.status == "ok" and (again.other_cpu_pct or 0) < (row.other_cpu_pct or 0):
                            row = again
                    row.round = rnd
                    measured.append(row)
                    if row.status == "ok":
                        print(f"bench: {label}: {row.rps:.0f} req/s, {_num(row.cpu_us_per_req)} µs CPU/req, "
                              f"wrk {_num(row.wrk_cpu_pct)}% CPU, errors {row.errors}", file=sys.stderr)
                    else:
                        print(f"bench: {label}: {row.status}: {row.reason}", file=sys.stderr)
        except Interrupted as e:
            interrupted = str(e)
            print(f"bench: interrupted ({e}); writing what was measured", file=sys.stderr)

    for rnd in sorted({m.round for m in measured}):  # each measurement's ratios: to its own round's peers
        add_ratios([m for m in measured if m.round == rnd])
    rows = measured
    if opts.rounds > 1:
        rows = combine_rounds(measured)
        add_ratios(rows)  # the table's ratios: of the medians
    report = render_report(opts, info, vers, rows, skipped, opts.scaling, command, started, measured)
    if interrupted:
        report += f"\nInterrupted by {interrupted}: the table is partial.\n"
    print(report)
    outdir = Path(opts.out)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "latest.md").write_text(report)
    payload = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": info,
        "versions": vers,
        "options": {k: v for k, v in vars(opts).items()},
        "skipped": skipped,
        "interrupted": interrupted,
        "rows": [dataclasses.asdict(r) for r in measured],  # every measurement, with its round
    }
    if opts.rounds > 1:
        payload["medians"] = [dataclasses.asdict(r) for r in rows]
        payload["per_round"] = per_round_ratios(measured)
    (outdir / "latest.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"bench: wrote {outdir / 'latest.md'} and latest.json", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
