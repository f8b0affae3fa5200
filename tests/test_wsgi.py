"""PEP 3333 conformance end to end, under every worker class, for the plain
app and the same app wrapped in `wsgiref.validate.validator` (WSGIWarning as
an error). App: tests/apps/shapes.py."""

import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import classes, gunicorn_cmd, parse_response, raw_request, serve, worker_args, worker_classes
from wsgi_helpers import Client, chunked, one_request

# What gunicorn 27 puts in the environ of a POST with a body.
GUNICORN_KEYS = {
    "gunicorn.socket", "wsgi.early_hints",
    "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_HOST", "PATH_INFO", "QUERY_STRING", "RAW_URI",
    "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_METHOD", "SCRIPT_NAME", "SERVER_NAME", "SERVER_PORT",
    "SERVER_PROTOCOL", "SERVER_SOFTWARE", "wsgi.errors", "wsgi.file_wrapper", "wsgi.input",
    "wsgi.input_terminated", "wsgi.multiprocess", "wsgi.multithread", "wsgi.run_once",
    "wsgi.url_scheme", "wsgi.version",
}  # fmt: skip

BODY = b"line one\nline two\nthird line, longer than the others\nlast without newline"


class Srv:
    def __init__(self, server, worker, markers):
        self.server = server
        self.worker = worker
        self.markers = markers

    @property
    def port(self):
        return self.server.port

    def req(self, path, method="GET", body=b"", headers=""):
        return one_request(self.port, path, method, body, headers)

    def marker(self, name):
        p = os.path.join(self.markers, name)
        if not os.path.exists(p):
            return []
        with open(p) as f:
            return f.read().splitlines()

    def wait_marker(self, name, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.marker(name)
            if pred(lines):
                return lines
            time.sleep(0.02)  # poll the marker file until the deadline
        raise AssertionError("marker %s: %r\n%s" % (name, self.marker(name), self.server.log()))


@pytest.fixture(
    scope="module",
    params=[(w, c) for c in ("app", "validated") for w in classes()],
    ids=lambda p: "-".join(p),
)
def srv(request, tmp_path_factory):
    worker, callable_name = request.param
    markers = str(tmp_path_factory.mktemp("markers"))
    server = serve(
        request,
        *worker_args(worker),
        "-b",
        "127.0.0.1:0",
        "shapes:" + callable_name,
        env={"FERRICORN_TEST_MARKERS": markers},
    )
    yield Srv(server, worker, markers)
    log = server.log()
    assert "garbage collected without being closed" not in log
    assert "WSGIWarning" not in log


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_read_n(srv, framing):
    if framing == "length":
        status, _, body = srv.req("/read-n?7", "POST", BODY)
    else:
        status, _, body = srv.req("/read-n?7", "POST", chunked(BODY), "Transfer-Encoding: chunked\r\n")
    assert status == 200
    assert json.loads(body) == {"len": len(BODY), "data": BODY.decode()}


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_read_more_than_body_then_eof(srv, framing):
    if framing == "length":
        status, _, body = srv.req("/read-all", "POST", BODY)
    else:
        status, _, body = srv.req("/read-all", "POST", chunked(BODY, 3), "Transfer-Encoding: chunked\r\n")
    assert status == 200
    assert json.loads(body) == {"data": BODY.decode(), "again": ""}


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_readline_with_limit(srv, framing):
    if framing == "length":
        _, _, body = srv.req("/readline-n?6", "POST", BODY)
    else:
        _, _, body = srv.req("/readline-n?6", "POST", chunked(BODY, 4), "Transfer-Encoding: chunked\r\n")
    lines = json.loads(body)
    assert "".join(lines) == BODY.decode()
    assert all(len(x) <= 6 for x in lines)
    assert lines[:3] == ["line o", "ne\n", "line t"]


def test_readlines_hint_and_iteration(srv):
    _, _, body = srv.req("/readlines-hint?3", "POST", BODY)
    got = json.loads(body)
    assert got["first"] == ["line one\n"]
    assert got["first"] + got["rest"] == BODY.decode().splitlines(keepends=True)
    _, _, body = srv.req("/iterate", "POST", chunked(BODY, 7), "Transfer-Encoding: chunked\r\n")
    assert json.loads(body) == BODY.decode().splitlines(keepends=True)


def test_large_body_streams(srv):
    data = os.urandom(3 * 1024 * 1024 + 17)
    status, _, body = srv.req("/upload-size", "POST", data)
    assert status == 200 and json.loads(body) == {"total": len(data)}


def test_never_reads_past_the_body(srv):
    c = Client(srv.port)
    try:
        first = b"POST /read-all HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
        second = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        c.send(first + second)
        status, headers, body = c.read_response()
        assert status == 200 and json.loads(body)["data"] == BODY.decode()
        if srv.worker in ("gthread", "evloop"):
            assert headers["connection"] == "keep-alive"
            assert c.read_response()[2] == b"ok"
        else:
            assert headers["connection"] == "close"
    finally:
        c.close()


def test_client_disconnect_mid_body_raises_oserror(srv):
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"POST /input-error HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
    s.close()
    lines = srv.wait_marker("input-error", lambda lines: len(lines) >= 1)
    assert lines[0].startswith("OSError"), lines
    # The worker is fine afterwards.
    assert srv.req("/")[2] == b"ok"


def test_environ_keys_match_gunicorn(srv):
    status, _, body = srv.req("/environ", "POST", b"abc", "Content-Type: text/plain\r\n")
    got = json.loads(body)
    assert set(got["keys"]) == GUNICORN_KEYS | {"HTTP_CONNECTION"}
    assert got["terminated"] is True
    assert got["multithread"] is (srv.worker == "gthread")
    assert got["scheme"] == "http"


def test_environ_not_shared_between_requests(srv):
    # The environ is a copy of a per-worker template holding common values:
    # an app changing its environ must leave the next request's intact, and
    # values cached across requests (header values, addresses) must follow
    # what each request sends.
    client = None

    def values(path, headers=""):
        nonlocal client
        if client is None or srv.worker == "sync":
            if client:
                client.close()
            client = Client(srv.port)
        req = "GET %s HTTP/1.1\r\nHost: h\r\nX-Rep: a\r\n%sX-Rep: b\r\n\r\n" % (path, headers)
        client.send(req.encode())
        status, _, body = client.read_response()
        assert status == 200, body
        got = json.loads(body)
        got.pop("REMOTE_PORT")  # a new connection per request under sync
        return got

    try:
        first = values("/environ-values", "X-Val: one\r\n")
        assert first["types"] == ["str"]
        assert first["HTTP_X_REP"] == "a,b" and first["HTTP_X_VAL"] == "one"
        assert (first["REQUEST_METHOD"], first["QUERY_STRING"]) == ("GET", "")
        assert first["RAW_URI"] == first["PATH_INFO"] == "/environ-values"
        mutated = values("/environ-values?mutate", "X-Val: two\r\nX-Other: 1\r\n")
        assert mutated["QUERY_STRING"] == "mutate" and mutated["HTTP_X_VAL"] == "two"
        assert mutated["RAW_URI"] == "/environ-values?mutate"
        assert mutated["HTTP_X_OTHER"] == "1"
        again = values("/environ-values", "X-Val: one\r\n")
        assert again == first
        assert "EXTRA_KEY" not in again and "HTTP_X_OTHER" not in again
        assert "mutated" not in again.values()
    finally:
        client.close()


def test_environ_headers_in_changing_order(srv):
    # The environ remembers which header name came at which position in the
    # previous request (to skip hashing it): names that move, swap, change
    # case or vanish between requests on one connection must still land
    # under their own keys.
    client = Client(srv.port)
    try:
        def http_keys(*lines):
            if srv.worker == "sync":
                nonlocal client
                client.close()
                client = Client(srv.port)
            req = "GET /environ-values HTTP/1.1\r\n%s\r\n" % "".join(
                line + "\r\n" for line in lines
            )
            client.send(req.encode())
            status, _, body = client.read_response()
            assert status == 200, body
            got = json.loads(body)
            return {k: v for k, v in got.items() if k.startswith("HTTP_")}

        assert http_keys("Host: h", "X-A: 1", "X-B: 2") == {
            "HTTP_HOST": "h", "HTTP_X_A": "1", "HTTP_X_B": "2"}
        assert http_keys("Host: h", "X-B: 3", "X-A: 4") == {
            "HTTP_HOST": "h", "HTTP_X_A": "4", "HTTP_X_B": "3"}
        assert http_keys("X-B: 5", "host: g", "x-a: 6", "X-C: 7") == {
            "HTTP_HOST": "g", "HTTP_X_A": "6", "HTTP_X_B": "5", "HTTP_X_C": "7"}
        assert http_keys("Host: h", "X-C: 8") == {"HTTP_HOST": "h", "HTTP_X_C": "8"}
        assert http_keys("Host: h", "X-A: 1", "X-B: 2") == {
            "HTTP_HOST": "h", "HTTP_X_A": "1", "HTTP_X_B": "2"}
    finally:
        client.close()


def test_reused_header_list_follows_its_changes(srv):
    # start_response remembers the header tuples it validated last; an app
    # passing the same list object with other tuples in it must be heard.
    def ask(qs=""):
        status, headers, body = srv.req("/reused-headers" + ("?" + qs if qs else ""))
        return status, headers.get("x-reused"), headers.get("x-more")

    assert ask("0") == (200, "0", None)
    assert ask() == (200, "0", None)
    assert ask() == (200, "0", None)
    assert ask("5") == (200, "5", None)
    assert ask() == (200, "5", None)
    assert ask("more") == (200, "5", "yes")
    assert ask() == (200, "5", "yes")
    assert ask("bad")[0] == 500
    assert ask()[0] == 500  # the list still holds the bad value
    assert ask("1") == (200, "1", None)
    assert ask() == (200, "1", None)
    # The same status and headers framed per request (version, method,
    # keep-alive), each with a Date of its own.
    def raw(line, extra=""):
        req = "%s\r\nHost: t\r\n%s\r\n" % (line, extra)
        return raw_request(srv.port, req.encode())

    for _ in range(2):
        r11 = raw("GET /reused-headers HTTP/1.1", "Connection: close\r\n")
        assert r11.startswith(b"HTTP/1.1 200 OK\r\n"), r11
        assert b"\r\nConnection: close\r\n" in r11 and b"Transfer-Encoding: chunked" in r11
        assert r11.endswith(b"\r\n\r\n6\r\nreused\r\n0\r\n\r\n"), r11
        r10 = raw("GET /reused-headers HTTP/1.0")
        assert b"Transfer-Encoding" not in r10 and b"\r\nConnection: close\r\n" in r10
        assert r10.endswith(b"\r\n\r\nreused"), r10
        head = raw("HEAD /reused-headers HTTP/1.1", "Connection: close\r\n")
        assert head.endswith(b"X-Reused: 1\r\n\r\n"), head
        c = Client(srv.port)
        try:
            status, headers, body = c.request("/reused-headers")
            expected = "close" if srv.worker == "sync" else "keep-alive"
            assert (status, headers["connection"], body) == (200, expected, b"reused")
        finally:
            c.close()
        for r in (r11, r10, head):
            assert re.search(rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n", r), r


def test_early_hints(srv):
    req = b"GET /early-hints HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    raw = raw_request(srv.port, req)
    hints = (b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload; as=style\r\n\r\n"
             b"HTTP/1.1 103 Early Hints\r\nLink: </a.js>; rel=preload\r\nX-Two: padded\r\n\r\n")
    assert raw.startswith(hints + b"HTTP/1.1 200 OK\r\n"), raw
    status, _, body = parse_response(raw[len(hints):])
    assert body == (b"Invalid response header name from the application: 'Bad Name'|"
                    b"Invalid response header from the application: 'X-Bad'\nend"), body
    assert b"late.css" not in raw
    # HTTP/1.0 clients get no 1xx response.
    raw = raw_request(srv.port, req.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw


def test_gunicorn_socket(srv):
    c = Client(srv.port)
    try:
        status, headers, body = c.request("/socket")
        got = json.loads(body)
        assert got["type"] == "socket.socket"
        assert got["peer"] == got["remote"] == list(c.sock.getsockname())
        assert got["timeout"] is None
        # The app closed its socket object; the connection itself goes on.
        if headers.get("connection") != "close":
            assert c.request("/")[2] == b"ok"
    finally:
        c.close()
    assert one_request(srv.port, "/")[2] == b"ok"


def test_gunicorn_socket_kept_by_the_app(srv):
    # evloop hands every request of a connection the same socket object (as
    # gunicorn hands its connection socket); the others make one per request.
    # Either way a reference the app keeps is inert once the worker is done
    # with it, and the connection is unaffected.
    c = Client(srv.port)
    try:
        _, h1, b1 = c.request("/socket-keep")
        first = json.loads(b1)
        assert first["fileno"] >= 0
        if h1.get("connection") != "close":
            _, h2, b2 = c.request("/socket-keep", headers="Connection: close\r\n")
            second = json.loads(b2)
            assert second["fileno"] >= 0
            assert second["same"] == (srv.worker == "evloop")
            assert h2.get("connection") == "close"
        else:
            assert srv.worker == "sync"
        with pytest.raises(EOFError):
            c.read_response()  # the server closed the connection
    finally:
        c.close()
    _, _, body = one_request(srv.port, "/socket-kept")
    assert json.loads(body)["filenos"] and all(f == -1 for f in json.loads(body)["filenos"])
    # Closed by the app at one request: the next request on the connection gets a live one.
    c = Client(srv.port)
    try:
        for _ in range(2):
            status, headers, body = c.request("/socket")
            assert status == 200 and json.loads(body)["peer"] == list(c.sock.getsockname())
            if headers.get("connection") == "close":
                break
    finally:
        c.close()


def test_legacy_write(srv):
    status, _, body = srv.req("/write")
    assert status == 200 and body == b"legacy write"


def test_error_before_first_nonempty_chunk_is_500(srv):
    status, _, _ = srv.req("/empty-then-raise")
    assert status == 500
    srv.server.wait_for("failed before any body")


def test_exc_info_after_headers_sent_reraises_and_closes(srv):
    c = Client(srv.port)
    try:
        c.send(b"GET /exc-info-late HTTP/1.1\r\nHost: t\r\n\r\n")
        data = b""
        while True:
            chunk = c.sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        c.close()
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"partial" in data and b"never" not in data
    assert not data.endswith(b"0\r\n\r\n"), "a failed response must not look complete"
    srv.server.wait_for("KeyError: 'late'")


def test_bad_header_is_500_and_logged(srv):
    status, _, body = srv.req("/bad-header")
    assert status == 500 and b"never" not in body
    srv.server.wait_for("Error handling request GET /bad-header")


def test_close_called_once(srv):
    before = len(srv.marker("stream"))
    status, _, body = srv.req("/stream")
    assert body == b"one two three"
    srv.wait_marker("stream", lambda lines: len(lines) == before + 1)


def test_close_called_once_when_client_goes_away(srv):
    before = len(srv.marker("big"))
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /big?4000 HTTP/1.1\r\nHost: t\r\n\r\n")
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST: the server's next write fails
    srv.wait_marker("big", lambda lines: len(lines) == before + 1)
    # Served something else since; still exactly one close() for that response.
    assert srv.req("/")[2] == b"ok"
    assert len(srv.marker("big")) == before + 1


@pytest.mark.parametrize("kind", ["real", "real-offset", "real-length", "bytesio"])
def test_file_wrapper(srv, kind):
    payload = bytes(range(256)) * 400
    status, headers, body = srv.req("/file?" + kind)
    assert status == 200
    if kind == "real-offset":
        assert body == payload[10:]
    elif kind == "real-length":
        assert body == payload[:1000] and headers["content-length"] == "1000"
    else:
        assert body == payload


def test_wsgi_errors_goes_to_error_log(srv):
    srv.req("/errors")
    srv.server.wait_for("shapes: to wsgi.errors")


def test_head_request_has_no_body(srv):
    c = Client(srv.port)
    try:
        status, headers, body = c.request("/", "HEAD", headers="Connection: close\r\n")
        assert status == 200 and headers["content-length"] == "2"
        c.sock.settimeout(5)
        assert c.sock.recv(10) == b""  # nothing after the head
    finally:
        c.close()


@worker_classes()
def test_no_sendfile_still_serves_files(start_server, tmp_path_factory, worker):
    server = start_server(*worker_args(worker), "--no-sendfile", "-b", "127.0.0.1:0", "shapes:app")
    s = Srv(server, worker, str(tmp_path_factory.mktemp("m")))
    assert s.req("/file?real-offset")[2] == (bytes(range(256)) * 400)[10:]


@worker_classes()
def test_preload_imports_in_master(start_server, worker):
    server = start_server(*worker_args(worker), "--preload", "-b", "127.0.0.1:0", "shapes:app")
    got = json.loads(Srv(server, worker, "").req("/pid")[2])
    assert got["import_pid"] == server.master_pid
    assert got["pid"] != server.master_pid


@pytest.mark.parametrize("server", ["gunicorn", "ferricorn"])
@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_hup_reloads_app_code_unless_preloaded(start_server, tmp_path, server, preload):
    """HUP replaces the workers; they import the app afresh, except with
    --preload where they fork from the master's already imported module.
    Checked against gunicorn 27.0.1 itself."""
    app = tmp_path / "hupapp.py"

    def write(version):
        app.write_text(
            "def app(environ, start_response):\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [%r]\n" % version
        )

    write(b"first")
    args = ["-b", "127.0.0.1:0", "--pythonpath", str(tmp_path)] + (["--preload"] if preload else []) + ["hupapp:app"]
    srv = start_server(*args, env={"PYTHONDONTWRITEBYTECODE": "1"}, cmd=gunicorn_cmd() if server == "gunicorn" else None)
    assert one_request(srv.port, "/")[2] == b"first"
    old = int(re.findall(r"Booting worker with pid: (\d+)", srv.log())[-1])
    write(b"second, longer")
    srv.signal(signal.SIGHUP)
    srv.wait_booted(2)
    srv.wait_for(r"Worker exiting \(pid: %d\)" % old)
    assert one_request(srv.port, "/")[2] == (b"first" if preload else b"second, longer")
