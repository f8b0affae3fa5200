"""Process-level behaviour: the timeout report in the error log, gthread
replace-before-retire, process titles, privileges, daemon mode."""

import os
import re
import signal
import socket
import subprocess
import time

from conftest import get

TS = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\]"


def wait_file(path, pattern, timeout=15.0):
    """Wait until the file's text matches `pattern` (multi-line); return the text."""
    rx = re.compile(pattern, re.M)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if rx.search(text):
            return text
        time.sleep(0.05)
    raise AssertionError("no match for %r in %s within %.1fs:\n%s" % (pattern, path, timeout, text))


def stuck(port, path):
    """Open a connection stuck in the app on `path` (the caller keeps it open)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
    return s


def test_timeout_report_goes_to_the_error_log_file_and_syslog(start_server, tmp_path):
    errlog = tmp_path / "error.log"
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(10)
    syslog = "udp://127.0.0.1:%d" % rx.getsockname()[1]
    srv = start_server("-b", "127.0.0.1:0", "-t", "2", "--error-logfile", str(errlog),
                       "--log-syslog", "--log-syslog-to", syslog, "--log-syslog-facility", "local1",
                       "--log-syslog-prefix", "web", "basic:app", wait=False)
    wait_file(errlog, r"Booting worker with pid")
    port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", errlog.read_text()).group(1))
    start = time.monotonic()
    with stuck(port, "/sleep?30"):
        text = wait_file(errlog, r"Worker \(pid:\d+\) exited with code 1", timeout=10)
    assert time.monotonic() - start < 2 + 2
    # One ERROR record in gunicorn's format: the request line, then the stack.
    m = re.search(
        TS + r" \[ERROR\] Worker timed out while serving: GET /sleep\?30 HTTP/1\.1\n"
        r"Thread MainThread serving GET /sleep\?30 HTTP/1\.1 \(most recent call last\):\n"
        r'(  File ".*", line \d+, in .*\n(    .*\n)?)*'
        r'  File ".*basic\.py", line \d+, in app\n    time\.sleep\(',
        text,
    )
    assert m, text
    # The same record as one syslog message (local1.err = 17 * 8 + 3).
    deadline = time.monotonic() + 10
    while True:
        assert time.monotonic() < deadline
        got = rx.recv(65536)
        if b"Worker timed out" in got:
            break
    rx.close()
    assert re.match(rb"<139>gunicorn\.web\.error: \[\d+\] Worker timed out while serving: GET /sleep\?30 HTTP/1\.1\n"
                    rb"Thread MainThread serving .*\n(.|\n)*basic\.py", got), got
    # Nothing of it on stderr/stdout.
    assert "most recent call" not in srv.log(), srv.log()
    wait_file(errlog, r"Booting worker with pid(.|\n)*Booting worker with pid")
    assert get(port)[0] == 200


def test_gthread_max_requests_replaces_before_retiring_without_failures(start_server):
    srv = start_server("-b", "127.0.0.1:0", "-k", "gthread", "--threads", "2", "-w", "2",
                       "--max-requests", "15", "basic:app", workers_booted=2)
    ok, failures = 0, []
    deadline = time.monotonic() + 45
    while srv.count(r"Worker exiting") < 3:
        assert time.monotonic() < deadline, srv.log()
        try:
            status = get(srv.port, headers="Connection: close\r\n")[0]
            if status == 200:
                ok += 1
            else:
                failures.append(status)
        except Exception as e:  # noqa: BLE001 - any failure counts
            failures.append(repr(e))
    assert failures == [], failures[:5]
    assert ok >= 45
    assert srv.count(r"Autorestarting worker after current request\.") >= 3
    # Each retirement waited for its replacement: the master asked for it first.
    assert srv.count(r"Replacing worker \(pid:\d+\): max requests reached") >= 3
    log = srv.log()
    first = re.search(r"Replacing worker \(pid:(\d+)\)", log)
    pid = first.group(1)
    # The replacement booted before the old worker exited.
    replaced_at = log.index(first.group(0))
    exited_at = log.index("Worker exiting (pid: %s)" % pid)
    assert re.search(r"Booting worker with pid", log[replaced_at:exited_at]), log


def cmdline(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().rstrip(b"\0").decode()


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().rstrip("\n")


def ps_args(pid):
    out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def worker_pids(srv, start=0):
    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", srv.log())[start:]]


def test_process_titles_default_to_the_app_spec(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    assert cmdline(srv.master_pid) == "ferricorn: master [basic:app]"
    assert ps_args(srv.master_pid) == "ferricorn: master [basic:app]"
    assert comm(srv.master_pid) == "ferricorn: mast"
    (worker,) = worker_pids(srv)
    assert cmdline(worker) == "ferricorn: worker [basic:app]"
    assert comm(worker) == "ferricorn: work"
    assert get(srv.port)[0] == 200


def test_proc_name_sets_titles_and_hup_updates_them(start_server, tmp_path):
    conf = tmp_path / "ferricorn.conf.py"
    conf.write_text("proc_name = 'first'\n")
    srv = start_server("-c", str(conf), "-b", "127.0.0.1:0", "-k", "gthread", "basic:app")
    assert cmdline(srv.master_pid) == "ferricorn: master [first]"
    (worker,) = worker_pids(srv)
    assert cmdline(worker) == "ferricorn: worker [first]"
    conf.write_text("proc_name = 'second'\n")
    srv.signal(signal.SIGHUP)
    srv.wait_booted(2)
    (new,) = worker_pids(srv, 1)
    assert cmdline(new) == "ferricorn: worker [second]"
    assert cmdline(srv.master_pid) == "ferricorn: master [second]"
    # -n on the command line wins over the config file, as in gunicorn.
    srv2 = start_server("-c", str(conf), "-n", "cli-name", "-b", "127.0.0.1:0", "basic:app")
    assert ps_args(srv2.master_pid) == "ferricorn: master [cli-name]"
