"""ASGI apps whose lifespan goes wrong in the ways lifespan.rst names.

- `failed`: sends lifespan.startup.failed with a message: the server must
  not serve; gunicorn 27 halts with exit 3 and logs the message.
- `raising`: raises during startup. With --asgi-lifespan auto the server
  takes it as "no lifespan support" and serves; with `on` it halts (exit 3).
- `unsupported`: raises as soon as it sees a lifespan scope, as an app
  written before the lifespan protocol does: served under auto.
- `ordered`: logs (to $ASGI_LIFESPAN_LOG) startup, each request's start and
  end, and shutdown, so a test sees that shutdown ran after the drain.
"""

import asyncio
import os


def _log(line):
    path = os.environ.get("ASGI_LIFESPAN_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


async def _hello(scope, receive, send, body=b"served"):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


async def failed(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable: db.example:5432"})
        return
    await _hello(scope, receive, send)


async def raising(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("startup exploded")
    await _hello(scope, receive, send)


async def unsupported(scope, receive, send):
    if scope["type"] != "http":
        raise ValueError("unsupported scope type %r" % scope["type"])
    await _hello(scope, receive, send, b"no lifespan here")


async def ordered(scope, receive, send):
    """Logs startup, each request's start and end, and shutdown."""
    if scope["type"] == "lifespan":
        msg = await receive()
        _log("startup " + msg["type"])
        await send({"type": "lifespan.startup.complete"})
        msg = await receive()
        _log("shutdown " + msg["type"])
        await send({"type": "lifespan.shutdown.complete"})
        return
    _log("request start " + scope["path"])
    if scope["path"] == "/slow":
        await asyncio.sleep(1.0)
    await _hello(scope, receive, send)
    _log("request end " + scope["path"])
