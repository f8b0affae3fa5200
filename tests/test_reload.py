"""--reload: edit the app under a running server and see the new code; an app
that fails to import serves its traceback until fixed; extra files and
patterns; both engines; no CPU while idle; the --preload warning."""

import os
import time

import pytest

from conftest import get, pid_alive, wait_until

APP = '''
import helper

def app(environ, start_response):
    body = (helper.VERSION + " " + VERSION).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

VERSION = "%s"
'''


def write(path, text):
    path.write_text(text)
    # A new mtime even on filesystems with coarse timestamps.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def save_like_an_editor(path, text):
    """Write a temp file next to it, then rename it over the original."""
    tmp = path.with_name("." + path.name + ".swp")
    write(tmp, text)
    os.replace(tmp, path)


def body(srv):
    status, _, data = get(srv.port)
    return status, data.decode()


def wait_body(srv, want, timeout=10):
    wait_until(lambda: body(srv) == (200, want), timeout=timeout, what="body %r" % want, log=srv.log)


@pytest.fixture
def project(tmp_path):
    (tmp_path / "helper.py").write_text('VERSION = "h1"\n')
    (tmp_path / "reloadapp.py").write_text(APP % "v1")
    return tmp_path


def start(start_server, project, *args):
    """Start and wait for the first response: the app is imported and the
    worker's reloader has taken its first look (it does before serving)."""
    srv = start_server("-b", "127.0.0.1:0", "--pythonpath", str(project), "--reload", *args, "reloadapp:app")
    assert body(srv) == (200, "h1 v1")
    return srv


@pytest.mark.parametrize("klass", ["sync", "gthread", "evloop"])
def test_editing_a_module_serves_the_new_code_after_one_reload(start_server, project, klass):
    srv = start(start_server, project, "-k", klass, "--worker-connections", "50")
    srv.wait_for(r"\[WARNING\] Reloader is on. Use in development only!")
    first = int(srv.wait_for(r"Booting worker with pid: (\d+)").group(1))
    # An imported module other than the app's, saved as editors do.
    save_like_an_editor(project / "helper.py", 'VERSION = "h2"\n')
    srv.wait_for(r"\[INFO\] Worker reloading: %s modified" % (project / "helper.py"))
    wait_body(srv, "h2 v1")
    wait_until(lambda: not pid_alive(first), what="old worker gone", log=srv.log)
    # A second, different change: the first save restarted the worker exactly once.
    write(project / "reloadapp.py", APP % "v2")
    wait_body(srv, "h2 v2")
    assert srv.count(r"Worker reloading:") == 2, srv.log()
    assert srv.count(r"Booting worker with pid") == 3, srv.log()


def test_an_app_that_fails_to_import_serves_its_traceback_until_fixed(start_server, project):
    srv = start(start_server, project, "--reload-engine", "poll")
    write(project / "reloadapp.py", "def app(:\n")
    srv.wait_for(r"Worker reloading: .*reloadapp.py modified")

    def broken():
        status, data = body(srv)
        return status == 500 and "SyntaxError" in data and "reloadapp.py" in data

    wait_until(broken, what="500 with the traceback", log=srv.log)
    assert srv.proc.poll() is None, "the server keeps running"
    # The file that failed is watched although it is not in sys.modules.
    write(project / "reloadapp.py", APP % "v3")
    wait_body(srv, "h1 v3")
    # An error at import time that is not a syntax error, in another module.
    write(project / "helper.py", "VERSION = undefined_name\n")
    wait_until(lambda: "NameError" in body(srv)[1], what="NameError page", log=srv.log)
    write(project / "helper.py", 'VERSION = "h4"\n')
    wait_body(srv, "h4 v3")


def test_extra_files_and_patterns_trigger_a_reload(start_server, project):
    templates = project / "templates" / "deep"
    templates.mkdir(parents=True)
    settings = project / "settings.toml"
    settings.write_text("a = 1\n")
    srv = start(
        start_server,
        project,
        "--reload-extra-file",
        str(settings),
        "--reload-extra-file",
        str(project / "templates" / "**" / "*.html"),
        "--reload-extra-file",
        str(project / "nothing" / "*.txt"),
    )
    srv.wait_for(r"\[WARNING\] Pattern .*nothing/\*\.txt currently matches no files\.")
    write(settings, "a = 2\n")
    srv.wait_for(r"Worker reloading: %s modified" % settings)
    srv.wait_booted(2)
    # A file created after start-up that the pattern matches is watched from
    # the next check on: its first edit reloads.
    page = templates / "page.html"
    wait_until(lambda: body(srv)[0] == 200, what="serving")
    page.write_text("<p>1</p>")
    deadline = time.monotonic() + 15
    while srv.count(r"Worker reloading: %s modified" % page) == 0:
        assert time.monotonic() < deadline, srv.log()
        write(page, "<p>%f</p>" % time.monotonic())
        try:
            srv.wait_for(r"Worker reloading: %s modified" % page, timeout=1.5)
        except AssertionError:
            pass


def test_missing_literal_extra_file_is_refused(start_server, project):
    srv = start_server(
        "-b", "127.0.0.1:0", "--reload", "--reload-extra-file", str(project / "nope.cfg"), "reloadapp:app", wait=False
    )
    assert srv.wait_exit() != 0
    assert "nope.cfg" in srv.log()


def test_idle_reloader_uses_no_cpu(start_server, project):
    srv = start(start_server, project, "--reload-engine", "inotify")
    worker = int(srv.wait_for(r"Booting worker with pid: (\d+)").group(1))
    body(srv)

    def cpu_seconds(pid):
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = cpu_seconds(worker)
    time.sleep(3)  # a measurement window, not a wait for an event
    used = cpu_seconds(worker) - before
    assert used < 0.1, "idle worker used %.2fs of CPU in 3s" % used


def test_preload_says_code_changes_need_a_restart(start_server, project):
    srv = start(start_server, project, "--preload")
    srv.wait_for(r"\[WARNING\] --reload has no effect with --preload")
    assert "Reloader is on" not in srv.log()
