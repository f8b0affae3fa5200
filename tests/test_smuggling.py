"""Request-smuggling probes against the running server: every ambiguous framing
is refused with a 4xx/5xx, the connection is closed, and nothing sent after it
on that connection is ever processed."""

import pytest

from conftest import classes, raw_request, worker_args

SMUGGLED = b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"

PROBES = {
    "cl-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
    "te-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n",
    "te-te-space-before-colon": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "te-obfuscated-value": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-chunked-twice": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te-not-last": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "te-control-byte": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    "te-non-ascii": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\xff\r\n\r\n0\r\n\r\n",
    "te-http10": b"POST /echo HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "cl-duplicate-different": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list-different": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "cl-signed": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl-negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "cl-hex": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
    "cl-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    "chunk-size-signed": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    "chunk-missing-crlf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
    "bare-lf-headers": b"POST /echo HTTP/1.1\nHost: x\nContent-Length: 3\n\nabc",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}


@pytest.fixture(params=classes())
def server(request, start_server):
    return start_server("-b", "127.0.0.1:0", *worker_args(request.param, threads=1), "basic:app")


@pytest.mark.parametrize("name", sorted(PROBES))
def test_probe_is_refused_and_nothing_follows(server, name):
    raw = raw_request(server.port, PROBES[name] + SMUGGLED)
    assert raw.startswith(b"HTTP/1.1 "), raw
    status = int(raw.split(b" ", 2)[1])
    assert status in (400, 501), (name, raw[:200])
    assert b"connection: close" in raw.lower()
    # Exactly one response: the request after the probe was never served.
    assert raw.count(b"HTTP/1.1 ") == 1, (name, raw)
