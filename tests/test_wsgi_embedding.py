"""ferricorn.app.base.BaseApplication, run the way gunicorn.app.base
subclasses are (tests/apps/embedded.py)."""

import signal
import sys

import pytest

from conftest import APPS, PYTHON, worker_classes
from wsgi_helpers import Client


@worker_classes()
def test_embedded_application_serves(worker, start_server):
    srv = start_server(cmd=[PYTHON, str(APPS / "embedded.py"), worker], workers_booted=2)
    c = Client(srv.port)
    status, headers, body = c.request("/", headers="Connection: close\r\n")
    c.close()
    assert status == 200 and body == b"embedded"
    srv.signal(signal.SIGTERM)
    assert srv.wait_exit() == 0


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
