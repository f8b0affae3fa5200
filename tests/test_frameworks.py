"""Real frameworks from PyPI (tests/requirements.txt) under both workers:
Flask (tests/apps/flask_shapes.py) and a one-file Django project
(tests/apps/django_app.py)."""

import hashlib
import json
import os

import pytest

from conftest import classes, serve, worker_args
from wsgi_helpers import one_request


def request(srv, path, method="GET", body=b"", headers=""):
    return one_request(srv.port, path, method, body, headers)


@pytest.fixture(scope="module", params=classes())
def flask_srv(request):
    return serve(request, *worker_args(request.param), "-b", "127.0.0.1:0", "flask_shapes:app")


@pytest.fixture(scope="module", params=classes())
def django_srv(request):
    return serve(request, *worker_args(request.param), "-b", "127.0.0.1:0", "django_app")


def test_flask_json(flask_srv):
    status, headers, body = request(flask_srv, "/json?x=1")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"hello": "world", "args": {"x": "1"}}
    payload = json.dumps({"items": [1, 2, 3]}).encode()
    status, _, body = request(flask_srv, "/json", "POST", payload, "Content-Type: application/json\r\n")
    assert status == 200 and json.loads(body) == {"received": {"items": [1, 2, 3]}, "n": 3}


def test_flask_multipart_upload_of_several_megabytes(flask_srv):
    a = os.urandom(3 * 1024 * 1024 + 5)
    b = os.urandom(1024 * 1024)
    boundary = "ferricornboundary1234"
    parts = b""
    for name, blob in (("first", a), ("second", b)):
        parts += (
            "--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n" % (boundary, name, name)
        ).encode() + blob + b"\r\n"
    parts += ("--%s\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--%s--\r\n" % (boundary, boundary)).encode()
    status, _, body = request(
        flask_srv, "/upload", "POST", parts, "Content-Type: multipart/form-data; boundary=%s\r\n" % boundary
    )
    assert status == 200
    got = json.loads(body)
    assert got["form"] == {"note": "hi"}
    assert got["files"]["first"] == {"filename": "first.bin", "size": len(a), "sha256": hashlib.sha256(a).hexdigest()}
    assert got["files"]["second"]["sha256"] == hashlib.sha256(b).hexdigest()


def test_flask_stream_with_context(flask_srv):
    status, headers, body = request(flask_srv, "/stream?who=me")
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert body.decode() == "".join("%d:me:/stream\n" % i for i in range(5))


def test_flask_errors(flask_srv):
    assert request(flask_srv, "/missing")[0] == 404
    status, _, body = request(flask_srv, "/boom")
    assert status == 500
    flask_srv.wait_for("flask view failed")


def test_django_get_query_post(django_srv):
    status, _, body = request(django_srv, "/")
    assert status == 200 and body == b"hello from django"
    status, _, body = request(django_srv, "/info?a=1&b=two")
    got = json.loads(body)
    assert got["method"] == "GET" and got["query"] == {"a": "1", "b": "two"} and got["secure"] is False
    status, _, body = request(
        django_srv, "/post", "POST", b"name=x&v=%C3%A9", "Content-Type: application/x-www-form-urlencoded\r\n"
    )
    assert status == 200 and json.loads(body) == {"form": {"name": "x", "v": "\u00e9"}}
    status, _, body = request(django_srv, "/post", "POST", b'{"k": [1]}', "Content-Type: application/json\r\n")
    assert json.loads(body) == {"json": {"k": [1]}}


def test_django_is_secure_behind_trusted_proxy(django_srv):
    # 127.0.0.1 is trusted by default (forwarded_allow_ips), so the scheme header counts.
    got = json.loads(request(django_srv, "/info", headers="X-Forwarded-Proto: https\r\n")[2])
    assert got["secure"] is True and got["scheme"] == "https"


def test_django_scheme_header_ignored_from_untrusted_peer(start_server):
    srv = start_server("-b", "127.0.0.1:0", "django_app", env={"FORWARDED_ALLOW_IPS": "10.1.2.3"})
    got = json.loads(request(srv, "/info", headers="X-Forwarded-Proto: https\r\n")[2])
    assert got["secure"] is False and got["scheme"] == "http"
