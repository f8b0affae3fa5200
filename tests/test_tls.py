"""TLS on every worker class (docs/tls.md): gunicorn's SSL settings, the
handshake bounded by the header timeout, mutual TLS, certificate rotation on
HUP, and the start-up checks of the files. Certificates come from trustme,
made per module; the clients are Python's ssl module, curl and openssl's
s_client."""

import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest
import trustme

from conftest import APPS, PYTHON, classes, parse_response, wait_until, worker_args, worker_classes

import sys

sys.path.insert(0, str(APPS))
import bodies  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the server's certificate (key inside), a client certificate
    from that CA and one from another CA."""
    d = tmp_path_factory.mktemp("pki")
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.private_key_and_cert_chain_pem.write_to_path(str(d / "server.pem"))
    server.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    client = ca.issue_cert("client@example.com", common_name="client one")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    stranger = other.issue_cert("stranger@example.com", common_name="stranger")
    stranger.private_key_and_cert_chain_pem.write_to_path(str(d / "stranger.pem"))
    other.cert_pem.write_to_path(str(d / "other-ca.pem"))
    # What clients must refuse, and an RSA key (the rest are ECDSA).
    import datetime

    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    ca.issue_cert("127.0.0.1", not_before=past, not_after=past + datetime.timedelta(days=30)) \
        .private_key_and_cert_chain_pem.write_to_path(str(d / "expired.pem"))
    ca.issue_cert("example.com").private_key_and_cert_chain_pem.write_to_path(str(d / "wronghost.pem"))
    rsa = trustme.CA(key_type=trustme.KeyType.RSA)
    rsa.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA).private_key_and_cert_chain_pem.write_to_path(
        str(d / "rsa.pem"))
    rsa.cert_pem.write_to_path(str(d / "rsa-ca.pem"))
    # The same name from the other CA: for rotation.
    other.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(str(d / "server2.pem"))
    return d


def client_ctx(pki, cert=None, cas=("ca.pem",)):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for ca in cas:
        ctx.load_verify_locations(str(pki / ca))
    if cert:
        ctx.load_cert_chain(str(pki / cert))
    return ctx


def tls_args(pki, *extra):
    return ["--certfile", str(pki / "server.pem"), "-b", "127.0.0.1:0", *extra]


@pytest.fixture(scope="module", params=classes())
def srv(request, pki):
    """A TLS server per class: client certificates optional (cert_reqs 1),
    a short header timeout."""
    from conftest import serve

    worker = request.param
    s = serve(request, *worker_args(worker), *tls_args(pki, "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "1",
                                                      "--header-timeout", "2", "--keep-alive", "5"), "tls_app:app")
    s.worker = worker
    return s


def conn(srv, pki, cert=None, timeout=10):
    return http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_ctx(pki, cert), timeout=timeout)


def fetch(c, method, path, body=None, headers=None, **kw):
    c.request(method, path, body=body, headers=headers or {}, **kw)
    r = c.getresponse()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()


def test_listening_line_and_scheme(srv, pki):
    assert srv.url.startswith("https://127.0.0.1:"), srv.url
    c = conn(srv, pki)
    c.connect()
    assert c.sock.selected_alpn_protocol() is None  # http.client offers no ALPN
    assert c.sock.version() == "TLSv1.3"
    status, _, body = fetch(c, "GET", "/environ")
    env = json.loads(body)
    assert status == 200
    assert env["wsgi.url_scheme"] == "https"
    assert "ferricorn.peercert" not in env
    c.close()


def test_alpn_offers_http11_and_serves_a_client_that_offers_only_h2(srv, pki):
    for offer, chosen in ((["h2", "http/1.1"], "http/1.1"), (["h2"], None)):
        ctx = client_ctx(pki)
        ctx.set_alpn_protocols(offer)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                assert s.selected_alpn_protocol() == chosen
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = read_all(s)
        assert parse_response(data)[2] == b"Hello, world!"


def read_all(s, clean_end=False):
    """What `s` receives until the end; `clean_end`: fail unless it ends
    with close_notify (not a truncation)."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            assert not clean_end, "no close_notify"
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def test_keep_alive_and_pipelining(srv, pki):
    c = conn(srv, pki)
    for _ in range(3):
        status, headers, body = fetch(c, "GET", "/")
        assert (status, body) == (200, b"Hello, world!")
    c.close()
    # Two requests in one write: both answered, in order.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with client_ctx(pki).wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as s:
            s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = read_all(s, clean_end=True)
    if srv.worker == "sync":
        assert data.count(b"HTTP/1.1 200") == 1  # sync closes after one
    else:
        assert data.count(b"HTTP/1.1 200") == 2 and data.endswith(b"Hello, world!"), data


def test_chunked_bodies_both_ways(srv, pki):
    c = conn(srv, pki)
    parts = [bodies.pattern(1000), bodies.pattern(70000), b"end"]
    status, headers, body = fetch(c, "POST", "/b/echo?chunked", body=iter(parts), encode_chunked=True)
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert body == b"".join(parts)
    status, headers, body = fetch(c, "GET", "/stream")
    assert body == b"".join(b"chunk%d\n" % i for i in range(5))
    c.close()


def test_large_uploads_and_downloads(srv, pki):
    c = conn(srv, pki, timeout=30)
    up = bodies.pattern(5 * 1024 * 1024 + 3)
    status, _, body = fetch(c, "POST", "/b/read-whole", body=up)
    assert json.loads(body) == {"len": len(up), "sha": hashlib.sha256(up).hexdigest(), "again": 0}
    status, _, body = fetch(c, "GET", "/b/gen?40,65536")
    assert body == bodies.pattern(40 * 65536)
    status, _, body = fetch(c, "GET", "/b/list?3000000")
    assert body == bodies.pattern(3000000)
    status, _, body = fetch(c, "GET", "/b/write?200000")
    assert body == b"<" + bodies.pattern(200000) + b">"
    c.close()


def test_file_wrapper_falls_back_to_reads_and_writes(srv, pki):
    import tls_app

    c = conn(srv, pki, timeout=30)
    status, _, body = fetch(c, "GET", "/file")
    assert body == (APPS / "basic.py").read_bytes()
    status, headers, body = fetch(c, "GET", "/bigfile")
    assert (status, len(body)) == (200, tls_app.BIG) and body == bodies.pattern(tls_app.BIG)
    status, _, body = fetch(c, "GET", "/socket")
    assert body.startswith(b"refused"), body
    c.close()


def test_optional_client_certificate_reaches_the_app(srv, pki):
    c = conn(srv, pki, cert="client.pem")
    c.connect()
    pem = ssl.DER_cert_to_PEM_cert(c.sock.getpeercert(binary_form=True))
    env = json.loads(fetch(c, "GET", "/environ")[2])
    assert env["ferricorn.peercert"].startswith("-----BEGIN CERTIFICATE-----\n")
    assert "CN=client one" in env["ferricorn.peercert_subject"], env["ferricorn.peercert_subject"]
    assert pem != env["ferricorn.peercert"]  # the client's, not the server's
    c.close()
    # A certificate from a CA the server does not trust is refused even when optional.
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        c = conn(srv, pki, cert="stranger.pem")
        fetch(c, "GET", "/")
    srv.wait_for(r"\[WARNING\] Invalid request from ip=127.0.0.1: TLS handshake failed")


def test_session_resumption(srv, pki):
    ctx = client_ctx(pki)
    session = None
    for i in range(2):
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert read_all(s).endswith(b"Hello, world!")
                if i:
                    assert s.session_reused
                session = s.session


def test_plain_http_to_the_tls_port(srv, pki):
    n = srv.count(r"Invalid request from ip=127.0.0.1: TLS handshake failed")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = read_all(s)
    assert b"HTTP/1.1" not in data
    wait_until(lambda: srv.count(r"Invalid request from ip=127.0.0.1: TLS handshake failed") > n, log=srv.log)
    assert fetch(conn(srv, pki), "GET", "/")[2] == b"Hello, world!"


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"], ids=["silent", "truncated"])
def test_silent_or_truncated_handshake_is_cut_at_the_header_timeout(srv, pki, sent):
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", srv.port), timeout=15) as s:
        s.sendall(sent)
        assert s.recv(100) == b""
    took = time.monotonic() - start
    assert 1.5 < took < 6, took
    # The worker goes on.
    assert fetch(conn(srv, pki), "GET", "/")[2] == b"Hello, world!"


def test_curl(srv, pki):
    curl = shutil.which("curl")
    assert curl, "curl is needed (Debian package curl)"
    out = subprocess.run([curl, "-sS", "--cacert", str(pki / "ca.pem"), "--http1.1",
                          "https://127.0.0.1:%d/" % srv.port, "https://127.0.0.1:%d/pid" % srv.port,
                          "-w", " %{http_code} %{scheme}\n"], capture_output=True, timeout=30)
    assert out.returncode == 0, out
    assert out.stdout.decode().startswith("Hello, world! 200 HTTPS\n"), out.stdout
    out = subprocess.run([curl, "-sS", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
                          "https://127.0.0.1:%d/environ" % srv.port], capture_output=True, timeout=30)
    assert json.loads(out.stdout)["ferricorn.peercert_subject"].startswith("CN=client one")


def s_client(port, *args, data=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
    openssl = shutil.which("openssl")
    assert openssl, "openssl is needed (Debian package openssl)"
    return subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % port, "-ign_eof", *args],
                          input=data, capture_output=True, timeout=30)


def test_openssl_s_client_versions(srv, pki):
    out = s_client(srv.port, "-tls1_2", "-CAfile", str(pki / "ca.pem"))
    assert b"Protocol  : TLSv1.2" in out.stdout or b"TLSv1.2" in out.stdout, out
    assert b"Hello, world!" in out.stdout and b"Verify return code: 0 (ok)" in out.stdout
    out = s_client(srv.port, "-tls1_3")
    assert b"Hello, world!" in out.stdout
    out = s_client(srv.port, "-tls1_1")
    assert b"Hello, world!" not in out.stdout


def with_app(worker):
    """The worker class's arguments and its app: the asgi worker serves
    tls_app's ASGI twin (test_tls_asgi.py has its other checks)."""
    if worker == "asgi":
        return ["-k", "asgi"], "tls_asgi_app:app"
    return worker_args(worker), "tls_app:app"


def client_subject(c, worker):
    """The client certificate's subject as the app saw it."""
    if worker == "asgi":
        return json.loads(fetch(c, "GET", "/scope")[2])["tls"]["client_cert_name"]
    return json.loads(fetch(c, "GET", "/environ")[2])["ferricorn.peercert_subject"]


@pytest.mark.parametrize("worker", classes() + ["asgi"])
def test_required_client_certificate(start_server, pki, worker):
    args, app = with_app(worker)
    srv = start_server(*args, *tls_args(pki, "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "2"), app)
    c = conn(srv, pki, cert="client.pem")
    assert client_subject(c, worker).startswith("CN=client one")
    c.close()
    for cert in (None, "stranger.pem"):
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
            fetch(conn(srv, pki, cert=cert), "GET", "/")
    wait_until(lambda: srv.count(r"\[WARNING\] Invalid request from ip=127.0.0.1: TLS handshake failed") >= 2,
               log=srv.log)
    assert srv.count(r"Traceback") == 0


@pytest.mark.parametrize("worker", classes() + ["asgi"])
def test_hup_rotates_the_certificate_with_no_request_lost(start_server, pki, tmp_path, worker):
    live = tmp_path / "live.pem"
    shutil.copy(pki / "server.pem", live)
    args, app = with_app(worker)
    srv = start_server(*args, "--certfile", str(live), "-b", "127.0.0.1:0", "-w", "2", app, workers_booted=2)
    ctx = client_ctx(pki, cas=("ca.pem", "other-ca.pem"))
    issuers, failures, stop = [], [], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=ctx, timeout=10)
                c.connect()
                issuer = c.sock.getpeercert()["issuer"]
                status, _, body = fetch(c, "GET", "/")
                issuers.append(issuer)
                c.close()
                if status != 200:
                    failures.append(status)
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append(repr(e))

    t = threading.Thread(target=loop)
    t.start()
    try:
        wait_until(lambda: len(issuers) > 5, what="requests before the HUP", log=srv.log)
        first = issuers[0]
        shutil.copy(pki / "server2.pem", live)
        srv.signal(signal.SIGHUP)
        wait_until(lambda: issuers and issuers[-1] != first, what="the new certificate", log=srv.log)
        n = len(issuers)
        wait_until(lambda: len(issuers) > n + 5, what="requests after the HUP", log=srv.log)
        # A bad new file keeps the running certificate.
        live.write_text("not a certificate\n")
        mark = len(srv.lines)
        srv.signal(signal.SIGHUP)
        srv.wait_for(r"Reload failed, keeping the current configuration: certfile .*live.pem: no PEM certificate",
                     start=mark)
        n = len(issuers)
        wait_until(lambda: len(issuers) > n + 5, what="requests after the bad HUP", log=srv.log)
    finally:
        stop.set()
        t.join(30)
    assert failures == [], failures
    assert issuers[-1] != first


def run_cli(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(APPS))
    return subprocess.run([PYTHON, "-m", "ferricorn", "-b", "127.0.0.1:0", *args, "basic:app"], capture_output=True,
                          text=True, cwd=tmp_path, env=env, timeout=60)


def test_bad_files_stop_the_start_with_one_line(pki, tmp_path):
    (tmp_path / "empty.pem").write_text("nothing here\n")
    enc = trustme.CA().issue_cert("x").private_key_pem.bytes()
    (tmp_path / "enc.pem").write_bytes(
        subprocess.run(["openssl", "pkey", "-aes256", "-passout", "pass:x"], input=enc, capture_output=True,
                       check=True).stdout)
    cases = [
        (["--certfile", "missing.pem"], "certfile missing.pem: cannot read it"),
        (["--certfile", "empty.pem"], "certfile empty.pem: no PEM certificate in it"),
        (["--certfile", str(pki / "cert.pem")], "no PEM private key in it"),
        (["--certfile", str(pki / "cert.pem"), "--keyfile", "enc.pem"], "keyfile enc.pem: the private key is encrypted"),
        (["--certfile", str(pki / "cert.pem"), "--keyfile", str(pki / "server2.pem")], "does not match certfile"),
        (["--certfile", str(pki / "server.pem"), "--ca-certs", "empty.pem", "--cert-reqs", "2"],
         "ca_certs empty.pem: no PEM certificate in it"),
        (["--certfile", str(pki / "server.pem"), "--cert-reqs", "2"], "cert_reqs 2 needs ca_certs"),
        (["--keyfile", str(pki / "key.pem")], "keyfile is set without certfile"),
        (["--certfile", str(pki / "server.pem"), "--ciphers", "DES-CBC3-SHA"],
         "selects no TLS 1.2 suite ferricorn offers; those are ECDHE-ECDSA-AES256-GCM-SHA384"),
    ]
    for args, why in cases:
        out = run_cli(tmp_path, *args)
        assert out.returncode != 0, (args, out)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: ") and why in lines[0], (args, out.stderr)
    # --check-config checks them too.
    out = run_cli(tmp_path, "--check-config", "--certfile", "empty.pem")
    assert out.returncode != 0 and "certfile empty.pem: no PEM certificate in it" in out.stderr, out
    out = run_cli(tmp_path, "--check-config", "--certfile", str(pki / "server.pem"))
    assert (out.returncode, out.stderr) == (0, ""), out


def test_ssl_context_hook_is_refused_naming_the_settings(tmp_path):
    (tmp_path / "conf.py").write_text(
        "def ssl_context(conf, default_ssl_context_factory):\n    return default_ssl_context_factory()\n")
    out = run_cli(tmp_path, "-c", "conf.py")
    assert out.returncode != 0
    assert "ssl_context" in out.stderr and "certfile, keyfile, ca_certs, cert_reqs and ciphers" in out.stderr


GUNICORN_CONF = """
certfile = {server!r}
ca_certs = {ca!r}
cert_reqs = 1
ciphers = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL"
suppress_ragged_eofs = True
do_handshake_on_connect = True
ssl_version = 2
bind = "127.0.0.1:0"
"""


def test_a_gunicorn_tls_config_works_unchanged(start_server, pki, tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(GUNICORN_CONF.format(server=str(pki / "server.pem"),
                                                                    ca=str(pki / "ca.pem")))
    srv = start_server("tls_app:app")
    assert fetch(conn(srv, pki), "GET", "/")[2] == b"Hello, world!"
    out = s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384")
    assert b"Hello, world!" not in out.stdout  # a CBC suite: not offered


@worker_classes()
def test_client_side_checks_and_an_rsa_certificate(start_server, pki, worker):
    for pem, why in (("expired.pem", "certificate has expired"), ("wronghost.pem", "mismatch")):
        srv = start_server(*worker_args(worker), "--certfile", str(pki / pem), "-b", "127.0.0.1:0", "tls_app:app")
        with pytest.raises(ssl.SSLCertVerificationError, match=why):
            fetch(conn(srv, pki), "GET", "/")
        srv.stop()
    srv = start_server(*worker_args(worker), "--certfile", str(pki / "rsa.pem"), "-b", "127.0.0.1:0", "tls_app:app")
    c = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_ctx(pki, cas=("rsa-ca.pem",)), timeout=10)
    assert fetch(c, "GET", "/")[2] == b"Hello, world!"
    out = s_client(srv.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256", "-CAfile", str(pki / "rsa-ca.pem"))
    assert b"ECDHE-RSA-AES128-GCM-SHA256" in out.stdout and b"Hello, world!" in out.stdout, out


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_files_only_root_can_read_serve_workers_that_run_as_nobody(start_server, pki, tmp_path):
    # pytest's tmp_path is root-only: a worker running as nobody could not open the key there.
    secret = tmp_path / "secret.pem"
    shutil.copy(pki / "server.pem", secret)
    secret.chmod(0o600)
    srv = start_server("-b", "127.0.0.1:0", "--certfile", str(secret), "--user", "nobody", "--group", "nogroup",
                       "--preload", "tls_app:app")
    assert fetch(conn(srv, pki), "GET", "/")[2] == b"Hello, world!"
    mark = len(srv.lines)
    srv.signal(signal.SIGHUP)  # re-read by the master, as root
    srv.wait_for(r"Booting worker with pid", start=mark)
    assert srv.count(r"Reload failed") == 0
    assert fetch(conn(srv, pki), "GET", "/")[2] == b"Hello, world!"
