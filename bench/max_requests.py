#!/usr/bin/env python3
"""Does `--max-requests` bound a leak? ferricorn (each worker class) against
gunicorn 27 with an app that keeps 100 KiB per request (bench/apps/leak.py)
and answers with its worker's pid.

Per server: `-w WORKERS --max-requests N --max-requests-jitter J`, CLIENTS
keep-alive client threads for DURATION seconds (each reconnects when a
response closes its connection). Reported: requests and failures, how many
requests each retired worker served (from the pids in the answers) against
its budget, and the peak RSS of any worker (sampled every 20 ms from /proc).

    .venv/bin/python bench/max_requests.py                     # 2 workers, 100 + 20, 8 clients, 8 s each
    .venv/bin/python bench/max_requests.py --duration 4 --only ferricorn-sync gunicorn-sync

Standard library only; gunicorn 27 must be importable by --python (the test
venv has it). Load goes to 127.0.0.1 only, bounded by --duration.
"""

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SERVERS = {
    "ferricorn-sync": ["-m", "ferricorn", "-k", "sync"],
    "ferricorn-gthread": ["-m", "ferricorn", "-k", "gthread", "--threads", "4"],
    "ferricorn-evloop": ["-m", "ferricorn", "-k", "evloop"],
    "gunicorn-sync": ["-m", "gunicorn", "--no-control-socket", "-k", "sync"],
    "gunicorn-gthread": ["-m", "gunicorn", "--no-control-socket", "-k", "gthread", "--threads", "4"],
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start(cmd, workers):
    """Start `cmd` (serving bench/apps) in its own session; return it once
    its port answers and `workers` workers run."""
    port = int(cmd[cmd.index("-b") + 1].rsplit(":", 1)[1])
    env = dict(os.environ, PYTHONPATH=str(ROOT / "bench" / "apps"))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            if len(children(proc.pid)) >= workers:
                return proc
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop(proc)
            raise SystemExit("did not start: %s" % " ".join(cmd))
        time.sleep(0.05)


def stop(proc):
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def run(name, args, python, opts):
    port = free_port()
    cmd = [python] + args + ["-b", "127.0.0.1:%d" % port, "-w", str(opts.workers),
                             "--max-requests", str(opts.max_requests),
                             "--max-requests-jitter", str(opts.jitter), "leak:app"]
    proc = start(cmd, opts.workers)
    try:
        served, failures = Counter(), []
        lock = threading.Lock()
        until = time.monotonic() + opts.duration
        peak = Counter()

        def sample():
            while time.monotonic() < until:
                for c in children(proc.pid):
                    peak[c] = max(peak[c], rss_kb(c))
                time.sleep(0.02)

        def client():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            mine = Counter()
            while time.monotonic() < until:
                try:
                    conn.request("GET", "/")
                    resp = conn.getresponse()
                    body = resp.read()
                    if resp.status != 200:
                        failures.append(resp.status)
                    else:
                        mine[int(body)] += 1
                    if resp.will_close:
                        conn.close()
                except (OSError, http.client.HTTPException) as e:
                    failures.append(type(e).__name__)
                    conn.close()
            with lock:
                served.update(mine)

        threads = [threading.Thread(target=client) for _ in range(opts.clients)]
        threads.append(threading.Thread(target=sample))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        live = set(children(proc.pid))
    finally:
        stop(proc)
    retired = sorted(n for pid, n in served.items() if pid not in live)
    budget_max = opts.max_requests + opts.jitter
    return {
        "name": name,
        "requests": sum(served.values()),
        "failures": len(failures),
        "retired": len(retired),
        "served_max": max(retired, default=0),
        "served_median": retired[len(retired) // 2] if retired else 0,
        "over_budget": sum(1 for n in retired if n > budget_max),
        "peak_rss_mb": max(peak.values(), default=0) / 1024,
        "median_peak_rss_mb": sorted(peak.values())[len(peak) // 2] / 1024 if peak else 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-requests", type=int, default=100)
    ap.add_argument("--jitter", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--only", nargs="*", choices=sorted(SERVERS))
    opts = ap.parse_args()
    print("-w %d --max-requests %d --max-requests-jitter %d, %d keep-alive clients, %.0f s each; "
          "the app keeps 100 KiB per request" % (opts.workers, opts.max_requests, opts.jitter,
                                                 opts.clients, opts.duration))
    print("| server | requests | failed | workers retired | served by a retired worker: max / median "
          "(budget <= %d) | over budget | peak worker RSS MB: max / median |" % (opts.max_requests + opts.jitter))
    print("|---|---|---|---|---|---|---|")
    for name in opts.only or SERVERS:
        r = run(name, SERVERS[name], opts.python, opts)
        print("| {name} | {requests} | {failures} | {retired} | {served_max} / {served_median} | {over_budget} | "
              "{peak_rss_mb:.0f} / {median_peak_rss_mb:.0f} |".format(**r), flush=True)


if __name__ == "__main__":
    main()
