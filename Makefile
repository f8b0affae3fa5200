# ferricorn — the two commands of the README, and their parts.
#   make run    build, then serve examples/hello.py on 127.0.0.1:8000 with 2 workers
#   make test   build, then fmt, clippy, Rust tests, pytest

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

.PHONY: build run test lint rust-test pytest bench clean

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

pytest: $(VENV)/.test-deps
	$(PY) -m pytest -q tests

test: build lint rust-test pytest

# Speed against gunicorn and granian (installs wrk and the peers; see docs/benchmarks.md).
bench: build
	bash bench/setup.sh
	bench/.venv/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) target
