#!/usr/bin/env python3
"""How `--reuse-port` spreads connections over workers, and what it does to
tail latency: ferricorn (one SO_REUSEPORT listener shared by the workers)
against gunicorn 27 (one SO_REUSEPORT listener per worker), each with and
without the flag.

Every client thread opens a new connection per request (the case the
kernel's SO_REUSEPORT hashing is about); one request in ten is `/slow`
(50 ms in the app), the rest are immediate. Reported per server: requests,
each worker's share, and latency percentiles of the immediate requests:
with one queue per worker a fast request hashed to a worker busy with a
slow one waits for it.

    .venv/bin/python bench/reuse_port.py                  # 4 workers, 16 clients, 10 s each
    .venv/bin/python bench/reuse_port.py --workers 8 --clients 32 --duration 20

Standard library only; gunicorn 27 must be importable by --python (the test
venv has it). Load goes to 127.0.0.1 only, bounded by --duration.
"""

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def start(cmd, workers, port):
    """Start a server on `port`; return once `workers` workers booted and it answers."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    booted = 0
    while booted < workers and time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            break
        # (gunicorn 27 under --reuse-port logs an empty "Listening at:": its
        # workers bind, not the master.)
        booted += "Booting worker" in line
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    while time.monotonic() < deadline:
        try:
            if one(port, b"/")[1].isdigit():
                return proc
        except OSError:
            time.sleep(0.05)
    stop(proc)
    raise SystemExit("server did not start: %s" % " ".join(cmd))


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def one(port, path):
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return time.perf_counter() - start, data.rsplit(b"\r\n\r\n", 1)[-1]


def load(port, clients, duration):
    results = []
    lock = threading.Lock()
    stop_at = time.monotonic() + duration

    def client(i):
        n = i
        mine = []
        while time.monotonic() < stop_at:
            slow = n % 10 == 0
            n += 1
            try:
                took, pid = one(port, b"/slow" if slow else b"/")
            except OSError:
                mine.append((slow, None, None))
                continue
            mine.append((slow, took, pid))
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"))
    args = ap.parse_args()
    # A fixed port: gunicorn's workers each bind the address again under
    # --reuse-port, so port 0 would give each worker a port of its own.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = ["-b", "127.0.0.1:%d" % port, "-w", str(args.workers), "--pythonpath", str(ROOT / "bench" / "apps")]
    servers = [
        ("ferricorn", [args.python, "-m", "ferricorn", "--no-control-socket"] + common),
        ("ferricorn --reuse-port", [args.python, "-m", "ferricorn", "--no-control-socket", "--reuse-port"] + common),
        ("gunicorn", [args.python, "-m", "gunicorn", "--no-control-socket"] + common),
        ("gunicorn --reuse-port", [args.python, "-m", "gunicorn", "--no-control-socket", "--reuse-port"] + common),
    ]
    print("%d workers (sync), %d clients, a new connection per request, 1 in 10 requests waits 50 ms; %.0f s each"
          % (args.workers, args.clients, args.duration))
    print()
    print("| server | requests | errors | share per worker (min-max) | fast p50 ms | fast p99 ms | fast p99.9 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, cmd in servers:
        proc = start(cmd + ["spread:app"], args.workers, port)
        try:
            load(port, args.clients, 1.0)  # warm-up
            res = load(port, args.clients, args.duration)
        finally:
            stop(proc)
        ok = [r for r in res if r[1] is not None]
        errors = len(res) - len(ok)
        counts = {}
        for _, _, pid in ok:
            counts[pid] = counts.get(pid, 0) + 1
        shares = sorted(100.0 * c / len(ok) for c in counts.values()) if ok else [0]
        fast = [t for slow, t, _ in ok if not slow]
        print("| %s | %d | %d | %.1f%%-%.1f%% over %d | %.1f | %.1f | %.1f |" % (
            name, len(ok), errors, shares[0], shares[-1], len(counts), pct(fast, 0.5), pct(fast, 0.99), pct(fast, 0.999)))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
