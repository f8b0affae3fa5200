#!/usr/bin/env python3
"""Per-request instruction counts of a ferricorn worker, under callgrind.

Starts `ferricorn -w 1` under `valgrind --tool=callgrind --trace-children=yes`
with one of the bench apps, waits for it to answer, sends a warm-up, zeroes the
worker's counters (`callgrind_control -z`), sends N requests one after another
from this process, dumps the worker's counters (`callgrind_control -d`) and
stops the server. The dump then holds exactly those N requests: no start-up,
no import, no shutdown. It prints instructions (Ir) per request, split by the
object they ran in (ferricorn's Rust, libpython, libc, ...), and with
`--top K` the K functions with the most self instructions.

callgrind counts user-space instructions only: time in the kernel (syscalls,
the loopback TCP stack) is not in these figures. `--strace` counts the
worker's syscalls per request instead (strace -f -c, no valgrind), and
`--cpu` reads the worker's on-CPU time (user + kernel, all threads, from
/proc/PID/task/*/schedstat) around N sequential requests: not a benchmark
(one client, one request at a time), but it sees the kernel side too.

Standard library only. See docs/profile.md for how the figures were taken.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APPS = os.path.join(HERE, "apps")

SCENARIOS = {
    # name: (app, worker, keep-alive, method, body bytes)
    "hello-close": ("hello:app", "sync", False, "GET", 0),
    "hello-ka": ("hello:app", "gthread", True, "GET", 0),
    "flask-ka": ("flask_json:app", "gthread", True, "GET", 0),
    "flask-close": ("flask_json:app", "sync", False, "GET", 0),
    "echo-close": ("echo:app", "sync", False, "POST", 65536),
    "echo-ka": ("echo:app", "gthread", True, "POST", 65536),
    "big-close": ("big:app", "sync", False, "GET", 0),
    "big-ka": ("big:app", "gthread", True, "GET", 0),
    "hello-ev": ("hello:app", "evloop", True, "GET", 0),
    "flask-ev": ("flask_json:app", "evloop", True, "GET", 0),
    # The asgi worker (its loop: asyncio unless uvloop is installed).
    "asgi-hello": ("asgi_raw:hello", "asgi", True, "GET", 0),
    "asgi-echo": ("asgi_raw:echo", "asgi", True, "POST", 65536),
    "asgi-starlette": ("starlette_text:app", "asgi", True, "GET", 0),
}


def request_bytes(method: str, body_len: int, keep_alive: bool) -> bytes:
    head = [f"{method} / HTTP/1.1", "Host: 127.0.0.1", "User-Agent: profile"]
    if not keep_alive:
        head.append("Connection: close")
    if body_len:
        head.append("Content-Type: application/octet-stream")
        head.append(f"Content-Length: {body_len}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + b"a" * body_len


def read_response(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one Content-Length response from `sock`; `buf` keeps any surplus."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed before a response head")
        buf += chunk
    end = buf.index(b"\r\n\r\n") + 4
    head = bytes(buf[:end])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    if not head.startswith(b"HTTP/1.1 200") or not m:
        raise RuntimeError(f"unexpected response head: {head!r}")
    want = end + int(m.group(1))
    while len(buf) < want:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed inside a response body")
        buf += chunk
    body = bytes(buf[end:want])
    del buf[:want]
    return body


class Client:
    def __init__(self, port: int, keep_alive: bool, method: str, body_len: int):
        self.port = port
        self.keep_alive = keep_alive
        self.req = request_bytes(method, body_len, keep_alive)
        self.sock: socket.socket | None = None
        self.buf = bytearray()

    def one(self, timeout: float = 120.0) -> bytes:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = bytearray()
        self.sock.sendall(self.req)
        body = read_response(self.sock, self.buf)
        if not self.keep_alive:
            self.sock.close()
            self.sock = None
        return body

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        with open(task) as f:
            out += [int(p) for p in f.read().split()]
    return out


def wait_ready(client: Client, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            client.one(timeout=30)
            return
        except OSError:
            client.close()
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer in time")
            time.sleep(0.2)


def server_command(args, app: str, worker: str, port: int) -> list[str]:
    cmd = [
        args.python, "-m", "ferricorn", "-w", "1", "-k", worker,
        "-b", f"127.0.0.1:{port}", "--pythonpath", APPS, "--log-level", "warning",
        "--timeout", "600", "--graceful-timeout", "5",
    ]
    if worker == "gthread":
        cmd += ["--threads", str(args.threads)]
    return cmd + [app]


def callgrind_control(*argv: str) -> None:
    subprocess.run(["callgrind_control", *argv], check=True, stdout=subprocess.DEVNULL)


def parse_callgrind(path: str):
    """Self Ir per object file and per function, and the total, of one dump."""
    names: dict[tuple[str, str], str] = {}

    def name(kind: str, value: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
            return m.group(2)
        return names.get((kind, m.group(1)), value)

    by_ob: collections.Counter = collections.Counter()
    by_fn: collections.Counter = collections.Counter()
    ob = fn = ""
    fn_ob = ""
    skip_next = False
    total = 0
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    ir = int(parts[1])
                    by_ob[fn_ob] += ir
                    by_fn[(fn, fn_ob)] += ir
                continue
            if line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
                continue
            key, _, value = line.partition("=")
            if key == "ob":
                ob = name("ob", value)
            elif key == "fn":
                fn = name("fn", value)
                fn_ob = ob
            elif key in ("cob",):
                name("ob", value)
            elif key in ("cfn",):
                name("fn", value)
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                name("fl", value)
            elif key == "calls":
                skip_next = True
    return total, by_ob, by_fn


def short_ob(ob: str) -> str:
    base = os.path.basename(ob)
    if base.startswith("_ferricorn"):
        return "ferricorn (Rust)"
    if base.startswith("libpython"):
        return "libpython"
    if base.startswith("libc.so") or base.startswith("libc-"):
        return "libc"
    if base.startswith("ld-linux"):
        return "ld.so"
    return base or "?"


def run_callgrind(args, scenario: str) -> None:
    app, worker, keep_alive, method, body_len = SCENARIOS[scenario]
    port = free_port()
    outdir = args.out or tempfile.mkdtemp(prefix="ferricorn-callgrind-")
    os.makedirs(outdir, exist_ok=True)
    cmd = [
        "valgrind", "--tool=callgrind", "--trace-children=yes",
        f"--callgrind-out-file={outdir}/callgrind.{scenario}.%p",
    ] + server_command(args, app, worker, port)
    log = open(os.path.join(outdir, f"{scenario}.log"), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    client = Client(port, keep_alive, method, body_len)
    try:
        wait_ready(client, proc, time.monotonic() + 300)
        for _ in range(args.warmup):
            client.one()
        workers = children(proc.pid)
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        wpid = workers[0]
        callgrind_control("-z", str(wpid))
        t0 = time.monotonic()
        for _ in range(args.requests):
            body = client.one()
        elapsed = time.monotonic() - t0
        client.close()
        if body_len and len(body) != body_len:
            raise RuntimeError(f"echo returned {len(body)} bytes, not {body_len}")
        before = set(glob.glob(f"{outdir}/callgrind.{scenario}.{wpid}*"))
        callgrind_control("-d", str(wpid))
        dumps = sorted(set(glob.glob(f"{outdir}/callgrind.{scenario}.{wpid}*")) - before)
        if not dumps:
            raise RuntimeError("callgrind_control -d made no dump")
    finally:
        client.close()
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    total, by_ob, by_fn = parse_callgrind(dumps[-1])
    n = args.requests
    print(f"{scenario}: {total / n:,.0f} Ir/request ({n} requests, {worker}, "
          f"{'keep-alive' if keep_alive else 'close'}, {elapsed:.1f} s under valgrind)")
    grouped: collections.Counter = collections.Counter()
    for ob, ir in by_ob.items():
        grouped[short_ob(ob)] += ir
    for ob, ir in grouped.most_common():
        print(f"  {ob:<24} {ir / n:>12,.0f}  {100 * ir / max(total, 1):5.1f} %")
    if args.top:
        print(f"  top {args.top} functions by self Ir/request:")
        for (fn, ob), ir in by_fn.most_common(args.top):
            print(f"  {ir / n:>12,.0f}  {short_ob(ob):<16} {fn[:110]}")
    print(f"  dump: {dumps[-1]}")


@contextlib.contextmanager
def native_server(args, scenario: str):
    """Start the scenario's server without valgrind, warm it up, and yield
    (client, worker pid); stop it afterwards."""
    app, worker, keep_alive, method, body_len = SCENARIOS[scenario]
    port = free_port()
    proc = subprocess.Popen(server_command(args, app, worker, port), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, start_new_session=True)
    client = Client(port, keep_alive, method, body_len)
    try:
        wait_ready(client, proc, time.monotonic() + 60)
        for _ in range(args.warmup):
            client.one()
        (wpid,) = children(proc.pid)
        yield client, wpid
    finally:
        client.close()
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def run_strace(args, scenario: str) -> None:
    with native_server(args, scenario) as (client, wpid):
        out = tempfile.mktemp(prefix="ferricorn-strace-")
        st = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(wpid)],
                              stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let strace attach to every thread (no response to wait for)
        for _ in range(args.requests):
            client.one()
        client.close()
        st.send_signal(signal.SIGINT)
        st.wait(timeout=30)
    n = args.requests
    print(f"{scenario}: syscalls per request ({n} requests)")
    with open(out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                calls = int(parts[3])
                print(f"  {parts[-1]:<16} {calls / n:6.2f}")
    os.unlink(out)


def cpu_ns(pid: int) -> int:
    """On-CPU time (user + system, ns) of every thread of `pid` so far."""
    total = 0
    for stat in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(stat) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that just exited
    return total


def minflt(pid: int) -> int:
    """Minor page faults of process `pid` (all threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def run_cpu(args, scenario: str) -> None:
    with native_server(args, scenario) as (client, wpid):
        before, faults = cpu_ns(wpid), minflt(wpid)
        for _ in range(args.requests):
            client.one()
        used = cpu_ns(wpid) - before
        faults = minflt(wpid) - faults
    print(f"{scenario}: {used / 1000 / args.requests:.1f} us worker CPU/request, "
          f"{faults / args.requests:.2f} page faults/request "
          f"({args.requests} sequential requests, one client)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", default=list(SCENARIOS), help=", ".join(SCENARIOS))
    p.add_argument("--python", default=os.path.join(os.path.dirname(HERE), ".venv", "bin", "python"),
                   help="the interpreter that has ferricorn installed (default: .venv's)")
    p.add_argument("--requests", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--top", type=int, default=0, help="list the K functions with the most self Ir")
    p.add_argument("--out", help="where callgrind's files go (default: a new temp dir)")
    p.add_argument("--strace", action="store_true", help="count syscalls per request instead")
    p.add_argument("--cpu", action="store_true",
                   help="instead: the worker's CPU time per request (schedstat), no valgrind")
    args = p.parse_args()
    for s in args.scenarios:
        if s not in SCENARIOS:
            sys.exit(f"unknown scenario {s!r}; known: {', '.join(SCENARIOS)}")
    for s in args.scenarios:
        if args.cpu:
            run_cpu(args, s)
        elif args.strace:
            run_strace(args, s)
        else:
            run_callgrind(args, s)


if __name__ == "__main__":
    main()
