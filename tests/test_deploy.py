"""The recipes of docs/deploy.md, run: systemd socket activation, nginx in
front over TCP and a unix socket, the Dockerfile's stages, the Kubernetes
manifest's command, and the rolling upgrade behind nginx (bench/rolling.py).

Every recipe is read from docs/deploy.md (the blocks marked
`<!-- deploy: NAME -->`), so the page and the tests cannot drift apart. Run by
`make test-install` (which builds the wheels and installs nginx,
systemd-socket-activate and wrk when missing); skipped under `make test`.
"""

import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, Server, get, pid_alive, wait_until

sys.path.insert(0, str(ROOT / "bench"))
import rolling  # noqa: E402  (bench/rolling.py: the unprivileged nginx.conf)

DIST = os.environ.get("FERRICORN_DIST")
if not DIST:
    pytest.skip("run by `make test-install` (needs dist/ from `make wheel`, nginx, wrk)", allow_module_level=True)
DIST = Path(DIST)
DOC = ROOT / "docs" / "deploy.md"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def blocks():
    """NAME -> the text of the fenced block after `<!-- deploy: NAME -->`."""
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- deploy: (\S+) -->\n```[a-z]*\n(.*?)```", text, re.S))
    assert found, "no deploy blocks in docs/deploy.md"
    return found


BLOCKS = blocks()


def dist_wheel():
    """The wheel in dist/ for the Python running the tests."""
    tag = "cp%d%d" % sys.version_info[:2]
    wheels = sorted(DIST.glob(f"ferricorn-*-{tag}-{tag}-*.whl")) or sorted(DIST.glob("ferricorn-*-abi3-*.whl"))
    assert wheels, f"no wheel for {tag} in {DIST}"
    return wheels[0]


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv of this Python with the wheel from dist/ and Flask."""
    where = tmp_path_factory.mktemp("deploy-venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    str(dist_wheel()), "flask"], check=True, timeout=600)
    return where / "bin"


@pytest.fixture
def app_dir(tmp_path):
    """/srv/myapp of the docs: app.py in a directory of its own."""
    d = tmp_path / "myapp"
    d.mkdir()
    (d / "app.py").write_text(BLOCKS["app.py"])
    return d


def ferricorn_argv(block, venv, **replace):
    """A documented `ferricorn ...` command line as argv, run from `venv`,
    with literal pieces replaced (addresses, paths)."""
    text = block.strip()
    for old, new in replace.items():
        text = text.replace(old, new)
    argv = shlex.split(text)
    assert Path(argv[0]).name == "ferricorn", argv
    return [str(venv / "ferricorn")] + argv[1:]


def service_exec_start():
    m = re.search(r"^ExecStart=(.*)$", BLOCKS["myapp.service"], re.M)
    return m.group(1)


def unit_value(unit, key):
    m = re.search(rf"^{key}=(.*)$", BLOCKS[unit], re.M)
    return m.group(1).strip()


# --- systemd ---------------------------------------------------------------


def notify_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(20)
    return s


def wait_notify(sock, want):
    deadline = time.monotonic() + 20
    seen = []
    while time.monotonic() < deadline:
        msg = sock.recv(4096).decode()
        seen.append(msg)
        if want in msg.split("\n"):
            return seen
    raise AssertionError(f"no {want} from ferricorn; got {seen}")


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_systemd_socket_activation(venv, app_dir, tmp_path, family):
    """The service unit's ExecStart under systemd-socket-activate, with the
    socket unit's ListenStream (TCP, and the commented unix alternative)."""
    tool = shutil.which("systemd-socket-activate")
    assert tool, "systemd-socket-activate missing: make deploy-deps installs Debian's systemd"
    assert unit_value("myapp.service", "Type") == "notify"
    assert unit_value("myapp.service", "WorkingDirectory") == "/srv/myapp"
    listen = unit_value("myapp.socket", "ListenStream")
    assert listen == "127.0.0.1:8000"
    assert "#   ListenStream=/run/myapp.sock" in BLOCKS["myapp.socket"]
    if family == "tcp":
        port = rolling.free_port()
        address = f"127.0.0.1:{port}"
    else:
        address = str(tmp_path / "myapp.sock")
    argv = shlex.split(service_exec_start())
    assert argv[0] == "/srv/myapp/venv/bin/ferricorn"
    argv[0] = str(venv / "ferricorn")
    notify = notify_socket(tmp_path / "notify")
    cmd = [tool, "-l", address, "-E", f"NOTIFY_SOCKET={tmp_path / 'notify'}"] + argv
    srv = Server([], cwd=app_dir, cmd=cmd)
    try:
        # Socket activation: the command starts on the first connection.
        srv.wait_for(r"Listening on .* as 3")
        if family == "tcp":
            status, _, body = get(port, "/")
        else:
            status, _, body = unix_get(address, "/")
        assert (status, body) == (200, b"hello\n"), srv.log()
        m = srv.wait_for(r"Listening at: (\S+) \((\d+)\)")
        assert m.group(1) == ("http://" + address if family == "tcp" else "unix:" + address), srv.log()
        assert int(m.group(2)) == srv.proc.pid  # systemd-socket-activate exec'd ferricorn
        wait_notify(notify, "READY=1")
        srv.signal(signal.SIGTERM)
        wait_notify(notify, "STOPPING=1")
        assert srv.wait_exit() == 0, srv.log()
        assert "Shutting down: Master" in srv.log()
    finally:
        notify.close()
        srv.stop()


def test_systemd_units_verify(venv, tmp_path):
    """systemd's own checker accepts both units as written (only ExecStart's
    path is pointed at the test venv): no unknown key, no bad value."""
    tool = shutil.which("systemd-analyze")
    assert tool, "systemd-analyze missing: make deploy-deps installs Debian's systemd"
    (tmp_path / "myapp.socket").write_text(BLOCKS["myapp.socket"])
    service = BLOCKS["myapp.service"].replace("/srv/myapp/venv/bin/ferricorn", str(venv / "ferricorn"))
    (tmp_path / "myapp.service").write_text(service)
    out = subprocess.run([tool, "verify", "--man=no", "./myapp.socket", "./myapp.service"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and out.stdout + out.stderr == "", out


def unix_get(path, target, headers=""):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


# --- nginx -----------------------------------------------------------------


def self_signed(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


class Nginx:
    def __init__(self, conf):
        self.conf = conf
        self.proc = subprocess.Popen([NGINX, "-p", str(conf.parent), "-c", str(conf)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_port(self, port):
        def up():
            assert self.proc.poll() is None, self.proc.stdout.read().decode() + self.error_log()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_until(up, timeout=20, what=f"nginx on port {port}")

    def error_log(self):
        p = self.conf.parent / "error.log"
        return p.read_text() if p.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def https_get_json(port, path):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], data
    return json.loads(body)


def run_behind_nginx(venv, app_dir, tmp_path, upstream_block, ferricorn_cmd):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cert, key = self_signed(tmp_path)
    port = rolling.free_port()
    server = (BLOCKS["nginx-server"]
              .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
              .replace("/etc/ssl/certs/example.com.pem", str(cert))
              .replace("/etc/ssl/private/example.com.key", str(key)))
    assert server != BLOCKS["nginx-server"]
    nginx = Nginx(rolling.unprivileged_nginx_conf(tmp_path, upstream_block + server))
    srv = Server([], cwd=app_dir, cmd=ferricorn_cmd)
    try:
        srv.wait_listening()
        nginx.wait_port(port)
        seen = https_get_json(port, "/whoami")
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0, srv.log()
        return port, seen
    finally:
        srv.stop()
        nginx.stop()


def test_nginx_tcp(venv, app_dir, tmp_path):
    up = rolling.free_port()
    upstream = BLOCKS["nginx-upstream-tcp"].replace("127.0.0.1:8000", f"127.0.0.1:{up}")
    cmd = ferricorn_argv(BLOCKS["ferricorn-tcp"], venv, **{"127.0.0.1:8000": f"127.0.0.1:{up}"})
    port, seen = run_behind_nginx(venv, app_dir, tmp_path / "trusted", upstream, cmd)
    assert seen == {
        "scheme": "https",
        "url": f"https://127.0.0.1:{port}/whoami",
        "remote_addr": "127.0.0.1",
        "x_forwarded_for": "127.0.0.1",
    }, seen
    # nginx's address not trusted: X-Forwarded-Proto is ignored.
    cmd = [a.replace("127.0.0.1", "192.0.2.1") if a == "127.0.0.1" else a for a in cmd]
    assert "192.0.2.1" in cmd
    port, seen = run_behind_nginx(venv, app_dir, tmp_path / "untrusted", upstream, cmd)
    assert seen["scheme"] == "http" and seen["url"] == f"http://127.0.0.1:{port}/whoami", seen


def test_nginx_unix(venv, app_dir, tmp_path):
    sock = tmp_path / "run" / "myapp.sock"
    sock.parent.mkdir()
    upstream = BLOCKS["nginx-upstream-unix"].replace("/run/myapp/myapp.sock", str(sock))
    cmd = ferricorn_argv(BLOCKS["ferricorn-unix"], venv, **{"/run/myapp/myapp.sock": str(sock)})
    port, seen = run_behind_nginx(venv, app_dir, tmp_path / "n", upstream, cmd)
    assert seen["scheme"] == "https" and seen["url"] == f"https://127.0.0.1:{port}/whoami", seen
    assert seen["x_forwarded_for"] == "127.0.0.1", seen
    assert seen["remote_addr"] == "", seen  # a unix socket peer has no address
    assert not sock.exists()  # removed on the way out


# --- container and Kubernetes ------------------------------------------------


def dockerfile_cmd():
    m = re.search(r"^CMD (\[.*\])$", BLOCKS["Dockerfile"], re.M)
    return json.loads(m.group(1))


def test_dockerfile_stages(tmp_path):
    """No docker daemon here: the two stages' commands, run outside docker."""
    text = BLOCKS["Dockerfile"]
    stages = re.findall(r"^FROM (\S+)(?: AS (\S+))?$", text, re.M)
    assert [s[1] for s in stages] == ["build", ""], stages
    assert stages[0][0] == stages[1][0], "both stages need the same Python (the wheel is built for it)"
    final = text.split("\nFROM ", 2)[2]
    assert "rustup" not in final and "cargo" not in final, "the app image must not need Rust"
    assert "RUN pip wheel --no-deps --wheel-dir /wheels /src/ferricorn-*.tar.gz" in text
    assert "RUN pip install --no-cache-dir /wheels/ferricorn-*.whl -r requirements.txt" in text
    # Stage 1 is `pip wheel` of the sdist: the same build as test_install's
    # `pip install` of it; the wheel in dist/ stands for its output here.
    app = tmp_path / "app"
    (app / "wheels").mkdir(parents=True)
    shutil.copy(dist_wheel(), app / "wheels")
    (app / "app.py").write_text(BLOCKS["app.py"])
    (app / "requirements.txt").write_text("flask\n")
    # Stage 2's RUN line, in a fresh venv instead of the image's Python.
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "image")], check=True, timeout=120)
    pip_line = re.search(r"^RUN (pip install [^&]*?)\s*&&", text, re.M).group(1)
    argv = shlex.split(pip_line.replace("/wheels/", str(app / "wheels") + "/"))
    argv[-3:-2] = [str(p) for p in (app / "wheels").glob(Path(argv[-3]).name)]
    subprocess.run([str(tmp_path / "image" / "bin" / "python"), "-m", *argv], check=True, timeout=600, cwd=app)
    cmd = dockerfile_cmd()
    assert cmd[0] == "ferricorn" and cmd[cmd.index("--bind") + 1] == "0.0.0.0:8000", cmd
    cmd[cmd.index("--bind") + 1] = "127.0.0.1:0"
    srv = Server(cmd[1:], cwd=app, cmd=[str(tmp_path / "image" / "bin" / "ferricorn")])
    try:
        srv.wait_listening()
        assert get(srv.port, "/")[0] == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0, srv.log()
    finally:
        srv.stop()


def test_kubernetes_manifest(venv, app_dir):
    text = BLOCKS["deployment.yaml"]
    grace = int(re.search(r"terminationGracePeriodSeconds: (\d+)", text).group(1))
    cmd = json.loads(re.search(r"command: (\[.*\])", text).group(1))
    graceful = int(cmd[cmd.index("--graceful-timeout") + 1])
    pre_stop = json.loads(re.search(r"preStop:\s*exec:\s*command: (\[.*\])", text).group(1))
    assert pre_stop[0] == "sleep"
    assert grace >= int(pre_stop[1]) + graceful + 5, (grace, pre_stop, graceful)
    assert cmd == dockerfile_cmd(), "the manifest runs the image's command"
    probes = re.findall(r"httpGet: \{path: (\S+), port: (\w+)\}", text)
    assert probes == [("/healthz", "http"), ("/healthz", "http")], probes
    assert re.search(r"name: http, containerPort: 8000", text)
    cmd[cmd.index("--bind") + 1] = "127.0.0.1:0"
    srv = Server(cmd[1:], cwd=app_dir, cmd=[str(venv / "ferricorn")])
    try:
        srv.wait_listening()
        status, _, body = get(srv.port, "/healthz")
        assert (status, body) == (200, b"ok\n")
        start = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(timeout=grace) == 0, srv.log()
        assert time.monotonic() - start < graceful
    finally:
        srv.stop()


# --- several instances -------------------------------------------------------


def test_rolling_upgrade_behind_nginx(venv, tmp_path):
    """bench/rolling.py, short: zero 5xx and zero connection errors at nginx."""
    assert shutil.which("wrk"), "wrk missing: make deploy-deps installs it"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "rolling.py"), "--ferricorn", str(venv / "ferricorn"),
         "--duration", "12", "--connections", "16", "--json", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The upstream it ran is the documented one, with loopback ports for hosts.
    conf = (tmp_path / "nginx" / "nginx.conf").read_text()
    documented = re.sub(r"10\.0\.0\.1[12]:8000", "PORT", BLOCKS["nginx-upstream-two"]).split()
    ran = re.sub(r"127\.0\.0\.1:\d+", "PORT", conf[conf.index("upstream myapp"):]).split()
    assert ran[: len(documented)] == documented, (documented, ran)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["steps_done"] == ["usr2 instance 1", "usr2 instance 2", "restart instance 1"], result
    assert result["status_5xx"] == 0 and result["wrk_socket_errors"] == 0, result
    assert result["status_2xx"] > 100 and result["status_2xx"] == result["responses"], result
    assert result["wrk_non_2xx"] == 0, result
    # Both instances kept serving: the new masters are not the old ones.
    for inst in result["instances"]:
        assert len(set(inst["masters"])) == len(inst["masters"]) >= 2, result
        for pid in inst["masters"][:-1]:
            assert not pid_alive(pid)
