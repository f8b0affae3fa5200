#!/usr/bin/env python3
"""Scale-out proof: two ferricorn instances behind nginx, upgraded and
restarted one at a time under load, with no failed request.

Starts two ferricorn instances on two loopback ports (as if two hosts), an
unprivileged nginx (Debian's) on a third port with both in one `upstream`,
and a bounded `wrk` load through nginx. During the load:

1. instance 1: `USR2` (a new master is exec'd on the same socket), wait until
   the new master's workers answer, `TERM` the old master, wait until it is gone;
2. instance 2: the same;
3. instance 1: `TERM` (stop), wait until it is gone, start it again, wait
   until it answers.

The steps start at 20 %, 45 % and 70 % of the load's duration.

Then it counts the responses nginx logged by status, the socket errors and
non-2xx responses wrk saw, and the upstream errors nginx logged and recovered
from (by passing the request to the other instance). Exit status 1 if any
request failed (5xx, wrk socket error) or a step did not finish during the load.

The new master's pid comes from its `Listening at: URL (PID)` log line (both
masters write to the same log), not from a pidfile. Standard library only;
see docs/deploy.md ("Several instances behind one load balancer").
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = '''\
import os


def app(environ, start_response):
    body = b"%d\\n" % os.getpid()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''
LISTEN_RE = re.compile(r"Listening at: \S+ \((\d+)\)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def get_pid(port: int) -> int | None:
    """One request straight to an instance: the pid of the worker that answered."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except OSError:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        return None
    return int(body)


class Instance:
    """One ferricorn (master + workers) on its own port; its log holds the
    lines of every master that serves this port (USR2 children inherit it)."""

    def __init__(self, n: int, opts, workdir: Path):
        self.n = n
        self.opts = opts
        self.port = free_port()
        self.log_path = workdir / f"ferricorn-{n}.log"
        self.masters: list[int] = []
        self.procs: list[subprocess.Popen] = []

    def argv(self) -> list[str]:
        o = self.opts
        return [o.ferricorn, "-w", str(o.workers), "-k", o.worker_class, "--threads", str(o.threads),
                "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "10",
                "--pythonpath", str(o.workdir), "rolling_app:app"]

    def listening_pids(self) -> list[int]:
        try:
            text = self.log_path.read_text()
        except FileNotFoundError:
            return []
        return [int(p) for p in LISTEN_RE.findall(text)]

    def new_master(self, timeout: float = 30) -> int:
        """Wait for a `Listening at` line from a master not seen before."""
        found = []

        def seen():
            found[:] = [p for p in self.listening_pids() if p not in self.masters]
            return bool(found)

        wait(seen, timeout, f"a new master of instance {self.n}")
        self.masters.append(found[0])
        return found[0]

    def wait_serving(self, master: int, timeout: float = 30):
        """Until a request straight to the port is answered by a worker of `master`."""
        wait(lambda: parent_of(get_pid(self.port) or 0) == master, timeout,
             f"a worker of master {master} (instance {self.n}) to answer")

    def start(self):
        log = open(self.log_path, "ab")
        self.procs.append(subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                           cwd=self.opts.workdir))
        log.close()
        self.wait_serving(self.new_master())

    def stop(self, pid: int, timeout: float = 30):
        os.kill(pid, signal.SIGTERM)
        for p in self.procs:
            p.poll()  # reap our own children
        wait(lambda: [p.poll() for p in self.procs] and not alive(pid), timeout, f"master {pid} to exit")

    def upgrade(self):
        """USR2, wait for the new master's workers, TERM the old master."""
        old = self.masters[-1]
        os.kill(old, signal.SIGUSR2)
        new = self.new_master()
        self.wait_serving(new)
        self.stop(old)

    def restart(self):
        self.stop(self.masters[-1])
        self.start()

    def kill_all(self):
        for pid in self.masters:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        while any(alive(p) for p in self.masters) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.masters:
            if alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass


def unprivileged_nginx_conf(workdir: Path, http_blocks: str, log_format: str = "") -> Path:
    """An nginx.conf in workdir/nginx that any user can run in the foreground
    (one process, its pid, logs and temp files in that directory), around
    `http_blocks` (upstream and server blocks). tests/test_deploy.py uses it too."""
    n = workdir / "nginx"
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (n / d).mkdir(parents=True, exist_ok=True)
    access = f"log_format st '{log_format}';\n    access_log {n}/access.log st;" if log_format \
        else f"access_log {n}/access.log;"
    conf = n / "nginx.conf"
    conf.write_text(f"""
daemon off;
master_process off;
worker_processes 1;
pid {n}/nginx.pid;
error_log {n}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    {access}
    client_body_temp_path {n}/client_body;
    proxy_temp_path {n}/proxy;
    fastcgi_temp_path {n}/fastcgi;
    uwsgi_temp_path {n}/uwsgi;
    scgi_temp_path {n}/scgi;
{http_blocks}
}}
""")
    return conf


def nginx_conf(workdir: Path, port: int, upstreams: list[int]) -> Path:
    """Both instances in one upstream, as docs/deploy.md's nginx blocks."""
    servers = "\n".join(f"    server 127.0.0.1:{p} fail_timeout=0;" for p in upstreams)
    return unprivileged_nginx_conf(workdir, f"""
upstream myapp {{
{servers}
    keepalive 16;
}}
server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
        proxy_pass http://myapp;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
    }}
}}
""", log_format="$status $upstream_status")


def parse_wrk(text: str) -> dict:
    out = {"requests": 0, "socket_errors": 0, "non_2xx": 0}
    if m := re.search(r"(\d+) requests in", text):
        out["requests"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        out["socket_errors"] = sum(int(x) for x in m.groups())
        out["socket_detail"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        out["non_2xx"] = int(m.group(1))
    return out


def step_of(line: str, windows: list[tuple[str, float, float]]) -> str:
    """The step during which nginx logged `line` (its time has 1 s resolution)."""
    try:
        t = time.mktime(time.strptime(line[:19], "%Y/%m/%d %H:%M:%S"))
    except ValueError:
        return "outside the steps"
    for name, began, ended in windows:
        if int(began) <= t <= ended:
            return name
    return "outside the steps"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ferricorn", default=str(ROOT / ".venv" / "bin" / "ferricorn"))
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--worker-class", default="gthread")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--duration", type=int, default=20, help="seconds of wrk load")
    p.add_argument("--connections", type=int, default=32, help="wrk -c")
    p.add_argument("--workdir", help="where logs and nginx's files go (default: a new temp dir)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON line last")
    opts = p.parse_args()
    opts.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="ferricorn-rolling-")).resolve()
    opts.workdir.mkdir(parents=True, exist_ok=True)
    (opts.workdir / "rolling_app.py").write_text(APP)
    for tool in (opts.ferricorn, opts.nginx, shutil.which("wrk")):
        if not tool or not os.path.exists(tool):
            print(f"rolling: missing {tool or 'wrk'} (make build; make deploy-deps)", file=sys.stderr)
            return 2

    instances = [Instance(1, opts, opts.workdir), Instance(2, opts, opts.workdir)]
    nginx_port = free_port()
    conf = nginx_conf(opts.workdir, nginx_port, [i.port for i in instances])
    nginx = wrk = None
    steps: list[tuple[str, float]] = []
    windows: list[tuple[str, float, float]] = []  # (step, wall-clock start, end)
    try:
        for inst in instances:
            inst.start()
        nginx = subprocess.Popen([opts.nginx, "-p", str(conf.parent), "-c", str(conf)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def nginx_up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", nginx_port)) == 0
        wait(nginx_up, 20, "nginx")
        started = time.monotonic()
        wrk = subprocess.Popen(
            ["wrk", "-t", "1", "-c", str(opts.connections), "-d", f"{opts.duration}s", "--timeout", "5s",
             f"http://127.0.0.1:{nginx_port}/"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        # Steps spread over the load (at 20 %, 45 % and 70 % of it), each
        # after the one before has finished, so each has load before and after.
        for at, (name, action) in zip((0.2, 0.45, 0.7), (("usr2 instance 1", instances[0].upgrade),
                                                          ("usr2 instance 2", instances[1].upgrade),
                                                          ("restart instance 1", instances[0].restart))):
            time.sleep(max(0.0, started + at * opts.duration - time.monotonic()))
            began = time.time()
            action()
            windows.append((name, began, time.time()))
            steps.append((name, round(time.monotonic() - started, 2)))
            print(f"rolling: {name} done at {steps[-1][1]:.1f} s", file=sys.stderr)
        wrk_out, _ = wrk.communicate(timeout=opts.duration + 30)
    finally:
        if wrk and wrk.poll() is None:
            wrk.kill()
            wrk.wait()
        for inst in instances:
            inst.kill_all()
        if nginx:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
    statuses = collections.Counter()
    for line in (opts.workdir / "nginx" / "access.log").read_text().splitlines():
        statuses[line.split(" ", 1)[0]] += 1
    errors = (opts.workdir / "nginx" / "error.log").read_text().splitlines()
    upstream_errors = [e for e in errors if "[error]" in e and "upstream" in e]
    by_step = collections.Counter(step_of(e, windows) for e in upstream_errors)
    w = parse_wrk(wrk_out)
    in_time = bool(steps) and steps[-1][1] < opts.duration
    result = {
        "worker_class": opts.worker_class,
        "workers": opts.workers,
        "duration_s": opts.duration,
        "connections": opts.connections,
        "steps_done": [s[0] for s in steps],
        "steps_at_s": [s[1] for s in steps],
        "steps_within_load": in_time,
        # 499: wrk closed the connection when its time was up, before the answer.
        "responses": sum(v for k, v in statuses.items() if k != "499"),
        "client_closed_499": statuses.get("499", 0),
        "status_2xx": sum(v for k, v in statuses.items() if k.startswith("2")),
        "status_5xx": sum(v for k, v in statuses.items() if k.startswith("5")),
        "statuses": dict(statuses),
        "wrk_requests": w["requests"],
        "wrk_socket_errors": w["socket_errors"],
        "wrk_non_2xx": w["non_2xx"],
        "nginx_upstream_errors_recovered": len(upstream_errors),
        "nginx_upstream_errors_by_step": {name: by_step.get(name, 0) for name, _, _ in windows}
        | ({"outside the steps": by_step["outside the steps"]} if by_step["outside the steps"] else {}),
        "nginx_upstream_error_kinds": dict(collections.Counter(
            re.sub(r".*\] \d+#\d+: \*\d+ ", "", e).split(" while ")[0] for e in upstream_errors)),
        "instances": [{"port": i.port, "masters": i.masters} for i in instances],
        "workdir": str(opts.workdir),
    }
    print(f"rolling: {result['responses']} responses through nginx in {opts.duration} s "
          f"({opts.worker_class}, -w {opts.workers}, wrk -c {opts.connections}): "
          f"2xx {result['status_2xx']}, 5xx {result['status_5xx']}, wrk socket errors {w['socket_errors']}, "
          f"wrk non-2xx {w['non_2xx']}; nginx recovered from {len(upstream_errors)} upstream errors "
          f"{result['nginx_upstream_errors_by_step']}; "
          f"steps at {result['steps_at_s']} s", file=sys.stderr)
    if opts.json:
        print(json.dumps(result))
    ok = in_time and result["status_5xx"] == 0 and w["socket_errors"] == 0 and w["non_2xx"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
