"""A Starlette app (tests/test_asgi_frameworks.py): StaticFiles from
$ASGI_STATIC_DIR, a BaseHTTPMiddleware, server-sent events, forms."""

import asyncio
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

COUNT = {"requests": 0}
# Server-sent events: the stream waits here between its first and later events.
RELEASE = {"event": None}


class Counting(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        COUNT["requests"] += 1
        response = await call_next(request)
        response.headers["x-middleware"] = "counting"
        response.headers["x-count"] = str(COUNT["requests"])
        return response


async def homepage(request):
    return PlainTextResponse("hello from starlette")


async def form(request):
    data = await request.form()
    return JSONResponse({k: v for k, v in data.items()})


async def streamed(request):
    async def gen():
        for i in range(4):
            yield b"part %d;" % i
            await asyncio.sleep(0)

    return StreamingResponse(gen(), media_type="text/plain")


async def events(request):
    RELEASE["event"] = asyncio.Event()

    async def gen():
        yield "event: greeting\ndata: first\n\n"
        await asyncio.wait_for(RELEASE["event"].wait(), 20)
        for i in range(2, 4):
            yield "id: %d\ndata: event %d\n\n" % (i, i)

    return StreamingResponse(gen(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


async def release(request):
    if RELEASE["event"] is None:
        return PlainTextResponse("no stream", status_code=409)
    RELEASE["event"].set()
    return PlainTextResponse("released")


app = Starlette(
    routes=[
        Route("/", homepage),
        Route("/form", form, methods=["POST"]),
        Route("/streamed", streamed),
        Route("/events", events),
        Route("/release", release, methods=["POST"]),
        Mount("/static", StaticFiles(directory=os.environ.get("ASGI_STATIC_DIR", os.path.dirname(__file__))),
              name="static"),
    ],
    middleware=[Middleware(Counting)],
)
