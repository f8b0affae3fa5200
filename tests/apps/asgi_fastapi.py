"""A FastAPI app (tests/test_asgi_frameworks.py): validation and 422s,
StreamingResponse, BackgroundTasks, UploadFile, WebSocket routes,
request.is_disconnected(), a lifespan that hands state to requests.
One worker: the module-level records below are that worker's."""

import asyncio
import hashlib
import threading
import time
from contextlib import asynccontextmanager
from typing import Optional

from fastapi import (
    BackgroundTasks,
    Depends,
    FastAPI,
    File,
    Form,
    HTTPException,
    Query,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

RECORD = {
    "tasks": [],
    "waiting": 0,
    "disconnected": 0,
    "stream_closed": 0,
    "deps_closed": 0,
    "lifespan": [],
    "ws_disconnect": None,
}


@asynccontextmanager
async def lifespan(app):
    RECORD["lifespan"].append("startup")
    yield {"db": "fake-db-handle", "started_at": time.time()}
    RECORD["lifespan"].append("shutdown")


app = FastAPI(lifespan=lifespan)


class Item(BaseModel):
    name: str = Field(min_length=1)
    price: float = Field(gt=0)
    tags: list[str] = []


async def db_session():
    try:
        yield "session"
    finally:
        RECORD["deps_closed"] += 1


@app.get("/items/{item_id}")
async def read_item(
    item_id: int,
    request: Request,
    q: Optional[str] = None,
    limit: int = Query(10, ge=1, le=100),
    session: str = Depends(db_session),
):
    if item_id == 404:
        raise HTTPException(status_code=404, detail="no such item")
    return {"item_id": item_id, "q": q, "limit": limit, "session": session, "db": request.state.db}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"created": item.model_dump(), "total": item.price * max(1, len(item.tags))}


@app.get("/sync")
def sync_endpoint():
    # A plain def runs in anyio's thread pool: the loop stays free.
    return {"thread": threading.current_thread().name != "MainThread"}


@app.get("/stream")
async def stream(n: int = 5, delay: float = 0.0):
    async def gen():
        try:
            for i in range(n):
                if delay:
                    await asyncio.sleep(delay)
                yield ("line %d\n" % i).encode()
        finally:
            RECORD["stream_closed"] += 1

    return StreamingResponse(gen(), media_type="text/plain")


@app.get("/stream-sync")
def stream_sync(n: int = 3):
    def gen():
        for i in range(n):
            yield "sync %d\n" % i

    return StreamingResponse(gen(), media_type="text/plain")


@app.post("/tasks/{name}", status_code=202)
async def add_task(name: str, background: BackgroundTasks):
    async def async_job(tag):
        await asyncio.sleep(0.05)
        RECORD["tasks"].append(tag)

    def sync_job(tag):
        RECORD["tasks"].append(tag)

    background.add_task(async_job, name + ":async")
    background.add_task(sync_job, name + ":sync")
    return {"queued": name}


@app.get("/record")
async def record():
    return RECORD


@app.post("/upload")
async def upload(note: str = Form(...), files: list[UploadFile] = File(...)):
    out = []
    for f in files:
        h = hashlib.sha256()
        size = 0
        while chunk := await f.read(256 * 1024):
            h.update(chunk)
            size += len(chunk)
        out.append({"filename": f.filename, "content_type": f.content_type, "size": size, "sha256": h.hexdigest()})
    return {"note": note, "files": out}


@app.get("/wait-disconnect")
async def wait_disconnect(request: Request):
    RECORD["waiting"] += 1
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if await request.is_disconnected():
            RECORD["disconnected"] += 1
            return PlainTextResponse("gone")
        await asyncio.sleep(0.02)
    return PlainTextResponse("still here", status_code=408)


@app.websocket("/ws/{room}")
async def ws_room(websocket: WebSocket, room: str, token: Optional[str] = None):
    if token != "secret":
        await websocket.close(code=4403, reason="bad token")
        return
    await websocket.accept()
    await websocket.send_json({"room": room, "hello": True})
    try:
        while True:
            msg = await websocket.receive_json()
            if msg.get("op") == "bye":
                await websocket.close(code=4000, reason="bye")
                return
            await websocket.send_json({"room": room, "echo": msg})
    except WebSocketDisconnect as e:
        RECORD["ws_disconnect"] = e.code


@app.websocket("/ws-bytes")
async def ws_bytes(websocket: WebSocket):
    await websocket.accept()
    async for data in websocket.iter_bytes():
        await websocket.send_bytes(hashlib.sha256(data).digest())
