"""The `asgi` worker against the ASGI spec and the server duties of issue 15.

tests/apps/asgi_spec.py checks every scope and message it is handed against
asgiref's spec text and reports what is wrong; these tests assert that list
is empty, and check the rest from the client's side: errors before and
after `http.response.start`, an app that returns without a response,
lifespan startup failure (exit 3) and shutdown after the drain, keep-alive
and pipelining, Expect: 100-continue, chunked request bodies, `send` after
the client left, bounded buffering both ways (a slow reader of a large
response, an upload the app does not read yet), WebSocket accept, denial,
close codes, protocol errors and TERM.

Runs against ferricorn; gunicorn 27 is the oracle (tests/asgi_helpers.py).
"""

import hashlib
import json
import os
import signal
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_helpers import (
    ASGI_SERVERS,
    recv_until,
    rss_kib,
    serve_asgi,
    server_fixture,
    ws_connect,
    ws_frame,
    ws_handshake,
    ws_read_close_code,
)
from conftest import APPS, parse_head, parse_response, raw_request, wait_until
from wsgi_helpers import Client, chunked, one_request

server = server_fixture()


@pytest.fixture(scope="module")
def spec(request, server):
    return serve_asgi(request, server, "asgi_spec:app")


@pytest.fixture
def start_asgi(request, server, tmp_path):
    """`start_asgi(*args, **serve_kwargs)`: a server of the test's own."""

    def start(*args, **kwargs):
        kwargs.setdefault("cwd", tmp_path)
        return serve_asgi(request, server, *args, **kwargs)

    return start


def get_json(srv, path, method="GET", body=b"", headers=""):
    status, hdrs, raw = one_request(srv.port, path, method, body, headers)
    assert hdrs.get("content-type") == "application/json", (status, hdrs, raw)
    return status, json.loads(raw)


def report(srv):
    return get_json(srv, "/report")[1]


def clear_report(srv):
    """Start /report afresh: what an earlier test left is not this test's."""
    get_json(srv, "/report?clear=1")


def wait_event(srv, key, pending=(None,), timeout=15.0):
    """Poll /report until EVENTS[key] is set and not one of `pending`."""
    seen = {}

    def ready():
        seen.update(report(srv))
        return seen["events"].get(key) not in pending

    wait_until(ready, timeout, "event %r at /report" % key, log=lambda: "%s\n%s" % (seen, srv.log()))
    return seen


def start_hold(srv):
    """A /hold stream in flight: its first piece has arrived."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=20)
    s.sendall(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
    recv_until(s, b"first piece")
    return s


def raw_request_json(srv, data):
    status, hdrs, body = parse_response(raw_request(srv.port, data))
    return status, hdrs, json.loads(body)


# --- HTTP scope and messages ------------------------------------------------


def test_http_scope_has_every_key_the_spec_asks(spec):
    status, got = get_json(spec, "/scope?a=1&b=%20x", headers="X-Dup: one\r\nX-Dup: two\r\nX-Mixed-Case: v\r\n")
    assert status == 200
    assert got["violations"] == []
    scope = got["scope"]
    assert scope["type"] == "http" and scope["asgi"]["version"] == "3.0"
    assert scope["http_version"] == "1.1" and scope["method"] == "GET"
    assert scope.get("scheme", "http") == "http"
    assert scope["path"] == "/scope" and scope.get("raw_path") in (None, "/scope")
    assert scope["query_string"] == "a=1&b=%20x"
    assert scope.get("root_path", "") == ""
    headers = [tuple(h) for h in scope["headers"]]
    # Order and duplicates as received.
    assert [v for k, v in headers if k.lower() == "x-dup"] == ["one", "two"]
    assert ("x-mixed-case", "v") in [(k.lower(), v) for k, v in headers]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", spec.port]


def test_http_10_and_a_percent_encoded_utf8_path(spec):
    status, hdrs, raw = raw_request_json(spec, b"GET /caf%C3%A9/%7Eme?x=%C3%A9 HTTP/1.0\r\n\r\n")
    assert status == 404
    assert raw["violations"] == []
    scope = raw["scope"]
    assert scope["http_version"] == "1.0"
    assert scope["path"] == "/café/~me"
    assert scope.get("raw_path") in (None, "/caf%C3%A9/%7Eme")
    assert scope["query_string"] == "x=%C3%A9"


def test_root_path_is_the_mount_point(start_asgi):
    srv = start_asgi("--root-path", "/mnt", "asgi_spec:app")
    status, got = get_json(srv, "/mnt/scope")
    assert status == 200 and got["violations"] == []
    assert got["scope"]["root_path"] == "/mnt"
    assert got["scope"]["path"] == "/mnt/scope"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_request_body_arrives_as_http_request_messages(spec, framing):
    body = os.urandom(3 * 1024 * 1024 + 7)
    if framing == "chunked":
        payload, headers = chunked(body, 65536), "Transfer-Encoding: chunked\r\n"
    else:
        payload, headers = body, ""
    c = Client(spec.port)
    try:
        status, _, raw = c.request("/echo", "POST", payload, headers)
    finally:
        c.close()
    got = json.loads(raw)
    assert status == 200 and got["violations"] == []
    assert got["size"] == len(body) and got["sha256"] == hashlib.sha256(body).hexdigest()


def test_receive_after_the_response_gives_http_disconnect(spec):
    clear_report(spec)
    # A keep-alive connection that stays open: the spec has receive() after
    # the response return http.disconnect, not wait for the socket to close.
    c = Client(spec.port)
    try:
        status, _, raw = c.request("/echo", "POST", b"hello")
        assert status == 200 and json.loads(raw)["violations"] == []
        got = wait_event(spec, "echo_after")
    finally:
        c.close()
    assert got["events"]["echo_after"] == "http.disconnect"
    assert got["violations"] == []


def test_chunked_body_with_extensions_and_trailers(spec):
    body = b"hello chunked world"
    wire = b"5;ext=1\r\nhello\r\n8\r\n chunked\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    c = Client(spec.port)
    try:
        status, _, raw = c.request("/raw-echo", "POST", wire, "Transfer-Encoding: chunked\r\n")
        assert status == 200 and raw == body
        # The connection is still usable after the trailers.
        status, _, raw = c.request("/raw-echo", "POST", b"again")
        assert status == 200 and raw == b"again"
    finally:
        c.close()


def test_lifespan_state_is_copied_into_every_request(spec):
    clear_report(spec)
    for _ in range(2):  # the second request must not see the first one's change
        status, got = get_json(spec, "/state")
        assert status == 200 and got["started"] is True
        assert got["violations"] == [] and got["lifespan_violations"] == []
    assert report(spec)["violations"] == []


def test_lifespan_shutdown_runs_with_a_well_formed_message(start_asgi, tmp_path):
    out = tmp_path / "shutdown.json"
    srv = start_asgi("asgi_spec:app", env={"ASGI_SPEC_REPORT": str(out)})
    assert get_json(srv, "/scope")[1]["violations"] == []
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    assert json.loads(out.read_text())["violations"] == []


def test_send_after_the_client_left_raises_oserror(spec):
    clear_report(spec)
    start_hold(spec).close()
    got = wait_event(spec, "hold", pending=(None, "streaming"))
    assert got["events"]["hold"].startswith("OSError:"), got
    assert got["violations"] == []


# --- server duties ------------------------------------------------------------


def test_app_raising_before_response_start_is_a_500(spec):
    status, _, _ = one_request(spec.port, "/error-before-start")
    assert status == 500
    spec.wait_for(r"boom before http.response.start")
    # The worker is still serving.
    assert one_request(spec.port, "/scope")[0] == 200


def test_app_raising_after_response_start_aborts_the_connection(spec):
    raw = raw_request(spec.port, b"GET /error-after-start HTTP/1.1\r\nHost: t\r\n\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert parse_head(head)[0] == 200
    assert b"partial" in body
    # Not a complete response: no terminating chunk (nor a full Content-Length).
    assert not body.endswith(b"0\r\n\r\n"), raw
    spec.wait_for(r"boom after http.response.start")


def test_app_returning_without_a_response_is_a_500(spec):
    assert one_request(spec.port, "/no-response")[0] == 500


def test_keep_alive_and_pipelining(spec):
    c = Client(spec.port)
    try:
        c.send(
            b"POST /raw-echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
            b"GET /scope?n=2 HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /raw-echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n"
        )
        assert c.read_response()[::2] == (200, b"first")
        status, _, raw = c.read_response()
        assert status == 200 and json.loads(raw)["scope"]["query_string"] == "n=2"
        assert c.read_response()[::2] == (200, b"third")
        # And the connection is kept for one more.
        assert c.request("/raw-echo", "POST", b"fourth")[::2] == (200, b"fourth")
    finally:
        c.close()


@pytest.mark.parametrize("path, first", [
    ("/raw-echo", b"HTTP/1.1 100 Continue\r\n"),  # the app's receive() asks for the body
    ("/no-read", b"HTTP/1.1 413 "),  # the app answers without asking: no 100
])
def test_expect_100_continue_is_answered_at_the_first_receive(spec, path, first):
    s = socket.create_connection(("127.0.0.1", spec.port), timeout=10)
    try:
        s.sendall(b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
                  % path.encode())
        data = recv_until(s, b"\r\n\r\n")
        assert data.startswith(first), data
        if path == "/raw-echo":
            s.sendall(b"body")
            data = recv_until(s, b"body", data)
            assert data.split(b"\r\n\r\n", 1)[1].startswith(b"HTTP/1.1 200 "), data
    finally:
        s.close()


def test_slow_reader_of_a_large_stream_keeps_memory_bounded(spec):
    """A 256 MiB response to a client that reads nothing: send() must wait,
    so the worker holds a bounded amount, not the whole response."""
    _, before = get_json(spec, "/progress")
    pid = before["pid"]
    base = rss_kib(pid)
    s = socket.create_connection(("127.0.0.1", spec.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    try:
        s.sendall(b"GET /stream?chunks=256&size=1048576 HTTP/1.1\r\nHost: t\r\n\r\n")
        # Wait until send() has stopped making progress: the socket buffers are full.
        last, still = -1, 0
        deadline = time.monotonic() + 30
        while still < 5:
            assert time.monotonic() < deadline, "send() never stalled: %r" % get_json(spec, "/progress")[1]
            prog = get_json(spec, "/progress")[1]
            assert not prog["done"], "the whole 256 MiB was sent to a client that read nothing: %r" % prog
            still = still + 1 if prog["sent"] == last else 0
            last = prog["sent"]
            time.sleep(0.1)
        grown = rss_kib(pid) - base
        assert prog["sent"] <= 64 * 1024 * 1024, prog
        assert grown <= 64 * 1024, "worker RSS grew by %d KiB" % grown
        # Now read it all: the stream completes.
        s.settimeout(30)
        total = 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total >= 256 * 1024 * 1024:
                break
        assert total >= 256 * 1024 * 1024
    finally:
        s.close()
    wait_until(lambda: get_json(spec, "/progress")[1]["done"], 20, "stream done")


def test_a_body_the_app_does_not_read_yet_is_not_buffered_whole(spec):
    """A client uploads 128 MiB while the app sits on its first receive():
    the server stops reading, so the client's send blocks early and the
    worker does not grow by the body's size."""
    _, info = get_json(spec, "/release-read")
    pid = info["pid"]
    base = rss_kib(pid)
    total = 128 * 1024 * 1024
    s = socket.create_connection(("127.0.0.1", spec.port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
    try:
        s.sendall(b"POST /slow-read HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % total)
        block = b"u" * (1 << 20)
        sent = 0
        s.setblocking(False)
        stalled_since = None
        deadline = time.monotonic() + 30
        while sent < total:
            assert time.monotonic() < deadline, "the upload neither finished nor stalled"
            try:
                sent += s.send(block[: min(len(block), total - sent)])
                stalled_since = None
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                if time.monotonic() - stalled_since > 1.0:
                    break
                time.sleep(0.01)
        assert sent <= 64 * 1024 * 1024, "the server took %d bytes the app did not ask for" % sent
        grown = rss_kib(pid) - base
        assert grown <= 64 * 1024, "worker RSS grew by %d KiB" % grown
        # Let the app read: the rest of the upload goes through.
        assert get_json(spec, "/release-read")[1]["first"] is not None
        s.setblocking(True)
        s.settimeout(30)
        while sent < total:
            sent += s.send(block[: min(len(block), total - sent)])
        data = recv_until(s, b"}")
    finally:
        s.close()
    status, _, body = parse_response(data)
    got = json.loads(body)
    assert status == 200 and got == {"violations": [], "size": total}


# --- lifespan failures --------------------------------------------------------


# gunicorn 27 is where exit 3 comes from: these run against it too, always.
WITH_ORACLE = pytest.mark.parametrize("server", sorted(set(ASGI_SERVERS) | {"gunicorn"}))


@WITH_ORACLE
def test_lifespan_startup_failed_halts_with_exit_3(start_asgi):
    srv = start_asgi("asgi_lifespan:failed", wait=False)
    code = srv.wait_exit(30)
    assert code == 3, srv.log()
    assert "database unreachable: db.example:5432" in srv.log()
    # No crash loop: the worker booted once.
    assert srv.count(r"Booting worker with pid") == 1, srv.log()


@WITH_ORACLE
def test_lifespan_raising_under_on_halts_with_exit_3(start_asgi):
    srv = start_asgi("--asgi-lifespan", "on", "asgi_lifespan:raising", wait=False)
    assert srv.wait_exit(30) == 3, srv.log()
    assert "startup exploded" in srv.log()


@pytest.mark.parametrize("app", ["raising", "unsupported"])
def test_lifespan_auto_serves_an_app_without_lifespan_support(start_asgi, app):
    srv = start_asgi("asgi_lifespan:" + app)
    status, _, body = one_request(srv.port, "/")
    assert status == 200 and body in (b"served", b"no lifespan here")


def test_lifespan_off_never_calls_the_app_with_a_lifespan_scope(start_asgi):
    # `failed` would halt the server if it saw a lifespan scope.
    srv = start_asgi("--asgi-lifespan", "off", "asgi_lifespan:failed")
    assert one_request(srv.port, "/")[::2] == (200, b"served")


def test_lifespan_shutdown_runs_after_in_flight_requests_finish(start_asgi, tmp_path):
    log = tmp_path / "lifespan.log"
    srv = start_asgi("asgi_lifespan:ordered", env={"ASGI_LIFESPAN_LOG": str(log)})
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    wait_until(lambda: log.exists() and "request start /slow" in log.read_text(), 10, "the slow request to start")
    srv.signal(signal.SIGTERM)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    assert parse_response(data)[::2] == (200, b"served"), data
    assert srv.wait_exit() == 0
    lines = log.read_text().splitlines()
    assert lines == [
        "startup lifespan.startup",
        "request start /slow",
        "request end /slow",
        "shutdown lifespan.shutdown",
    ], lines


# --- WebSocket ------------------------------------------------------------------


def test_websocket_scope_messages_and_close_reason(spec):
    clear_report(spec)
    with ws_connect(spec, "/ws/echo?room=1", subprotocols=["chat", "other"],
                    additional_headers={"X-Client": "test"}) as ws:
        assert ws.subprotocol == "chat"
        assert ws.response.headers.get("x-accepted") == "yes"
        ws.send("héllo")
        assert ws.recv(timeout=10) == "héllo"
        ws.send(b"\x00\x01binary")
        assert ws.recv(timeout=10) == b"\x00\x01binary"
        ws.send(["frag", "mented"])  # one message in three frames
        assert ws.recv(timeout=10) == "fragmented"
        big = os.urandom(300 * 1024)
        ws.send(big)
        assert ws.recv(timeout=10) == big
        ws.send("report")
        got = json.loads(ws.recv(timeout=10))
        assert got["violations"] == []
        scope = got["scope"]
        assert scope["path"] == "/ws/echo" and scope["query_string"] == "room=1"
        assert scope["subprotocols"] == ["chat", "other"]
        assert ["x-client", "test"] in [[k.lower(), v] for k, v in scope["headers"]]
        ws.close(code=4000, reason="done here")
    got = wait_event(spec, "ws_send_after")
    assert got["events"]["ws_disconnect"]["code"] == 4000
    assert got["events"]["ws_disconnect"]["reason"] in (None, "done here")
    assert got["events"]["ws_send_after"].startswith("OSError:"), got
    assert got["violations"] == []


def test_websocket_denial_response(spec):
    clear_report(spec)
    with pytest.raises(InvalidStatus) as e:
        ws_connect(spec, "/ws/deny")
    resp = e.value.response
    assert resp.status_code == 401
    assert resp.headers.get("x-denied") == "yes"
    assert resp.body == b"go away, please"
    assert report(spec)["violations"] == []


def test_websocket_close_before_accept_is_a_403(spec):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(spec, "/ws/close-before-accept")
    assert e.value.response.status_code == 403


def test_websocket_close_code_and_reason_reach_the_client(spec):
    with ws_connect(spec, "/ws/close-code") as ws:
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
    assert e.value.rcvd.code == 4001 and e.value.rcvd.reason == "bye now"


def test_websocket_app_raising_closes_with_1011(spec):
    with ws_connect(spec, "/ws/raise") as ws:
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1011


def test_websocket_message_over_the_limit_closes_with_1009(start_asgi):
    srv = start_asgi("--websocket-max-message-size", "1024", "asgi_spec:app")
    with ws_connect(srv, "/ws/echo") as ws:
        ws.send(b"x" * 1000)
        assert ws.recv(timeout=10) == b"x" * 1000
        ws.send(["y" * 600, "y" * 600])  # 1200 bytes in two fragments
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
    assert e.value.rcvd is not None and e.value.rcvd.code == 1009, e.value


# --- WebSocket protocol errors, from a raw socket ------------------------------


@pytest.mark.parametrize("frame, code", [
    (ws_frame(0x1, b"hello", mask=False), 1002),  # a client frame must be masked
    (ws_frame(0x1, b"\xff\xfe bad utf-8"), 1007),  # text must be UTF-8
    (ws_frame(0x3, b"reserved opcode"), 1002),
    (ws_frame(0x9, b"p" * 200), 1002),  # control frames carry at most 125 bytes
    (ws_frame(0x9, b"ping", fin=False), 1002),  # and are never fragmented
    (ws_frame(0x0, b"continuation of nothing"), 1002),
], ids=["unmasked", "bad-utf8", "reserved-opcode", "long-ping", "fragmented-ping", "stray-continuation"])
def test_websocket_protocol_errors_close_the_connection(spec, frame, code):
    s, buf = ws_handshake(spec.port)
    try:
        s.sendall(frame)
        assert ws_read_close_code(s, buf) == code
    finally:
        s.close()


def test_websocket_ping_gets_a_pong_and_close_is_echoed(spec):
    s, buf = ws_handshake(spec.port)
    try:
        s.sendall(ws_frame(0x9, b"are you there"))
        buf = recv_until(s, b"are you there", buf)
        assert buf[0] == 0x8A and buf[2:] == b"are you there", buf
        s.sendall(ws_frame(0x8, (1000).to_bytes(2, "big") + b"done"))
        assert ws_read_close_code(s, b"") == 1000
    finally:
        s.close()


def test_malformed_request_is_a_400(spec):
    raw = raw_request(spec.port, b"GET / HTTP/1.1\r\nHost: t\r\nBad Header Line\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 "), raw


def test_head_response_has_no_body(spec):
    c = Client(spec.port)
    try:
        status, headers, body = c.request("/scope", "HEAD")
        assert status == 200 and int(headers["content-length"]) > 0
        # The next response on the connection starts right after the head.
        assert c.request("/raw-echo", "POST", b"next")[::2] == (200, b"next")
    finally:
        c.close()


# --- the checker itself ------------------------------------------------------------


def test_the_checker_finds_what_the_spec_forbids(monkeypatch):
    """asgi_spec's checks are not vacuous: a scope that breaks the spec
    in several ways is reported, one line per fault."""
    monkeypatch.syspath_prepend(str(APPS))
    import asgi_spec

    good = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": "/a b", "raw_path": b"/a%20b", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"x")], "client": ("127.0.0.1", 5), "server": ("127.0.0.1", 80),
    }
    assert [v for v in asgi_spec.check_http_scope(good) if "asyncio" not in v and "loop" not in v] == []
    bad = dict(good, asgi={"version": "2.0"}, http_version="1.2", method="get", scheme="", path="/a",
               raw_path="/a?x", query_string="x=1", headers=[(b"host", "x"), (b":authority", b"x")],
               client=("127.0.0.1", "5"), root_path="/m")
    got = [v for v in asgi_spec.check_http_scope(bad) if "asyncio" not in v and "loop" not in v]
    for needle in ("['version']", "spec_version", "http_version", "uppercased", "scheme", "raw_path",
                   "query_string", "not [bytes, bytes]", "pseudo header", "client", "root_path"):
        assert any(needle in v for v in got), (needle, got)
    ws = dict(good, type="websocket", scheme="http", asgi={"version": "3.0", "spec_version": "2.2"})
    got = asgi_spec.check_ws_scope(ws)
    for needle in ("spec_version", "ws or wss", "websocket.http.response"):
        assert any(needle in v for v in got), (needle, got)


def test_websocket_close_without_a_code_is_1005_to_the_app(spec):
    clear_report(spec)
    s, buf = ws_handshake(spec.port)
    try:
        s.sendall(ws_frame(0x8, b""))
        assert ws_read_close_code(s, buf) in (1000, 1005)
    finally:
        s.close()
    got = wait_event(spec, "ws_disconnect")
    assert got["events"]["ws_disconnect"]["code"] == 1005
    # The message checks (the scope's are test_websocket_scope_messages_and_close_reason's).
    assert [v for v in got["violations"] if "scope" not in v] == []


def test_scheme_from_a_trusted_proxy(spec):
    # 127.0.0.1 is in forwarded_allow_ips by default.
    status, got = get_json(spec, "/scope", headers="X-Forwarded-Proto: https\r\n")
    assert status == 200 and got["violations"] == []
    assert got["scope"]["scheme"] == "https"
    with ws_connect(spec, "/ws/echo", additional_headers={"X-Forwarded-Proto": "https"}) as ws:
        ws.send("report")
        assert json.loads(ws.recv(timeout=10))["scope"]["scheme"] == "wss"


def test_timeout_ends_a_worker_whose_loop_the_app_blocks(start_asgi):
    srv = start_asgi("-t", "2", "asgi_spec:app")
    stuck = socket.create_connection(("127.0.0.1", srv.port), timeout=15)
    stuck.sendall(b"GET /block?s=30 HTTP/1.1\r\nHost: t\r\n\r\n")
    m = srv.wait_for(r"\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\)(.*)", timeout=15)
    # The worker's report names the request and shows where the Python code was stuck.
    srv.wait_for(r"Worker timed out while serving: GET /block\?s=30 HTTP/1\.1", timeout=10)
    srv.wait_for(r'asgi_spec\.py", line \d+, in http', timeout=10)
    stuck.close()
    srv.wait_booted(2)
    assert get_json(srv, "/scope")[1]["violations"] == []
    # A worker stuck in a request is not idle (the master may name the request or not).
    assert "idle" not in m.group(1), m.group(0)


def test_max_requests_restarts_the_worker(start_asgi):
    srv = start_asgi("--max-requests", "3", "asgi_spec:app")
    first = get_json(srv, "/pid")[1]["pid"]
    for _ in range(2):
        get_json(srv, "/pid")
    srv.wait_booted(2)
    wait_until(lambda: get_json(srv, "/pid")[1]["pid"] != first, 15, "a new worker to serve")


@pytest.mark.parametrize("sig, code", [
    (signal.SIGTERM, 1001),
    (signal.SIGHUP, 1012),
], ids=["TERM", "HUP"])
def test_a_stop_closes_websockets_with_going_away_or_restart(start_asgi, sig, code):
    """TERM: 1001 (going away) and the server exits; HUP: 1012 (service
    restart) and a new worker serves."""
    srv = start_asgi("asgi_spec:app")
    first = get_json(srv, "/pid")[1]["pid"]
    with ws_connect(srv, "/ws/echo") as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == "ping"
        srv.signal(sig)
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=20)
    assert e.value.rcvd is not None and e.value.rcvd.code == code, e.value
    if sig == signal.SIGTERM:
        assert srv.wait_exit() == 0
    else:
        srv.wait_booted(2)
        wait_until(lambda: get_json(srv, "/pid")[1]["pid"] != first, 15, "the new worker to serve")


def test_graceful_term_sends_http_disconnect_to_a_long_lived_stream(start_asgi, tmp_path):
    out = tmp_path / "shutdown.json"
    srv = start_asgi("--graceful-timeout", "20", "asgi_spec:app", env={"ASGI_SPEC_REPORT": str(out)})
    s = start_hold(srv)
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit(30) == 0
    # Not held until the graceful timeout: the stream was told to end.
    assert time.monotonic() - started < 10, srv.log()
    s.close()
    got = json.loads(out.read_text())
    assert got["events"].get("hold_receive") == "http.disconnect", got
    assert got["violations"] == []


def test_quit_leaves_at_once(start_asgi, tmp_path):
    srv = start_asgi("--graceful-timeout", "20", "asgi_spec:app")
    s = start_hold(srv)
    started = time.monotonic()
    srv.signal(signal.SIGQUIT)
    srv.wait_exit(30)
    assert time.monotonic() - started < 5, srv.log()
    s.settimeout(5)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    s.close()
