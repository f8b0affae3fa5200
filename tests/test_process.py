"""Process-level behaviour: the timeout report in the error log, gthread
replace-before-retire, process titles, privileges, daemon mode."""

import grp
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import get, wait_file, wait_until

TS = r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\]"


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
    ok, failures = [0, 0], []
    stop = threading.Event()

    def loop(n):
        while not stop.is_set():
            try:
                status = get(srv.port, headers="Connection: close\r\n")[0]
                if status == 200:
                    ok[n] += 1
                else:
                    failures.append(status)
            except Exception as e:  # noqa: BLE001 - any failure counts
                failures.append(repr(e))

    clients = [threading.Thread(target=loop, args=(n,), daemon=True) for n in range(2)]
    for c in clients:
        c.start()
    try:
        wait_until(lambda: srv.count(r"Worker exiting") >= 6, timeout=45, what="six worker exits", log=srv.log)
    finally:
        stop.set()
        for c in clients:
            c.join(15)
    assert failures == [], failures[:5]
    assert sum(ok) >= 6 * 15
    assert srv.count(r"Autorestarting worker after current request\.") >= 3
    # Each retirement waited for its replacement: the master asked for it first.
    assert srv.count(r"Replacing worker \(pid:\d+\): max requests reached") >= 3
    log = srv.log()
    # (asked for ahead of the budget, or when it was spent)
    first = re.search(r"(?:Starting a replacement for|Replacing) worker \(pid:(\d+)\)", log)
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


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            fields[k] = v.split()
    return fields


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


# The tests that switch users preload the app: this machine's Python lives
# under /root, which other users cannot read, so a worker running as nobody
# could not import modules the master did not load already.


@root_only
def test_user_and_group_drop_privileges_in_workers_only(start_server, tmp_path, request):
    sock = tmp_path / "s.sock"
    # pytest's tmp_path is root-only; the workers must reach the log's directory.
    logdir = Path(tempfile.mkdtemp(prefix="ferricorn-logs-"))
    request.addfinalizer(lambda: shutil.rmtree(logdir, ignore_errors=True))
    logdir.chmod(0o755)
    access = logdir / "access.log"
    srv = start_server("-b", "127.0.0.1:0", "-b", "unix:%s" % sock, "--user", "nobody", "--group", "nogroup", "--preload",
                       "--access-logfile", str(access), "basic:app")
    nobody = pwd.getpwnam("nobody")
    nogroup = grp.getgrnam("nogroup").gr_gid
    # A request answered: the worker has dropped its privileges (it does
    # so after the "Booting worker" line the fixture waits for).
    assert get(srv.port)[0] == 200
    (worker,) = worker_pids(srv)
    st = proc_status(worker)
    assert st["Uid"] == [str(nobody.pw_uid)] * 4, st["Uid"]
    assert st["Gid"] == [str(nogroup)] * 4, st["Gid"]
    # Root's supplementary groups are gone.
    assert st["Groups"] == [str(nogroup)], st["Groups"]
    master = proc_status(srv.master_pid)
    assert master["Uid"][0] == "0" and master["Gid"][0] == "0"
    assert get(srv.port)[0] == 200
    # The unix socket belongs to the workers' user and group.
    assert (sock.stat().st_uid, sock.stat().st_gid) == (nobody.pw_uid, nogroup)
    # So does the log file, so that workers can reopen it on USR1.
    assert (access.stat().st_uid, access.stat().st_gid) == (nobody.pw_uid, nogroup)
    access.rename(logdir / "access.log.1")
    srv.signal(signal.SIGUSR1)
    wait_until(lambda: access.exists(), what="reopened access log")
    wait_until(lambda: srv.count(r"Handling signal: usr1") == 1, what="USR1 handled")
    # The worker reopened the new file (owned by nobody again) and logs there.
    for _ in range(20):
        get(srv.port, "/after-reopen")
        if "/after-reopen" in access.read_text():
            break
        time.sleep(0.05)
    assert "/after-reopen" in access.read_text()
    assert (access.stat().st_uid, access.stat().st_gid) == (nobody.pw_uid, nogroup)
    assert "Error opening log file" not in srv.log(), srv.log()


def user_with_supplementary_groups():
    """A user listed as a member of some group (so --initgroups shows), else nobody."""
    for g in grp.getgrall():
        for member in g.gr_mem:
            try:
                pwd.getpwnam(member)
                return member
            except KeyError:
                pass
    return "nobody"


@root_only
def test_initgroups_loads_the_users_groups(start_server):
    user = user_with_supplementary_groups()
    nogroup = grp.getgrnam("nogroup").gr_gid
    srv = start_server("-b", "127.0.0.1:0", "--user", user, "--group", "nogroup", "--initgroups", "--preload",
                       "basic:app")
    # A request answered: the worker has dropped its privileges (it does
    # so after the "Booting worker" line the fixture waits for).
    assert get(srv.port)[0] == 200
    (worker,) = worker_pids(srv)
    st = proc_status(worker)
    expected = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {nogroup}
    assert {int(g) for g in st["Groups"]} == expected, st["Groups"]
    assert st["Uid"][0] == str(pwd.getpwnam(user).pw_uid)
    assert st["Gid"][0] == str(nogroup)


def test_unknown_user_or_group_is_refused(start_server):
    for flag, name, what in (("--user", "no-such-user-xyz", "user"), ("--group", "no-such-group-xyz", "group")):
        srv = start_server("-b", "127.0.0.1:0", flag, name, "basic:app", wait=False)
        assert srv.wait_exit() == 1
        assert "No such %s: '%s'" % (what, name) in srv.log(), srv.log()


def test_umask_sets_the_unix_socket_mode(start_server, tmp_path):
    default = tmp_path / "default.sock"
    start_server("-b", "unix:%s" % default, "basic:app")
    # gunicorn's default umask is 0: the socket is open to everyone.
    assert stat.S_IMODE(default.stat().st_mode) == 0o777
    strict = tmp_path / "strict.sock"
    start_server("-b", "unix:%s" % strict, "--umask", "0o077", "basic:app")
    assert stat.S_IMODE(strict.stat().st_mode) == 0o700


def test_worker_tmp_dir_must_be_a_directory(start_server, tmp_path):
    srv = start_server("-b", "127.0.0.1:0", "--worker-tmp-dir", str(tmp_path / "missing"), "basic:app", wait=False)
    assert srv.wait_exit() != 0
    assert re.search(r"Error: Invalid value for worker_tmp_dir: .*missing.*: not a directory", srv.log()), srv.log()
    srv = start_server("-b", "127.0.0.1:0", "--worker-tmp-dir", str(tmp_path), "basic:app")
    assert get(srv.port)[0] == 200


def pid_gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True




def test_daemon_detaches_serves_and_stops_on_term_via_pidfile(start_server, tmp_path):
    pidfile = tmp_path / "app.pid"
    errlog = tmp_path / "error.log"
    srv = start_server("-D", "-p", str(pidfile), "--error-logfile", str(errlog), "-b", "127.0.0.1:0",
                       "basic:app", wait=False)
    # The launching process returns at once, successfully.
    assert srv.wait_exit() == 0
    wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), what="pidfile")
    daemon = int(pidfile.read_text())
    try:
        assert daemon != srv.proc.pid
        text = wait_file(errlog, r"Booting worker with pid")
        port = int(re.search(r"Listening at: http://127\.0\.0\.1:(\d+) \((\d+)\)", text).group(1))
        assert re.search(r"Listening at: \S+ \(%d\)" % daemon, text)
        # Detached: a new session it does not lead (no terminal can come back),
        # no controlling terminal, stdio on /dev/null, umask 022.
        fields = open("/proc/%d/stat" % daemon).read().rsplit(")", 1)[1].split()
        session, tty = int(fields[3]), int(fields[4])
        assert session not in (os.getsid(0), daemon) and tty == 0
        for fd in (0, 1, 2):
            assert os.readlink("/proc/%d/fd/%d" % (daemon, fd)) == "/dev/null"
        assert proc_status(daemon)["Umask"] == ["0022"]
        assert get(port)[0] == 200
        # WINCH when daemonized: every worker is stopped and none replaced...
        os.kill(daemon, signal.SIGWINCH)
        text = wait_file(errlog, r"Handling signal: winch\n.*graceful stop of workers(.|\n)*Worker exiting")
        # ...until TTIN asks for one again.
        booted = text.count("Booting worker with pid")
        assert booted == 1, text
        os.kill(daemon, signal.SIGTTIN)
        wait_file(errlog, r"Booting worker with pid(.|\n)*Booting worker with pid")
        assert get(port)[0] == 200
        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        wait_until(lambda: pid_gone(daemon), what="daemon exit")
        assert not pidfile.exists()
        wait_file(errlog, r"Shutting down: Master")
    finally:
        if not pid_gone(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_winch_is_ignored_when_not_daemonized(start_server):
    srv = start_server("-b", "127.0.0.1:0", "--log-level", "debug", "basic:app")
    srv.signal(signal.SIGWINCH)
    srv.wait_for(r"\[DEBUG\] SIGWINCH ignored\. Not daemonized")
    assert get(srv.port)[0] == 200
    assert srv.count(r"Worker exiting") == 0


def test_daemon_with_stdio_inheritance_keeps_a_redirected_stdout(start_server, tmp_path):
    pidfile = tmp_path / "app.pid"
    srv = start_server("-D", "-R", "-p", str(pidfile), "-b", "127.0.0.1:0", "basic:app", wait=False)
    assert srv.wait_exit() == 0
    # The log still reaches the pipe the test reads (not a terminal, so kept).
    srv.wait_listening()
    srv.wait_booted()
    daemon = int(pidfile.read_text())
    try:
        assert os.readlink("/proc/%d/fd/0" % daemon) == "/dev/null"
        assert os.readlink("/proc/%d/fd/2" % daemon).startswith("pipe:")
        assert get(srv.port)[0] == 200
        os.kill(daemon, signal.SIGTERM)
        srv.wait_for(r"Shutting down: Master")
        wait_until(lambda: pid_gone(daemon), what="daemon exit")
    finally:
        if not pid_gone(daemon):
            os.kill(daemon, signal.SIGKILL)


def test_reexecuted_master_title_has_dot_2_until_promoted(start_server):
    srv = start_server("-b", "127.0.0.1:0", "basic:app")
    old = srv.master_pid
    srv.signal(signal.SIGUSR2)
    m = srv.wait_for(r"\[(\d+)\] \[INFO\] Listening at: http://127\.0\.0\.1:%d \((?!%d\))\d+\)" % (srv.port, old))
    new = int(m.group(1))
    try:
        srv.wait_booted(2)
        assert cmdline(new) == "ferricorn: master [basic:app.2]"
        (_, child_worker) = worker_pids(srv)
        assert cmdline(child_worker) == "ferricorn: worker [basic:app.2]"
        assert cmdline(old) == "ferricorn: master [basic:app]"
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0
        srv.wait_for(r"\[%d\] \[INFO\] Master has been promoted\." % new)
        wait_until(lambda: cmdline(new) == "ferricorn: master [basic:app]", what="promoted title")
    finally:
        os.kill(new, signal.SIGTERM)
        wait_until(lambda: pid_gone(new), what="new master exit")


def test_spew_traces_the_lines_a_worker_runs(start_server):
    # gunicorn's --spew: every executed line of the app, `module:lineno: source`, on stdout.
    srv = start_server("-b", "127.0.0.1:0", "--spew", "basic:app")
    assert get(srv.port)[0] == 200
    srv.wait_for(r"^basic:\d+:\s+path = environ\[\"PATH_INFO\"\]$")
    srv.wait_for(r"^basic:\d+:\s+return \[body\]$")


def test_reuse_port_lets_another_socket_share_the_port(start_server):
    # --reuse-port: the master's listener carries SO_REUSEPORT, so a second
    # server (a new deployment, say) can bind the same port beside it.
    srv = start_server("-b", "127.0.0.1:0", "-w", "2", "--reuse-port", "basic:app", workers_booted=2)
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", srv.port))
    other.close()
    assert get(srv.port)[0] == 200
    plain = start_server("-b", "127.0.0.1:0", "basic:app")
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    with pytest.raises(OSError):
        other.bind(("127.0.0.1", plain.port))
    other.close()
