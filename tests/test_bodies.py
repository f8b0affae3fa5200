"""Body sizes across the request path's fast paths, under both worker
classes: `wsgi.input.read()` straight from the socket into `bytes` (and the
growing path for bodies above 4 MiB), pipelining after such a read,
`Expect: 100-continue`, and response chunks of 16 KiB and more that are
written with writev instead of being copied (chunked, Content-Length,
truncated, HEAD, legacy `write()`). App: tests/apps/bodies.py."""

import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest

from conftest import classes, serve, wait_file, worker_args
from wsgi_helpers import Client, chunked, one_request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "apps"))
from bodies import pattern  # noqa: E402


@pytest.fixture(scope="module", params=classes("sync", "gthread"))
def srv(request, tmp_path_factory):
    markers = str(tmp_path_factory.mktemp("markers"))
    server = serve(
        request,
        *worker_args(request.param),
        "-b",
        "127.0.0.1:0",
        "bodies:app",
        env={"FERRICORN_TEST_MARKERS": markers},
    )
    server.worker = request.param
    server.markers = markers
    return server


def digest(data):
    return {"len": len(data), "sha": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("size", [0, 1, 9000, 200_000, 5 * 1024 * 1024 + 3])
def test_read_whole_body(srv, size):
    data = pattern(size)
    status, _, body = one_request(srv.port, "/read-whole", "POST", data)
    assert status == 200
    assert json.loads(body) == dict(digest(data), again=0)


@pytest.mark.parametrize("n", [1000, 65536, 100_000])
def test_read_by_size(srv, n):
    data = pattern(300_001)
    status, _, body = one_request(srv.port, "/read-by?%d" % n, "POST", data)
    assert status == 200 and json.loads(body) == digest(data)


def test_chunked_request_body_still_decoded(srv):
    data = pattern(200_000)
    status, _, body = one_request(
        srv.port, "/read-whole", "POST", chunked(data, 70_000), "Transfer-Encoding: chunked\r\n"
    )
    assert status == 200 and json.loads(body) == dict(digest(data), again=0)


def test_pipelined_request_after_a_large_body(srv):
    data = pattern(100_000)
    c = Client(srv.port)
    try:
        first = b"POST /read-whole HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data) + data
        second = b"GET /list?10 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        c.send(first + second)
        status, headers, body = c.read_response()
        assert status == 200 and json.loads(body) == dict(digest(data), again=0)
        if srv.worker == "gthread":
            assert headers["connection"] == "keep-alive"
            assert c.read_response()[2] == pattern(10)
    finally:
        c.close()


def test_expect_continue_then_direct_read(srv):
    data = pattern(150_000)
    c = Client(srv.port)
    try:
        c.send(
            b"POST /read-whole HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(data)
        )
        while b"\r\n\r\n" not in c.buf:
            c._fill()
        head, _, c.buf = c.buf.partition(b"\r\n\r\n")
        assert head == b"HTTP/1.1 100 Continue" and c.buf == b""
        c.send(data)
        status, _, body = c.read_response("POST")
    finally:
        c.close()
    assert status == 200
    assert json.loads(body) == dict(digest(data), again=0)


def test_client_gone_during_whole_read_is_oserror(srv):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /read-whole-guarded HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n" + b"x" * 70_000)
    s.close()
    # The app creates the file, then writes its line: wait for the line.
    lines = wait_file(Path(srv.markers) / "guarded", r"\n", timeout=10).splitlines()
    assert lines == ["OSError OSError"], lines
    # The worker is fine afterwards.
    assert one_request(srv.port, "/list?3")[2] == pattern(3)


@pytest.mark.parametrize("size", [100, 16 * 1024, 1_000_000])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_echo(srv, size, framing):
    data = pattern(size)
    path = "/echo" if framing == "length" else "/echo?chunked"
    status, headers, body = one_request(srv.port, path, "POST", data)
    assert status == 200 and body == data
    if framing == "chunked":
        assert headers["transfer-encoding"] == "chunked"


@pytest.mark.parametrize("length", [False, True])
def test_generator_of_large_chunks(srv, length):
    qs = "5,40000" + (",length" if length else "")
    status, headers, body = one_request(srv.port, "/gen?" + qs)
    assert status == 200 and body == pattern(200_000)
    assert ("content-length" in headers) is length


def test_declared_length_cuts_a_large_chunk(srv):
    c = Client(srv.port)
    try:
        status, headers, body = c.request("/list?40000,1000")
        assert status == 200 and headers["content-length"] == "1000"
        assert body == pattern(1000)
        if headers["connection"] == "keep-alive":
            # Nothing beyond the 1000 bytes reached the wire.
            assert c.request("/list?5")[2] == pattern(5)
    finally:
        c.close()


def test_head_sends_no_large_body(srv):
    c = Client(srv.port)
    try:
        status, headers, body = c.request("/list?100000", "HEAD")
        assert status == 200 and headers["content-length"] == "100000" and body == b""
        if headers["connection"] == "keep-alive":
            assert c.request("/list?7")[2] == pattern(7)
    finally:
        c.close()


def test_legacy_write_of_a_large_chunk(srv):
    status, _, body = one_request(srv.port, "/write?100000")
    assert status == 200 and body == b"<" + pattern(100_000) + b">"
