"""permessage-deflate (RFC 7692) on the `asgi` worker's WebSockets.

The `websockets` client offers the extension by default, as browsers do;
ferricorn agrees to it unless `--websocket-per-message-deflate false`. The
app (tests/apps/asgi_spec.py's /ws/echo) sees plain text and bytes either way.
A raw socket checks the wire: RSV1 and compressed payloads both ways, the
message size limit applied to the inflated size (a decompression bomb is
closed with 1009), RSV1 without the extension (1002).

ferricorn only: gunicorn 27's `-k asgi` negotiates no extension.
"""

import random
import zlib

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate

from asgi_helpers import (
    serve_asgi,
    uvicorn_worker_subclass,
    ws_connect,
    ws_frame,
    ws_handshake,
    ws_read_close_code,
    ws_read_frame,
)

TAIL = b"\x00\x00\xff\xff"


@pytest.fixture
def start(request, tmp_path):
    def start(*args):
        return serve_asgi(request, "ferricorn", *args, "asgi_spec:app", cwd=tmp_path)

    return start


def compressible(n, seed=1):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", '{"id": 42}', "ferricorn", "ünïcode"]
    out = []
    size = 0
    while size < n:
        w = rng.choice(words) + " "
        out.append(w)
        size += len(w)
    return "".join(out)


def test_websockets_client_agrees_deflate_and_large_messages_echo(start):
    srv = start()
    with ws_connect(srv, "/ws/echo", max_size=None) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert any(isinstance(e, PerMessageDeflate) for e in ws.protocol.extensions)
        for n in (10, 127, 128, 5000, 300_000, 2_000_000):
            text = compressible(n, seed=n)
            ws.send(text)
            assert ws.recv(timeout=20) == text
            data = text.encode()
            ws.send(data)
            assert ws.recv(timeout=20) == data
        # Fragmented on the client side: one compressed message in parts.
        parts = [compressible(40_000, seed=s) for s in range(3)]
        ws.send(parts)
        assert ws.recv(timeout=20) == "".join(parts)
        noise = random.Random(5).randbytes(100_000)
        ws.send(noise)
        assert ws.recv(timeout=20) == noise


def test_deflate_off_answers_no_extension(start):
    srv = start("--websocket-per-message-deflate", "false")
    with ws_connect(srv, "/ws/echo") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        assert ws.protocol.extensions == []
        text = compressible(50_000)
        ws.send(text)
        assert ws.recv(timeout=20) == text


def handshake(port, extensions):
    """A raw WebSocket offering `extensions`: (socket, bytes read, 101 headers)."""
    headers = {}
    s, rest = ws_handshake(port, extensions=extensions, response_headers=headers)
    return s, rest, headers


def deflate(data, compressor=None):
    c = compressor or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


def test_the_wire_carries_compressed_frames_both_ways(start):
    srv = start()
    s, buf, headers = handshake(
        srv.port, "permessage-deflate; server_max_window_bits=10; client_no_context_takeover")
    try:
        assert headers["sec-websocket-extensions"] == \
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=10"
        inflater = zlib.decompressobj(-10)  # the window the server agreed to
        text = compressible(100_000).encode()
        for _ in range(2):
            s.sendall(ws_frame(0x40 | 0x1, deflate(text)))
            first, payload, buf = ws_read_frame(s, buf)
            assert first == 0x80 | 0x40 | 0x1, hex(first)  # FIN, RSV1, text
            assert len(payload) < len(text) // 2
            assert inflater.decompress(payload + TAIL) == text
        # A small message goes back uncompressed.
        s.sendall(ws_frame(0x40 | 0x1, deflate(b"hi there")))
        first, payload, buf = ws_read_frame(s, buf)
        assert (first, payload) == (0x81, b"hi there")
    finally:
        s.close()


def test_a_decompression_bomb_closes_1009_within_the_limit(start):
    srv = start("--websocket-max-message-size", "1048576")
    s, buf, _ = handshake(srv.port, "permessage-deflate")
    try:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        bomb = c.compress(bytes(64 << 20)) + c.flush(zlib.Z_SYNC_FLUSH)
        assert len(bomb) < 128 * 1024
        s.sendall(ws_frame(0x40 | 0x2, bomb[:-4]))
        assert ws_read_close_code(s, buf) == 1009
    finally:
        s.close()


def test_rsv1_without_the_extension_is_1002(start):
    srv = start()
    s, buf, headers = handshake(srv.port, None)
    try:
        assert "sec-websocket-extensions" not in headers
        s.sendall(ws_frame(0x40 | 0x1, deflate(b"hello")))
        assert ws_read_close_code(s, buf) == 1002
    finally:
        s.close()


def test_a_uvicorn_worker_subclass_can_turn_it_off(start_server, tmp_path):
    # uvicorn's CONFIG_KWARGS keyword maps to websocket_per_message_deflate.
    worker = uvicorn_worker_subclass(tmp_path, "plain_workers", "PlainWorker", {"ws_per_message_deflate": False})
    srv = start_server("-k", worker, "-b", "127.0.0.1:0", "asgi_spec:app")
    srv.wait_for(r"CONFIG_KWARGS set websocket_per_message_deflate=False")
    with ws_connect(srv, "/ws/echo") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
