"""TLS under the asgi worker: test_tls.py's checks with tls_asgi_app (the
handshake before the first read, bounded by the header timeout; the scope's
https/wss scheme and its TLS extension; mTLS; wss:// WebSockets)."""

import asyncio
import hashlib
import http.client
import json
import socket
import ssl

import pytest
import websockets
from test_tls import bodies, client_ctx, conn, fetch, pki, read_all, tls_args  # noqa: F401 (pki: a fixture)

# test_tls.py's checks that need only `/`, run here against this module's asgi `srv`.
from test_tls import (  # noqa: F401,E402
    test_plain_http_to_the_tls_port,
    test_session_resumption,
    test_silent_or_truncated_handshake_is_cut_at_the_header_timeout,
)

ASGI = ["-k", "asgi"]


@pytest.fixture(scope="module")
def srv(request, pki):  # noqa: F811
    from conftest import serve

    return serve(request, *ASGI, *tls_args(pki, "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "1",
                                           "--header-timeout", "2", "--keep-alive", "5"), "tls_asgi_app:app")


def test_scheme_and_tls_extension(srv, pki):  # noqa: F811
    assert srv.url.startswith("https://127.0.0.1:"), srv.url
    c = conn(srv, pki)
    scope = json.loads(fetch(c, "GET", "/scope")[2])
    assert scope["scheme"] == "https"
    # The negotiated version and suite, as IANA numbers, agree with the client's view.
    versions = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
    tls13 = {"TLS_AES_128_GCM_SHA256": 0x1301, "TLS_AES_256_GCM_SHA384": 0x1302,
             "TLS_CHACHA20_POLY1305_SHA256": 0x1303}
    assert scope["tls"]["tls_version"] == versions[c.sock.version()] == 0x0304, scope
    assert scope["tls"]["cipher_suite"] == tls13[c.sock.cipher()[0]], (scope, c.sock.cipher())
    assert scope["tls"]["server_cert"] is None
    c.close()
    ctx = client_ctx(pki)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
    tls = json.loads(fetch(c, "GET", "/scope")[2])["tls"]
    assert tls["tls_version"] == 0x0303 and isinstance(tls["cipher_suite"], int) and tls["cipher_suite"] > 0x1303, tls
    c.close()
    assert scope["tls"]["client_cert_chain"] == [] and scope["tls"]["client_cert_name"] is None
    assert scope["tls"]["client_cert_error"] is None
    c = conn(srv, pki, cert="client.pem")
    tls = json.loads(fetch(c, "GET", "/scope")[2])["tls"]
    assert len(tls["client_cert_chain"]) == 1 and tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
    assert "CN=client one" in tls["client_cert_name"], tls
    # A certificate from a CA the server does not trust is refused even when optional.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        fetch(conn(srv, pki, cert="stranger.pem"), "GET", "/")
    srv.wait_for(r"\[WARNING\] Invalid request from ip=127.0.0.1: TLS handshake failed")


def test_keep_alive_and_pipelining(srv, pki):  # noqa: F811
    c = conn(srv, pki)
    for _ in range(3):
        assert fetch(c, "GET", "/")[::2] == (200, b"Hello, world!")
    c.close()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as s:
            s.sendall(b"GET /scope HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_all(s, clean_end=True)
    assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"Hello, world!"), data


def test_chunked_and_large_bodies(srv, pki):  # noqa: F811
    c = conn(srv, pki, timeout=30)
    parts = [bodies.pattern(1000), bodies.pattern(70000), b"end"]
    status, headers, body = fetch(c, "POST", "/echo", body=iter(parts), encode_chunked=True)
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and body == b"".join(parts)
    up = bodies.pattern(5 * 1024 * 1024 + 3)
    body = fetch(c, "POST", "/read-whole", body=up)[2]
    assert json.loads(body) == {"len": len(up), "sha": hashlib.sha256(up).hexdigest()}
    assert fetch(c, "GET", "/gen?40,65536")[2] == bodies.pattern(40 * 65536)
    c.close()


def test_wss_echo(srv, pki):  # noqa: F811
    async def talk():
        async with websockets.connect("wss://127.0.0.1:%d/ws" % srv.port, ssl=client_ctx(pki),
                                      open_timeout=10, close_timeout=5) as ws:
            assert await asyncio.wait_for(ws.recv(), 10) == "wss"
            await ws.send("hello")
            assert await asyncio.wait_for(ws.recv(), 10) == "hello"
            big = bodies.pattern(300000)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), 10) == big

    asyncio.run(talk())
