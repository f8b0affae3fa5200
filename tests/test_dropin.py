"""Drop-in details real gunicorn configurations rely on (issue 18): the
dual-stack `[::]` bind, the worker class named in the log, process titles
set through the `setproctitle` package, refusals that point the right way.
gunicorn 27.0.1 is run as the oracle where it can be.
"""

import os
import socket
import subprocess

import pytest

from conftest import APPS, PYTHON, Server, get, gunicorn_cmd, wait_until


def _bindv6only():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip()
    except OSError:
        return None


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_dual_stack = pytest.mark.skipif(
    not _has_ipv6() or _bindv6only() != "0", reason="needs IPv6 with net.ipv6.bindv6only=0"
)


@needs_dual_stack
def test_ipv6_any_bind_is_dual_stack(start_server):
    srv = start_server("-b", "[::]:0", "basic:app")
    assert srv.url.startswith("http://[::]:")
    status, _, body = get(srv.port)  # over IPv4, 127.0.0.1
    assert (status, body) == (200, b"Hello, world!")
    with socket.create_connection(("::1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")


@needs_dual_stack
def test_ipv6_and_ipv4_any_on_one_port_refused_like_gunicorn(tmp_path):
    """`[::]:P` and `0.0.0.0:P` collide on a dual-stack system: gunicorn 27
    retries, then gives up with `Can't connect to ('0.0.0.0', P)`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outs = {}
    for name, cmd in (("gunicorn", gunicorn_cmd()), ("ferricorn", None)):
        srv = Server(["-b", "[::]:%d" % port, "-b", "0.0.0.0:%d" % port, "basic:app"], cwd=tmp_path, cmd=cmd)
        try:
            code = srv.wait_exit(timeout=30)
        finally:
            srv.stop()
        outs[name] = (code, srv.log())
    for name, (code, log) in outs.items():
        assert "Connection in use: ('0.0.0.0', %d)" % port in log, (name, log)
        assert "Can't connect to ('0.0.0.0', %d)" % port in log, (name, log)
        assert code != 0 or name == "gunicorn", (name, code, log)


def test_threads_without_worker_class_logs_gthread(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--threads", "4", "basic:app")
    srv.wait_for(r"\[INFO\] Using worker: gthread$")
