"""Real ASGI frameworks from PyPI (tests/requirements.txt) under `-k asgi`:
FastAPI (tests/apps/asgi_fastapi.py), Starlette (tests/apps/asgi_starlette.py)
and Django async views through get_asgi_application()
(tests/apps/asgi_django.py). Runs against ferricorn; gunicorn 27 is the
oracle (tests/asgi_helpers.py)."""

import hashlib
import json
import os
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asgi_helpers import recv_until, serve_asgi, server_fixture, ws_connect
from conftest import wait_until
from wsgi_helpers import Client, one_request

server = server_fixture()


@pytest.fixture(scope="module")
def fastapi_srv(request, server):
    return serve_asgi(request, server, "asgi_fastapi:app")


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("static")
    (d / "hello.txt").write_text("static hello\n")
    (d / "blob.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    (d / "sub").mkdir()
    (d / "sub" / "page.html").write_text("<h1>page</h1>")
    return d


@pytest.fixture(scope="module")
def starlette_srv(request, server, static_dir):
    return serve_asgi(request, server, "asgi_starlette:app", env={"ASGI_STATIC_DIR": str(static_dir)})


@pytest.fixture(scope="module")
def django_srv(request, server):
    return serve_asgi(request, server, "asgi_django:application")


def req(srv, path, method="GET", body=b"", headers=""):
    return one_request(srv.port, path, method, body, headers)


def req_json(srv, path, method="GET", body=b"", headers=""):
    status, hdrs, raw = req(srv, path, method, body, headers)
    return status, json.loads(raw)


def record(srv):
    return req_json(srv, "/record")[1]


# --- FastAPI ------------------------------------------------------------------


def test_fastapi_path_query_and_lifespan_state(fastapi_srv):
    status, got = req_json(fastapi_srv, "/items/42?q=hi&limit=5")
    assert status == 200
    assert got == {"item_id": 42, "q": "hi", "limit": 5, "session": "session", "db": "fake-db-handle"}
    assert record(fastapi_srv)["lifespan"] == ["startup"]


@pytest.mark.parametrize("path", ["/items/abc", "/items/1?limit=1000", "/items/1?limit=0"])
def test_fastapi_invalid_path_or_query_is_a_422(fastapi_srv, path):
    status, got = req_json(fastapi_srv, path)
    assert status == 422
    assert got["detail"] and got["detail"][0]["loc"][0] in ("path", "query")


def test_fastapi_http_exception(fastapi_srv):
    assert req_json(fastapi_srv, "/items/404") == (404, {"detail": "no such item"})


def test_fastapi_body_validation(fastapi_srv):
    ok = json.dumps({"name": "pen", "price": 1.5, "tags": ["a", "b"]}).encode()
    status, got = req_json(fastapi_srv, "/items", "POST", ok, "Content-Type: application/json\r\n")
    assert status == 201 and got == {"created": {"name": "pen", "price": 1.5, "tags": ["a", "b"]}, "total": 3.0}
    bad = json.dumps({"name": "", "price": -1}).encode()
    status, got = req_json(fastapi_srv, "/items", "POST", bad, "Content-Type: application/json\r\n")
    assert status == 422
    assert sorted(tuple(d["loc"]) for d in got["detail"]) == [("body", "name"), ("body", "price")]
    status, got = req_json(fastapi_srv, "/items", "POST", b"{not json", "Content-Type: application/json\r\n")
    assert status == 422 and got["detail"][0]["type"] == "json_invalid"


def test_fastapi_sync_endpoint_runs_in_a_thread(fastapi_srv):
    assert req_json(fastapi_srv, "/sync") == (200, {"thread": True})


def test_fastapi_dependency_cleanup_runs(fastapi_srv):
    before = record(fastapi_srv)["deps_closed"]
    assert req(fastapi_srv, "/items/7")[0] == 200
    wait_until(lambda: record(fastapi_srv)["deps_closed"] > before, 10, "the dependency's finally")


def test_fastapi_streaming_response(fastapi_srv):
    status, headers, body = req(fastapi_srv, "/stream?n=50")
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body == b"".join(b"line %d\n" % i for i in range(50))
    status, _, body = req(fastapi_srv, "/stream-sync?n=3")
    assert status == 200 and body == b"sync 0\nsync 1\nsync 2\n"


def test_fastapi_streaming_response_stops_when_the_client_leaves(fastapi_srv):
    """An endless generator is closed once the client is gone (Starlette
    stops on send() raising OSError, spec 2.4, or on http.disconnect)."""
    before = record(fastapi_srv)["stream_closed"]
    s = socket.create_connection(("127.0.0.1", fastapi_srv.port), timeout=10)
    s.sendall(b"GET /stream?n=100000&delay=0.01 HTTP/1.1\r\nHost: t\r\n\r\n")
    recv_until(s, b"line 3\n")
    s.close()
    wait_until(lambda: record(fastapi_srv)["stream_closed"] > before, 15, "the generator to be closed",
               log=fastapi_srv.log)


def test_fastapi_background_tasks_run_after_the_response(fastapi_srv):
    status, got = req_json(fastapi_srv, "/tasks/job1", "POST")
    assert status == 202 and got == {"queued": "job1"}
    wait_until(lambda: "job1:sync" in record(fastapi_srv)["tasks"], 10, "background tasks")
    tasks = record(fastapi_srv)["tasks"]
    assert tasks.index("job1:async") < tasks.index("job1:sync")


def multipart(files, fields, boundary="ferricornasgiboundary"):
    """A multipart/form-data body: `files` as (field, filename, bytes), then
    `fields` as (name, text); returns (body, Content-Type header line)."""
    parts = b""
    for field, filename, blob in files:
        parts += (
            '--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n" % (boundary, field, filename)
        ).encode() + blob + b"\r\n"
    for name, text in fields:
        parts += ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary, name, text)).encode()
    parts += b"--%s--\r\n" % boundary.encode()
    return parts, "Content-Type: multipart/form-data; boundary=%s\r\n" % boundary


def test_fastapi_upload_of_several_megabytes(fastapi_srv):
    a = os.urandom(5 * 1024 * 1024 + 11)
    b = os.urandom(300 * 1024)
    body, ctype = multipart([("files", "a.bin", a), ("files", "b.dat", b)], [("note", "hi there")])
    status, got = req_json(fastapi_srv, "/upload", "POST", body, ctype)
    assert status == 200, got
    assert got["note"] == "hi there"
    assert got["files"] == [
        {"filename": "a.bin", "content_type": "application/octet-stream", "size": len(a),
         "sha256": hashlib.sha256(a).hexdigest()},
        {"filename": "b.dat", "content_type": "application/octet-stream", "size": len(b),
         "sha256": hashlib.sha256(b).hexdigest()},
    ]


def test_fastapi_missing_upload_field_is_a_422(fastapi_srv):
    status, got = req_json(fastapi_srv, "/upload", "POST", b"note=x",
                           "Content-Type: application/x-www-form-urlencoded\r\n")
    assert status == 422 and ["body", "files"] in [d["loc"] for d in got["detail"]]


def test_fastapi_request_is_disconnected(fastapi_srv):
    before = record(fastapi_srv)
    s = socket.create_connection(("127.0.0.1", fastapi_srv.port), timeout=10)
    s.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: t\r\n\r\n")
    wait_until(lambda: record(fastapi_srv)["waiting"] > before["waiting"], 10, "the handler to start")
    s.close()
    wait_until(lambda: record(fastapi_srv)["disconnected"] > before["disconnected"], 10,
               "request.is_disconnected() to say True", log=fastapi_srv.log)


def test_fastapi_websocket_route_with_path_and_query(fastapi_srv):
    with ws_connect(fastapi_srv, "/ws/lobby?token=secret") as ws:
        assert json.loads(ws.recv(timeout=10)) == {"room": "lobby", "hello": True}
        for i in range(3):
            ws.send(json.dumps({"n": i}))
            assert json.loads(ws.recv(timeout=10)) == {"room": "lobby", "echo": {"n": i}}
        ws.send(json.dumps({"op": "bye"}))
        with pytest.raises(ConnectionClosed) as e:
            ws.recv(timeout=10)
    assert e.value.rcvd.code == 4000 and e.value.rcvd.reason == "bye"


def test_fastapi_websocket_client_close_reaches_the_route(fastapi_srv):
    with ws_connect(fastapi_srv, "/ws/room2?token=secret") as ws:
        ws.recv(timeout=10)
        ws.close(code=4321)
    wait_until(lambda: record(fastapi_srv)["ws_disconnect"] == 4321, 10, "WebSocketDisconnect(4321)")


def test_fastapi_websocket_closed_before_accept_is_refused(fastapi_srv):
    with pytest.raises(InvalidStatus) as e:
        ws_connect(fastapi_srv, "/ws/lobby?token=wrong")
    assert e.value.response.status_code == 403


def test_fastapi_websocket_binary_messages(fastapi_srv):
    with ws_connect(fastapi_srv, "/ws-bytes", max_size=None) as ws:
        for size in (0, 1, 125, 126, 65535, 65536, 2 * 1024 * 1024):
            blob = os.urandom(size)
            ws.send(blob)
            assert ws.recv(timeout=20) == hashlib.sha256(blob).digest()


def test_fastapi_concurrent_clients(fastapi_srv):
    errors = []

    def worker(n):
        try:
            c = Client(fastapi_srv.port)
            try:
                for i in range(10):
                    status, _, raw = c.request("/items/%d?q=c%d" % (i, n))
                    assert status == 200 and json.loads(raw)["q"] == "c%d" % n
            finally:
                c.close()
        except Exception as e:  # noqa: BLE001 - collected for the assert below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


# --- Starlette ---------------------------------------------------------------------


def test_starlette_plain_and_middleware(starlette_srv):
    status, headers, body = req(starlette_srv, "/")
    assert status == 200 and body == b"hello from starlette"
    assert headers["x-middleware"] == "counting" and int(headers["x-count"]) >= 1


def test_starlette_streaming_through_base_http_middleware(starlette_srv):
    status, headers, body = req(starlette_srv, "/streamed")
    assert status == 200 and headers["x-middleware"] == "counting"
    assert body == b"part 0;part 1;part 2;part 3;"


def test_starlette_form(starlette_srv):
    status, got = req_json(starlette_srv, "/form", "POST", b"a=1&b=two+words",
                           "Content-Type: application/x-www-form-urlencoded\r\n")
    assert status == 200 and got == {"a": "1", "b": "two words"}


def test_starlette_static_files(starlette_srv, static_dir):
    status, headers, body = req(starlette_srv, "/static/hello.txt")
    assert status == 200 and body == b"static hello\n"
    assert headers["content-type"].startswith("text/plain")
    assert headers["x-middleware"] == "counting"
    blob = (static_dir / "blob.bin").read_bytes()
    status, headers, body = req(starlette_srv, "/static/blob.bin")
    assert status == 200 and int(headers["content-length"]) == len(blob) and body == blob
    etag = headers["etag"]
    status, _, body = req(starlette_srv, "/static/blob.bin", headers="If-None-Match: %s\r\n" % etag)
    assert status == 304 and body == b""
    status, headers, body = req(starlette_srv, "/static/blob.bin", headers="Range: bytes=100-199\r\n")
    assert status == 206 and body == blob[100:200]
    status, _, body = req(starlette_srv, "/static/sub/page.html")
    assert status == 200 and body == b"<h1>page</h1>"
    status, headers, body = req(starlette_srv, "/static/blob.bin", method="HEAD")
    assert status == 200 and int(headers["content-length"]) == len(blob)
    assert req(starlette_srv, "/static/nope.txt")[0] == 404
    assert req(starlette_srv, "/static/../asgi_starlette.py")[0] == 404


def test_starlette_server_sent_events_are_flushed_as_they_come(starlette_srv):
    s = socket.create_connection(("127.0.0.1", starlette_srv.port), timeout=10)
    try:
        s.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n")
        # The first event arrives while the generator is still waiting.
        data = recv_until(s, b"data: first\n\n")
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"content-type: text/event-stream" in head
        assert req(starlette_srv, "/release", "POST")[::2] == (200, b"released")
        data = recv_until(s, b"data: event 3\n\n", data)
        assert b"id: 2\ndata: event 2\n\n" in data
    finally:
        s.close()


# --- Django ------------------------------------------------------------------------


def test_django_async_view(django_srv):
    status, headers, body = req(django_srv, "/")
    assert status == 200 and body == b"hello from django async"
    assert headers["content-type"].startswith("text/plain")


def test_django_request_facts(django_srv):
    status, got = req_json(django_srv, "/info?a=1&b=2", headers="User-Agent: pytest-asgi\r\n")
    assert status == 200
    assert got["method"] == "GET" and got["path"] == "/info" and got["query"] == {"a": "1", "b": "2"}
    assert got["scheme"] == "http" and got["secure"] is False
    assert got["remote_addr"] == "127.0.0.1" and got["agent"] == "pytest-asgi"
    assert got["server_port"] == str(django_srv.port)


def test_django_post_bodies(django_srv):
    status, got = req_json(django_srv, "/post", "POST", b'{"k": [1, 2]}', "Content-Type: application/json\r\n")
    assert status == 200 and got == {"json": {"k": [1, 2]}}
    body = b"x=1&y=" + b"z" * 200000
    status, got = req_json(django_srv, "/post", "POST", body, "Content-Type: application/x-www-form-urlencoded\r\n")
    assert status == 200 and got["form"]["x"] == "1" and got["size"] == len(body)


def test_django_upload_of_several_megabytes(django_srv):
    blob = os.urandom(4 * 1024 * 1024 + 5)
    body, ctype = multipart([("doc", "big.bin", blob)], [("title", "report")])
    status, got = req_json(django_srv, "/upload", "POST", body, ctype)
    assert status == 200
    assert got == {"files": {"doc": {"name": "big.bin", "size": len(blob), "sha256": hashlib.sha256(blob).hexdigest()}},
                   "fields": {"title": "report"}}


def test_django_unknown_path_is_a_404(django_srv):
    assert req(django_srv, "/no/such/page")[0] == 404


def test_django_streaming_response(django_srv):
    status, _, body = req(django_srv, "/stream?n=4")
    assert status == 200 and body == b"chunk 0\nchunk 1\nchunk 2\nchunk 3\n"


def test_django_sync_view_runs_in_a_thread(django_srv):
    assert req_json(django_srv, "/sync") == (200, {"in_thread": True})


def test_django_async_views_run_concurrently(django_srv):
    """Eight requests that each sleep 0.5 s on one worker finish in far less
    than 4 s: the worker's loop serves them together."""
    results = []

    def one():
        results.append(req(django_srv, "/sleep?s=0.5")[::2])

    threads = [threading.Thread(target=one) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - started
    assert results == [(200, b"rested")] * 8
    assert elapsed < 3.0, elapsed


def test_django_keep_alive(django_srv):
    c = Client(django_srv.port)
    try:
        for _ in range(3):
            assert c.request("/")[::2] == (200, b"hello from django async")
    finally:
        c.close()
