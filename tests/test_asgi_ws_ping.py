"""The asgi worker's WebSocket keepalive (`websocket_ping_interval`,
`websocket_ping_timeout`; ferricorn settings, off by default as in gunicorn):
pings at the interval, a client that answers stays, one that does not is
closed with 1011 and the app hears websocket.disconnect 1011."""

import re
import socket
import subprocess
import time

from asgi_helpers import ws_frame
from conftest import PYTHON
from test_asgi_worker import ASGI, WsClient

APP_SOURCE = '''
import asyncio


async def app(scope, receive, send):
    if scope["type"] != "websocket":
        return
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    if scope["path"] == "/busy":
        # Not receiving for a while: the client's pongs must still count.
        await send({"type": "websocket.send", "text": "busy"})
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        try:
            await send({"type": "websocket.send", "text": "awake"})
        except OSError:
            print("APP: client gone", flush=True)
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print("APP: ws disconnect", message["code"], message.get("reason", ""), flush=True)
            return
        await send({"type": "websocket.send", "text": message.get("text") or "?"})
'''

INTERVAL, TIMEOUT = 0.3, 0.4
PINGS = ["--websocket-ping-interval", str(INTERVAL), "--websocket-ping-timeout", str(TIMEOUT)]


def serve_ping_app(start_server, tmp_path, *args):
    (tmp_path / "ping_app.py").write_text(APP_SOURCE)
    return start_server(*ASGI, *args, "ping_app:app")


def answer_pings(c, n):
    """Answer `n` pings as they come; return their payloads and arrival times."""
    seen = []
    while len(seen) < n:
        op, payload = c.read_frame()
        assert op == 0x9, (op, payload)
        seen.append((payload, time.monotonic()))
        c.send(ws_frame(0xA, payload))
    return seen


def next_frame_answering_pings(c):
    """The next frame that is not a ping (pings answered on the way)."""
    while True:
        op, payload = c.read_frame()
        if op != 0x9:
            return op, payload
        c.send(ws_frame(0xA, payload))


def close_normally(srv, c):
    c.send(ws_frame(0x8, (1000).to_bytes(2, "big")))
    srv.wait_for(r"APP: ws disconnect 1000")
    c.close()


def test_pings_at_the_interval_and_an_answering_client_stays(start_server, tmp_path):
    srv = serve_ping_app(start_server, tmp_path, *PINGS)
    c = WsClient(srv.port)
    assert c.status == 101
    opened = time.monotonic()
    seen = answer_pings(c, 5)  # about 1.5 s: several intervals and timeouts
    assert [p for p, _ in seen] == [n.to_bytes(4, "big") for n in range(1, 6)]
    times = [opened] + [t for _, t in seen]
    gaps = [b - a for a, b in zip(times, times[1:])]
    # The sweep runs every 0.1 s: each ping comes an interval after the last.
    assert all(INTERVAL - 0.05 <= g <= INTERVAL + 0.7 for g in gaps), gaps
    c.send(ws_frame(0x1, b"still here"))
    assert next_frame_answering_pings(c) == (0x1, b"still here")
    close_normally(srv, c)


def test_a_client_that_never_answers_is_closed_with_1011(start_server, tmp_path):
    srv = serve_ping_app(start_server, tmp_path, *PINGS)
    c = WsClient(srv.port)
    opened = time.monotonic()
    assert c.read_frame() == (0x9, (1).to_bytes(4, "big"))
    op, payload = c.read_frame()
    closed = time.monotonic() - opened
    assert (op, payload) == (0x8, (1011).to_bytes(2, "big") + b"keepalive ping timeout")
    assert INTERVAL + TIMEOUT - 0.05 <= closed <= INTERVAL + TIMEOUT + 1.0, closed
    # The server does not wait for the client's close: the connection ends.
    c.assert_closed()
    srv.wait_for(r"APP: ws disconnect 1011 keepalive ping timeout")
    c.close()


def test_pongs_count_while_the_app_is_not_receiving(start_server, tmp_path):
    srv = serve_ping_app(start_server, tmp_path, *PINGS)
    c = WsClient(srv.port, path="/busy?1.5")
    assert c.read_frame() == (0x1, b"busy")
    # The app sleeps through several ping timeouts.
    assert next_frame_answering_pings(c) == (0x1, b"awake")
    close_normally(srv, c)


def test_a_close_read_while_looking_for_the_pong_reaches_the_app(start_server, tmp_path):
    srv = serve_ping_app(start_server, tmp_path, "--websocket-ping-interval", "0.2",
                         "--websocket-ping-timeout", "5")
    c = WsClient(srv.port, path="/busy?1")
    assert c.read_frame() == (0x1, b"busy")
    assert c.read_frame()[0] == 0x9  # a ping is outstanding
    # Close and go while the app sleeps: the close is decoded ahead (looking
    # for the pong), then the EOF comes; the app still gets the client's code.
    c.send(ws_frame(0x8, (4000).to_bytes(2, "big") + b"bye"))
    c.sock.shutdown(socket.SHUT_WR)
    srv.wait_for(r"APP: ws disconnect 4000 bye")
    c.close()


def test_no_pings_by_default(start_server, tmp_path):
    srv = serve_ping_app(start_server, tmp_path)
    c = WsClient(srv.port)
    c.sock.settimeout(1.5)
    try:
        data = c.sock.recv(100)
    except socket.timeout:
        data = None
    assert data is None, data
    c.sock.settimeout(10)
    c.send(ws_frame(0x1, b"hi"))
    assert c.read_frame() == (0x1, b"hi")
    c.close()


def run_cli(tmp_path, *args):
    return subprocess.run([PYTHON, "-m", "ferricorn", "-k", "asgi", *args, "app:app"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)


def test_settings_from_flags_config_file_and_bad_values(tmp_path):
    (tmp_path / "app.py").write_text(APP_SOURCE)
    out = run_cli(tmp_path, "--print-config", "--websocket-ping-interval", "0.5")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^websocket_ping_interval += 0\.5$", out.stdout, re.M), out.stdout
    # At their defaults these ferricorn-only rows stay out of gunicorn's listing.
    assert "websocket_ping_timeout" not in out.stdout
    (tmp_path / "conf.py").write_text("websocket_ping_interval = 2\nwebsocket_ping_timeout = None\n")
    out = run_cli(tmp_path, "--print-config", "-c", "conf.py")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^websocket_ping_interval += 2\.0$", out.stdout, re.M), out.stdout
    assert re.search(r"^websocket_ping_timeout += None$", out.stdout, re.M), out.stdout
    for flag, value, why in [("--websocket-ping-interval", "-1", "Value must be a positive number"),
                             ("--websocket-ping-timeout", "inf", "Value must be a positive number"),
                             ("--websocket-ping-timeout", "soon", "invalid float value: 'soon'")]:
        out = run_cli(tmp_path, flag, value)
        assert out.returncode != 0
        # One line with the reason (argparse puts its usage line first).
        lines = [line for line in out.stderr.strip().splitlines() if not line.startswith("usage:")]
        assert len(lines) == 1 and why in lines[0], out.stderr
