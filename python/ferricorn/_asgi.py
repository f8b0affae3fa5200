"""The asgi worker's Python side: its event loop and the lifespan protocol.

Everything on the request path (accepting, parsing, the scope, receive and
send, writing) is Rust (``workers/asgi.rs``, ``asgi/``); what is here runs
once per worker.

gunicorn counterpart: ``workers/gasgi.py`` (``_setup_event_loop``) and
``asgi/lifespan.py`` (``LifespanManager``), whose behaviour this follows:
``auto`` serves an app that does not speak lifespan, ``lifespan.startup.failed``
(or any failure with ``on``) stops the server.
"""

import asyncio

# How long startup and shutdown may take (gunicorn 27: 30 s each).
LIFESPAN_TIMEOUT = 30.0


def new_loop(kind):
    """A fresh event loop for this worker (after fork), and its name:
    ``auto`` is uvloop when installed, else asyncio's own."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError("asgi_loop is uvloop but uvloop is not installed") from None
        else:
            loop = uvloop.new_event_loop()
            asyncio.set_event_loop(loop)
            return loop, "uvloop"
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop, "asyncio"


def task_starter(loop):
    """How a request's task starts: eagerly on Python 3.12+ (its first step
    runs at once, so a request that never waits needs no trip through the
    loop's queue), else ``loop.create_task``."""
    factory = getattr(asyncio, "eager_task_factory", None)
    if factory is None:
        return loop.create_task

    def start(coro, name=None):
        return factory(loop, coro, name=name)

    return start


class StartupFailed(Exception):
    """Lifespan startup did not complete: the worker cannot serve."""


class Lifespan:
    """One run of the app's lifespan scope, for the life of the worker."""

    def __init__(self, app, state):
        self.app = app
        self.state = state
        self.queue = asyncio.Queue()
        self.started = asyncio.Event()
        self.stopped = asyncio.Event()
        self.reported = None  # "startup.failed" / "shutdown.failed" message
        self.failed = False
        self.error = None
        self.finished = False
        self.task = None

    async def _run(self):
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "state": self.state,
        }
        try:
            await self.app(scope, self.queue.get, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # noqa: BLE001 - the app's own failure, reported
            self.error = e
            if not self.started.is_set():
                self.failed = True
        finally:
            self.finished = True
            if not self.started.is_set():
                self.failed = True
                self.started.set()
            self.stopped.set()

    async def _send(self, message):
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.started.set()
        elif kind == "lifespan.startup.failed":
            self.failed = True
            self.reported = message.get("message", "") or "lifespan.startup.failed"
            self.started.set()
        elif kind == "lifespan.shutdown.complete":
            self.stopped.set()
        elif kind == "lifespan.shutdown.failed":
            self.reported = message.get("message", "") or "lifespan.shutdown.failed"
            self.stopped.set()

    async def startup(self, mode):
        """Run startup. Returns a debug line when an ``auto`` app does not
        speak lifespan (served anyway); raises StartupFailed when the
        worker must not serve."""
        await self.queue.put({"type": "lifespan.startup"})
        self.task = asyncio.ensure_future(self._run())
        try:
            await asyncio.wait_for(self.started.wait(), LIFESPAN_TIMEOUT)
        except asyncio.TimeoutError:
            self.task.cancel()
            raise StartupFailed("ASGI lifespan startup did not complete in %d s" % LIFESPAN_TIMEOUT) from None
        if not self.failed:
            return None
        if self.reported is not None:
            raise StartupFailed("ASGI lifespan startup failed: %s" % self.reported)
        why = "the app raised %r" % self.error if self.error is not None else "the app returned before startup completed"
        if mode == "on":
            raise StartupFailed("ASGI lifespan startup failed (asgi_lifespan is on): %s" % why)
        self.finished = True
        return "ASGI lifespan not supported by the app (%s); serving without it" % why

    async def shutdown(self):
        """Run shutdown; returns an error line or None."""
        if self.finished:
            return None
        await self.queue.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self.stopped.wait(), LIFESPAN_TIMEOUT)
        except asyncio.TimeoutError:
            self.task.cancel()
            return "ASGI lifespan shutdown did not complete in %d s" % LIFESPAN_TIMEOUT
        if self.reported is not None:
            return "ASGI lifespan shutdown failed: %s" % self.reported
        if self.error is not None:
            return "ASGI lifespan shutdown failed: the app raised %r" % self.error
        return None


async def cancel_all(timeout, lifespan=None):
    """Cancel every task still running (a graceful stop's end) but the
    lifespan's, waiting at most ``timeout`` seconds for them to unwind."""
    keep = {asyncio.current_task(), getattr(lifespan, "task", None)}
    tasks = [t for t in asyncio.all_tasks() if t not in keep]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    return len(tasks)


def request_line():
    """The request the running task serves (its name), for a timed-out
    worker's report; None outside a request."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return None
    if task is None:
        return None
    name = task.get_name()
    return name if name.startswith("ferricorn: ") else None
