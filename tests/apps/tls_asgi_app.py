"""tls_app's ASGI twin for the asgi worker under TLS: `/` hello, `/scope`
(scheme and the TLS extension as JSON), `/echo` (the body back, chunked, in
the parts it came in), `/read-whole` (length and sha256 of the body),
`/gen?N,SIZE` (N parts of bodies.pattern), and a WebSocket echo."""

import hashlib
import json

import bodies


async def body_of(receive):
    parts = []
    while True:
        m = await receive()
        parts.append(m.get("body", b""))
        if not m.get("more_body"):
            return parts


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            m = await receive()
            await send({"type": m["type"] + ".complete"})
            if m["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": scope["scheme"]})
        while True:
            m = await receive()
            if m["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "bytes": m.get("bytes"), "text": m.get("text")})
    path = scope["path"]
    if path == "/scope":
        body = json.dumps({"scheme": scope["scheme"], "tls": scope.get("extensions", {}).get("tls")}).encode()
        return await respond(send, [body])
    if path == "/echo":
        return await respond(send, [p for p in await body_of(receive) if p], chunked=True)
    if path == "/read-whole":
        data = b"".join(await body_of(receive))
        return await respond(send, [json.dumps({"len": len(data), "sha": hashlib.sha256(data).hexdigest()}).encode()])
    if path == "/gen":
        n, size = (int(x) for x in scope["query_string"].split(b","))
        return await respond(send, [bodies.pattern(n * size)[i * size:(i + 1) * size] for i in range(n)], chunked=True)
    return await respond(send, [b"Hello, world!"])


async def respond(send, parts, chunked=False):
    headers = [(b"content-type", b"application/octet-stream")]
    if not chunked:
        headers.append((b"content-length", str(sum(map(len, parts))).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for p in parts:
        await send({"type": "http.response.body", "body": p, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
