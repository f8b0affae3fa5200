"""A raw ASGI app for tests/test_asgi_worker.py: one behaviour per path.
Lifespan behaviour from $LIFESPAN: ok (default), failed, raise, unsupported."""

import asyncio
import json
import os
import sys
import time


def say(*args):
    print("APP:", *args, flush=True)


async def lifespan(scope, receive, send):
    mode = os.environ.get("LIFESPAN", "ok")
    if mode == "unsupported":
        raise ValueError("only http here")
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if mode == "failed":
                await send({"type": "lifespan.startup.failed", "message": "no database today"})
                return
            if mode == "raise":
                raise RuntimeError("startup exploded")
            scope["state"]["greeting"] = "hello from lifespan"
            say("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await asyncio.sleep(float(os.environ.get("SHUTDOWN_TAKES", "0")))
            say("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def read_body(receive):
    body = b""
    while True:
        message = await receive()
        assert message["type"] == "http.request", message
        body += message.get("body", b"")
        if not message.get("more_body", False):
            return body


async def respond(send, status=200, body=b"", headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def websocket(scope, receive, send):
    assert (await receive())["type"] == "websocket.connect"
    path = scope["path"]
    if path == "/ws-reject":
        return await send({"type": "websocket.close"})
    if path == "/ws-deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-length", b"6")]})
        return await send({"type": "websocket.http.response.body", "body": b"denied"})
    protocols = scope["subprotocols"]
    await send({"type": "websocket.accept", "subprotocol": protocols[0] if protocols else None,
                "headers": [(b"x-scope-scheme", scope["scheme"].encode())]})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            say("ws disconnect", message["code"], message.get("reason", ""))
            return None
        text = message.get("text")
        if text == "close":
            return await send({"type": "websocket.close", "code": 4000, "reason": "bye"})
        if text == "raise":
            raise RuntimeError("ws app failed")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        return await websocket(scope, receive, send)
    path = scope["path"]
    if path == "/":
        return await respond(send, body=b"hello")
    if path == "/pid":
        return await respond(send, body=str(os.getpid()).encode())
    if path == "/echo":
        body = await read_body(receive)
        return await respond(send, body=body, headers=[(b"content-length", str(len(body)).encode())])
    if path == "/scope":
        shown = {k: v for k, v in scope.items() if k not in ("headers", "state")}
        shown["headers"] = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        shown["state"] = dict(scope.get("state", {}))
        shown = {k: (v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in shown.items()}
        shown["task"] = asyncio.current_task() is not None
        return await respond(send, body=json.dumps(shown).encode())
    if path == "/task":
        # What asyncio and anyio see of the request's task and its coroutine.
        import inspect

        task = asyncio.current_task()
        coro = task.get_coro()
        facts = {
            "name": task.get_name(),
            "state": inspect.getcoroutinestate(coro),
            "iscoroutine": asyncio.iscoroutine(coro),
            "qualname": coro.__qualname__,
            "repr": repr(task),
            "running": coro.cr_running,
            "frame": coro.cr_frame is not None,
        }
        return await respond(send, body=json.dumps(facts).encode())
    if path == "/raise-before":
        raise RuntimeError("failed before the response")
    if path == "/raise-after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("failed during the response")
    if path == "/no-response":
        return None
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"chunk%d\n" % i, "more_body": True})
            await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
        return None
    if path == "/big":
        n = int(scope["query_string"] or b"128")
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(n * 65536).encode())]})
        chunk = b"x" * 65536
        for i in range(n):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < n - 1})
        say("big sent")
        return None
    if path == "/disconnect":
        await read_body(receive)
        message = await receive()
        say("got", message["type"])
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError as e:
            say("send raised", type(e).__name__)
        return None
    if path == "/slow":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        return await respond(send, body=b"slow done")
    if path == "/background":
        # A complete response, then work the call goes on with (Starlette's
        # background tasks), then a receive and a send after it.
        await respond(send, body=b"answered")
        say("background started")
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        message = await receive()
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as e:
            say("late send raised", type(e).__name__)
        say("background done", message["type"])
        return None
    if path == "/block":
        time.sleep(60)
        return await respond(send, body=b"unblocked")
    if path == "/bad-header":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x-bad", b"a\r\nb")]})
        return None
    return await respond(send, status=404, body=b"not found")


def wsgi_app(environ, start_response):
    start_response("200 OK", [])
    return [b"wsgi"]


print("asgi_worker loaded in", os.getpid(), file=sys.stderr, flush=True)
