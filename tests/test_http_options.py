"""Parser options and proxy trust, set from settings, seen over real sockets."""

import json

from conftest import get, parse_response, raw_request


def environ_of(port, headers=""):
    status, _, body = get(port, "/environ", headers=headers)
    assert status == 200
    return json.loads(body)


def test_scheme_from_trusted_proxy_only(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert environ_of(srv.port, "X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "https"
    # Not a trusted peer: the header is not believed.
    srv2 = start_server("-b", "127.0.0.1:0", "--forwarded-allow-ips", "10.0.0.0/8", "basic:app")
    assert environ_of(srv2.port, "X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "http"


def test_contradictory_scheme_headers_are_400(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    raw = raw_request(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n")
    assert parse_response(raw)[0] == 400
    srv.wait_for(r"Contradictory scheme headers")


def test_custom_secure_scheme_headers_from_config_file(start_server, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("secure_scheme_headers = {'X-SCHEME': 'secure'}\n")
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert environ_of(srv.port, "X-Scheme: secure\r\n")["wsgi.url_scheme"] == "https"
    assert environ_of(srv.port, "X-Forwarded-Proto: https\r\n")["wsgi.url_scheme"] == "http"


def test_header_map_refuse_and_dangerous(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert "HTTP_X_UNDER_SCORE" not in environ_of(srv.port, "X-Under_Score: 1\r\n")
    srv2 = start_server("-b", "127.0.0.1:0", "--header-map", "refuse", "basic:app")
    raw = raw_request(srv2.port, b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Under_Score: 1\r\n\r\n")
    assert parse_response(raw)[0] == 400
    srv3 = start_server("-b", "127.0.0.1:0", "--header-map", "dangerous", "basic:app")
    assert environ_of(srv3.port, "X-Under_Score: 1\r\n")["HTTP_X_UNDER_SCORE"] == "1"


def test_obsolete_folding_only_when_permitted(start_server):
    folded = b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Long: a\r\n b\r\n\r\n"
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert parse_response(raw_request(srv.port, folded))[0] == 400
    srv2 = start_server("-b", "127.0.0.1:0", "--permit-obsolete-folding", "basic:app")
    status, _, body = parse_response(raw_request(srv2.port, folded))
    assert status == 200
    assert json.loads(body)["HTTP_X_LONG"] == "a b"


def test_lowercase_method_needs_permit(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert parse_response(raw_request(srv.port, b"get / HTTP/1.1\r\nHost: x\r\n\r\n"))[0] == 400
    srv2 = start_server(
        "-b", "127.0.0.1:0", "--permit-unconventional-http-method", "--casefold-http-method", "basic:app"
    )
    raw = raw_request(srv2.port, b"get /environ HTTP/1.1\r\nHost: x\r\n\r\n")
    status, _, body = parse_response(raw)
    assert status == 200
    assert json.loads(body)["REQUEST_METHOD"] == "GET"


def test_script_name_header_only_from_trusted_peer(start_server):
    hdr = "SCRIPT_NAME: /mount\r\n"
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    status, _, body = get(srv.port, "/mount/environ", headers=hdr)
    env = json.loads(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mount", "/environ")
    srv2 = start_server("-b", "127.0.0.1:0", "--forwarded-allow-ips", "10.0.0.1", "basic:app")
    env = environ_of(srv2.port, hdr)
    assert env["SCRIPT_NAME"] == ""
    assert "HTTP_SCRIPT_NAME" not in env


def test_slow_header_gets_408_and_worker_stays_available(start_server):
    import socket

    from wsgi_helpers import slow_head_gets_408

    srv = start_server("-b", "127.0.0.1:0", "--header-timeout", "1", "basic:app")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        slow_head_gets_408(s)
    # A client that sends nothing is closed silently, and the one worker is free again.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        assert s.recv(65536) == b""
    assert get(srv.port)[0] == 200
