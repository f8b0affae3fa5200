"""TLS speed: keep-alive requests over TLS against plaintext on the same
worker, and full handshakes per second per worker against gunicorn 27 and
granian (docs/benchmarks.md, "TLS").

    python bench/tls.py [--seconds 5] [--connections 16]

Needs wrk on PATH, trustme in the project's .venv (make .venv/.test-deps) and,
for the peers, bench/.venv (bash bench/setup.sh: gunicorn 27.0.1, granian);
a peer that is missing is reported and left out. Every server runs one worker
on 127.0.0.1 serving examples/hello.py. Handshakes: wrk with `Connection:
close`, so each request opens a new connection with a full handshake (wrk does
not resume sessions). Each measurement is taken `--rounds` times, the
servers in turn, and the best round is kept; beside requests per second, the
server's own CPU time per request (all its processes, from /proc) is shown:
on a shared or small machine that figure moves less than the rate does.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from max_requests import free_port, stop  # the bench scripts' shared server start and stop

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
PEERS = ROOT / "bench" / ".venv" / "bin"


def wait_ready(port, tls, ca, timeout=30):
    deadline = time.monotonic() + timeout
    ctx = ssl.create_default_context(cafile=ca) if tls else None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                s = ctx.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if b"Hello, world!" in s.recv(4096) + s.recv(4096):
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server on port %d did not answer" % port)


def wrk(url, seconds, conns, close):
    args = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, url]
    if close:
        args[1:1] = ["-H", "Connection: close"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(m.group(1)) if m else 0.0, (errors.group(1) if errors else "") + (
        " non-2xx %s" % non2xx.group(1) if non2xx else "")


def session_cpu(sid):
    """CPU seconds used so far by the processes of session `sid`."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6: session
            total += int(fields[11]) + int(fields[12])
    return total / tick


def measure(p, url, seconds, conns, close):
    """(req/s, server CPU microseconds per request, errors)."""
    before = session_cpu(p.pid)
    rate, errors = wrk(url, seconds, conns, close)
    used = session_cpu(p.pid) - before
    return rate, (used / (rate * seconds) * 1e6 if rate else 0.0), errors


def run_server(argv, port, tls, ca, logdir, name):
    log = open(Path(logdir) / (name + ".log"), "w")
    p = subprocess.Popen(argv, cwd=ROOT / "examples", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(port, tls, ca)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    opts = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (bash bench/setup.sh)")
    tmp = tempfile.mkdtemp(prefix="fc-tls-bench-")
    subprocess.run([str(VENV / "python"), "-c", """
import trustme, sys
ca = trustme.CA()
c = ca.issue_cert('127.0.0.1', 'localhost')
c.private_key_and_cert_chain_pem.write_to_path(sys.argv[1] + '/server.pem')
c.cert_chain_pems[0].write_to_path(sys.argv[1] + '/cert.pem')
c.private_key_pem.write_to_path(sys.argv[1] + '/key.pem')
ca.cert_pem.write_to_path(sys.argv[1] + '/ca.pem')
""", tmp], check=True)
    pem, cert, key, ca = (os.path.join(tmp, n) for n in ("server.pem", "cert.pem", "key.pem", "ca.pem"))
    ferricorn = [str(VENV / "python"), "-m", "ferricorn", "-w", "1", "--log-level", "warning"]
    tls_flags = ["--certfile", pem]

    def ferri(kind, tls):
        return lambda port: ferricorn + ["-k", kind, "-b", "127.0.0.1:%d" % port] + (tls_flags if tls else []) + \
            ["hello:app"]

    servers = {
        "ferricorn evloop": ferri("evloop", True),
        "ferricorn sync": ferri("sync", True),
    }
    if (PEERS / "gunicorn").exists():
        servers["gunicorn 27 sync"] = lambda port: [str(PEERS / "gunicorn"), "-w", "1", "--log-level", "warning",
                                                   "--no-control-socket", "-b", "127.0.0.1:%d" % port,
                                                   "--certfile", pem, "hello:app"]
    else:
        print("gunicorn: bench/.venv missing (bash bench/setup.sh): left out")
    if (PEERS / "granian").exists():
        servers["granian"] = lambda port: [str(PEERS / "granian"), "--interface", "wsgi", "--workers", "1",
                                           "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                           "--ssl-certificate", cert, "--ssl-keyfile", key, "hello:app"]
    else:
        print("granian: bench/.venv missing (bash bench/setup.sh): left out")

    print("cpus: %d; %ds per run, wrk -t1 -c%d, one worker each, load average %.1f" % (
        os.cpu_count(), opts.seconds, opts.connections, os.getloadavg()[0]))
    # Keep-alive: TLS against plaintext, same worker class; then full
    # handshakes. All servers run at once, measured in turns.
    running = {}
    try:
        for kind in ("evloop", "gthread", "sync"):
            for tls in (False, True):
                port = free_port()
                name = "%s %s" % (kind, "TLS" if tls else "plaintext")
                running[("ka", name)] = (run_server(ferri(kind, tls)(port), port, tls, ca, tmp, name.replace(" ", "-")),
                                         "%s://127.0.0.1:%d/" % ("https" if tls else "http", port), False)
        for name, argv in servers.items():
            port = free_port()
            running[("hs", name)] = (run_server(argv(port), port, True, ca, tmp, name.replace(" ", "-")),
                                     "https://127.0.0.1:%d/" % port, True)
        best = {}
        for _ in range(opts.rounds):
            for key, (p, url, close) in running.items():
                wrk(url, 1, opts.connections, close)  # warm-up
                got = measure(p, url, opts.seconds, opts.connections, close)
                if key not in best or got[0] > best[key][0]:
                    best[key] = got
    finally:
        for p, _, _ in running.values():
            stop(p)
    print("\nkeep-alive hello (best of %d rounds): req/s, server CPU us/request" % opts.rounds)
    for kind in ("evloop", "gthread", "sync"):
        plain, tls = best[("ka", kind + " plaintext")], best[("ka", kind + " TLS")]
        if kind == "sync":
            print("  (sync closes every connection: its TLS figure is a full handshake per request)")
        print("  %-8s plaintext %7.0f/s %6.1f us   TLS %7.0f/s %6.1f us   TLS/plaintext %.2f (CPU %.2fx) %s%s" % (
            kind, plain[0], plain[1], tls[0], tls[1], tls[0] / plain[0] if plain[0] else 0,
            tls[1] / plain[1] if plain[1] else 0, plain[2], tls[2]))
    print("\nfull handshakes (one per request, Connection: close): per second, server CPU us/handshake")
    for name in servers:
        rate, cpu, errors = best[("hs", name)]
        print("  %-18s %7.0f/s %7.0f us %s" % (name, rate, cpu, errors))
    for mine in ("ferricorn sync", "ferricorn evloop"):
        for peer in ("gunicorn 27 sync", "granian"):
            a, b = best.get(("hs", mine)), best.get(("hs", peer))
            if a and b and b[0] and a[1]:
                print("  %s / %s: %.1fx per second, %.1fx less CPU per handshake" % (
                    mine, peer, a[0] / b[0], b[1] / a[1]))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
