"""The wheels and the sdist of `make wheel`, installed as a user installs them.

Run by `make test-install`, which builds dist/ first and names the CPythons
(FERRICORN_DIST, FERRICORN_INSTALL_PYTHONS); under plain `make test` the
module is skipped. For each Python: a fresh venv, `pip install` the wheel and
Flask only, then `ferricorn app:app` and `python -m ferricorn app:app` serve a
request and stop on TERM. Also: the wheels' manylinux tag and the glibc
symbol versions they need, the sdist building from source, and the message
for an interpreter the extension was not built for.
"""

import os
import re
import signal
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import APPS, ROOT, Server, get

DIST = os.environ.get("FERRICORN_DIST")
PYTHONS = os.environ.get("FERRICORN_INSTALL_PYTHONS", "").split()
if not DIST or not PYTHONS:
    pytest.skip("run by `make test-install` (needs dist/ from `make wheel`)", allow_module_level=True)
DIST = Path(DIST)

# The oldest glibc the wheels may need: manylinux2014 is glibc 2.17.
GLIBC_BASELINE = (2, 17)
PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check"]


def minor(python):
    out = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True, timeout=30,
    )
    return out.stdout.strip()


def wheel_for(version):
    """The wheel pip would pick for CPython `version` ("3.12"): its own, else abi3."""
    tag = "cp" + version.replace(".", "")
    own = sorted(DIST.glob(f"ferricorn-*-{tag}-{tag}-*.whl"))
    abi3 = sorted(DIST.glob("ferricorn-*-abi3-*.whl"))
    found = own or abi3
    assert found, f"no wheel for CPython {version} in {DIST}: {sorted(p.name for p in DIST.iterdir())}"
    return found[0]


def make_venv(python, where, *requirements, env=None):
    subprocess.run([python, "-m", "venv", str(where)], check=True, timeout=120)
    py = where / "bin" / "python"
    if requirements:
        subprocess.run([str(py), *PIP, *map(str, requirements)], check=True, timeout=900, env=env)
    return py


def glibc_versions(blob):
    return {tuple(int(x) for x in m.groups()) for m in re.finditer(rb"GLIBC_(\d+)\.(\d+)", blob)}


def serve_and_term(cmd, cwd):
    """Start `cmd flask_app:app` on port 0, GET / through it, TERM, expect a clean exit."""
    srv = Server(["-b", "127.0.0.1:0", "--pythonpath", str(APPS), "flask_app:app"], cwd=cwd, cmd=cmd)
    try:
        srv.wait_listening()
        status, _, body = get(srv.port, "/")
        assert status == 200 and body == b"Hello from Flask", (status, body, srv.log())
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit() == 0, srv.log()
        assert "Shutting down: Master" in srv.log()
        return srv.log()
    finally:
        srv.stop()


@pytest.fixture(scope="module", params=PYTHONS, ids=lambda p: "py" + minor(p))
def installed(request, tmp_path_factory):
    """A fresh venv of one CPython with the wheel and Flask, nothing else."""
    python = request.param
    version = minor(python)
    where = tmp_path_factory.mktemp("venv-" + version)
    py = make_venv(python, where, wheel_for(version), "flask")
    return version, py


def test_wheels_are_manylinux2014():
    """Every wheel is tagged manylinux_2_17 and needs no newer glibc symbol."""
    wheels = sorted(DIST.glob("ferricorn-*.whl"))
    assert wheels, f"no wheels in {DIST}"
    for whl in wheels:
        assert "manylinux_2_17_x86_64" in whl.name and "manylinux2014_x86_64" in whl.name, whl.name
        with zipfile.ZipFile(whl) as z:
            sos = [n for n in z.namelist() if n.startswith("ferricorn/_ferricorn") and n.endswith(".so")]
            assert len(sos) == 1, (whl.name, sos)
            needed = glibc_versions(z.read(sos[0]))
            names = z.namelist()
        assert needed and max(needed) <= GLIBC_BASELINE, (whl.name, sorted(needed)[-3:])
        assert any(n.endswith("/licenses/LICENSE") or n.endswith("/LICENSE") for n in names), names


def test_a_wheel_for_every_python():
    for python in PYTHONS:
        assert wheel_for(minor(python)).exists()


def test_wheel_serves_and_stops_on_term(installed, tmp_path):
    version, py = installed
    # Only ferricorn, Flask and Flask's own requirements.
    out = subprocess.run([str(py), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True, check=True)
    names = {line.split("==")[0].lower() for line in out.stdout.split()}
    assert "ferricorn" in names and "flask" in names, names
    assert not names & {"gunicorn", "pytest", "maturin", "django"}, names
    # The package is the installed one, not the checkout's.
    where = subprocess.run([str(py), "-c", "import ferricorn; print(ferricorn.__file__)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path)
    assert str(py.parent.parent) in where.stdout, where.stdout
    log = serve_and_term([str(py.parent / "ferricorn")], tmp_path)
    assert re.search(r"Starting ferricorn \d", log), log


def test_python_m_ferricorn_serves(installed, tmp_path):
    _, py = installed
    serve_and_term([str(py), "-m", "ferricorn"], tmp_path)


def other_python(version):
    """A CPython of another minor version than `version`, if this machine has one."""
    for python in PYTHONS:
        if minor(python) != version:
            return python
    return None


def test_wrong_interpreter_names_the_python_it_was_built_for(tmp_path):
    """The package of one Python's wheel, imported by another: the message
    says which Python the extension was built for and which one is running."""
    first = PYTHONS[0]
    version = minor(first)
    whl = wheel_for(version)
    if "abi3" in whl.name:
        pytest.fail("abi3 wheels load on every CPython >= 3.10; this test is for per-version wheels")
    other = other_python(version)
    with zipfile.ZipFile(whl) as z:
        z.extractall(tmp_path / "site")
    if other is None:
        # Only one CPython on this machine: make the extension look built for
        # another one (its file name is all the import system goes by).
        other = first
        (so,) = (tmp_path / "site" / "ferricorn").glob("_ferricorn.cpython-*.so")
        fake = "3.%d" % (int(version.split(".")[1]) + 1)
        so.rename(so.with_name(so.name.replace("cpython-" + version.replace(".", ""), "cpython-" + fake.replace(".", ""))))
        version = fake
    out = subprocess.run(
        [other, "-c", "import ferricorn"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
    )
    assert out.returncode != 0
    last = out.stderr.strip().splitlines()[-1]
    assert f"built for CPython {version}" in last, out.stderr
    assert f"this is CPython {minor(other)}." in last, out.stderr
    assert "Install ferricorn for this Python" in last, out.stderr


def test_checkout_never_built_says_so(tmp_path):
    """The package directory without its extension (a clone not yet built)."""
    pkg = tmp_path / "ferricorn"
    pkg.mkdir()
    (pkg / "__init__.py").write_bytes((ROOT / "python" / "ferricorn" / "__init__.py").read_bytes())
    out = subprocess.run([sys.executable, "-c", "import ferricorn"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0
    assert "compiled extension (ferricorn._ferricorn) is not in" in out.stderr, out.stderr
    assert "make build" in out.stderr


@pytest.fixture(scope="module")
def cargo_target(tmp_path_factory):
    """One cargo target dir for this run's two source builds (the same sources,
    so the second reuses the first's dependencies). Never one kept between runs:
    the sdist's files carry fixed mtimes, so cargo would take last run's
    build of a changed crate for fresh."""
    return tmp_path_factory.mktemp("cargo-target")


@pytest.mark.parametrize("source", ["sdist", "clone"])
def test_pip_builds_from_source(tmp_path, source, cargo_target):
    """`pip install ferricorn-*.tar.gz`, and `pip install` of a clone (this
    checkout), compile the extension (Rust present) and the result serves.
    Cargo's release profile is lightened through the environment (no LTO) to
    keep CI short; the sources and the build backend are the real ones."""
    sdists = sorted(DIST.glob("ferricorn-*.tar.gz"))
    assert len(sdists) == 1, sdists
    if source == "sdist":
        with tarfile.open(sdists[0]) as t:
            names = t.getnames()
        assert any(n.endswith("/LICENSE") for n in names), names
    env = dict(
        os.environ,
        CARGO_PROFILE_RELEASE_LTO="off",
        CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16",
        CARGO_PROFILE_RELEASE_DEBUG="0",
        CARGO_TARGET_DIR=str(cargo_target),
    )
    py = make_venv(sys.executable, tmp_path / "venv", sdists[0] if source == "sdist" else ROOT, "flask", env=env)
    version = subprocess.run([str(py.parent / "ferricorn"), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and "ferricorn" in version.stdout + version.stderr, version
    serve_and_term([str(py.parent / "ferricorn")], tmp_path)
