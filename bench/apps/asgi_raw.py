"""Raw ASGI apps (no framework), so the server's own cost is what is measured.

- `hello`: 13-byte `Hello, world!` with Content-Length.
- `echo`: reads the whole request body and sends it back (wrk POSTs 64 KiB).
- `ws`: WebSocket echo, every text or binary message straight back; plain
  HTTP gets a short body (the harness's readiness probe). Driven by
  bench/wsload (bench/run.py, app `ws`) and by bench/autobahn.py.

Each supports the lifespan protocol, so no server logs a lifespan failure.
"""

HELLO = b"Hello, world!"
HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
HELLO_BODY = {"type": "http.response.body", "body": HELLO}
WS_HTTP_BODY = b"websocket echo"


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def hello(scope, receive, send):
    if scope["type"] == "http":
        await send(HELLO_START)
        await send(HELLO_BODY)
    elif scope["type"] == "lifespan":
        await lifespan(receive, send)


async def echo(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return  # http.disconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/octet-stream"),
                    (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})


async def ws(scope, receive, send):
    kind = scope["type"]
    if kind == "websocket":
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            text = message.get("text")
            if text is not None:
                await send({"type": "websocket.send", "text": text})
            else:
                await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})
    elif kind == "http":
        await send({
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"),
                        (b"content-length", str(len(WS_HTTP_BODY)).encode())],
        })
        await send({"type": "http.response.body", "body": WS_HTTP_BODY})
    elif kind == "lifespan":
        await lifespan(receive, send)
