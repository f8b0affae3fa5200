"""Server hooks against the running server: each hook fires in the process
gunicorn runs it in (master or worker), with gunicorn-shaped arguments, and a
hook that raises is logged with its traceback (fatal where gunicorn is; the
exit statuses are compared with gunicorn 27.0.1 itself).

The hook file is tests/apps/hooks_conf.py: it appends one JSON line per call.
"""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import APPS, PYTHON, Server, get, raw_request

CONF = str(APPS / "hooks_conf.py")


def read_records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def wait_records(path, pred, n=1, timeout=15.0):
    """Wait until at least `n` records satisfy `pred`; return all records."""
    deadline = time.monotonic() + timeout
    while True:
        recs = read_records(path)
        if sum(1 for r in recs if pred(r)) >= n:
            return recs
        if time.monotonic() > deadline:
            raise AssertionError("hook records never matched; got:\n" + "\n".join(map(json.dumps, recs)))
        time.sleep(0.02)


def named(recs, hook):
    return [r for r in recs if r["hook"] == hook]


def start(start_server, tmp_path, *args, workers=1, env=None, **kw):
    log = str(tmp_path / "hooks.jsonl")
    full_env = {"HOOK_LOG": log}
    full_env.update(env or {})
    srv = start_server("-c", CONF, "-b", "127.0.0.1:0", "-w", str(workers), *args, "basic:app",
                       env=full_env, workers_booted=workers, **kw)
    srv.hook_log = log
    return srv


def test_startup_request_and_exit_hooks(start_server, tmp_path):
    srv = start(start_server, tmp_path, workers=2)
    log = srv.hook_log
    master = srv.master_pid
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init", n=2)

    # Master start-up, in gunicorn's order, before any worker.
    first = recs[:3]
    assert [r["hook"] for r in first] == ["nworkers_changed", "on_starting", "when_ready"], recs
    assert first[0]["new"] == 2 and first[0]["old"] is None
    for r in first:
        assert r["pid"] == master
    start_rec = first[1]
    assert start_rec["server_pid"] == master and start_rec["num_workers"] == 2
    assert start_rec["cfg_workers"] == 2 and start_rec["cfg_bind"] == ["127.0.0.1:0"]
    assert start_rec["cfg_timeout"] == 30 and start_rec["proc_name"] == "basic:app"
    srv.wait_for(r"\[%d\] \[INFO\] hook on_starting says hello from %d" % (master, master))

    pre_forks = named(recs, "pre_fork")
    assert len(pre_forks) == 2
    assert all(r["pid"] == master and r["wpid"] == "[booting]" and r["ppid"] == master for r in pre_forks)
    assert sorted(r["age"] for r in pre_forks) == [1, 2]
    post_forks = named(recs, "post_fork")
    worker_pids = {r["pid"] for r in post_forks}
    assert len(worker_pids) == 2 and master not in worker_pids
    for r in post_forks + named(recs, "post_worker_init"):
        assert r["wpid"] == r["pid"] and r["ppid"] == master and r["pid"] in worker_pids
    assert sorted(r["age"] for r in post_forks) == [1, 2]
    for pid in worker_pids:
        srv.wait_for(r"\[%d\] \[WARNING\] hook post_worker_init in %d" % (pid, pid))

    status, _, body = get(srv.port, "/?x=1", headers="X-Test: yes\r\n")
    assert status == 200 and body == b"Hello, world!"
    recs = wait_records(log, lambda r: r["hook"] == "post_request")
    (pre,) = named(recs, "pre_request")
    (post,) = named(recs, "post_request")
    assert pre["pid"] in worker_pids and pre["wpid"] == pre["pid"] and post["pid"] == pre["pid"]
    assert (pre["method"], pre["path"], pre["query"], pre["uri"], pre["version"]) == ("GET", "/", "x=1", "/?x=1", [1, 1])
    assert ["HOST", "127.0.0.1"] in pre["headers"] and ["X-TEST", "yes"] in pre["headers"]
    assert post["nargs"] == 4 and post["path_info"] == "/"
    assert post["status"] == "200 OK" and post["status_code"] == 200
    assert ["Content-Type", "text/plain"] in post["resp_headers"]
    assert recs.index(pre) < recs.index(post)

    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0
    recs = read_records(log)
    exits = named(recs, "worker_exit")
    assert {r["pid"] for r in exits} == worker_pids
    assert all(r["wpid"] == r["pid"] and r["alive"] is False for r in exits)
    children = named(recs, "child_exit")
    assert {r["wpid"] for r in children} == worker_pids and all(r["pid"] == master for r in children)
    assert recs[-1]["hook"] == "on_exit" and recs[-1]["pid"] == master


def test_signal_hooks_ttin_ttou_hup_quit(start_server, tmp_path):
    srv = start(start_server, tmp_path, workers=2)
    log = srv.hook_log
    master = srv.master_pid
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init", n=2)
    ages = {r["pid"]: r["age"] for r in named(recs, "post_fork")}

    srv.signal(signal.SIGTTIN)
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init", n=3)
    (changed,) = [r for r in named(recs, "nworkers_changed") if r["old"] is not None]
    assert (changed["new"], changed["old"], changed["pid"]) == (3, 2, master)
    third = [r for r in named(recs, "pre_fork") if r["age"] == 3]
    assert len(third) == 1 and recs.index(changed) < recs.index(third[0])
    ages.update({r["pid"]: r["age"] for r in named(recs, "post_fork")})

    # TTOU retires the oldest worker: worker_exit in it, child_exit in the master.
    srv.signal(signal.SIGTTOU)
    recs = wait_records(log, lambda r: r["hook"] == "child_exit")
    assert {"new": 2, "old": 3} in [{"new": r["new"], "old": r["old"]} for r in named(recs, "nworkers_changed")]
    oldest = min(ages, key=ages.get)
    (wexit,) = named(recs, "worker_exit")
    (cexit,) = named(recs, "child_exit")
    assert wexit["pid"] == oldest and wexit["age"] == 1 and wexit["alive"] is False
    assert cexit["pid"] == master and cexit["wpid"] == oldest and cexit["age"] == 1
    assert recs.index(wexit) < recs.index(cexit)

    # HUP: nworkers_changed (even unchanged), then on_reload, then new workers.
    mark = len(recs)
    srv.signal(signal.SIGHUP)
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init", n=5)
    after = recs[mark:]
    hooks = [r["hook"] for r in after]
    i_changed = hooks.index("nworkers_changed")
    i_reload = hooks.index("on_reload")
    assert after[i_changed]["new"] == 2 and after[i_changed]["old"] == 2
    assert i_changed < i_reload < hooks.index("pre_fork")
    assert after[i_reload]["pid"] == master and after[i_reload]["num_workers"] == 2

    # QUIT to a worker: worker_int, then worker_exit, in that worker.
    recs = wait_records(log, lambda r: r["hook"] == "child_exit", n=3)
    live = [r["pid"] for r in named(recs, "post_worker_init") if r["age"] in (4, 5)]
    victim = live[0]
    os.kill(victim, signal.SIGQUIT)
    recs = wait_records(log, lambda r: r["hook"] == "child_exit" and r["wpid"] == victim)
    mine = [r["hook"] for r in recs if r["pid"] == victim]
    assert mine[-2:] == ["worker_int", "worker_exit"], mine
    assert [r for r in named(recs, "worker_int")][-1]["alive"] is False


def test_worker_abort_on_timeout(start_server, tmp_path):
    # (A gthread worker's main loop keeps beating while a request is stuck,
    # as in gunicorn, so the timeout is a sync-worker affair.)
    srv = start(start_server, tmp_path, "--timeout", "1")
    log = srv.hook_log
    master = srv.master_pid
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init")
    (stuck,) = [r["pid"] for r in named(recs, "post_worker_init")]

    def request():
        try:
            raw_request(srv.port, b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n", timeout=15)
        except OSError:
            pass

    t = threading.Thread(target=request, daemon=True)
    t.start()
    recs = wait_records(log, lambda r: r["hook"] == "child_exit" and r["wpid"] == stuck)
    mine = [r["hook"] for r in recs if r["pid"] == stuck]
    assert mine[-2:] == ["worker_abort", "worker_exit"], mine
    (abort,) = named(recs, "worker_abort")
    assert abort["wpid"] == stuck and abort["alive"] is False
    (cexit,) = [r for r in named(recs, "child_exit") if r["wpid"] == stuck]
    assert cexit["pid"] == master
    srv.wait_for(r"WORKER TIMEOUT \(pid:%d\)" % stuck)
    # The stack of the stuck request is still dumped.
    srv.wait_for(r"Worker timed out while serving: GET /sleep\?30")
    srv.wait_for(r"Worker \(pid:%d\) exited with code 1" % stuck)
    t.join(15)


def test_pre_exec_runs_in_the_new_master_on_usr2(start_server, tmp_path):
    srv = start(start_server, tmp_path)
    log = srv.hook_log
    master = srv.master_pid
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init")
    srv.signal(signal.SIGUSR2)
    recs = wait_records(log, lambda r: r["hook"] == "post_worker_init", n=2)
    (pre_exec,) = named(recs, "pre_exec")
    child = pre_exec["pid"]
    workers = {r["pid"] for r in named(recs, "post_fork")}
    assert child != master and child not in workers
    assert pre_exec["server_pid"] == master
    # The exec'd master is the same process: its start-up hooks run there.
    starting = named(recs, "on_starting")
    assert [r["pid"] for r in starting] == [master, child]
    assert starting[1]["server_pid"] == child
    os.kill(child, signal.SIGTERM)
    srv.wait_for(r"\[%d\] \[INFO\] Shutting down: Master" % child)


@pytest.mark.parametrize("arity,worker_class", [("2", "gthread"), ("3", "sync"), ("4", "gthread")])
def test_post_request_arity(start_server, tmp_path, arity, worker_class):
    srv = start(start_server, tmp_path, "-k", worker_class, env={"HOOK_POST_ARITY": arity})
    status, _, _ = get(srv.port, "/?c=d", headers="Connection: close\r\n")
    assert status == 200
    recs = wait_records(srv.hook_log, lambda r: r["hook"] == "post_request")
    (post,) = named(recs, "post_request")
    assert post["nargs"] == int(arity) and post["path"] == "/" and post["query"] == "c=d"
    if arity != "2":
        assert post["path_info"] == "/"


def test_pre_request_that_raises_fails_the_request(start_server, tmp_path):
    srv = start(start_server, tmp_path, env={"HOOK_RAISE": "pre_request"})
    status, _, _ = get(srv.port, "/")
    assert status == 500
    srv.wait_for(r"\[ERROR\] Error handling request GET /")
    srv.wait_for(r"RuntimeError: boom in pre_request")
    recs = wait_records(srv.hook_log, lambda r: r["hook"] == "post_request")
    (post,) = named(recs, "post_request")
    # gunicorn still calls post_request, with an empty environ and no response.
    assert post["status"] is None and post["path_info"] is None


def test_post_request_that_raises_is_logged(start_server, tmp_path):
    srv = start(start_server, tmp_path, env={"HOOK_RAISE": "post_request"})
    status, _, body = get(srv.port, "/")
    assert status == 200 and body == b"Hello, world!"
    srv.wait_for(r"\[ERROR\] Exception in post_request hook")
    srv.wait_for(r"RuntimeError: boom in post_request")
    assert get(srv.port, "/")[0] == 200


def test_worker_int_that_raises_ends_the_worker(start_server, tmp_path):
    srv = start(start_server, tmp_path, env={"HOOK_RAISE": "worker_int"})
    recs = wait_records(srv.hook_log, lambda r: r["hook"] == "post_worker_init")
    (pid,) = [r["pid"] for r in named(recs, "post_worker_init")]
    os.kill(pid, signal.SIGQUIT)
    srv.wait_for(r"RuntimeError: boom in worker_int")
    # As in gunicorn, the exception ends the worker with status 255.
    srv.wait_for(r"Worker \(pid:%d\) exited with code 255" % pid)


@pytest.mark.parametrize(
    "hook,sig,code,logged",
    [
        ("worker_exit", signal.SIGTERM, 0, "[WARNING] Exception during worker exit:"),
        ("on_reload", signal.SIGHUP, 255, "[ERROR] Unhandled exception in main loop"),
        ("on_exit", signal.SIGTERM, 1, "[ERROR] Exception in on_exit hook"),
    ],
)
def test_master_signal_with_a_raising_hook(start_server, tmp_path, hook, sig, code, logged):
    srv = start(start_server, tmp_path, env={"HOOK_RAISE": hook})
    srv.signal(sig)
    assert srv.wait_exit() == code
    assert logged in srv.log()
    assert "RuntimeError: boom in " + hook in srv.log()
    if hook == "on_reload":
        # A hook failing in the master's loop is fatal, without on_exit (as gunicorn).
        assert not named(read_records(srv.hook_log), "on_exit")


def run_to_exit(argv, cwd, env, timeout=20):
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(APPS)
    full_env.update(env)
    proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError("did not exit:\n" + out.decode(errors="replace"))
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return proc.returncode, out.decode(errors="replace")


@pytest.mark.parametrize("hook", ["nworkers_changed", "on_starting", "when_ready", "pre_fork", "post_fork",
                                  "post_worker_init"])
def test_fatal_hooks_exit_like_gunicorn(tmp_path, hook):
    env = {"HOOK_LOG": str(tmp_path / "hooks.jsonl"), "HOOK_RAISE": hook}
    common = ["-c", CONF, "-b", "127.0.0.1:0", "basic:app"]
    f_env = dict(env, HOOK_LOG=str(tmp_path / "ferricorn.jsonl"))
    g_code, g_out = run_to_exit([PYTHON, "-m", "gunicorn", "--no-control-socket", *common], tmp_path, env)
    f_code, f_out = run_to_exit([PYTHON, "-m", "ferricorn", *common], tmp_path, f_env)
    assert "boom in " + hook in g_out
    assert f_code == g_code, (g_out, f_out)
    # The same hooks ran, in the same order, as under gunicorn.
    g_hooks = [r["hook"] for r in read_records(env["HOOK_LOG"])]
    f_hooks = [r["hook"] for r in read_records(f_env["HOOK_LOG"])]
    assert f_hooks == g_hooks
    # ferricorn logs the traceback, not only the message.
    assert "RuntimeError: boom in " + hook in f_out and "Traceback (most recent call last)" in f_out, f_out


EMBEDDED = """
import sys

import hooks_conf
from ferricorn.app.base import BaseApplication


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


class App(BaseApplication):
    def load_config(self):
        self.cfg.set("bind", "127.0.0.1:0")
        self.cfg.set("workers", 1)
        self.cfg.set("post_fork", hooks_conf.post_fork)
        self.cfg.set("post_request", hooks_conf.post_request)
        self.cfg.set("on_starting", "hooks_conf.on_starting")

    def load(self):
        return app


App().run()
"""


def test_hooks_set_through_the_embedding_api(start_server, tmp_path):
    script = tmp_path / "embedded_hooks.py"
    script.write_text(EMBEDDED)
    log = str(tmp_path / "hooks.jsonl")
    srv = start_server(env={"HOOK_LOG": log, "HOOK_POST_ARITY": "2"}, cmd=[PYTHON, str(script)])
    assert get(srv.port, "/")[0] == 200
    recs = wait_records(log, lambda r: r["hook"] == "post_request")
    assert [r["hook"] for r in recs] == ["on_starting", "post_fork", "post_request"]
    assert recs[0]["pid"] == srv.master_pid and recs[1]["pid"] != srv.master_pid
    assert recs[2]["nargs"] == 2 and recs[2]["pid"] == recs[1]["pid"]


def lifecycle(argv, tmp_path, name):
    """Start, one request, TTIN, TTOU, TERM; return the hook records. (The
    server is stopped by conftest's finalizer if the test fails.)"""
    log = str(tmp_path / (name + ".jsonl"))
    srv = Server([], tmp_path, {"HOOK_LOG": log}, cmd=argv)
    srv.wait_listening()
    wait_records(log, lambda r: r["hook"] == "post_worker_init")
    assert get(srv.port, "/?q=1", headers="X-Test: yes\r\n")[0] == 200
    wait_records(log, lambda r: r["hook"] == "post_request")
    srv.signal(signal.SIGTTIN)
    wait_records(log, lambda r: r["hook"] == "post_worker_init", n=2)
    srv.signal(signal.SIGTTOU)
    wait_records(log, lambda r: r["hook"] == "child_exit")
    srv.signal(signal.SIGTERM)
    srv.wait_exit()
    return read_records(log)


def test_lifecycle_hooks_match_gunicorn(tmp_path):
    common = ["-c", CONF, "-b", "127.0.0.1:0", "-w", "1", "basic:app"]
    want = lifecycle([PYTHON, "-m", "gunicorn", "--no-control-socket", *common], tmp_path, "gunicorn")
    got = lifecycle([PYTHON, "-m", "ferricorn", *common], tmp_path, "ferricorn")
    assert [r["hook"] for r in got] == [r["hook"] for r in want]

    def shape(rec, master):
        """A record with pids replaced by their role and the Host port dropped."""
        pid_keys = ("pid", "wpid", "ppid", "server_pid")
        out = {k: v for k, v in rec.items() if k not in pid_keys}
        out["role"] = "master" if rec["pid"] == master else "worker"
        if "headers" in out:
            out["headers"] = [h for h in out["headers"] if h[0] != "HOST"]
        return out

    g_master, f_master = want[0]["pid"], got[0]["pid"]
    for g, f in zip(want, got):
        assert shape(f, f_master) == shape(g, g_master)
