"""ferricorn.app.base.BaseApplication, run the way gunicorn.app.base
subclasses are (tests/apps/embedded.py)."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import APPS, PYTHON, Server
from wsgi_helpers import Client


class ScriptServer(Server):
    def __init__(self, script, args, cwd):
        env = dict(os.environ, PYTHONPATH=str(APPS))
        self.proc = subprocess.Popen(
            [PYTHON, script, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        import threading

        self.lines = []
        self._lock = threading.Lock()
        self._new = threading.Condition(self._lock)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self.port = None
        self.master_pid = self.proc.pid


@pytest.mark.parametrize("worker", ["sync", "gthread", "evloop"])
def test_embedded_application_serves(worker, tmp_path):
    srv = ScriptServer(str(APPS / "embedded.py"), [worker], tmp_path)
    try:
        srv.wait_listening()
        srv.wait_booted(2)
        c = Client(srv.port)
        status, headers, body = c.request("/", headers="Connection: close\r\n")
        c.close()
        assert status == 200 and body == b"embedded"
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0
    finally:
        srv.stop()


def test_config_rejects_unknown_settings():
    from ferricorn.app.base import Config

    cfg = Config()
    with pytest.raises(AttributeError):
        cfg.set("no_such_setting", 1)
    cfg.set("bind", "127.0.0.1:9")
    cfg.set("workers", 3)
    cfg.set("preload_app", True)
    cfg.set("sendfile", False)
    assert cfg.to_argv() == ["--bind", "127.0.0.1:9", "--workers", "3", "--preload", "--no-sendfile"]
    assert cfg.workers == 3
    assert sys.modules["ferricorn.app.base"]._CURRENT is None
