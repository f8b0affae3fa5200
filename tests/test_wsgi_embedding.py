"""ferricorn.app.base.BaseApplication, run the way gunicorn.app.base
subclasses are (tests/apps/embedded.py)."""

import signal
import sys

import pytest

from conftest import APPS, PYTHON, Server
from wsgi_helpers import Client


@pytest.mark.parametrize("worker", ["sync", "gthread", "evloop"])
def test_embedded_application_serves(worker, tmp_path):
    srv = Server([], tmp_path, cmd=[PYTHON, str(APPS / "embedded.py"), worker])
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
