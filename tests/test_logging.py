"""Error and access logs in gunicorn's formats (compared line by line with
gunicorn 27.0.1 in test_log_oracle.py): log rotation on USR1, syslog,
--capture-output, timeout messages, Python logging configuration."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import APPS, PYTHON, get, raw_request, wait_file, worker_args, worker_classes


def test_access_line_shapes(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--access-logfile", "-", "basic:app")
    raw_request(srv.port, b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: t\"v\r\n\r\n")
    tail = re.escape('"GET /x?y=1 HTTP/1.1" 404 9 "-" "t\\"v"')
    m = srv.wait_for(r"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] " + tail + "$")
    assert m


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_log_level_filters(start_server):
    port = _free_port()
    srv = start_server("-b", "127.0.0.1:%d" % port, "--log-level", "warning", "basic:app", wait=False)
    deadline = time.monotonic() + 20
    while True:
        try:
            raw_request(port, b"GARBAGE\r\n\r\n")
            break
        except OSError:
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.05)
    srv.wait_for(r"\[WARNING\] Invalid request from ip=127\.0\.0\.1")
    assert srv.count(r"\[INFO\]") == 0, srv.log()


@worker_classes("sync", "evloop")
def test_error_logfile_and_usr1_reopen(start_server, tmp_path, worker):
    err = tmp_path / "error.log"
    acc = tmp_path / "access.log"
    srv = start_server("-b", "127.0.0.1:0", *worker_args(worker), "--error-logfile", str(err), "--access-logfile", str(acc),
                       "basic:app", wait=False)
    deadline = time.monotonic() + 20
    while "Booting worker" not in (err.read_text() if err.exists() else ""):
        assert time.monotonic() < deadline, "no boot line in the error log file"
        time.sleep(0.05)
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", err.read_text()).group(1))
    close = "Connection: close\r\n"
    assert get(port, "/first", headers=close)[0] == 404
    assert "GET /first" in acc.read_text()
    os.rename(err, tmp_path / "error.log.1")
    os.rename(acc, tmp_path / "access.log.1")
    srv.signal(signal.SIGUSR1)
    # The master logs "Handling signal: usr1" into the reopened file, and each worker reopens on USR1.
    deadline = time.monotonic() + 10
    while True:
        get(port, "/second", headers=close)
        if acc.exists() and "GET /second" in acc.read_text():
            break
        assert time.monotonic() < deadline, "access log not recreated after USR1"
    # The worker writes to the recreated error log...
    raw_request(port, b"GARBAGE\r\n\r\n")
    # ...and so does the master.
    srv.signal(signal.SIGTTIN)
    deadline = time.monotonic() + 10
    while not (err.exists() and "Invalid request from ip=" in err.read_text()
               and "Handling signal: ttin" in err.read_text()):
        assert time.monotonic() < deadline, "error log not recreated after USR1"
        time.sleep(0.05)
    # A fresh file: requests served before the reopen stayed in the rotated one.
    assert "GET /first" not in acc.read_text()
    assert "GET /first" in (tmp_path / "access.log.1").read_text()


def test_syslog_over_udp(start_server):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    port = rx.getsockname()[1]
    srv = start_server("-b", "127.0.0.1:0", "--log-syslog", "--log-syslog-to", "udp://127.0.0.1:%d" % port,
                       "--log-syslog-facility", "local1", "--log-syslog-prefix", "web", "basic:app")
    get(srv.port, "/")
    got = []
    deadline = time.monotonic() + 10
    while not any(b"access:" in g for g in got):
        assert time.monotonic() < deadline, got
        got.append(rx.recv(4096))
    rx.close()
    # local1 = 17 -> 17 * 8 + info(6) = 142
    assert any(re.fullmatch(rb"<142>gunicorn\.web\.error: \[\d+\] Booting worker with pid: \d+\x00", g) for g in got), got
    assert any(re.fullmatch(rb'<142>gunicorn\.web\.access: \[\d+\] 127\.0\.0\.1 - - \[.+\] "GET / HTTP/1\.1" 200 13 "-" "-"\x00', g) for g in got), got


def test_capture_output(start_server, tmp_path):
    err = tmp_path / "err.log"
    srv = start_server("-b", "127.0.0.1:0", "--capture-output", "--error-logfile", str(err), "printing:app", wait=False)
    text = _wait_file(err, "Booting worker")
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text).group(1))
    assert get(port, "/")[0] == 200
    text = _wait_file(err, "raw fd 2 write")
    assert "printed to stdout" in text and "written to stderr" in text
    # Nothing reached the server's own stdout/stderr pipe.
    assert "printed to stdout" not in srv.log()


def test_without_capture_output_app_output_stays_on_stdio(start_server, tmp_path):
    err = tmp_path / "err.log"
    srv = start_server("-b", "127.0.0.1:0", "--error-logfile", str(err), "printing:app", wait=False)
    text = _wait_file(err, "Booting worker")
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text).group(1))
    assert get(port, "/")[0] == 200
    srv.wait_for("raw fd 2 write")
    assert "printed to stdout" not in err.read_text()


def test_timeout_names_the_request(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-t", "2", "basic:app")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(b"GET /sleep?30 HTTP/1.1\r\nHost: x\r\n\r\n")
        m = srv.wait_for(r"\[CRITICAL\] WORKER TIMEOUT \(pid:\d+\) while handling GET /sleep\?30 for (\d+\.\d) s$",
                         timeout=10)
    assert float(m.group(1)) >= 2.0


def test_boot_failure_traceback_at_any_level(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--log-level", "critical", "broken_import:app", wait=False)
    srv.wait_exit()
    assert srv.count(r"Traceback \(most recent call last\)") >= 1, srv.log()




LOG_INI = """
[loggers]
keys=root,error,access

[handlers]
keys=file

[formatters]
keys=plain

[logger_root]
level=INFO
handlers=

[logger_error]
level=DEBUG
handlers=file
propagate=0
qualname=gunicorn.error

[logger_access]
level=INFO
handlers=file
propagate=0
qualname=gunicorn.access

[handler_file]
class=FileHandler
formatter=plain
args=('%(here)s/out.log', 'a')

[formatter_plain]
format=%(name)s|%(levelname)s|%(message)s
"""


def _wait_file(path, text, timeout=20):
    return wait_file(path, re.escape(text), timeout)


def _served_through_python(out, prefix):
    """Boot, one request and its access record land in `out`, each line
    starting with `prefix(logger, level)`; returns the server's port."""
    text = _wait_file(out, prefix("gunicorn.error", "INFO") + "Booting worker with pid:")
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", text).group(1))
    assert get(port, "/")[0] == 200
    text = _wait_file(out, prefix("gunicorn.access", "INFO") + "127.0.0.1 - - [")
    assert '"GET / HTTP/1.1" 200 13 "-" "-"' in text
    # The configuration's DEBUG level on gunicorn.error wins over the default --log-level info.
    assert prefix("gunicorn.error", "DEBUG") + "GET /" in text
    return port


def test_log_config_ini_routes_through_python_logging(start_server, tmp_path):
    ini = tmp_path / "log.ini"
    ini.write_text(LOG_INI)
    out = tmp_path / "out.log"
    srv = start_server("-b", "127.0.0.1:0", "--log-config", str(ini), "basic:app", wait=False)
    port = _served_through_python(out, lambda name, level: "%s|%s|" % (name, level))
    # USR1 reopens Python's FileHandlers too.
    os.rename(out, tmp_path / "out.log.1")
    srv.signal(signal.SIGUSR1)
    deadline = time.monotonic() + 10
    while not (out.exists() and "gunicorn.access" in out.read_text()):
        assert time.monotonic() < deadline, "Python FileHandler not reopened"
        get(port, "/")


def _file_dict_config(out, fmt, levels):
    """A dictConfig sending the loggers named in `levels` to the file `out`.
    It replaces gunicorn's default "handlers" whole, so it replaces the
    default root (which names them) too, as gunicorn requires."""
    return {
        "version": 1,
        "formatters": {"f": {"format": fmt}},
        "handlers": {"h": {"class": "logging.FileHandler", "filename": str(out), "formatter": "f"}},
        "root": {"level": "INFO", "handlers": []},
        "loggers": {name: {"level": level, "handlers": ["h"], "propagate": False} for name, level in levels.items()},
    }


def test_log_config_json(start_server, tmp_path):
    import json

    out = tmp_path / "j.log"
    cfg = _file_dict_config(out, "J %(name)s %(message)s", {"gunicorn.error": "INFO"})
    path = tmp_path / "log.json"
    path.write_text(json.dumps(cfg))
    start_server("-b", "127.0.0.1:0", "--log-config-json", str(path), "basic:app", wait=False)
    _wait_file(out, "J gunicorn.error Booting worker with pid:")


def test_logconfig_dict_from_config_file(start_server, tmp_path):
    """`logconfig_dict` in a configuration file: dictConfig over gunicorn's
    defaults; error and access records reach the user's handlers."""
    out = tmp_path / "d.log"
    cfg = _file_dict_config(out, "D %(name)s %(levelname)s %(message)s",
                            {"gunicorn.error": "DEBUG", "gunicorn.access": "INFO"})
    conf = tmp_path / "conf.py"
    conf.write_text("logconfig_dict = %r\n" % cfg)
    start_server("-c", str(conf), "-b", "127.0.0.1:0", "basic:app", wait=False)
    _served_through_python(out, lambda name, level: "D %s %s " % (name, level))


def test_bad_logconfig_dict_stops_start_up(tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("logconfig_dict = {'version': 1, 'handlers': {'h': {'class': 'no.such.Handler'}}}\n")
    out = subprocess.run([PYTHON, "-m", "ferricorn", "-c", str(conf), "basic:app"], cwd=tmp_path,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(APPS)), timeout=30)
    assert out.returncode != 0
    assert b"Unable to configure handler 'h'" in out.stderr, out.stderr


def test_missing_log_config_file_fails(tmp_path):
    out = subprocess.run([PYTHON, "-m", "ferricorn", "--log-config", "nope.ini", "basic:app"], cwd=tmp_path,
                         capture_output=True, env=dict(os.environ, PYTHONPATH=str(APPS)), timeout=30)
    assert out.returncode != 0
    assert b"log config 'nope.ini' not found" in out.stderr, out.stderr


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
