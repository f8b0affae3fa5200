"""Drop-in details real gunicorn configurations rely on (issue 18): the
dual-stack `[::]` bind, the worker class named in the log, process titles
set through the `setproctitle` package, refusals that point the right way.
gunicorn 27.0.1 is run as the oracle where it can be.
"""

import os
import socket
import subprocess

import pytest

from conftest import APPS, PYTHON, Server, get, gunicorn_cmd, wait_until


def _bindv6only():
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return f.read().strip()
    except OSError:
        return None


def _has_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_dual_stack = pytest.mark.skipif(
    not _has_ipv6() or _bindv6only() != "0", reason="needs IPv6 with net.ipv6.bindv6only=0"
)


@needs_dual_stack
def test_ipv6_any_bind_is_dual_stack(start_server):
    srv = start_server("-b", "[::]:0", "basic:app")
    assert srv.url.startswith("http://[::]:")
    status, _, body = get(srv.port)  # over IPv4, 127.0.0.1
    assert (status, body) == (200, b"Hello, world!")
    with socket.create_connection(("::1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 200")


@needs_dual_stack
def test_ipv6_and_ipv4_any_on_one_port_refused_like_gunicorn(tmp_path):
    """`[::]:P` and `0.0.0.0:P` collide on a dual-stack system: gunicorn 27
    retries, then gives up with `Can't connect to ('0.0.0.0', P)`."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    outs = {}
    for name, cmd in (("gunicorn", gunicorn_cmd()), ("ferricorn", None)):
        srv = Server(["-b", "[::]:%d" % port, "-b", "0.0.0.0:%d" % port, "basic:app"], cwd=tmp_path, cmd=cmd)
        try:
            code = srv.wait_exit(timeout=30)
        finally:
            srv.stop()
        outs[name] = (code, srv.log())
    for name, (code, log) in outs.items():
        assert "Connection in use: ('0.0.0.0', %d)" % port in log, (name, log)
        assert "Can't connect to ('0.0.0.0', %d)" % port in log, (name, log)
        assert code != 0 or name == "gunicorn", (name, code, log)


def test_threads_without_worker_class_logs_gthread(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--threads", "4", "basic:app")
    srv.wait_for(r"\[INFO\] Using worker: gthread$")


def run_cli(tmp_path, *args, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(APPS)
    return subprocess.run([PYTHON, "-m", "ferricorn", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=timeout)


CONF_MANY = """
dirty_workers = 2
logger_class = "my.Logger"
protocol = "uwsgi"
uwsgi_allow_ips = "10.0.0.1"
worker_class = "gevent"
"""


@pytest.mark.parametrize("check", [False, True])
def test_every_refusal_in_one_start(tmp_path, check):
    (tmp_path / "many.py").write_text(CONF_MANY)
    args = ["-c", "many.py", "-b", "127.0.0.1:0"] + (["--check-config"] if check else []) + ["basic:app"]
    out = run_cli(tmp_path, *args)
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert all(line.startswith("Error: ") for line in lines), lines
    text = out.stderr
    for name in ("dirty_workers (--dirty-workers)", "logger_class (--logger-class)", "protocol (--protocol)", "uwsgi_allow_ips (--uwsgi-allow-from)"):
        assert ("Setting %s is not supported" % name) in text, text
    assert 'Worker class "gevent"' in text and "-k gthread" in text
    assert "only HTTP is spoken" in text and "logconfig_dict" in text
    assert lines[-1] == "Error: ferricorn cannot run this configuration (5 reasons); see docs/migrating.md#settings-ferricorn-refuses"
    assert len(lines) == 6
    # Every refused setting named in a line is also in docs/migrating.md.
    doc = (APPS.parent.parent / "docs" / "migrating.md").read_text()
    assert "## Settings ferricorn refuses" in doc
    for name in ("dirty_workers", "logger_class", "protocol", "uwsgi_allow_ips", "gevent"):
        assert "`%s`" % name in doc


@pytest.mark.parametrize("worker", ["uvicorn.workers.UvicornWorker", "asgi", "uvicorn_worker.UvicornWorker"])
def test_wsgi_app_under_the_asgi_worker_names_the_wsgi_classes(start_server, worker):
    srv = start_server("-k", worker, "-b", "127.0.0.1:0", "basic:app", wait=False)
    assert srv.wait_exit() == 4
    log = srv.log()
    assert "is a WSGI app" in log and "-k sync, -k gthread or -k evloop" in log, log
    assert srv.count(r"Booting worker with pid") <= 1


def test_http2_refusal_does_not_ask_to_install_h2(tmp_path):
    out = run_cli(tmp_path, "--http-protocols", "h2,h1", "-b", "127.0.0.1:0", "basic:app")
    assert out.returncode == 2, out
    assert "HTTP/2 is not supported yet" in out.stderr, out.stderr
    assert "install" not in out.stderr.lower()


@pytest.mark.parametrize("spec", ["asgi_apps:app", "asgi_apps:instance"])
@pytest.mark.parametrize("worker", ["sync", "gthread", "evloop"])
def test_asgi_app_on_a_wsgi_worker_refuses_to_start(start_server, spec, worker):
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "-k", worker, spec, wait=False)
    assert srv.wait_exit() == 4
    log = srv.log()
    assert "is an ASGI app" in log and "run it with -k asgi" in log, log
    assert "Reason: App failed to load." in log
    assert srv.count(r"Booting worker with pid") <= 2


def test_asgi_app_refused_by_check_config_and_preload(tmp_path):
    out = run_cli(tmp_path, "--check-config", "asgi_apps:instance")
    assert out.returncode != 0 and "is an ASGI app" in out.stderr, out
    out = run_cli(tmp_path, "--preload", "-b", "127.0.0.1:0", "asgi_apps:app")
    assert out.returncode != 0 and "is an ASGI app" in out.stderr, out


def test_wsgi_object_with_async_methods_still_served(start_server):
    srv = start_server("-b", "127.0.0.1:0", "asgi_apps:wsgi_instance")
    status, _, body = get(srv.port)
    assert (status, body) == (200, b"wsgi")


def _cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().rstrip(b"\0").decode()


SPT_HOOK = """
import setproctitle

def post_worker_init(worker):
    before = setproctitle.getproctitle()
    setproctitle.setproctitle("[ready] " + before)
    worker.log.info("title before=%r after=%r", before, setproctitle.getproctitle())
"""


def test_setproctitle_in_a_hook_reads_and_replaces_ferricorns_title(start_server, tmp_path):
    """Airflow's webserver marks ready workers this way."""
    (tmp_path / "spt.py").write_text(SPT_HOOK)
    srv = start_server("-c", "spt.py", "-b", "127.0.0.1:0", "basic:app")
    m = srv.wait_for(r"\[(\d+)\] \[INFO\] title before='(.*)' after='(.*)'$")
    pid = int(m.group(1))
    assert m.group(2) == "ferricorn: worker [basic:app]"
    assert m.group(3) == "[ready] ferricorn: worker [basic:app]"
    assert _cmdline(pid) == "[ready] ferricorn: worker [basic:app]"
    assert _cmdline(srv.master_pid) == "ferricorn: master [basic:app]"


def test_titles_without_the_setproctitle_package(start_server):
    hidden = str(APPS / "no_setproctitle")
    srv = start_server("-b", "127.0.0.1:0", "basic:app", env={"PYTHONPATH": hidden + os.pathsep + str(APPS)})
    pid = int(srv.wait_for(r"Booting worker with pid: (\d+)").group(1))
    assert _cmdline(srv.master_pid) == "ferricorn: master [basic:app]"
    wait_until(lambda: _cmdline(pid) == "ferricorn: worker [basic:app]", what="worker title", log=srv.log)


LOGCONF = """
import json, logging, os


class Capture(logging.Formatter):
    '''A JSON formatter that reads record.args, as JSON access-log recipes do.'''

    def format(self, record):
        args = record.args
        out = {"name": record.name, "level": record.levelname, "args_type": type(args).__name__,
               "message": record.getMessage()}
        if isinstance(args, dict):
            out["msg"] = record.msg
            out["atoms"] = {k: args[k] for k in "hlusmUqHbBfar"}
            out["types"] = {k: type(args[k]).__name__ for k in "bBTDMLp"}
            out["rid"] = args["{x-request-id}i"]
            out["rid_upper"] = args["{X-Request-Id}i"]
            out["ctype"] = args["{content-type}o"]
            out["path_e"] = args["{path_info}e"]
            out["missing"] = args["{nope}i"]
            out["unknown_atom"] = args["zz"]
        return json.dumps(out)


logconfig_dict = {
    "version": 1,
    "root": {"level": "INFO", "handlers": []},
    "formatters": {"capture": {"()": Capture}},
    "handlers": {"file": {"class": "logging.FileHandler", "filename": os.environ["CAPTURE_FILE"],
                          "formatter": "capture"}},
    "loggers": {
        "gunicorn.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
        "gunicorn.error": {"handlers": ["file"], "level": "INFO", "propagate": False},
    },
}
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %({x-request-id}i)s'
"""


def _records(path):
    import json

    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _capture(tmp_path, name, cmd):
    import json  # noqa: F401

    (tmp_path / "logconf.py").write_text(LOGCONF)
    capture = str(tmp_path / ("%s.jsonl" % name))
    srv = Server(["-c", "logconf.py", "-b", "127.0.0.1:0", "basic:app"], cwd=tmp_path, cmd=cmd,
                 env={"CAPTURE_FILE": capture})
    try:
        # The error log goes to the capture file, not stdout: find the port there.
        wait_until(lambda: any(r["message"].startswith("Listening at:") for r in _records(capture)),
                   what="Listening at record", log=srv.log)
        (listen,) = [r for r in _records(capture) if r["message"].startswith("Listening at:")]
        port = int(listen["message"].split()[2].rsplit(":", 1)[1])
        headers = 'X-Request-Id: abc"123\r\nReferer: http://r/\r\nUser-Agent: t/1\r\n'
        status, _, _ = get(port, "/?x=1", headers=headers)
        assert status == 200
        wait_until(lambda: any(r["name"] == "gunicorn.access" for r in _records(capture)),
                   what="access record", log=srv.log)
        return listen, [r for r in _records(capture) if r["name"] == "gunicorn.access"][0]
    finally:
        srv.stop()


def test_logconfig_dict_class_objects_and_gunicorns_log_records(tmp_path):
    g_listen, g_access = _capture(tmp_path, "gunicorn", gunicorn_cmd())
    f_listen, f_access = _capture(tmp_path, "ferricorn", None)
    # Error records: logger name, level, a finished message.
    for rec in (g_listen, f_listen):
        assert (rec["name"], rec["level"], rec["args_type"]) == ("gunicorn.error", "INFO", "tuple"), rec
    # Access records: msg is the format, args the atoms dict, as gunicorn gives them.
    assert f_access["msg"] == g_access["msg"] == '%(h)s "%(r)s" %(s)s %(b)s %({x-request-id}i)s'
    assert f_access["args_type"] == "Atoms" or f_access["args_type"].endswith("Atoms")
    assert g_access["args_type"] == "SafeAtoms"
    for key in ("level", "atoms", "types", "rid", "rid_upper", "ctype", "path_e", "missing", "unknown_atom"):
        assert f_access[key] == g_access[key], (key, f_access[key], g_access[key])
    assert f_access["message"] == g_access["message"]
    assert f_access["rid"] == 'abc\\"123' and f_access["atoms"]["s"] == "200"


def test_gthread_threads_named_like_gunicorns(start_server, tmp_path):
    srv = start_server("-b", "127.0.0.1:0", "-k", "gthread", "--threads", "3", "threadname:app")
    names = set()
    for _ in range(6):
        status, _, body = get(srv.port)
        assert status == 200
        names.add(body.decode().split("|")[0])
    assert names <= {"ThreadPoolExecutor-0_0", "ThreadPoolExecutor-0_1", "ThreadPoolExecutor-0_2"}, names
    # gunicorn 27 itself names its gthread threads this way.
    g = Server(["-b", "127.0.0.1:0", "-k", "gthread", "--threads", "3", "threadname:app"], cwd=tmp_path,
               cmd=gunicorn_cmd())
    try:
        g.wait_listening()
        status, _, body = get(g.port)
        assert body.decode().split("|")[0] == "ThreadPoolExecutor-0_0"
    finally:
        g.stop()


@pytest.mark.parametrize("recipe, want", [
    ("import ferricorn\nferricorn.SERVER = 'undisclosed'\n", "undisclosed"),
    ("import gunicorn\ngunicorn.SERVER = 'undisclosed'\n", "undisclosed"),
    ("import ferricorn\nferricorn.SERVER = None\n", None),
    ("", "ferricorn"),
])
def test_server_header_set_from_the_config_file(start_server, tmp_path, recipe, want):
    (tmp_path / "srv.py").write_text(recipe)
    srv = start_server("-c", "srv.py", "-b", "127.0.0.1:0", "-w", "1", "basic:app")
    for path in ("/", "/?again"):
        status, headers, _ = get(srv.port, path)
        assert status == 200
        assert headers.get("server") == want, headers


def test_server_header_gunicorn_recipe_matches_gunicorn(tmp_path):
    (tmp_path / "srv.py").write_text("import gunicorn\ngunicorn.SERVER = 'undisclosed'\n")
    g = Server(["-c", "srv.py", "-b", "127.0.0.1:0", "basic:app"], cwd=tmp_path, cmd=gunicorn_cmd())
    try:
        g.wait_listening()
        _, headers, _ = get(g.port)
        assert headers.get("server") == "undisclosed"
    finally:
        g.stop()
