"""Configuration: every gunicorn 27.0.1 setting, from every source, against gunicorn itself.

Each setting row is given a non-default value from the command line, from a
config file and from GUNICORN_CMD_ARGS; ferricorn's `--print-config` line must
equal gunicorn's for the same input (gunicorn 27.0.1 is installed from PyPI
through tests/requirements.txt and run by tests/gunicorn_oracle.py), and
without `--print-config` a setting the table marks unsupported must stop
start-up naming it. Loading runs in-process through `_ferricorn._load_config`
(nothing is bound); a few tests run the real `python -m ferricorn`.
"""

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ferricorn import _ferricorn

HERE = Path(__file__).resolve().parent
PYTHON = os.environ.get("FERRICORN_PYTHON") or sys.executable
ENV_VARS = ("GUNICORN_CMD_ARGS", "FERRICORN_CMD_ARGS", "PORT", "WEB_CONCURRENCY", "FORWARDED_ALLOW_IPS")

HOOK_ARITY = {
    "on_starting": 1, "on_reload": 1, "when_ready": 1, "pre_fork": 2, "post_fork": 2,
    "post_worker_init": 1, "worker_int": 1, "worker_abort": 1, "pre_exec": 1, "pre_request": 2,
    "post_request": 2, "child_exit": 2, "worker_exit": 2, "nworkers_changed": 3, "on_exit": 1,
    "ssl_context": 2, "on_dirty_starting": 1, "dirty_post_fork": 2, "dirty_worker_init": 1,
    "dirty_worker_exit": 2,
}

# name -> (command-line arguments or None, Python expression for a config file or None)
SAMPLES = {
    "config": (["-c", "empty.py"], "'other.py'"),
    "wsgi_app": (None, "'other:app'"),
    "bind": (["-b", "127.0.0.1:1234", "--bind", "unix:/tmp/f.sock"], "['127.0.0.1:1234', ' [::1]:5 ']"),
    "backlog": (["--backlog", "64"], "'0x40'"),
    "workers": (["-w", "3"], "'3'"),
    "worker_class": (["-k", "gunicorn.workers.sync.SyncWorker"], "' gthread '"),
    "threads": (["--threads", "4"], "4"),
    "worker_connections": (["--worker-connections", "10"], "10"),
    "max_requests": (["--max-requests", "100"], "100"),
    "max_requests_jitter": (["--max-requests-jitter", "7"], "7"),
    "timeout": (["-t", "5"], "5"),
    "graceful_timeout": (["--graceful-timeout", "9"], "9"),
    "keepalive": (["--keep-alive", "5"], "5"),
    "limit_request_line": (["--limit-request-line", "0"], "0"),
    "limit_request_fields": (["--limit-request-fields", "50"], "50"),
    "limit_request_field_size": (["--limit-request-field_size", "100"], "100"),
    "reload": (["--reload"], "True"),
    "reload_engine": (["--reload-engine", "poll"], "'poll'"),
    "reload_extra_files": (["--reload-extra-file", "empty.py", "--reload-extra-file", "*.txt"], "'empty.py'"),
    "spew": (["--spew"], "'true'"),
    "check_config": (["--check-config"], "True"),
    "print_config": (["--print-config"], "True"),
    "preload_app": (["--preload"], "True"),
    "sendfile": (["--no-sendfile"], "False"),
    "reuse_port": (["--reuse-port"], "True"),
    "chdir": (["--chdir", "sub"], "'sub/'"),
    "daemon": (["-D"], "True"),
    "raw_env": (["-e", "A=1", "--env", " B=2 "], "['A=1']"),
    "pidfile": (["-p", "/tmp/x.pid"], "'x.pid'"),
    "worker_tmp_dir": (["--worker-tmp-dir", "/dev/shm"], "'/dev/shm'"),
    "user": (["-u", "1"], "1"),
    "group": (["-g", "1"], "'1'"),
    "umask": (["-m", "022"], "0o22"),
    "initgroups": (["--initgroups"], "True"),
    "tmp_upload_dir": (None, "'/tmp'"),
    "secure_scheme_headers": (None, "{'X-SCHEME': 'https', \"it's\": 'on'}"),
    "forwarded_allow_ips": (["--forwarded-allow-ips", "10.0.0.0/8, *"], "'10.0.0.1,::1'"),
    "accesslog": (["--access-logfile", "-"], "'access.log'"),
    "disable_redirect_access_to_syslog": (["--disable-redirect-access-to-syslog"], "True"),
    "access_log_format": (["--access-logformat", "%(h)s %(r)s"], "'%(s)s'"),
    "errorlog": (["--error-logfile", "err.log"], "'err.log'"),
    "loglevel": (["--log-level", "debug"], "'DEBUG'"),
    "capture_output": (["--capture-output"], "True"),
    "logger_class": (["--logger-class", "simple"], "'my.Logger'"),
    "logconfig": (["--log-config", "log.ini"], "'log.ini'"),
    "logconfig_dict": (None, "{'version': 1, 'root': {'level': 'INFO'}}"),
    "logconfig_json": (["--log-config-json", "log.json"], "'log.json'"),
    "syslog_addr": (["--log-syslog-to", "udp://h:5"], "'unix:///dev/log'"),
    "syslog": (["--log-syslog"], "True"),
    "syslog_prefix": (["--log-syslog-prefix", "app"], "'app'"),
    "syslog_facility": (["--log-syslog-facility", "local0"], "'local0'"),
    "enable_stdio_inheritance": (["-R"], "True"),
    "statsd_host": (["--statsd-host", "Localhost:9125"], "'unix:///tmp/s'"),
    "dogstatsd_tags": (["--dogstatsd-tags", "a:b,c"], "'a:b'"),
    "statsd_prefix": (["--statsd-prefix", "app"], "'app'"),
    "enable_backlog_metric": (["--enable-backlog-metric"], "True"),
    "proc_name": (["-n", "myapp"], "'myapp'"),
    "default_proc_name": (None, "'named'"),
    "pythonpath": (["--pythonpath", "/tmp,/var"], "'/tmp'"),
    "paste": (["--paste", "app.ini"], "'app.ini'"),
    "proxy_protocol": (["--proxy-protocol", "v2"], "True"),
    "proxy_allow_ips": (["--proxy-allow-from", "*"], "'10.1.0.0/16'"),
    "protocol": (["--protocol", "uwsgi"], "'uwsgi'"),
    "uwsgi_allow_ips": (["--uwsgi-allow-from", "::1"], "'*'"),
    "keyfile": (["--keyfile", "k.pem"], "'k.pem'"),
    "certfile": (["--certfile", "c.pem"], "'c.pem'"),
    "ssl_version": (["--ssl-version", "TLSv1_2"], "5"),
    "cert_reqs": (["--cert-reqs", "2"], "1"),
    "ca_certs": (["--ca-certs", "ca.pem"], "'ca.pem'"),
    "suppress_ragged_eofs": (None, "False"),
    "do_handshake_on_connect": (["--do-handshake-on-connect"], "True"),
    "ciphers": (["--ciphers", "HIGH"], "'HIGH'"),
    "http_protocols": (["--http-protocols", " H1 "], "'h1,'"),
    "http2_cleartext": (["--http2-cleartext", "Upgrade"], "True"),
    "http2_max_concurrent_streams": (["--http2-max-concurrent-streams", "5"], "5"),
    "http2_initial_window_size": (["--http2-initial-window-size", "1000"], "1000"),
    "http2_max_frame_size": (["--http2-max-frame-size", "20000"], "20000"),
    "http2_max_header_list_size": (["--http2-max-header-list-size", "100"], "100"),
    "raw_paste_global_conf": (["--paste-global", "a=b"], "['a=b']"),
    "permit_obsolete_folding": (["--permit-obsolete-folding"], "True"),
    "strip_header_spaces": (["--strip-header-spaces"], "True"),
    "permit_unconventional_http_method": (["--permit-unconventional-http-method"], "True"),
    "permit_unconventional_http_version": (["--permit-unconventional-http-version"], "True"),
    "casefold_http_method": (["--casefold-http-method"], "True"),
    "forwarder_headers": (["--forwarder-headers", "SCRIPT_NAME,REMOTE_USER"], "'REMOTE_USER'"),
    "header_map": (["--header-map", "REFUSE"], "'dangerous'"),
    "asgi_loop": (["--asgi-loop", "asyncio"], "'uvloop'"),
    "asgi_lifespan": (["--asgi-lifespan", "on"], "'off'"),
    "asgi_disconnect_grace_period": (["--asgi-disconnect-grace-period", "1"], "1"),
    "websocket_max_message_size": (["--websocket-max-message-size", "1024"], "1024"),
    "http_parser": (["--http-parser", "python"], "'fast'"),
    "root_path": (["--root-path", "/api"], "'/api'"),
    "dirty_apps": (["--dirty-app", "m:C"], "['m:C']"),
    "dirty_workers": (["--dirty-workers", "2"], "2"),
    "dirty_timeout": (["--dirty-timeout", "10"], "10"),
    "dirty_threads": (["--dirty-threads", "2"], "2"),
    "dirty_graceful_timeout": (["--dirty-graceful-timeout", "3"], "3"),
    "control_socket": (["--control-socket", "/tmp/c.ctl"], "'/tmp/c.ctl'"),
    "control_socket_mode": (["--control-socket-mode", "0700"], "0o644"),
    "control_socket_disable": (["--no-control-socket"], "True"),
}
for _hook in HOOK_ARITY:
    SAMPLES[_hook] = (None, None)


def config_source(name):
    """The body of a config file setting `name` to its sample value."""
    if name in HOOK_ARITY:
        args = ", ".join("a%d" % i for i in range(HOOK_ARITY[name]))
        return "def my_%s(%s):\n    pass\n\n%s = my_%s\n" % (name, args, name, name)
    return "%s = %s\nnot_a_setting = object()\n" % (name, SAMPLES[name][1])


def cases_for(name):
    """(source label, argv, env, config file body or None) for each way to set `name`."""
    cli, expr = SAMPLES[name]
    out = []
    if cli is not None:
        out.append(("cli", [*cli, "app:app"], {}, None))
        out.append(("env", ["app:app"], {"GUNICORN_CMD_ARGS": shlex.join(cli)}, None))
    if expr is not None or name in HOOK_ARITY:
        out.append(("file", ["-c", "conf_%s.py" % name, "app:app"], {}, config_source(name)))
    return out


def write_fixture_files(d):
    (d / "sub").mkdir(exist_ok=True)
    (d / "empty.py").write_text("")
    (d / "other.py").write_text("")
    (d / "app.ini").write_text("[app:main]\nuse = egg:x\n")
    for name in SAMPLES:
        for _label, _argv, _env, body in cases_for(name):
            if body is not None:
                (d / ("conf_%s.py" % name)).write_text(body)


def run_oracle(cwd, cases, env=None):
    """gunicorn's answers for [(argv, env)] run in directory `cwd`."""
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    full_env.update(env or {})
    full_env["PWD"] = str(cwd)
    payload = json.dumps([{"argv": a, "env": e} for a, e in cases])
    out = subprocess.run(
        [PYTHON, str(HERE / "gunicorn_oracle.py")],
        input=payload, capture_output=True, text=True, cwd=cwd, env=full_env, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def lines_by_name(text):
    return {line.split(" = ", 1)[0].rstrip(): line for line in text.splitlines()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cfg")
    write_fixture_files(d)
    return d


@pytest.fixture(scope="module")
def oracle(workdir):
    """gunicorn's --print-config text for every (setting, source) case, keyed by (name, label)."""
    keys, cases = [], []
    for name in SAMPLES:
        for label, argv, env, _body in cases_for(name):
            keys.append((name, label))
            cases.append((["--print-config", *argv], env))
    return dict(zip(keys, run_oracle(workdir, cases)))


@pytest.fixture
def ferricorn_load(workdir, monkeypatch):
    """Load config in-process as `ferricorn ARGV` would in `workdir`; returns print-config text or raises."""
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PWD", str(workdir))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)

    def load(argv, env=None):
        for k, v in (env or {}).items():
            monkeypatch.setenv(k, v)
        try:
            return _ferricorn._load_config(["ferricorn", *argv])
        finally:
            for k in env or {}:
                monkeypatch.delenv(k, raising=False)

    return load


def supported_rows():
    return {name: supported for name, _s, _f, _a, supported in _ferricorn._settings_table()}


def test_every_gunicorn_setting_and_flag_is_in_the_table():
    import gunicorn.config as gc

    ours = {name: (flags, action) for name, _s, flags, action, _sup in _ferricorn._settings_table()}
    theirs = {}
    for cls in gc.KNOWN_SETTINGS:
        action = cls.action or "store"
        if cls.nargs == "?":
            action = "optional:%s" % cls.const
        theirs[cls.name] = (list(cls.cli or []), action)
    assert len(theirs) == 120
    # Rows ferricorn adds of its own (documented in docs/settings.md) are the only extras.
    extras = {name for name in ours if name not in theirs}
    assert extras == {"max_worker_memory", "header_timeout", "websocket_ping_interval", "websocket_ping_timeout",
                      "websocket_per_message_deflate"}
    assert {k: v for k, v in ours.items() if k not in extras} == theirs
    assert sorted(SAMPLES) == sorted(theirs), "every setting needs a sample value in this test"


def test_default_print_config_equals_gunicorn(workdir, ferricorn_load):
    (want,) = run_oracle(workdir, [(["--print-config", "app:app"], {})])
    assert ferricorn_load(["--print-config", "app:app"]) == want["ok"] + "\n"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_setting_from_each_source(name, oracle, ferricorn_load):
    supported = supported_rows()[name]
    for label, argv, env, _body in cases_for(name):
        want = oracle[(name, label)]
        if "error" in want:
            # gunicorn refuses this input (e.g. --paste without PasteDeploy): so must we.
            with pytest.raises(ValueError) as err:
                ferricorn_load(["--print-config", *argv], env)
            assert want["error"].strip().splitlines()[-1] == "Error: %s" % err.value, label
            continue
        have = ferricorn_load(["--print-config", *argv], env)
        assert lines_by_name(have)[name] == lines_by_name(want["ok"])[name], label
        default_line = lines_by_name(ferricorn_load(["--print-config", "app:app"]))[name]
        changed = lines_by_name(have)[name] != default_line
        if name in ("print_config", "config", "default_proc_name"):
            changed = changed and label == "file" and name == "default_proc_name"
        assert changed or name in ("http_protocols", "print_config", "config"), label
        if supported or not changed:
            ferricorn_load(argv, env)
        else:
            with pytest.raises(ValueError) as err:
                ferricorn_load(argv, env)
            msg = str(err.value)
            assert "Setting %s " % name in msg and "not supported" in msg, msg
            assert "\n" not in msg


def test_precedence_file_env_cli(workdir, ferricorn_load):
    (workdir / "prec.py").write_text("workers = 2\ntimeout = 11\nbind = ['127.0.0.1:1']\nbacklog = 5\n")
    combos = [
        (["-c", "prec.py", "app:app"], {}),
        (["-c", "prec.py", "app:app"], {"GUNICORN_CMD_ARGS": "-w 3 -t 12"}),
        (["-c", "prec.py", "-w", "4", "app:app"], {"GUNICORN_CMD_ARGS": "-w 3 -t 12 -b 127.0.0.1:2"}),
        (["app:app"], {"GUNICORN_CMD_ARGS": "-c prec.py --backlog 6"}),
        (["-c", "empty.py", "app:app"], {"GUNICORN_CMD_ARGS": "-c prec.py"}),
        (["-b", "127.0.0.1:3", "app:app"], {"GUNICORN_CMD_ARGS": "'--bind=127.0.0.1:4' -b 127.0.0.1:5"}),
    ]
    answers = run_oracle(workdir, [(["--print-config", *a], e) for a, e in combos])
    for (argv, env), want in zip(combos, answers):
        assert ferricorn_load(["--print-config", *argv], env) == want["ok"] + "\n", (argv, env)


def test_ferricorn_spellings_of_env_args_and_default_file(workdir, ferricorn_load, tmp_path, monkeypatch):
    lines = lines_by_name(
        ferricorn_load(
            ["--print-config", "app:app"],
            {"GUNICORN_CMD_ARGS": "-w 3 -t 7", "FERRICORN_CMD_ARGS": "-w 5"},
        )
    )
    assert lines["workers"].endswith("= 5") and lines["timeout"].endswith("= 7")
    lines = lines_by_name(ferricorn_load(["-w", "6", "--print-config", "app:app"], {"FERRICORN_CMD_ARGS": "-w 5"}))
    assert lines["workers"].endswith("= 6")

    monkeypatch.chdir(tmp_path)
    assert lines_by_name(_ferricorn._load_config(["f", "--print-config", "app:app"]))["workers"].endswith("= 1")
    (tmp_path / "gunicorn.conf.py").write_text("workers = 2\n")
    assert lines_by_name(_ferricorn._load_config(["f", "--print-config", "app:app"]))["workers"].endswith("= 2")
    (tmp_path / "ferricorn.conf.py").write_text("workers = 3\n")
    assert lines_by_name(_ferricorn._load_config(["f", "--print-config", "app:app"]))["workers"].endswith("= 3")
    (tmp_path / "c.py").write_text("workers = 4\n")
    assert lines_by_name(_ferricorn._load_config(["f", "-c", "file:c.py", "--print-config", "app:app"]))[
        "workers"
    ].endswith("= 4")


def test_env_derived_defaults(workdir, ferricorn_load):
    env = {"PORT": "9001", "WEB_CONCURRENCY": "3", "FORWARDED_ALLOW_IPS": "10.0.0.0/8,*"}
    (want,) = run_oracle(workdir, [(["--print-config", "app:app"], {})], env=env)
    assert ferricorn_load(["--print-config", "app:app"], env) == want["ok"] + "\n"
    assert "['0.0.0.0:9001']" in want["ok"]


def test_config_from_python_module(workdir, ferricorn_load, monkeypatch):
    (workdir / "cfgmod_ferricorn_test.py").write_text("workers = 7\n")
    monkeypatch.syspath_prepend(str(workdir))
    text = ferricorn_load(["-c", "python:cfgmod_ferricorn_test", "--print-config", "app:app"])
    assert lines_by_name(text)["workers"].endswith("= 7")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["-w", "-1", "app:app"], ["workers", "-1", "positive"]),
        (["--forwarded-allow-ips", "10.0.0.1/8", "app:app"], ["forwarded_allow_ips", "host bits"]),
        (["--chdir", "/no/such/dir", "app:app"], ["chdir", "/no/such/dir"]),
        (["-c", "missing.py", "app:app"], ["missing.py", "doesn't exist"]),
        (["--proxy-protocol", "v9", "app:app"], ["proxy_protocol", "v9"]),
        (["-w", "many", "app:app"], ["-w/--workers", "invalid int value: 'many'"]),
        ([], ["No application module specified."]),
        (["a:b", "c:d"], ["unrecognized arguments: c:d"]),
        (["--log-level", "verbose", "app:app"], ["loglevel", "verbose", "unknown log level"]),
        (["--http-protocols", "h2,h1", "app:app"], ["http_protocols", "HTTP/2 is not supported yet"]),
        (["--websocket-ping-interval", "-0.5", "app:app"], ["websocket_ping_interval", "-0.5", "positive"]),
    ],
)
def test_bad_values_name_setting_value_and_reason(argv, words, ferricorn_load):
    with pytest.raises(ValueError) as err:
        ferricorn_load(argv)
    for w in words:
        assert w in str(err.value)


def test_bad_value_in_config_file(workdir, ferricorn_load):
    (workdir / "bad.py").write_text("timeout = 'soon'\n")
    with pytest.raises(ValueError) as err:
        ferricorn_load(["-c", "bad.py", "app:app"])
    assert "timeout" in str(err.value) and "soon" in str(err.value)
    (workdir / "badhook.py").write_text("def post_fork(server):\n    pass\n")
    with pytest.raises(ValueError) as err:
        ferricorn_load(["-c", "badhook.py", "app:app"])
    assert "post_fork" in str(err.value) and "arity" in str(err.value)
    (workdir / "broken.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError) as err:
        ferricorn_load(["-c", "broken.py", "app:app"])
    assert "Failed to read config file" in str(err.value) and "boom" in str(err.value)


def run_cli(*args, cwd, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    full_env["PYTHONPATH"] = str(HERE / "apps")
    full_env.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "ferricorn", *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=60
    )


def test_cli_print_config_check_config_and_errors(workdir):
    out = run_cli("--print-config", "-w", "3", "basic:app", cwd=workdir)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 120
    assert "workers                            = 3" in out.stdout
    out = run_cli("--check-config", "basic:app", cwd=workdir)
    assert (out.returncode, out.stdout) == (0, "")
    out = run_cli("--check-config", "basic:nope", cwd=workdir)
    assert out.returncode == 1 and "Error while loading the application" in out.stderr
    out = run_cli("--check-config", "--dirty-workers", "2", "basic:app", cwd=workdir)
    assert out.returncode == 2 and "dirty_workers" in out.stderr and "not supported" in out.stderr
    out = run_cli("-w", "-2", "-b", "127.0.0.1:0", "basic:app", cwd=workdir)
    assert out.returncode == 1 and "Invalid value for workers: -2" in out.stderr
    assert "Listening" not in out.stderr


def test_help_snapshot(workdir):
    out = run_cli("--help", cwd=workdir)
    assert out.returncode == 0
    snap = HERE / "snapshots" / "help.txt"
    if os.environ.get("FERRICORN_BLESS"):
        snap.parent.mkdir(exist_ok=True)
        snap.write_text(out.stdout)
    assert out.stdout == snap.read_text()
    for section in ("Server Socket:", "Worker Processes:", "Logging:", "SSL:", "HTTP/2:", "Control:"):
        assert "\n" + section + "\n" in out.stdout


def test_server_runs_from_default_config_file_and_cmd_args(start_server, tmp_path):
    from conftest import get

    (tmp_path / "gunicorn.conf.py").write_text(
        "bind = '127.0.0.1:0'\nworkers = 1\nwsgi_app = 'basic:app'\nunknown_name = 1\n"
    )
    # Three workers boot only if GUNICORN_CMD_ARGS overrides the file.
    srv = start_server(env={"GUNICORN_CMD_ARGS": "-w 3"}, workers_booted=3)
    assert get(srv.port)[0] == 200


def test_config_file_runs_again_on_each_load(workdir, ferricorn_load):
    """HUP reloads from scratch: the config file is executed again every time."""
    marker = workdir / "loads.txt"
    (workdir / "counting.py").write_text(
        "with open(%r, 'a') as f:\n    f.write('x')\nworkers = len(open(%r).read())\n" % (str(marker), str(marker))
    )
    first = lines_by_name(ferricorn_load(["-c", "counting.py", "--print-config", "app:app"]))
    second = lines_by_name(ferricorn_load(["-c", "counting.py", "--print-config", "app:app"]))
    assert first["workers"].endswith("= 1") and second["workers"].endswith("= 2")


@pytest.mark.parametrize("flag", ["--paste", "--paster"])
def test_paste_app(start_server, tmp_path, flag):
    pytest.importorskip("paste.deploy")
    from conftest import get

    (tmp_path / "site.ini").write_text("[app:main]\nuse = call:pasteapp:make_app\ngreeting = bonjour\n")
    srv = start_server(flag, "site.ini", "--paste-global", "extra=a\\=b", "-b", "127.0.0.1:0")
    status, _headers, body = get(srv.port)
    assert (status, body) == (200, b"bonjour a=b")


def test_paste_missing_file(ferricorn_load):
    with pytest.raises(ValueError) as err:
        ferricorn_load(["--paste", "nope.ini"])
    assert "nope.ini" in str(err.value) and "not found" in str(err.value)
