#!/usr/bin/env python3
"""Run the Autobahn WebSocket test suite (fuzzingclient) against an ASGI server.

The server runs bench/apps/asgi_raw.py:ws (an echo) the way bench/run.py starts it;
Autobahn's `wstest -m fuzzingclient` drives it and writes its report; this script
prints (and writes) the score: cases by behaviour, and every case that was not OK.

    bench/.venv/bin/python bench/autobahn.py --server ferricorn-asgi
    bench/.venv/bin/python bench/autobahn.py --server uvicorn --cases '1.*,2.*'
    bench/.venv/bin/python bench/autobahn.py --server gunicorn-asgi --exclude ''   # all cases, 9, 12, 13 too
    bench/.venv/bin/python bench/autobahn.py --server codec   # ferricorn-http's ws codec alone

`--server codec` is bench/wsload's `wsecho`: an echo server written only with
ferricorn-http's sans-IO `ws` module (std sockets, no Python), to check the codec.

wstest (autobahntestsuite, pinned below) runs only on Python 2.7. It is found as
$AUTOBAHN_PYTHON2, a `python2.7` on PATH, or pyenv's 2.7; the first run installs the
suite into bench/.autobahn/ with that interpreter's pip. Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: servers, apps, process control)

HERE = run.HERE
SUITE = "autobahntestsuite==25.10.1"
SITE = HERE / ".autobahn" / "site"
STAMP = HERE / ".autobahn" / ".installed"
# Left out unless asked for (--exclude '' or --cases '12.*,13.*'): section 9 (limits and
# performance: messages up to 16 MiB, many small frames) takes minutes on a Python echo;
# 12 and 13 (permessage-deflate, 216 cases) score UNIMPLEMENTED unless the server
# negotiates compression, and take many minutes on any server that does (ferricorn and
# uvicorn): wstest's own Python 2 compression is the bottleneck.
DEFAULT_EXCLUDE = "9.*,12.*,13.*"
WSTEST = (
    "import os, site, sys; site.addsitedir(os.environ['AUTOBAHN_SITE']); "
    "from autobahntestsuite.wstest import run; sys.argv[0] = 'wstest'; run()"
)


WSECHO = HERE / "wsload" / "target" / "release" / "wsecho"
CODEC = run.Server(
    "codec", "wsecho", "codec",
    lambda opts, app, port, workers: [str(WSECHO), f"{run.HOST}:{port}"],
    lambda opts: None if os.access(WSECHO, os.X_OK) else f"{WSECHO} not built (run bash bench/setup.sh)",
    interface="asgi")


def find_python2() -> str | None:
    candidates = [os.environ.get("AUTOBAHN_PYTHON2", ""), "python2.7", "python2"]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python2.7")), reverse=True)
    for c in candidates:
        if not c:
            continue
        try:
            out = subprocess.run([c, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        if out.returncode == 0 and out.stdout.strip() == "2.7":
            return c
    return None


def ensure_suite(python2: str) -> None:
    if STAMP.exists() and STAMP.read_text() == f"{python2} {SUITE}":
        return
    print(f"autobahn: installing {SUITE} into {SITE.relative_to(run.ROOT)} with {python2}", file=sys.stderr)
    SITE.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([python2, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "--target", str(SITE), "--upgrade", SUITE], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"autobahn: pip install {SUITE} failed: {(out.stderr or out.stdout).strip()[-600:]}")
    STAMP.write_text(f"{python2} {SUITE}")


def case_key(case: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in case.split("."))


def summarise(index: dict, outdir: Path, agent: str) -> tuple[dict[str, int], list[dict], dict]:
    """(cases by behaviour, the cases that were not OK, UNIMPLEMENTED cases by section and
    the INFORMATIONAL case ids under "informational")."""
    counts: dict[str, int] = {}
    unimplemented: dict = {}
    problems = []
    for case in sorted(index.get(agent, {}), key=case_key):
        r = index[agent][case]
        behaviour = r.get("behavior", "?")
        counts[behaviour] = counts.get(behaviour, 0) + 1
        if behaviour == "INFORMATIONAL":
            unimplemented.setdefault("informational", []).append(case)
        if behaviour == "UNIMPLEMENTED":
            section = case.split(".")[0] + ".*"
            unimplemented[section] = unimplemented.get(section, 0) + 1
        close = r.get("behaviorClose", "?")
        if behaviour in ("OK", "INFORMATIONAL", "UNIMPLEMENTED") and close in ("OK", "INFORMATIONAL"):
            continue  # UNIMPLEMENTED (compression not negotiated) is counted, by section, not listed
        detail = {"case": case, "behavior": behaviour, "behaviorClose": close,
                  "remoteCloseCode": r.get("remoteCloseCode")}
        try:
            full = json.loads((outdir / r["reportfile"]).read_text())
            detail["description"] = " ".join(str(full.get("description", "")).split())[:200]
            detail["result"] = " ".join(str(full.get("result", "")).split())[:300]
            detail["resultClose"] = " ".join(str(full.get("resultClose", "")).split())[:200]
        except (OSError, KeyError, ValueError):
            pass
        problems.append(detail)
    return counts, problems, unimplemented


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    asgi = [k for k, s in run.SERVERS.items() if s.interface == "asgi"]
    p.add_argument("--server", required=True, choices=asgi + ["codec"],
                   help="which ASGI server (bench/run.py's names), or codec (ferricorn-http's ws alone)")
    p.add_argument("--ferricorn", default=str(run.ROOT / ".venv" / "bin" / "ferricorn"),
                   help="ferricorn executable")
    p.add_argument("--cases", default="*", help="comma list of Autobahn case patterns (e.g. '1.*,5.*')")
    p.add_argument("--exclude", default=DEFAULT_EXCLUDE, help="comma list of case patterns to leave out")
    p.add_argument("--timeout", type=float, default=1800, help="seconds for the whole wstest run")
    p.add_argument("--out", default=str(HERE / "results"),
                   help="directory for autobahn-SERVER.md and .json (the summary)")
    args = p.parse_args(argv)

    python2 = find_python2()
    if not python2:
        sys.exit("autobahn: wstest needs Python 2.7 and none was found (set AUTOBAHN_PYTHON2, put python2.7 on "
                 "PATH, or `pyenv install 2.7.18`); the suite's docker image crossbario/autobahn-testsuite "
                 "is the other way to run it")
    ensure_suite(python2)

    opts = run.parse_args(["--ferricorn", args.ferricorn])
    server = CODEC if args.server == "codec" else run.SERVERS[args.server]
    why = server.available(opts)
    if why:
        sys.exit(f"autobahn: {args.server} is not available: {why}")
    app = run.APPS["ws"]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    exclude = [c.strip() for c in args.exclude.split(",") if c.strip()]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="ferricorn-autobahn-") as tmp:
        tmp = Path(tmp)
        running = run.RunningServer(server, opts, app, 1, None, tmp)
        try:
            try:
                running.wait_ready(app)
            except run.BenchError as e:
                sys.exit(f"autobahn: {args.server} did not start: {e}")
            problem = run.ws_probe(running.port, run.PROBE_TIMEOUT)
            if problem:
                sys.exit(f"autobahn: {args.server} does not echo WebSocket messages: {problem}")
            reports = tmp / "reports"
            spec = {
                "outdir": str(reports),
                "servers": [{"agent": args.server, "url": f"ws://{run.HOST}:{running.port}/"}],
                "cases": cases,
                "exclude-cases": exclude,
                "exclude-agent-cases": {},
            }
            (tmp / "spec.json").write_text(json.dumps(spec))
            env = dict(os.environ, AUTOBAHN_SITE=str(SITE))
            env.pop("PYTHONPATH", None)
            print(f"autobahn: running wstest against {args.server} (cases {cases}, excluding {exclude})",
                  file=sys.stderr, flush=True)
            t0 = time.monotonic()
            with open(tmp / "wstest.log", "wb") as log:
                try:
                    wst = subprocess.run([python2, "-c", WSTEST, "-m", "fuzzingclient", "-s", str(tmp / "spec.json")],
                                         cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    sys.exit(f"autobahn: wstest still running after {args.timeout:.0f}s")
            took = time.monotonic() - t0
            alive = running.proc.poll() is None
            server_log = run.tail(running.log, 10)
        finally:
            running.stop()
        index_file = reports / "index.json"
        if wst.returncode != 0 or not index_file.exists():
            sys.exit(f"autobahn: wstest exited {wst.returncode}: {run.tail(tmp / 'wstest.log', 10)}")
        index = json.loads(index_file.read_text())
        counts, problems, unimplemented = summarise(index, reports, args.server)

    total = sum(counts.values())
    lines = [
        f"## Autobahn fuzzingclient against {args.server} — {started}",
        "",
        f"- {SUITE} (wstest on {python2}), {total} cases in {took:.0f} s; cases {', '.join(cases)}"
        + (f", excluding {', '.join(exclude)}" if exclude else ""),
        (f"- app: bench/apps/{app.target.replace(':', '.py:')}; " if server is not CODEC else "- ")
        + f"server: `{' '.join(running.argv)}`",
        "- by behaviour: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
    ]
    informational = unimplemented.pop("informational", [])
    if informational:
        lines.append("- INFORMATIONAL (the RFC leaves the behaviour open): " + ", ".join(informational))
    if unimplemented:
        lines.append("- UNIMPLEMENTED (permessage-deflate offered, not negotiated): "
                     + ", ".join(f"{k} {v}" for k, v in unimplemented.items()))
    if not alive:
        lines.append(f"- the server exited during the run: {server_log}")
    if problems:
        lines += ["", "| case | behaviour | close | remote close code | description | result |",
                  "|---|---|---|---|---|---|"]
        for d in problems:
            lines.append(f"| {d['case']} | {d['behavior']} | {d['behaviorClose']} | {d.get('remoteCloseCode')} | "
                         f"{d.get('description', '')} | {d.get('result', '')} {d.get('resultClose', '')} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"autobahn-{args.server}.md").write_text(report)
    (out / f"autobahn-{args.server}.json").write_text(json.dumps(
        {"server": args.server, "started": started, "suite": SUITE, "cases": cases, "exclude": exclude,
         "counts": counts, "informational": informational, "unimplemented": unimplemented,
         "problems": problems, "seconds": took},
        indent=2) + "\n")
    print(f"autobahn: wrote {out / f'autobahn-{args.server}.md'} and .json", file=sys.stderr)
    return 0 if not any(k in counts for k in ("FAILED", "WRONG CODE", "UNCLEAN")) else 1


if __name__ == "__main__":
    sys.exit(main())
