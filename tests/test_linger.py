"""Lingering close (docs/http.md, "Closing a connection"): a connection
closed while request bytes remain unread (a body the app ignored) gets a
FIN after the response, then what the client still sends is discarded until
it closes, so the kernel's reset for unread data cannot destroy the end of
the response. Bounded: a client that keeps sending is cut off after
`conn::LINGER_FOR` (2 s), one that goes quiet after `LINGER_IDLE` (0.5 s).
A request with nothing unread closes as before, with no extra syscall.
App: tests/apps/bodies.py (`/list?N`: N bytes, the body never read)."""

import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import classes, serve, wait_until, worker_args

RESPONSE = 200 * 1024
LINGER_FOR = 2.0


@pytest.fixture(scope="module", params=classes())
def srv(request):
    server = serve(request, *worker_args(request.param), "-b", "127.0.0.1:0", "bodies:app")
    server.worker = request.param
    return server


def post_head(size, extra=""):
    return (
        "POST /list?%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n" % (RESPONSE, size, extra)
    ).encode()


def read_all(sock):
    """Read until EOF; raises ConnectionResetError if the server reset."""
    chunks = []
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


@pytest.mark.parametrize("size,extra", [(1024 * 1024, ""), (100 * 1024, "Connection: close\r\n")])
def test_ignored_body_response_arrives_whole(srv, size, extra):
    """The app answers 200 KB without reading a 100 KB-1 MB body; the client
    sends all of it, then reads: every time it gets the whole response and
    a clean EOF (without lingering, the close with unread data resets the
    connection and cuts the response in most runs)."""
    body = b"x" * size
    for i in range(50):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(post_head(size, extra) + body)
            raw = read_all(s)
        head, _, got = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), (i, head[:100])
        assert len(got) == RESPONSE, (i, len(got))


def test_ignored_chunked_body_response_arrives_whole(srv):
    """The same with a chunked body (its end is not known without decoding it)."""
    chunk = b"%x\r\n%s\r\n" % (16384, b"c" * 16384)
    body = chunk * 20 + b"0\r\n\r\n"
    head = b"POST /list?%d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" % RESPONSE
    for i in range(20):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
            s.sendall(head + body)
            raw = read_all(s)
        assert len(raw.partition(b"\r\n\r\n")[2]) == RESPONSE, i


def test_client_that_keeps_sending_is_cut_off(srv):
    """A client that never stops sending (a huge announced body) gets the
    response and the FIN, then is cut off once the linger's bound is over:
    the worker is not held beyond it."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(post_head(1 << 40))
    stop = threading.Event()
    cut = {}

    def sender():
        chunk = b"y" * 4096
        try:
            while not stop.is_set():
                s.sendall(chunk)
                time.sleep(0.01)  # paced: data keeps coming, well within the idle bound
        except OSError as e:
            cut["at"] = time.monotonic()
            cut["err"] = e

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += s.recv(1 << 16)
        got_head = time.monotonic()
        try:
            raw += read_all(s)
            eof = True
        except ConnectionResetError:
            eof = False
        _, _, got = raw.partition(b"\r\n\r\n")
        assert len(got) == RESPONSE and eof, (len(got), eof)
        t.join(LINGER_FOR + 5)
        assert not t.is_alive(), "the server still reads after %.1f s" % (time.monotonic() - got_head)
        held = cut["at"] - got_head
        # The bound is 2 s; a little less is the ordinary start-up of the linger.
        assert 1.5 < held < LINGER_FOR + 1.5, held
    finally:
        stop.set()
        s.close()


def test_quiet_client_is_let_go_after_the_idle_bound(srv):
    """A client that sent part of an ignored body and then nothing, holding
    its side open, is let go LINGER_IDLE (0.5 s) after it went quiet: a sync
    worker serves the next connection then, not before; gthread and evloop
    serve it meanwhile (evloop's linger does not block its loop)."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(post_head(10 * 1024 * 1024) + b"z" * 300_000)
        raw = read_all(s)  # the response, then the FIN once it lingers
        t0 = time.monotonic()
        assert len(raw.partition(b"\r\n\r\n")[2]) == RESPONSE
        # Still open on our side, sending nothing.
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as other:
            other.sendall(b"GET /list?10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(other).startswith(b"HTTP/1.1 200")
        waited = time.monotonic() - t0
        if srv.worker == "sync":
            assert 0.3 < waited < 1.5, waited
        else:
            assert waited < 0.3, waited


def connections(text):
    """The syscalls (names) of each connection in an strace log, from its
    accept4 to the close of its fd; None for one not closed yet."""
    conns = []
    for m in re.finditer(r"accept4\(.*\)\s+= (\d+)", text):
        end = re.compile(r"close\(%s\)\s+= 0" % m.group(1)).search(text, m.end())
        span = text[m.end() : end.start()] if end else None
        conns.append(span and re.findall(r"^(?:\d+\s+)?(\w+)\(", span, re.M))
    return conns


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_clean_close_makes_no_extra_syscall(start_server, tmp_path_factory):
    """The sync worker's `Connection: close` path stays `accept4, read,
    sendto, close`: no shutdown, poll or extra read unless request bytes
    were left unread (then it lingers: shutdown, then discarding reads)."""
    server = start_server("-k", "sync", "-b", "127.0.0.1:0", "bodies:app")
    pid = int(re.findall(r"Booting worker with pid: (\d+)", server.log())[-1])
    out = tmp_path_factory.mktemp("strace") / "trace"
    tracer = subprocess.Popen(
        ["strace", "-f", "-o", str(out), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        line = tracer.stderr.readline()  # "strace: Process N attached"
        assert b"attached" in line, line

        def one(data):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
                s.sendall(data)
                return read_all(s)

        for _ in range(3):
            assert one(b"GET /list?10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").startswith(b"HTTP/1.1 200")
        # A body read to its end (/echo reads it): no linger either.
        assert one(b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello").endswith(b"hello")
        # A small ignored body, read whole with the head: nothing left unread.
        assert one(post_head(5, "Connection: close\r\n") + b"hello").startswith(b"HTTP/1.1 200")
        # An ignored body larger than the first read: lingers.
        assert one(post_head(100_000, "Connection: close\r\n") + b"h" * 100_000).startswith(b"HTTP/1.1 200")

        def traced():
            conns = connections(out.read_text())
            return len(conns) == 6 and all(c is not None for c in conns)

        wait_until(traced, timeout=10, what="six traced connections", log=lambda: out.read_text()[-3000:])
        conns = connections(out.read_text())
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(10)
    for calls in conns[:5]:
        assert not {"shutdown", "poll", "recvfrom"} & set(calls), calls
    assert "shutdown" in conns[5] and "recvfrom" in conns[5], conns[5]
