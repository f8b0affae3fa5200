"""An ASGI 3.0 app that checks what the server hands it against the spec.

The checks are written from asgiref's spec text (specs/asgi.rst,
specs/www.rst 2.4/2.5, specs/lifespan.rst 2.0, docs/extensions.rst
"Websocket Denial Response"). Every scope and every message the server
passes in is checked; what is wrong is reported back as a list of strings,
so a test asserts that list is empty:

- in the JSON body of each HTTP response (`/scope`, `/echo`, `/state`),
- in a text message on a WebSocket (send the text `report`),
- at `/state` for the lifespan scope and startup message,
- at `/report` (`?clear=1` starts afresh) for what can only be seen after a
  response went out: the `http.disconnect` after a response, `send` after
  the client left, the WebSocket disconnect event,
- in the file named by $ASGI_SPEC_REPORT for lifespan shutdown (written as
  the last thing the app does).

Other routes exercise the server's own duties: `/error-before-start`,
`/error-after-start`, `/no-response`, `/stream` with `/progress` (bounded
buffering towards a slow reader), `/slow-read` with `/release-read` (bounded
buffering of a request body the app does not read yet), `/no-read` (Expect: 100-continue is
answered only at the first `receive`), `/hold` (disconnect while streaming).
One worker: the module-level state below is that worker's.
"""

import asyncio
import hashlib
import json
import os
from urllib.parse import parse_qs, unquote_to_bytes

SPEC_VERSIONS = ("2.0", "2.1", "2.2", "2.3", "2.4", "2.5")
# What the issue asks of the server: HTTP spec 2.4 (send after disconnect
# raises OSError), WebSocket 2.3+ (close reason).
HTTP_SPEC_MIN = (2, 4)
WS_SPEC_MIN = (2, 3)

# Lifespan facts, set at startup.
LIFESPAN = {"started": False, "state": None, "shared": None, "loop": None, "violations": None}
# Violations and events seen after a response had gone out (read at /report).
LATE = []
EVENTS = {}
# /stream progress: bytes handed to send() that returned.
PROGRESS = {"sent": 0, "done": False, "error": None}
# /slow-read: set by /release-read.
READER = {"event": None, "first": None}


def _version(text):
    return tuple(int(p) for p in text.split("."))


def check_str(v, where, out, empty_ok=True):
    if not isinstance(v, str):
        out.append("%s: %r is %s, not str" % (where, v, type(v).__name__))
    elif not empty_ok and not v:
        out.append("%s: empty string" % where)


def check_asgi(scope, out, spec_min=None):
    asgi = scope.get("asgi")
    if not isinstance(asgi, dict):
        out.append("scope['asgi']: %r is not a dict" % (asgi,))
        return
    if asgi.get("version") != "3.0":
        out.append("scope['asgi']['version']: %r, want '3.0'" % (asgi.get("version"),))
    spec = asgi.get("spec_version")
    if spec_min is None:
        if spec is not None:
            check_str(spec, "scope['asgi']['spec_version']", out)
        return
    if spec is None:
        out.append("scope['asgi']['spec_version'] missing (means 2.0), want >= %s" % ".".join(map(str, spec_min)))
    elif spec not in SPEC_VERSIONS:
        out.append("scope['asgi']['spec_version']: unknown %r" % (spec,))
    elif _version(spec) < spec_min:
        out.append("scope['asgi']['spec_version']: %r, want >= %s" % (spec, ".".join(map(str, spec_min))))


def check_headers(headers, where, out):
    try:
        items = list(headers)
    except TypeError:
        out.append("%s: %r is not iterable" % (where, headers))
        return []
    pairs = []
    for h in items:
        try:
            pair = list(h)
        except TypeError:
            out.append("%s: item %r is not iterable" % (where, h))
            continue
        if len(pair) != 2:
            out.append("%s: item %r has %d items, want 2" % (where, h, len(pair)))
            continue
        name, value = pair
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            out.append("%s: item %r is not [bytes, bytes]" % (where, h))
            continue
        if name.startswith(b":"):
            out.append("%s: pseudo header %r" % (where, name))
        pairs.append((name, value))
    return pairs


def check_addr(v, key, out, port_optional):
    if v is None:
        return
    try:
        pair = list(v)
    except TypeError:
        out.append("scope[%r]: %r is not iterable" % (key, v))
        return
    if len(pair) != 2:
        out.append("scope[%r]: %r has %d items, want 2" % (key, v, len(pair)))
        return
    host, port = pair
    check_str(host, "scope[%r][0]" % key, out)
    if port is None and port_optional:
        return
    if not isinstance(port, int) or isinstance(port, bool):
        out.append("scope[%r][1]: %r is not an int" % (key, port))


def check_state(scope, out):
    """The request's `state` is a shallow copy of the lifespan's namespace."""
    if not LIFESPAN["started"]:
        if "state" in scope and not isinstance(scope["state"], dict):
            out.append("scope['state']: %r is not a dict" % (scope["state"],))
        return
    state = scope.get("state")
    if LIFESPAN["state"] is None:
        return  # lifespan scope had no state: the server does not support it
    if not isinstance(state, dict):
        out.append("scope['state']: %r, want a copy of the lifespan state" % (state,))
        return
    if state is LIFESPAN["state"]:
        out.append("scope['state'] is the lifespan dict itself, not a copy")
    if state.get("shared") is not LIFESPAN["shared"]:
        out.append("scope['state']['shared'] is not the object set at startup (shallow copy)")
    if state.get("name") != "spec-app":
        out.append("scope['state']['name']: %r, want 'spec-app'" % (state.get("name"),))
    if "leak" in state:
        out.append("scope['state'] has a key an earlier request set on its copy")


def check_task(out):
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        out.append("no running asyncio loop")
        return
    if asyncio.current_task() is None:
        out.append("asyncio.current_task() is None: not run as an asyncio Task")
    if LIFESPAN["loop"] is not None and loop is not LIFESPAN["loop"]:
        out.append("request runs on another loop than the lifespan")


def check_common(scope, out, spec_min):
    for k in scope:
        if not isinstance(k, str):
            out.append("scope key %r is not str" % (k,))
    check_asgi(scope, out, spec_min)
    path = scope.get("path")
    check_str(path, "scope['path']", out)
    raw = scope.get("raw_path")
    if raw is not None:
        if not isinstance(raw, bytes):
            out.append("scope['raw_path']: %r is not bytes" % (raw,))
        elif b"?" in raw:
            out.append("scope['raw_path']: %r includes the query" % (raw,))
        elif isinstance(path, str):
            try:
                decoded = unquote_to_bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                decoded = None
            if decoded is not None and decoded != path:
                out.append("scope['path'] %r is not raw_path %r decoded" % (path, raw))
    root = scope.get("root_path", "")
    check_str(root, "scope['root_path']", out)
    if isinstance(root, str) and isinstance(path, str) and root and not path.startswith(root):
        out.append("scope['path'] %r does not start with root_path %r" % (path, root))
    if "headers" not in scope:
        out.append("scope['headers'] missing")
    else:
        check_headers(scope["headers"], "scope['headers']", out)
    check_addr(scope.get("client"), "client", out, port_optional=False)
    check_addr(scope.get("server"), "server", out, port_optional=True)
    ext = scope.get("extensions")
    if ext is not None:
        if not isinstance(ext, dict):
            out.append("scope['extensions']: %r is not a dict" % (ext,))
        else:
            for name, v in ext.items():
                if not isinstance(name, str) or not isinstance(v, dict):
                    out.append("scope['extensions'][%r]: %r is not a dict" % (name, v))
    check_state(scope, out)
    check_task(out)


def check_http_scope(scope):
    out = []
    if scope.get("type") != "http":
        out.append("scope['type']: %r" % (scope.get("type"),))
    check_common(scope, out, HTTP_SPEC_MIN)
    if scope.get("http_version") not in ("1.0", "1.1", "2"):
        out.append("scope['http_version']: %r" % (scope.get("http_version"),))
    method = scope.get("method")
    check_str(method, "scope['method']", out, empty_ok=False)
    if isinstance(method, str) and method != method.upper():
        out.append("scope['method']: %r not uppercased" % method)
    if "scheme" in scope:
        check_str(scope["scheme"], "scope['scheme']", out, empty_ok=False)
    if not isinstance(scope.get("query_string"), bytes):
        out.append("scope['query_string']: %r is not bytes" % (scope.get("query_string"),))
    return out


def check_ws_scope(scope):
    out = []
    if scope.get("type") != "websocket":
        out.append("scope['type']: %r" % (scope.get("type"),))
    check_common(scope, out, WS_SPEC_MIN)
    if scope.get("http_version", "1.1") not in ("1.1", "2"):
        out.append("scope['http_version']: %r" % (scope.get("http_version"),))
    if "scheme" in scope:
        check_str(scope["scheme"], "scope['scheme']", out, empty_ok=False)
        if scope["scheme"] not in ("ws", "wss"):
            out.append("scope['scheme']: %r, want ws or wss" % (scope["scheme"],))
    qs = scope.get("query_string")
    if qs is not None and not isinstance(qs, bytes):
        out.append("scope['query_string']: %r is not bytes" % (qs,))
    subs = scope.get("subprotocols", [])
    try:
        for s in subs:
            check_str(s, "scope['subprotocols'] item", out)
    except TypeError:
        out.append("scope['subprotocols']: %r is not iterable" % (subs,))
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        out.append("scope['extensions'] lacks 'websocket.http.response' (denial response)")
    return out


def check_message(msg, want_types, out, where):
    """`msg` is a dict with str keys whose type is one of `want_types`."""
    if not isinstance(msg, dict):
        out.append("%s: %r is not a dict" % (where, msg))
        return None
    for k in msg:
        if not isinstance(k, str):
            out.append("%s: key %r is not str" % (where, k))
    t = msg.get("type")
    if t not in want_types:
        out.append("%s: type %r, want one of %s" % (where, t, want_types))
    return t


def check_http_request(msg, out, where):
    """An http.request (body bytes, more_body bool; both optional) or an
    http.disconnect; returns its type."""
    t = check_message(msg, ("http.request", "http.disconnect"), out, where)
    if t == "http.request":
        if not isinstance(msg.get("body", b""), bytes):
            out.append("%s: body %r is not bytes" % (where, msg.get("body")))
        if not isinstance(msg.get("more_body", False), bool):
            out.append("%s: more_body %r is not bool" % (where, msg.get("more_body")))
    return t


async def read_body(receive, out):
    body = []
    n = 0
    while True:
        msg = await receive()
        n += 1
        t = check_http_request(msg, out, "receive() #%d" % n)
        if t != "http.request":
            out.append("receive() #%d: %r before the body ended" % (n, t))
            return b"".join(body), n, False
        body.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(body), n, True


async def send_json(send, obj, status=200, headers=()):
    body = json.dumps(obj).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        + list(headers),
    })
    await send({"type": "http.response.body", "body": body})


def jsonable(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items() if k != "state"}
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return repr(v)


def report_late(what, problems):
    for p in problems:
        LATE.append("%s: %s" % (what, p))


async def lifespan(scope, receive, send):
    out = []
    if scope.get("type") != "lifespan":
        out.append("lifespan scope['type']: %r" % (scope.get("type"),))
    check_asgi(scope, out)
    state = scope.get("state")
    if state is None:
        out.append("lifespan scope has no 'state' (lifespan state unsupported)")
    elif not isinstance(state, dict):
        out.append("lifespan scope['state']: %r is not a dict" % (state,))
    elif state:
        out.append("lifespan scope['state'] is not empty: %r" % (state,))
    msg = await receive()
    if check_message(msg, ("lifespan.startup",), out, "lifespan receive() #1") == "lifespan.startup":
        if isinstance(state, dict):
            state["name"] = "spec-app"
            state["shared"] = LIFESPAN["shared"] = ["startup"]
            LIFESPAN["state"] = state
        LIFESPAN["loop"] = asyncio.get_running_loop()
        LIFESPAN["started"] = True
        LIFESPAN["violations"] = out
        await send({"type": "lifespan.startup.complete"})
    shut = []
    msg = await receive()
    check_message(msg, ("lifespan.shutdown",), shut, "lifespan receive() #2")
    path = os.environ.get("ASGI_SPEC_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump({"violations": shut, "events": EVENTS}, f)
    await send({"type": "lifespan.shutdown.complete"})


async def http(scope, receive, send):
    out = check_http_scope(scope)
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    route = path[len(root):] if root and path.startswith(root) else path
    query = parse_qs(scope.get("query_string", b"").decode())

    if route == "/scope":
        body, _, _ = await read_body(receive, out)
        await send_json(send, {"violations": out, "scope": jsonable(scope), "body": body.decode("latin-1")})
    elif route == "/echo":
        body, n, _ = await read_body(receive, out)
        await send_json(send, {
            "violations": out, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "messages": n,
        })
        after = []
        msg = await asyncio.wait_for(receive(), 10)
        if check_http_request(msg, after, "receive() after the response") != "http.disconnect":
            after.append("receive() after the response: %r, want http.disconnect" % (msg,))
        report_late("/echo", after)
        EVENTS["echo_after"] = msg.get("type") if isinstance(msg, dict) else repr(msg)
    elif route == "/raw-echo":
        body, _, _ = await read_body(receive, out)
        report_late("/raw-echo", out)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        await send({"type": "http.response.body", "body": body})
    elif route == "/state":
        await read_body(receive, out)
        if isinstance(scope.get("state"), dict):
            scope["state"]["leak"] = True  # the next request must not see this
        await send_json(send, {"violations": out, "started": LIFESPAN["started"],
                               "lifespan_violations": LIFESPAN["violations"]})
    elif route == "/report":
        await send_json(send, {"violations": list(LATE), "events": EVENTS})
        if query.get("clear"):
            LATE.clear()
            EVENTS.clear()
    elif route == "/error-before-start":
        raise RuntimeError("boom before http.response.start")
    elif route == "/error-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("boom after http.response.start")
    elif route == "/no-response":
        return None
    elif route == "/no-read":
        # Answers without ever calling receive(): a client that sent
        # Expect: 100-continue must not be told to send its body.
        await send_json(send, {"violations": out}, status=413)
    elif route == "/stream":
        # ?chunks=N&size=S: N chunks of S bytes; /progress tells how far send() got.
        chunks = int(query.get("chunks", ["64"])[0])
        size = int(query.get("size", ["1048576"])[0])
        PROGRESS.update(sent=0, done=False, error=None)
        block = b"x" * size
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream"),
                                (b"content-length", str(chunks * size).encode())]})
        try:
            for i in range(chunks):
                await send({"type": "http.response.body", "body": block, "more_body": i < chunks - 1})
                PROGRESS["sent"] += size
        except OSError as e:
            PROGRESS["error"] = type(e).__name__
        PROGRESS["done"] = True
    elif route == "/progress":
        await send_json(send, dict(PROGRESS, pid=os.getpid()))
    elif route == "/slow-read":
        # Reads one body message, then nothing until /release-read: the
        # server must stop reading the socket meanwhile (bounded buffering).
        READER["event"] = asyncio.Event()
        msg = await receive()
        check_http_request(msg, out, "receive() #1")
        total = len(msg.get("body", b""))
        READER["first"] = total
        await asyncio.wait_for(READER["event"].wait(), 60)
        more = msg.get("more_body", False)
        while more:
            msg = await receive()
            check_http_request(msg, out, "receive()")
            total += len(msg.get("body", b""))
            more = msg.get("more_body", False)
        await send_json(send, {"violations": out, "size": total})
    elif route == "/release-read":
        if READER["event"] is not None:
            READER["event"].set()
        await send_json(send, {"first": READER["first"], "pid": os.getpid()})
    elif route == "/block":
        # Blocks the worker's loop (the app's bug): --timeout must end the worker.
        import time

        time.sleep(float(query.get("s", ["30"])[0]))
        await send_json(send, {"violations": out})
    elif route == "/pid":
        await send_json(send, {"pid": os.getpid()})
    elif route == "/hold":
        # Stream a first piece, then wait for the client to leave: receive()
        # must give http.disconnect, and a later send() must raise OSError.
        await read_body(receive, out)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first piece\n", "more_body": True})
        EVENTS["hold"] = "streaming"
        msg = await asyncio.wait_for(receive(), 20)
        EVENTS["hold_receive"] = msg.get("type") if isinstance(msg, dict) else repr(msg)
        after = []
        if check_http_request(msg, after, "receive() while streaming") != "http.disconnect":
            after.append("receive() after the client left: %r, want http.disconnect" % (msg,))
        try:
            for _ in range(50):
                await send({"type": "http.response.body", "body": b"more\n" * 1000, "more_body": True})
                await asyncio.sleep(0.01)
            after.append("send() after http.disconnect did not raise")
            EVENTS["hold"] = "no error"
        except OSError as e:
            EVENTS["hold"] = "OSError:" + type(e).__name__
        except Exception as e:  # noqa: BLE001 - the spec asks for an OSError subclass
            after.append("send() after http.disconnect raised %r, not an OSError" % (e,))
            EVENTS["hold"] = "other:" + type(e).__name__
        report_late("/hold", after)
    else:
        await read_body(receive, out)
        await send_json(send, {"violations": out, "scope": jsonable(scope), "error": "no route"}, status=404)


async def websocket(scope, receive, send):
    out = check_ws_scope(scope)
    path = scope.get("path", "")
    msg = await receive()
    if check_message(msg, ("websocket.connect",), out, "first receive()") != "websocket.connect":
        report_late("ws " + path, out)
        return

    if path == "/ws/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")]})
        await send({"type": "websocket.http.response.body", "body": b"go away", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b", please"})
        report_late("ws deny", out)
        return
    if path == "/ws/close-before-accept":
        await send({"type": "websocket.close"})
        report_late("ws close-before-accept", out)
        return

    subs = list(scope.get("subprotocols") or [])
    accept = {"type": "websocket.accept", "headers": [(b"x-accepted", b"yes")]}
    if "chat" in subs:
        accept["subprotocol"] = "chat"
    await send(accept)

    if path == "/ws/close-code":
        await send({"type": "websocket.close", "code": 4001, "reason": "bye now"})
        report_late("ws close-code", out)
        return
    if path == "/ws/raise":
        raise RuntimeError("boom in a websocket")

    # Echo until the client leaves.
    n = 0
    while True:
        msg = await receive()
        n += 1
        where = "websocket receive() #%d" % n
        t = check_message(msg, ("websocket.receive", "websocket.disconnect"), out, where)
        if t == "websocket.disconnect":
            code = msg.get("code")
            if not isinstance(code, int) or isinstance(code, bool):
                out.append("%s: code %r is not int" % (where, code))
            reason = msg.get("reason")
            if reason is not None:
                check_str(reason, where + " reason", out)
            EVENTS["ws_disconnect"] = {"code": code, "reason": reason}
            try:
                await send({"type": "websocket.send", "text": "after close"})
                out.append("send() after websocket.disconnect did not raise")
                EVENTS["ws_send_after"] = "no error"
            except OSError as e:
                EVENTS["ws_send_after"] = "OSError:" + type(e).__name__
            except Exception as e:  # noqa: BLE001
                out.append("send() after websocket.disconnect raised %r, not an OSError" % (e,))
                EVENTS["ws_send_after"] = "other:" + type(e).__name__
            report_late("ws " + path, out)
            return
        if t != "websocket.receive":
            continue
        data, text = msg.get("bytes"), msg.get("text")
        if (data is None) == (text is None):
            out.append("%s: want exactly one of bytes/text, got %r" % (where, msg))
            continue
        if data is not None and not isinstance(data, bytes):
            out.append("%s: bytes %r is not bytes" % (where, data))
        if text is not None and not isinstance(text, str):
            out.append("%s: text %r is not str" % (where, text))
        if text == "report":
            await send({"type": "websocket.send", "text": json.dumps({"violations": out, "scope": jsonable(scope)})})
        elif text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": data})


async def app(scope, receive, send):
    kind = scope.get("type") if isinstance(scope, dict) else None
    if kind == "lifespan":
        await lifespan(scope, receive, send)
    elif kind == "http":
        await http(scope, receive, send)
    elif kind == "websocket":
        await websocket(scope, receive, send)
    else:
        LATE.append("unknown scope %r" % (scope,))
