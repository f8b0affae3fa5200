"""StatsD metrics with gunicorn's names and types, received on a local UDP socket."""

import re
import signal
import socket
import time

from conftest import get, raw_request


def _collect(rx, until, timeout=10):
    got = []
    deadline = time.monotonic() + timeout
    while not until(got):
        rx.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(rx.recv(4096).decode())
        except socket.timeout:
            raise AssertionError("metrics so far: %r" % got)
    return got


def test_request_and_log_metrics(start_server):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    srv = start_server("-b", "127.0.0.1:0", "--statsd-host", "127.0.0.1:%d" % port,
                       "--statsd-prefix", "web", "--dogstatsd-tags", "env:test,team:a", "basic:app")
    assert get(srv.port, "/")[0] == 200
    assert get(srv.port, "/missing")[0] == 404
    raw_request(srv.port, b"GARBAGE\r\n\r\n")  # a WARNING record
    got = _collect(rx, lambda g: sum("gunicorn.requests:" in m for m in g) >= 2
                   and any("log.warning" in m for m in g))
    rx.close()
    tags = "|#env:test,team:a"
    assert got.count("web.gunicorn.requests:1|c|@1.0" + tags) == 2, got
    assert "web.gunicorn.request.status.200:1|c|@1.0" + tags in got, got
    assert "web.gunicorn.request.status.404:1|c|@1.0" + tags in got, got
    durations = [m for m in got if m.startswith("web.gunicorn.request.duration:")]
    assert len(durations) == 2, got
    for m in durations:
        assert re.fullmatch(r"web\.gunicorn\.request\.duration:\d+\.\d+\|ms" + re.escape(tags), m), m
    assert "web.gunicorn.log.warning:1|c|@1.0" + tags in got, got



def test_workers_gauge_and_backlog_histogram(start_server):
    """The master's gauge when the worker count changes, and with
    --enable-backlog-metric the connections waiting in the accept queue."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    port = rx.getsockname()[1]
    srv = start_server("-b", "127.0.0.1:0", "--statsd-host", "127.0.0.1:%d" % port, "--enable-backlog-metric",
                       "--log-level", "debug", "basic:app")
    # Two backlog reports (a second apart): the gauge is not repeated meanwhile.
    got = _collect(rx, lambda g: g.count("gunicorn.backlog:0|h") >= 2)
    srv.wait_for(r"\[DEBUG\] socket backlog: 0$")
    srv.signal(signal.SIGTTIN)
    _collect(rx, lambda g: "gunicorn.workers:2|g" in g)
    srv.wait_for(r"\[DEBUG\] 2 workers$")
    srv.signal(signal.SIGTTOU)
    _collect(rx, lambda g: "gunicorn.workers:1|g" in g)
    # Hold the one sync worker in a request: three more clients wait in the queue.
    srv.wait_for(r"Worker exiting")
    busy = socket.create_connection(("127.0.0.1", srv.port))
    busy.sendall(b"GET /sleep?3 HTTP/1.1\r\nHost: x\r\n\r\n")
    srv.wait_for(r"\[DEBUG\] GET /sleep$")
    waiting = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(3)]
    _collect(rx, lambda g: "gunicorn.backlog:3|h" in g)
    for s in [busy] + waiting:
        s.close()
    rx.close()
    assert got.count("gunicorn.workers:1|g") == 1, got
