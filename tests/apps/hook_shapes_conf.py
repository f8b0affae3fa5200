"""Records the shape of every attribute of the objects hooks receive
(server, server.cfg, server.app, worker, req, resp, environ) as JSON lines
in $SHAPES_OUT, for tests/test_hook_shapes.py to compare ferricorn with
gunicorn 27. Run under both servers unchanged."""

import json
import os

OUT = os.environ["SHAPES_OUT"]


def shape(v):
    if isinstance(v, (bool, int, float, str, type(None))):
        return [type(v).__name__, v]
    if isinstance(v, (list, tuple)):
        return [type(v).__name__, [shape(x) for x in v]]
    if isinstance(v, dict):
        return ["dict", sorted(str(k) for k in v)]
    if isinstance(v, type):
        return ["type", v.__name__]
    return [type(v).__name__, None]


def attrs(obj):
    names = set(vars(obj)) if hasattr(obj, "__dict__") else set()
    for klass in type(obj).__mro__:
        names.update(n for n in vars(klass) if not n.startswith("_"))
    out = {"__type__": ["type", type(obj).__name__]}
    for n in sorted(names):
        if n.startswith("_"):
            continue
        try:
            v = getattr(obj, n)
        except Exception as e:  # noqa: BLE001 - recorded, compared
            out[n] = ["raises", type(e).__name__]
            continue
        out[n] = ["callable", None] if callable(v) and not isinstance(v, type) else shape(v)
    return out


def dump(kind, value):
    with open(OUT, "a") as f:
        f.write(json.dumps({"kind": kind, "attrs": value}) + "\n")


# Settings read through cfg (gunicorn serves them from __getattr__).
SETTINGS = ["workers", "bind", "timeout", "threads", "max_requests", "pidfile", "user", "group", "raw_env",
            "keepalive", "loglevel", "accesslog", "errorlog", "access_log_format", "forwarded_allow_ips",
            "secure_scheme_headers", "logconfig_dict", "preload_app", "daemon", "umask", "worker_connections",
            "graceful_timeout", "backlog", "limit_request_line", "limit_request_fields",
            "limit_request_field_size"]


def when_ready(server):
    dump("server", attrs(server))
    cfg = attrs(server.cfg)
    for name in SETTINGS:
        cfg[name] = shape(getattr(server.cfg, name))
    dump("server.cfg", cfg)
    dump("server.app", attrs(server.app))
    dump("listeners", [[type(l).__name__, str(l), l.getsockname()[1] if type(l).__name__ != "UnixSocket" else l.getsockname()]
                       for l in server.LISTENERS])


def post_worker_init(worker):
    dump("worker", attrs(worker))
    dump("worker.sockets", [type(s).__name__ for s in worker.sockets])


def pre_request(worker, req):
    dump("req", attrs(req))
    dump("req.should_close", shape(req.should_close()))


def post_request(worker, req, environ, resp):
    dump("resp", attrs(resp))
    dump("environ", {k: shape(v) for k, v in environ.items()})
