"""big: a 1 MiB response body in one bytes object; measures the write path."""

SIZE = 1 << 20
BODY = b"x" * SIZE
HEADERS = [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]
