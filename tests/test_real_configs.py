"""Patterns found in real projects' gunicorn configuration files (issue 18),
each in a configuration written for the test."""

import pytest

from conftest import APPS, get, gunicorn_cmd
from test_dropin import run_cli

# A project ships its own worker class: a thin subclass of a server's
# worker, named by its dotted path in the config file.
SERVER_WORKERS = """
class Worker:
    pass
"""

PROJECT_WORKERS = """
from {server}.workers import Worker


class TunedWorker(Worker):
    tuning = {{"ws": "none"}}
"""

PROJECT_CONF = """
import os

bind = "127.0.0.1:" + os.getenv("SHOP_PORT", "0")
worker_class = "shop.workers.TunedWorker"
protocol = "uwsgi"
preload_app = True


def when_ready(server):
    server.log.info("shop is ready")
"""


@pytest.mark.parametrize("check", [False, True])
@pytest.mark.parametrize("server,kind", [
    ("stub_asgi_server", "ferricorn serves ASGI apps with -k asgi"),
    ("stub_gevent_server", "has no greenlet/tornado event-loop workers"),
])
def test_project_worker_subclass_refused_for_what_it_inherits(tmp_path, server, kind, check):
    (tmp_path / server).mkdir()
    (tmp_path / server / "__init__.py").write_text("")
    (tmp_path / server / "workers.py").write_text(SERVER_WORKERS)
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "workers.py").write_text(PROJECT_WORKERS.format(server=server))
    (tmp_path / "shop.conf.py").write_text(PROJECT_CONF)
    out = run_cli(tmp_path, "-c", "shop.conf.py", *(["--check-config"] if check else []), "basic:app")
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith("Error: Setting protocol (--protocol) is not supported"), lines
    want = 'Error: Worker class "shop.workers.TunedWorker" (worker_class) (a subclass of %s.workers.Worker) is not available: ' % server
    assert lines[1].startswith(want), lines
    assert kind in lines[1], lines
    assert "-k sync" not in lines[1], lines
    assert lines[2].startswith("Error: ferricorn cannot run this configuration (2 reasons)"), lines


def test_unimportable_worker_class_keeps_the_general_refusal(tmp_path):
    out = run_cli(tmp_path, "-k", "nowhere.workers.Worker", "-b", "127.0.0.1:0", "basic:app")
    assert out.returncode == 2, out
    assert 'Worker class "nowhere.workers.Worker" (worker_class) is not available: ferricorn does not load Python worker classes' in out.stderr, out.stderr


# A hook loads the project's settings in the worker, and the settings set the
# process's zone (Django: TIME_ZONE sets TZ and calls time.tzset()).
ZONE_CONF = """
import os
import time


def post_fork(server, worker):
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()


def pre_request(worker, req):
    worker.log.info("serving %s", req.path)
"""


@pytest.mark.parametrize("oracle", [False, True])
def test_log_times_follow_a_zone_set_in_the_worker(start_server, tmp_path, oracle):
    (tmp_path / "zone.conf.py").write_text(ZONE_CONF)
    srv = start_server("-c", "zone.conf.py", "-b", "127.0.0.1:0", "--access-logfile", "-", "basic:app",
                       cmd=gunicorn_cmd() if oracle else None, env={"TZ": "UTC", "PYTHONPATH": str(APPS)})
    assert get(srv.port, "/")[0] == 200
    worker_line = srv.wait_for(r"^\[[^]]*\] \[\d+\] \[INFO\] serving /$").group(0)
    access_line = srv.wait_for(r'"GET / HTTP/1.1" 200').string
    listening = srv.wait_for(r"Listening at: ").string
    assert " +0000] " in listening, listening
    assert " +0530] " in worker_line, worker_line
    assert " +0530]" in access_line, access_line
