"""A gunicorn.conf.py-style file that defines every server hook and records
each call, one JSON line per call, to the file named by HOOK_LOG: the hook's
name, the pid it ran in, and the interesting attributes of its arguments.

HOOK_RAISE=<name> makes that hook raise RuntimeError("boom in <name>").
HOOK_POST_ARITY=2|3|4 picks the post_request signature (default 4).
Works unchanged under gunicorn 27.0.1 and ferricorn.
"""

import json
import os

LOG = os.environ["HOOK_LOG"]
RAISE = os.environ.get("HOOK_RAISE", "")


def _record(name, **fields):
    fields.update(hook=name, pid=os.getpid())
    with open(LOG, "a") as f:
        f.write(json.dumps(fields, default=repr) + "\n")
    if name == RAISE:
        raise RuntimeError("boom in " + name)


def _server(server):
    return {
        "server_pid": server.pid,
        "num_workers": server.num_workers,
        "cfg_workers": server.cfg.workers,
        "cfg_bind": list(server.cfg.bind),
        "cfg_timeout": server.cfg.timeout,
        "proc_name": server.cfg.proc_name,
    }


def _worker(worker):
    return {"wpid": worker.pid, "age": worker.age, "ppid": worker.ppid, "alive": worker.alive}


def on_starting(server):
    server.log.info("hook on_starting says hello from %s", server.pid)
    _record("on_starting", **_server(server))


def on_reload(server):
    _record("on_reload", **_server(server))


def when_ready(server):
    _record("when_ready", **_server(server))


def pre_fork(server, worker):
    _record("pre_fork", **_server(server), **_worker(worker))


def post_fork(server, worker):
    _record("post_fork", **_server(server), **_worker(worker))


def post_worker_init(worker):
    worker.log.warning("hook post_worker_init in %s", worker.pid)
    _record("post_worker_init", cfg_workers=worker.cfg.workers, **_worker(worker))


def worker_int(worker):
    _record("worker_int", **_worker(worker))


def worker_abort(worker):
    _record("worker_abort", **_worker(worker))


def pre_exec(server):
    _record("pre_exec", **_server(server))


def _req(req):
    return {
        "method": req.method,
        "path": req.path,
        "query": req.query,
        "uri": req.uri,
        "version": list(req.version),
        "headers": [list(h) for h in req.headers],
    }


def pre_request(worker, req):
    _record("pre_request", wpid=worker.pid, **_req(req))


_ARITY = os.environ.get("HOOK_POST_ARITY", "4")

if _ARITY == "2":

    def post_request(worker, req):
        _record("post_request", nargs=2, wpid=worker.pid, **_req(req))

elif _ARITY == "3":

    def post_request(worker, req, environ):
        _record("post_request", nargs=3, wpid=worker.pid, path_info=environ.get("PATH_INFO"), **_req(req))

else:

    def post_request(worker, req, environ, resp):
        _record(
            "post_request",
            nargs=4,
            wpid=worker.pid,
            path_info=environ.get("PATH_INFO"),
            status=resp.status if resp is not None else None,
            status_code=resp.status_code if resp is not None else None,
            resp_headers=[list(h) for h in resp.headers] if resp is not None else None,
            **_req(req),
        )


def child_exit(server, worker):
    _record("child_exit", **_server(server), **_worker(worker))


def worker_exit(server, worker):
    _record("worker_exit", **_server(server), **_worker(worker))


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value)


def on_exit(server):
    _record("on_exit", **_server(server))
