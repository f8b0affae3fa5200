#!/usr/bin/env python3
"""Slow clients (slowloris) against each worker class and gunicorn 27, with
slowhttptest (apt-get install slowhttptest): CONNS connections that send
their request heads a header line every INTERVAL s, opened at RATE per
second, for DURATION seconds, against `-w 2` of each server
(`--header-timeout` default 10 s for ferricorn). Reported from
slowhttptest's per-second CSV: the seconds the service was unavailable
(its probe got no answer within 3 s), the most slow connections open at
once, and how many were still open at 12 s and at the end.

    .venv/bin/python bench/slowloris.py                      # 200 conns, 20 s each
    .venv/bin/python bench/slowloris.py --only ferricorn-gthread --duration 15

Load goes to 127.0.0.1 only, bounded by --duration.
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile

from max_requests import SERVERS, free_port, start, stop



def run(name, opts):
    port = free_port()
    cmd = [opts.python] + SERVERS[name] + ["-b", "127.0.0.1:%d" % port, "-w", "2", "hello:app"]
    proc = start(cmd, 2)
    out = tempfile.mkdtemp()
    try:
        subprocess.run(["slowhttptest", "-H", "-c", str(opts.conns), "-i", str(opts.interval),
                        "-r", str(opts.rate), "-l", str(opts.duration), "-p", "3", "-g",
                        "-o", os.path.join(out, "run"), "-u", "http://127.0.0.1:%d/" % port],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=opts.duration + 60)
        with open(os.path.join(out, "run.csv")) as f:
            rows = list(csv.DictReader(f))
    finally:
        stop(proc)
        shutil.rmtree(out, ignore_errors=True)

    def col(row, key):
        return next(v for k, v in row.items() if k and k.strip().lower().startswith(key))

    unavailable = [int(col(r, "seconds")) for r in rows if col(r, "service").strip().lower() in ("no", "0")]
    connected = [int(col(r, "connected")) for r in rows]
    at12 = next((int(col(r, "connected")) for r in rows if int(col(r, "seconds")) >= 12), None)
    return {
        "name": name,
        "unavailable": "%d s (from %s s)" % (len(unavailable), unavailable[0]) if unavailable else "0 s",
        "max_open": max(connected, default=0),
        "open_12s": at12,
        "open_end": connected[-1] if connected else 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--conns", type=int, default=200)
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--only", nargs="*", choices=sorted(SERVERS))
    opts = ap.parse_args()
    if not shutil.which("slowhttptest"):
        raise SystemExit("slowhttptest is not installed (apt-get install slowhttptest)")
    print("slowhttptest -H -c %d -i %d -r %d -l %d against -w 2 of each" % (opts.conns, opts.interval, opts.rate,
                                                                           opts.duration))
    print("| server | service unavailable | most slow connections open | open at 12 s | open at the end |")
    print("|---|---|---|---|---|")
    for name in opts.only or SERVERS:
        r = run(name, opts)
        print("| {name} | {unavailable} | {max_open} | {open_12s} | {open_end} |".format(**r), flush=True)


if __name__ == "__main__":
    main()
