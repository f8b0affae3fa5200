"""End-to-end behaviour of the sync worker against a plain WSGI app."""

import json
import socket

from conftest import get, parse_response, raw_request


def test_hello_with_date_server_and_close(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    status, headers, body = get(srv.port)
    assert status == 200
    assert body == b"Hello, world!"
    assert headers["server"] == "ferricorn"
    assert headers["connection"] == "close"
    assert headers["date"].endswith("GMT")
    assert headers["content-length"] == "13"


def test_default_callable_and_factory_specs(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic")
    assert get(srv.port)[2] == b"Hello, world!"
    srv2 = start_server("-b", "127.0.0.1:0", "basic:create_app()")
    assert get(srv2.port)[2] == b"factory"
    srv3 = start_server("-b", "127.0.0.1:0", "basic:create_app('hi there')")
    assert get(srv3.port)[2] == b"hi there"


def test_environ_is_pep3333(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    status, _, body = get(srv.port, "/environ?x=1&y=%20", headers="X-Custom: one\r\nX-Custom: two\r\nContent-Type: text/plain\r\n")
    assert status == 200
    env = json.loads(body)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["RAW_URI"] == "/environ?x=1&y=%20"
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["HTTP_HOST"] == "127.0.0.1"
    assert env["HTTP_X_CUSTOM"] == "one,two"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.version"] == [1, 0]
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.errors.has_write"] is True
    assert env["SERVER_SOFTWARE"].startswith("ferricorn/")


def test_percent_decoded_path_info(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    _, _, body = get(srv.port, "/%65nviron")
    assert json.loads(body)["PATH_INFO"] == "/environ"


def test_content_length_body(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    payload = b"x" * 100_000
    status, headers, body = get(srv.port, "/echo", method="POST", headers="Content-Length: %d\r\n" % len(payload), body=payload)
    assert status == 200
    assert body == payload


def test_chunked_body(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    chunked = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    status, _, body = get(srv.port, "/echo", method="POST", headers="Transfer-Encoding: chunked\r\n", body=chunked)
    assert status == 200
    assert body == b"hello world"


def test_readline_readlines_and_iteration(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    data = b"one\ntwo\nthree"
    _, _, body = get(srv.port, "/lines", method="POST", headers="Content-Length: %d\r\n" % len(data), body=data)
    assert json.loads(body) == {"first": "one\n", "rest": ["two\n", "three"]}
    _, _, body = get(srv.port, "/iter-input", method="POST", headers="Content-Length: %d\r\n" % len(data), body=data)
    assert json.loads(body) == ["one\n", "two\n", "three"]


def test_streaming_response_framing(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    # HTTP/1.1 without a length: chunked (as gunicorn), so truncation is detectable.
    status, headers, body = get(srv.port, "/stream")
    assert status == 200
    assert "content-length" not in headers
    assert headers["transfer-encoding"] == "chunked"
    assert body == b"".join(b"chunk%d\n" % i for i in range(5))
    # HTTP/1.0: delimited by closing the connection.
    status, headers, body = get(srv.port, "/stream", version="HTTP/1.0")
    assert "transfer-encoding" not in headers
    assert body == b"".join(b"chunk%d\n" % i for i in range(5))


def test_legacy_write_callable(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert get(srv.port, "/write")[2] == b"written and returned"


def test_head_and_204_have_no_body(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    status, headers, body = get(srv.port, "/", method="HEAD")
    assert status == 200 and body == b""
    assert headers["content-length"] == "13"
    status, _, body = get(srv.port, "/no-content")
    assert status == 204 and body == b""


def test_http10_request(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    raw = raw_request(srv.port, b"GET / HTTP/1.0\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.endswith(b"Hello, world!")


def test_close_is_called(start_server, tmp_path):
    marker = tmp_path / "closed.txt"
    srv = start_server("-b", "127.0.0.1:0", "basic:app", env={"FERRICORN_TEST_CLOSE_MARKER": str(marker)})
    assert get(srv.port, "/close")[2] == b"ab"
    status, _, _ = get(srv.port, "/close-fail")
    assert status == 500
    assert marker.read_text() == "closed\nclosed\n"


def test_app_exception_gives_500_and_traceback_and_worker_survives(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    worker_pid = get(srv.port, "/pid")[2]
    status, headers, _ = get(srv.port, "/error")
    assert status == 500
    assert headers["connection"] == "close"
    srv.wait_for(r"\[ERROR\] Error handling request GET /error")
    srv.wait_for(r"ValueError: deliberate failure")
    assert "Traceback (most recent call last)" in srv.log()
    # Same worker still serving.
    assert get(srv.port, "/pid")[2] == worker_pid
    assert get(srv.port)[0] == 200


def test_exc_info_replaces_unsent_headers(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    status, _, body = get(srv.port, "/exc-info")
    assert status == 503
    assert body == b"replaced"


def test_bad_app_header_is_500_never_written(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    raw = raw_request(srv.port, b"GET /bad-header HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, _ = parse_response(raw)
    assert status == 500
    assert b"Injected" not in raw


def test_malformed_request_gets_400_and_close(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    for bad in (b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", b"GET / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello"):
        raw = raw_request(srv.port, bad)
        status, headers, _ = parse_response(raw)
        assert status == 400, (bad, raw)
        assert headers["connection"] == "close"
    srv.wait_for(r"\[WARNING\] Invalid request from ip=127.0.0.1")
    assert get(srv.port)[0] == 200


def test_client_disconnect_before_request_is_harmless(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    with socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"GET / HT")
    assert get(srv.port)[0] == 200


def test_wsgi_errors_goes_to_error_log(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert get(srv.port, "/errors-stream")[0] == 200
    srv.wait_for(r"^message to wsgi.errors$")


def test_file_wrapper(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    _, _, body = get(srv.port, "/file")
    assert body.startswith(b'"""A plain WSGI app')


def test_access_log_default_format(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--access-logfile", "-", "basic:app")
    get(srv.port, "/?q=1", headers="User-Agent: test-agent\r\nReferer: http://ref/\r\n")
    m = srv.wait_for(r'^127\.0\.0\.1 - - \[\d{2}/\w{3}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}\] "GET /\?q=1 HTTP/1\.1" 200 13 "http://ref/" "test-agent"$')
    assert m


def test_unix_socket(start_server, tmp_path):
    path = tmp_path / "ferricorn.sock"
    srv = start_server("-b", "unix:%s" % path, "basic:app")
    assert srv.url == "unix:%s" % path
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(path))
        s.sendall(b"GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert parse_response(data)[2] == b"Hello, world!"
    srv.signal(15)
    assert srv.wait_exit() == 0
    assert not path.exists()
