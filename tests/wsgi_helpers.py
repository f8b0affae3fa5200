"""Helpers shared by the WSGI/gthread/framework tests: module-scoped servers
and a small keep-alive HTTP/1.1 client over a raw socket."""

import socket
import time

from conftest import WORKER_CLASSES, Server, parse_head


def start(tmp_path_factory, *args, env=None, booted=1):
    """Older spelling of `conftest.serve`: the server is stopped by the
    finalizer of the test (or module) that started it."""
    srv = Server(list(args), cwd=tmp_path_factory.mktemp("srv"), env=env)
    srv.wait_listening()
    if booted:
        srv.wait_booted(booted)
    return srv


# Older name of conftest.WORKER_CLASSES.
WORKER_ARGS = WORKER_CLASSES


class Client:
    """One keep-alive connection; reads exactly one response per request."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def assert_closed(self, timeout=5):
        """The server closed the connection: EOF, with nothing more sent."""
        self.sock.settimeout(timeout)
        assert self.sock.recv(10) == b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("server closed the connection")
        self.buf += chunk

    def read_response(self, method="GET"):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        status, headers = parse_head(head)
        self.buf = rest
        if method == "HEAD" or status in (204, 304):
            return status, headers, b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                self._fill()
            body, self.buf = self.buf[:n], self.buf[n:]
            return status, headers, body
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    self._fill()
                line, _, self.buf = self.buf.partition(b"\r\n")
                size = int(line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    self._fill()
                body += self.buf[:size]
                self.buf = self.buf[size + 2 :]
                if size == 0:
                    return status, headers, body
        # close-delimited
        try:
            while True:
                self._fill()
        except EOFError:
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def request(self, path, method="GET", body=b"", headers=""):
        req = "%s %s HTTP/1.1\r\nHost: t\r\n%s" % (method, path, headers)
        if body and "Transfer-Encoding" not in headers:
            req += "Content-Length: %d\r\n" % len(body)
        self.send(req.encode("latin-1") + b"\r\n" + body)
        return self.read_response(method)


def chunked(data, size=5):
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += b"%x\r\n%s\r\n" % (len(piece), piece)
    return out + b"0\r\n\r\n"


def one_request(port, path, method="GET", body=b"", headers=""):
    """One request on a fresh connection that asks to be closed afterwards."""
    c = Client(port)
    try:
        return c.request(path, method, body, headers + "Connection: close\r\n")
    finally:
        c.close()


def slow_head_gets_408(sock):
    """Send half a request head on `sock` and never finish it: the server
    must answer 408 and close after its 1 s `--header-timeout`."""
    started = time.monotonic()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # head never completed
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    elapsed = time.monotonic() - started
    assert data.startswith(b"HTTP/1.1 408 "), data
    assert 0.8 < elapsed < 5, elapsed
