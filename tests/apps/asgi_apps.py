"""ASGI applications, which a WSGI worker must refuse to load."""


async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"asgi"})


class Framework:
    """Shaped like a FastAPI/Starlette instance: an async ``__call__``."""

    async def __call__(self, scope, receive, send):
        await app(scope, receive, send)


instance = Framework()


class WsgiWithAsyncHelper:
    """A WSGI app that merely has coroutine methods: still WSGI."""

    def __call__(self, environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"wsgi"]

    async def helper(self, a, b, c):
        return None


wsgi_instance = WsgiWithAsyncHelper()
