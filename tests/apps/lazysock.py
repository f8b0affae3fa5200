"""`gunicorn.socket` used, unused, kept and half-kept, for tests/test_lazy_socket.py."""

import json
import os
import socket
import struct

_KEPT = []  # objects (or files) kept past their request


def _socket_fds():
    """Descriptors of this process that are sockets."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink("/proc/self/fd/" + fd).startswith("socket:")
        except OSError:
            pass
    return n


def _json(start_response, info):
    body = json.dumps(info).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    sock = environ["gunicorn.socket"]
    if path == "/untouched":
        return _json(start_response, {"fds": _socket_fds()})
    if path == "/touch":
        info = {"before": _socket_fds()}
        info["isinstance"] = isinstance(sock, socket.socket)
        info["not_str"] = not isinstance(sock, str)  # looks up __class__
        info["still"] = _socket_fds()
        info["fileno"] = sock.fileno()
        info["touched"] = _socket_fds()
        info["plain"] = type(sock) is socket.socket
        info["peer"] = list(sock.getpeername()[:2])
        info["remote"] = [environ["REMOTE_ADDR"], int(environ["REMOTE_PORT"])]
        info["timeout"] = sock.gettimeout()
        # The connection's own options (a duplicate shares them): set on the
        # listener once, inherited by each connection (sock.rs).
        info["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        timeval = struct.Struct("ll")
        for name in ("SO_SNDTIMEO", "SO_RCVTIMEO"):
            opt = sock.getsockopt(socket.SOL_SOCKET, getattr(socket, name), timeval.size)
            info[name] = timeval.unpack(opt)[0]
        sock.close()  # the app's duplicate only
        info["closed"] = _socket_fds()
        return _json(start_response, info)
    if path == "/keep-untouched":
        _KEPT.append(sock)
        return _json(start_response, {})
    if path == "/use-kept":
        info = {"filenos": [], "send_errors": 0}
        for s in _KEPT:
            info["filenos"].append(s.fileno())
            try:
                s.send(b"x")
            except OSError:
                info["send_errors"] += 1
        del _KEPT[:]
        return _json(start_response, info)
    if path == "/keep-file":
        # A file on the duplicate outlives the object's close(): the
        # connection has a second descriptor after the request.
        _KEPT.append(sock.makefile("rb"))
        sock.close()
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no length: ends at EOF"]
    if path == "/keep-input":
        _KEPT.append(environ["wsgi.input"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"no length: ends at EOF"]
    if path == "/drop-kept":
        for f in _KEPT:
            if hasattr(f, "close"):
                f.close()
        del _KEPT[:]
        return _json(start_response, {})
    if path == "/recv":
        # Reads what the client sends after the head (no body framing).
        return _json(start_response, {"got": sock.recv(100).decode()})
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Length", "0")])
    return []
