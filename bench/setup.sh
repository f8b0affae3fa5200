#!/usr/bin/env bash
# Prepare the benchmark's peers on a fresh machine:
#   - wrk, from Debian, when it is not on PATH;
#   - bench/wsload (cargo build --release), the WebSocket load client;
#   - bench/.venv with gunicorn, granian and flask (required), and the ASGI peers
#     and frameworks: uvicorn (httptools, uvloop, websockets), starlette, fastapi;
#     bjoern and uwsgi (optional: they compile C and may fail; run.py skips them).
# ferricorn itself is not installed here: `make build` puts it in .venv/.
#
# Idempotent: a second run only checks. Environment:
#   PYTHON        interpreter for bench/.venv (default: the base interpreter of
#                 the project's .venv, so every server runs the same Python; else python3)
#   BENCH_NO_APT  set to 1 to never call apt-get (wrk must then be on PATH)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
venv="$here/.venv"

REQUIRED=("gunicorn==27.0.1" "granian>=2,<3" "flask>=3")
# ASGI peers and apps (bench/run.py --apps asgi-*; docs/benchmarks.md "ASGI"), pinned.
ASGI=("uvicorn==0.55.0" "httptools==0.9.0" "uvloop==0.23.0" "websockets==17.4"
      "starlette==1.10.0" "fastapi==0.165.0")
OPTIONAL=("bjoern" "uwsgi")

log() { printf 'bench/setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        log "not root and no sudo: cannot run: $*"
        return 1
    fi
}

# apt_install PKG...: try the install first; run `apt-get update` only if that fails
# (a fresh image often has no package lists yet).
apt_install() {
    [ "${BENCH_NO_APT:-0}" = 1 ] && return 1
    command -v apt-get >/dev/null 2>&1 || { log "no apt-get on this machine"; return 1; }
    if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; then
        return 0
    fi
    log "apt-get install $* failed; running apt-get update and retrying"
    as_root apt-get update -q >/dev/null &&
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
}

# --- wrk ---------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    log "installing wrk from Debian"
    apt_install wrk || { log "could not install wrk"; exit 1; }
fi
command -v taskset >/dev/null 2>&1 || apt_install util-linux || log "no taskset: run.py will not pin CPUs"

# --- interpreter ---------------------------------------------------------------
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then
        PYTHON="$("$root/.venv/bin/python" -c 'import sys; print(sys._base_executable)')"
    else
        PYTHON=python3
    fi
fi
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' ||
    { log "$PYTHON is older than 3.10"; exit 1; }

# Rebuild the venv if it was made by another interpreter.
want="$("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [ -x "$venv/bin/python" ]; then
    have="$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])' 2>/dev/null || true)"
    if [ "$have" != "$want" ]; then
        log "bench/.venv has Python ${have:-?}, want $want: recreating"
        rm -rf "$venv"
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    log "creating bench/.venv with $PYTHON ($want)"
    "$PYTHON" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

# --- required peers --------------------------------------------------------------
stamp="$venv/.bench-deps"
spec="${REQUIRED[*]} ${ASGI[*]}"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$spec" ]; then
    log "installing ${REQUIRED[*]} ${ASGI[*]}"
    "${pip[@]}" "${REQUIRED[@]}" "${ASGI[@]}"
    printf '%s' "$spec" >"$stamp"
fi

# --- optional peers ----------------------------------------------------------------
# Tried once per venv; a failure is remembered (remove bench/.venv/.skip-NAME to retry).
for pkg in "${OPTIONAL[@]}"; do
    if "$venv/bin/python" -m pip show -q "$pkg" >/dev/null 2>&1; then
        continue
    fi
    if [ -e "$venv/.skip-$pkg" ]; then
        log "optional $pkg: skipped ($(cat "$venv/.skip-$pkg"))"
        continue
    fi
    if [ "$pkg" = bjoern ] && [ ! -e /usr/include/ev.h ]; then
        # bjoern builds against libev; its headers come from Debian.
        apt_install libev-dev || log "optional bjoern: libev-dev unavailable"
    fi
    log "optional $pkg: trying to install (needs a C compiler and headers)"
    if out="$("${pip[@]}" "$pkg" 2>&1)"; then
        log "optional $pkg: installed"
    else
        reason="$(printf '%s\n' "$out" | grep -m1 -iE 'error[: ]' | cut -c1-160 || true)"
        printf '%s' "pip install failed: ${reason:-see pip output}" >"$venv/.skip-$pkg"
        log "optional $pkg: skipped ($(cat "$venv/.skip-$pkg"))"
    fi
done

# --- bench/wsload: the WebSocket echo load client (the `ws` app's wrk) ---------
# A small Rust program of its own (not in the workspace); cargo only rebuilds it when it changed.
if command -v cargo >/dev/null 2>&1; then
    cargo build --release --quiet --manifest-path "$here/wsload/Cargo.toml" ||
        log "could not build bench/wsload: the ws rows will fail"
else
    log "no cargo on PATH: bench/wsload not built; the ws rows will fail"
fi

"$venv/bin/python" - <<'EOF'
import importlib.metadata as md
found = []
for name in ("gunicorn", "granian", "flask", "uvicorn", "uvloop", "starlette", "fastapi",
             "bjoern", "uwsgi"):
    try:
        found.append(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        found.append(f"{name} (not installed)")
print("bench/setup: " + ", ".join(found))
EOF
