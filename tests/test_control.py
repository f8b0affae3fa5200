"""The control socket: gunicorn 27's wire protocol, driven by its own `gunicornc`
and by `ferricornc`; robustness against bad clients; the socket's path rules."""

import json
import os
import re
import signal
import socket
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYTHON, get, pid_alive, wait_until

BIN = Path(PYTHON).parent


def ctl_path(srv):
    return os.path.join(srv.runtime_dir, "gunicorn.ctl")


def gunicornc(path, command, *extra):
    exe = BIN / "gunicornc"
    assert exe.exists(), "gunicorn 27 (tests/requirements.txt) provides gunicornc"
    return subprocess.run(
        [str(exe), "-s", path, "-c", command, *extra], capture_output=True, text=True, timeout=30
    )


def ferricornc(path, command, *extra, stdin=None):
    args = [PYTHON, "-m", "ferricorn.ctl", "-s", path]
    if command is not None:
        args += ["-c", command]
    return subprocess.run(args + list(extra), capture_output=True, text=True, timeout=30, input=stdin)


def send_frame(sock, obj):
    payload = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_frame(sock):
    head = b""
    while len(head) < 4:
        chunk = sock.recv(4 - len(head))
        assert chunk, "closed before a reply"
        head += chunk
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        chunk = sock.recv(n - len(body))
        assert chunk
        body += chunk
    return json.loads(body)


def connect(path, timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def workers_of(path):
    out = gunicornc(path, "show workers", "-j")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_default_socket_mode_0600_and_gunicornc_shows_everything(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "basic:app", workers_booted=2)
    path = ctl_path(srv)
    srv.wait_for(r"Control socket listening at " + re.escape(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    data = workers_of(path)
    assert data["count"] == 2
    assert sorted(w["pid"] for w in data["workers"]) == sorted(
        int(p) for p in re.findall(r"Booting worker with pid: (\d+)", srv.log())
    )
    assert set(data["workers"][0]) == {"pid", "age", "booted", "aborted", "last_heartbeat"}
    out = gunicornc(path, "show stats")
    assert out.returncode == 0 and "Workers target:   2" in out.stdout, out
    out = gunicornc(path, "show listeners", "-j")
    listeners = json.loads(out.stdout)
    assert listeners["count"] == 1 and listeners["listeners"][0]["address"] == srv.url
    assert listeners["listeners"][0]["type"] == "tcp"
    config = json.loads(gunicornc(path, "show config", "-j").stdout)
    assert config["workers"] == 2 and config["control_socket"] == path
    everything = json.loads(gunicornc(path, "show all", "-j").stdout)
    assert everything["arbiter"]["pid"] == srv.master_pid and everything["web_worker_count"] == 2
    assert json.loads(gunicornc(path, "show dirty", "-j").stdout)["enabled"] is False
    out = gunicornc(path, "dirty add 1", "-j")
    assert json.loads(out.stdout) == {"success": False, "error": "Dirty arbiter not running: no dirty-app pool is configured"}
    out = gunicornc(path, "help")
    assert "worker kill <PID>" in out.stdout
    out = gunicornc(path, "frobnicate")
    assert out.returncode == 1 and "Unknown command: frobnicate" in out.stderr + out.stdout


def test_gunicornc_changes_workers_and_shuts_down(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    path = ctl_path(srv)
    srv.wait_for("Control socket listening")
    out = gunicornc(path, "worker add 2", "-j")
    assert json.loads(out.stdout) == {"added": 2, "previous": 1, "total": 3}
    srv.wait_booted(3)
    wait_until(lambda: workers_of(path)["count"] == 3, what="3 workers", log=srv.log)
    victim = workers_of(path)["workers"][-1]["pid"]
    out = gunicornc(path, "worker kill %d" % victim, "-j")
    assert json.loads(out.stdout) == {"success": True, "killed": victim}
    wait_until(lambda: not pid_alive(victim), what="killed worker gone", log=srv.log)
    srv.wait_booted(4)
    out = gunicornc(path, "worker remove 5", "-j")
    assert json.loads(out.stdout) == {"removed": 2, "previous": 3, "total": 1}
    wait_until(lambda: workers_of(path)["count"] == 1, what="1 worker", log=srv.log)
    stats = json.loads(gunicornc(path, "show stats", "-j").stdout)
    assert stats["workers_spawned"] == 4 and stats["workers_killed"] >= 3, stats
    assert get(srv.port)[0] == 200
    out = gunicornc(path, "shutdown", "-j")
    assert json.loads(out.stdout) == {"status": "shutting_down", "mode": "graceful"}
    assert srv.wait_exit() == 0
    assert not os.path.exists(path), "the socket file is removed on exit"


def test_ferricornc_one_shot_json_and_interactive(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    path = ctl_path(srv)
    srv.wait_for("Control socket listening")
    out = ferricornc(path, "show workers")
    assert out.returncode == 0, out.stderr
    assert "PID" in out.stdout and "1 worker(s)" in out.stdout
    out = ferricornc(path, "show stats", "-j")
    assert json.loads(out.stdout)["pid"] == srv.master_pid
    out = ferricornc(path, "worker kill 1")
    assert out.returncode == 0 and "Worker 1 not found" in out.stdout
    out = ferricornc(path, "show nothing")
    assert out.returncode == 1 and "Unknown show target: nothing" in out.stderr
    out = ferricornc(path, None, stdin="show listeners\nreopen\nquit\n")
    assert out.returncode == 0, out.stderr
    assert srv.url in out.stdout and "reopening" in out.stdout
    srv.wait_for("Handling signal: usr1")
    out = ferricornc(path, "reload", "-j")
    assert json.loads(out.stdout) == {"status": "reloading"}
    srv.wait_for("Hang up: Master")
    out = ferricornc(path, "shutdown quick")
    assert out.returncode == 0
    assert srv.wait_exit() == 0
    srv.wait_for("Handling signal: int")


def test_bad_clients_never_stall_the_master(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    path = ctl_path(srv)
    srv.wait_for("Control socket listening")
    silent = connect(path)
    half = connect(path)
    half.sendall(struct.pack(">I", 100) + b'{"id"')
    big = connect(path)
    big.sendall(struct.pack(">I", 1 << 30))
    junk = connect(path)
    junk.sendall(struct.pack(">I", 5) + b"hello")
    assert "too large" in recv_frame(big)["error"]
    assert "Invalid JSON" in recv_frame(junk)["error"]
    assert big.recv(1) == b"" and junk.recv(1) == b""
    # Meanwhile the master serves control requests and HTTP as usual.
    start = time.monotonic()
    assert workers_of(path)["count"] == 1
    assert time.monotonic() - start < 5
    assert get(srv.port)[0] == 200
    # A half-sent request is dropped after its deadline (10 s).
    half.settimeout(20)
    assert half.recv(1) == b""
    # Several requests on one connection, ids echoed.
    s = connect(path)
    send_frame(s, {"id": "a", "command": "show", "args": ["stats"]})
    send_frame(s, {"id": 2, "command": "worker add", "args": ["x"]})
    first, second = recv_frame(s), recv_frame(s)
    assert first["id"] == "a" and first["status"] == "ok"
    assert second == {"id": 2, "status": "error", "error": "Invalid argument: invalid literal for int() with base 10: 'x'"}
    silent.close()


def test_a_live_default_socket_is_not_taken_an_explicit_one_refuses(start_server, tmp_path):
    first = start_server("-b", "127.0.0.1:0", "basic:app")
    path = ctl_path(first)
    first.wait_for("Control socket listening")
    env = {"XDG_RUNTIME_DIR": first.runtime_dir}
    second = start_server("-b", "127.0.0.1:0", "basic:app", env=env)
    second.wait_for(r"WARNING\] control socket %s is in use by another running server; running without" % re.escape(path))
    assert "Control socket listening" not in second.log()
    # The first one still answers on it.
    assert workers_of(path)["workers"][0]["pid"] != second.master_pid
    assert json.loads(gunicornc(path, "show stats", "-j").stdout)["pid"] == first.master_pid
    third = start_server("-b", "127.0.0.1:0", "--control-socket", path, "basic:app", wait=False)
    assert third.wait_exit() == 1
    assert "control socket %s is in use by another running server (--control-socket)" % path in third.log()
    assert "Listening at" in third.log() and "Booting worker" not in third.log()
    assert json.loads(gunicornc(path, "show stats", "-j").stdout)["pid"] == first.master_pid


def test_stale_socket_replaced_relative_path_custom_mode_and_disabled(start_server, tmp_path):
    first = start_server("-b", "127.0.0.1:0", "--control-socket", "my.ctl", "basic:app")
    path = str(tmp_path / "my.ctl")
    first.wait_for("Control socket listening at " + re.escape(path))
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    assert os.path.exists(path), "a killed server leaves its socket file"
    second = start_server("-b", "127.0.0.1:0", "--control-socket", path, "--control-socket-mode", "0660", "basic:app")
    second.wait_for("Control socket listening at " + re.escape(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert workers_of(path)["count"] == 1
    off = start_server("-b", "127.0.0.1:0", "--no-control-socket", "basic:app")
    assert not os.path.exists(ctl_path(off))
    assert "Control socket" not in off.log()


def test_usr2_child_takes_over_the_socket_and_the_old_master_leaves_it(start_server, tmp_path):
    srv = start_server("-b", "127.0.0.1:0", "-p", str(tmp_path / "app.pid"), "basic:app")
    path = ctl_path(srv)
    srv.wait_for("Control socket listening")
    srv.signal(signal.SIGUSR2)
    wait_until(lambda: srv.count("Control socket listening") == 2, what="new master's socket", log=srv.log)
    new_pid = json.loads(gunicornc(path, "show stats", "-j").stdout)["pid"]
    assert new_pid != srv.master_pid
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(20) == 0
    assert json.loads(gunicornc(path, "show stats", "-j").stdout)["pid"] == new_pid
    os.kill(new_pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(new_pid), what="new master gone")
    assert not os.path.exists(path)
