# ferricorn — the two commands of the README, and their parts.
#   make run    build, then serve examples/hello.py on 127.0.0.1:8000 with 2 workers
#   make test   build, then fmt, clippy, Rust tests, pytest
# Release artefacts (README "Install", docs/deploy.md):
#   make wheel         release wheels (one per CPython found, manylinux2014) and the sdist into dist/
#   make test-install  make wheel, then install them into fresh venvs and test the deploy recipes

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
MATURIN_VERSION := 1.16.0
# `make test MATURIN_FLAGS=` builds a debug extension (faster while iterating).
MATURIN_FLAGS ?= --release
# Rust test binaries link libpython; point the loader and PyO3 at the same interpreter.
PYLIBDIR := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
export PYO3_PYTHON := $(abspath $(PY))
CARGO_ENV := LD_LIBRARY_PATH=$(PYLIBDIR)$${LD_LIBRARY_PATH:+:$$LD_LIBRARY_PATH}

.PHONY: build run test lint rust-test pytest bench clean wheel test-install deploy-deps tls-tools

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "maturin==$(MATURIN_VERSION)"

build: $(PY)
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop $(MATURIN_FLAGS) --quiet
	@$(VENV)/bin/ferricorn --version

run: build
	exec $(VENV)/bin/ferricorn --pythonpath examples -w 2 -b 127.0.0.1:8000 --access-logfile - hello:app

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

rust-test:
	$(CARGO_ENV) FERRICORN_PYTHON=$(abspath $(PY)) cargo test --workspace

$(VENV)/.test-deps: tests/requirements.txt | $(PY)
	$(PY) -m pip install -q -r tests/requirements.txt
	touch $@

pytest: $(VENV)/.test-deps tls-tools
	$(PY) -m pytest -q tests

test: build lint rust-test pytest

# Speed against gunicorn and granian (installs wrk and the peers; see docs/benchmarks.md).
bench: build
	bash bench/setup.sh
	bench/.venv/bin/python bench/run.py $(BENCH_ARGS)

# Wheels: one per CPython 3.10+ found here (pyenv's and python3 on PATH, one per
# minor version), built against glibc 2.17 (manylinux2014) by linking with zig.
# `make wheel ABI3=1` builds a single abi3 wheel (any CPython >= 3.10) instead:
# about 6 % more instructions per request on a bare hello (docs/deploy.md).
DIST := dist
ZIGLANG_VERSION := 0.17.1
WHEEL_PYTHONS ?= $(shell for p in $$HOME/.pyenv/versions/3.*/bin/python3 $$(command -v python3); do \
	"$$p" -c 'import sys; v = sys.version_info; v >= (3, 10) and print(f"{v[0]}.{v[1]:02d} {sys.executable}")' 2>/dev/null; \
	done | sort -s -u -t' ' -k1,1 | cut -d' ' -f2)
ifeq ($(ABI3),1)
WHEEL_FLAGS ?= -F pyo3/abi3-py310 -i $(abspath $(PY))
else
WHEEL_FLAGS ?= $(foreach p,$(WHEEL_PYTHONS),-i $(p))
endif
# Own target dir: switching between wheel and develop builds rebuilds nothing.
WHEEL_ENV := CARGO_TARGET_DIR=$(abspath target/wheel) PATH=$(abspath $(VENV))/bin:$$PATH

$(VENV)/.ziglang: | $(PY)
	$(PY) -m pip install -q "ziglang==$(ZIGLANG_VERSION)"
	touch $@

wheel: $(VENV)/.ziglang
	rm -f $(DIST)/ferricorn-*.whl $(DIST)/ferricorn-*.tar.gz
	$(WHEEL_ENV) $(VENV)/bin/maturin build --release --zig --compatibility manylinux2014 $(WHEEL_FLAGS) --out $(DIST)
	$(VENV)/bin/maturin sdist --out $(DIST)
	@ls -1 $(DIST)

# The end of a recipe line that lists missing Debian packages in $$missing:
# install them (root, or sudo without a password) when there are any.
define apt_missing
if [ -n "$$missing" ]; then \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo -n"; \
	echo "$@: apt-get install$$missing"; \
	$$sudo apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
fi
endef

# curl and openssl (s_client) for tests/test_tls.py: installed from Debian
# only when one is missing.
tls-tools:
	@missing=""; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	$(apt_missing)

# nginx, systemd-socket-activate and wrk for tests/test_deploy.py: installed
# from Debian only when one is missing (root, or sudo without a password).
deploy-deps:
	@missing=""; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing="$$missing nginx"; \
	command -v systemd-socket-activate >/dev/null || missing="$$missing systemd"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	$(apt_missing)

test-install: wheel deploy-deps $(VENV)/.test-deps
	FERRICORN_DIST=$(abspath $(DIST)) FERRICORN_INSTALL_PYTHONS="$(WHEEL_PYTHONS)" \
		$(PY) -m pytest -q tests/test_install.py tests/test_deploy.py

clean:
	rm -rf $(VENV) target $(DIST)
