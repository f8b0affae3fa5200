"""PROXY protocol v1/v2 in front of the server, under both workers."""

import json
import socket
import struct

import pytest

from conftest import classes, parse_response, raw_request, worker_args

REQ = b"GET /environ HTTP/1.1\r\nHost: x\r\n\r\n"


def v2_header(src, sport, dst, dport):
    addrs = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + struct.pack("!H", len(addrs)) + addrs


@pytest.fixture(params=classes())
def worker(request):
    return request.param


def environ(port, data):
    status, _, body = parse_response(raw_request(port, data))
    assert status == 200, body
    return json.loads(body)


def test_v1_and_v2_name_the_client(start_server, worker):
    srv = start_server("--proxy-protocol", "-b", "127.0.0.1:0", *worker_args(worker, threads=1), "basic:app")
    env = environ(srv.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n" + REQ)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "51234")
    assert (env["PROXY_PROTOCOL"], env["PROXY_ADDR"], env["PROXY_PORT"]) == ("TCP4", "10.0.0.1", "443")
    env = environ(srv.port, v2_header("198.51.100.2", 4000, "10.0.0.2", 8443) + REQ)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["PROXY_PORT"]) == ("198.51.100.2", "4000", "8443")
    # Without a header the connection is plain HTTP, as gunicorn serves it.
    env = environ(srv.port, REQ)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and "PROXY_ADDR" not in env


def test_untrusted_proxy_is_403_and_bad_header_400(start_server, worker):
    srv = start_server("-b", "127.0.0.1:0", *worker_args(worker, threads=1), "--proxy-protocol", "v1", "--proxy-allow-from", "10.9.9.9", "basic:app")
    raw = raw_request(srv.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n" + REQ)
    assert parse_response(raw)[0] == 403
    srv2 = start_server("-b", "127.0.0.1:0", *worker_args(worker, threads=1), "--proxy-protocol", "v1", "basic:app")
    raw = raw_request(srv2.port, b"PROXY TCP4 not-an-ip 10.0.0.1 1 2\r\n" + REQ)
    assert parse_response(raw)[0] == 400


def test_proxy_header_off_by_default(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    raw = raw_request(srv.port, b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\n" + REQ)
    assert parse_response(raw)[0] == 400
