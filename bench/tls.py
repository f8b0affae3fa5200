"""TLS speed: keep-alive requests over TLS against plaintext on the same
worker, and full handshakes per second per worker against gunicorn 27 and
granian (docs/benchmarks.md, "TLS").

    python bench/tls.py [--seconds 5] [--connections 16]

Needs wrk on PATH, trustme in the project's .venv (make .venv/.test-deps) and,
for the peers, bench/.venv (bash bench/setup.sh: gunicorn 27.0.1, granian);
a peer that is missing is reported and left out. Every server runs one worker
on 127.0.0.1 serving examples/hello.py. Handshakes: wrk with `Connection:
close`, so each request opens a new connection with a full handshake (wrk does
not resume sessions). Ratios are taken within one run; on a shared or small
machine, repeat and compare ratios, not absolute numbers.
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

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "bin"
PEERS = ROOT / "bench" / ".venv" / "bin"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def run_server(argv, port, tls, ca, logdir, name):
    log = open(Path(logdir) / (name + ".log"), "w")
    p = subprocess.Popen(argv, cwd=ROOT / "examples", stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(port, tls, ca)
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        raise
    return p


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(5)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=16)
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

    print("cpus: %d; %ds per run, wrk -t1 -c%d, one worker each" % (os.cpu_count(), opts.seconds, opts.connections))
    # Keep-alive: TLS against plaintext, same worker class, same run.
    print("\nkeep-alive hello (req/s)")
    for kind in ("evloop", "gthread", "sync"):
        row = []
        for tls in (False, True):
            port = free_port()
            p = run_server(ferri(kind, tls)(port), port, tls, ca, tmp, "%s-%s" % (kind, tls))
            try:
                url = "%s://127.0.0.1:%d/" % ("https" if tls else "http", port)
                wrk(url, 1, opts.connections, False)  # warm-up
                row.append(wrk(url, opts.seconds, opts.connections, False))
            finally:
                stop(p)
        (plain, e1), (tls, e2) = row
        print("  %-8s plaintext %9.0f  TLS %9.0f  TLS/plaintext %.2f %s%s" % (
            kind, plain, tls, tls / plain if plain else 0, e1, e2))
    # Full handshakes: a new connection per request.
    print("\nfull handshakes per second (one per request, Connection: close)")
    results = {}
    for name, argv in servers.items():
        port = free_port()
        p = run_server(argv(port), port, True, ca, tmp, name.replace(" ", "-"))
        try:
            url = "https://127.0.0.1:%d/" % port
            wrk(url, 1, opts.connections, True)
            results[name] = wrk(url, opts.seconds, opts.connections, True)
        finally:
            stop(p)
        print("  %-18s %8.0f/s %s" % (name, results[name][0], results[name][1]))
    base = results.get("ferricorn sync", (0,))[0]
    for name in ("gunicorn 27 sync", "granian"):
        if name in results and results[name][0]:
            print("  ferricorn sync / %s: %.1fx" % (name, base / results[name][0]))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
