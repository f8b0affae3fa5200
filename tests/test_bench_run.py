"""bench/run.py's arithmetic, without servers: the rows of medians that --rounds
prints, the per-round ferricorn/peer ratios under the table, and the idle PSS
column's reading of /proc/PID/smaps_rollup."""

import argparse
import dataclasses
import datetime
import importlib.util
import os
import sys

import pytest

from conftest import ROOT

_spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench  # dataclasses look their module up while the class is made
_spec.loader.exec_module(bench)

SERVER = {  # key -> (display name, kind, worker label)
    "ferricorn-asgi": ("ferricorn", "asgi", "asgi"),
    "granian-asgi": ("granian", "asgi", "asgi"),
    "uvicorn": ("uvicorn", "asgi", "asgi"),
    "gunicorn-asgi": ("gunicorn", "asgi", "asgi"),
}


def row(key, rnd, cpu, rps=1000.0, app="asgi-hello", status="ok", **kw):
    name, kind, worker = SERVER[key]
    r = bench.Row(name, key, kind, worker, app, "keep-alive", 1, "0", "1", status=status, round=rnd, **kw)
    if status == "ok":
        r.cpu_us_per_req, r.rps, r.errors, r.error_detail = cpu, rps, 0, {}
    return r


def measured(rounds):
    """Measurements round by round, ratios to each round's own peers (as main does)."""
    out = []
    for rnd, cpus in enumerate(rounds, 1):
        this = [row(key, rnd, cpu) for key, cpu in cpus.items()]
        bench.add_ratios(this)
        out += this
    return out


def test_rows_of_medians_with_cpu_min_max():
    ms = [row("ferricorn-asgi", 1, 20.0, rps=40000, rss_idle_mib=37.0, pss_idle_mib=24.0),
          row("ferricorn-asgi", 2, 16.0, rps=48000, rss_idle_mib=37.2, pss_idle_mib=24.4),
          row("ferricorn-asgi", 3, 25.0, rps=30000, rss_idle_mib=36.8, pss_idle_mib=24.2),
          row("granian-asgi", 1, 30.0, rps=31000), row("granian-asgi", 2, 28.0, rps=33000)]
    ms[1].errors, ms[1].error_detail = 3, {"read": 3}
    ms[2].errors, ms[2].error_detail = 2, {"read": 1, "timeout": 1}
    rows = bench.combine_rounds(ms)
    assert [(r.key, r.rounds) for r in rows] == [("ferricorn-asgi", 3), ("granian-asgi", 2)]
    f, g = rows
    assert (f.cpu_us_per_req, f.cpu_us_per_req_min, f.cpu_us_per_req_max) == (20.0, 16.0, 25.0)
    assert (f.rps, f.rss_idle_mib, f.pss_idle_mib) == (40000, 37.0, 24.2)
    assert (f.errors, f.error_detail) == (5, {"read": 4, "timeout": 1})  # totals, not medians
    assert (g.cpu_us_per_req, g.rps) == (29.0, 32000)  # an even count: the mean of the middle two
    assert [m.round for m in ms] == [1, 2, 3, 1, 2]  # the measurements themselves are left as they were
    bench.add_ratios(rows)  # the table's ratios are of the medians
    assert f.vs_granian == {"peer": "granian asgi", "rps": 40000 / 32000, "cpu_per_req": 20.0 / 29.0}


def test_a_failed_round_leaves_the_median_of_the_rest_and_a_note():
    ms = [row("ferricorn-asgi", 1, 20.0), row("ferricorn-asgi", 2, None, status="failed", reason="exited 1"),
          row("ferricorn-asgi", 3, 30.0), row("granian-asgi", 1, None, status="failed", reason="port"),
          row("granian-asgi", 2, None, status="failed", reason="port")]
    f, g = bench.combine_rounds(ms)
    assert (f.status, f.cpu_us_per_req, f.rounds, f.rounds_failed) == ("ok", 25.0, 3, 1)
    assert (g.status, g.rounds_failed, g.reason) == ("failed", 2, "port")
    table = bench.render_table([f, g], with_workers=False, rounds=3)
    assert "[1] ferricorn asgi (asgi-hello keep-alive): failed in 1 of 3 rounds (medians of the rest): exited 1" \
        in table
    assert "[2] granian asgi (asgi-hello keep-alive): failed in all 2 rounds: port" in table


def test_per_round_ratios_median_and_rounds_won():
    ms = measured([{"ferricorn-asgi": 20.0, "granian-asgi": 30.0, "uvicorn": 50.0},
                   {"ferricorn-asgi": 33.0, "granian-asgi": 30.0, "uvicorn": 44.0},
                   {"ferricorn-asgi": 15.0, "granian-asgi": 25.0, "uvicorn": 60.0},
                   {"ferricorn-asgi": 18.0, "uvicorn": 45.0}])  # granian missing in round 4
    by_peer = {e["peer"]: e for e in bench.per_round_ratios(ms)}
    assert set(by_peer) == {"granian asgi", "uvicorn asgi"}
    g = by_peer["granian asgi"]
    assert g["rounds"] == [1, 2, 3]
    assert g["cpu_ratios"] == pytest.approx([20 / 30, 33 / 30, 15 / 25])
    assert g["median"] == pytest.approx(20 / 30)
    assert g["lower"] == 2
    u = by_peer["uvicorn asgi"]
    assert (u["rounds"], u["lower"]) == ([1, 2, 3, 4], 4)
    assert u["median"] == pytest.approx((20 / 50 + 18 / 45) / 2)
    lines = bench.render_per_round(bench.per_round_ratios(ms), with_workers=False)
    assert ("- asgi-hello keep-alive, ferricorn asgi ÷ granian asgi: 0.67, 1.10, 0.60; median 0.67 "
            "(granian asgi ÷ ferricorn 1.50×), ferricorn lower in 2 of 3 rounds") in lines


def test_per_round_ratios_compare_within_a_round_not_across():
    # Round 2 is slow for everyone (the host): within each round ferricorn is
    # cheaper; the medians across rounds would say so too, a single pairing across
    # rounds (ferricorn's round 2 against granian's round 1) would not.
    ms = measured([{"ferricorn-asgi": 20.0, "granian-asgi": 25.0},
                   {"ferricorn-asgi": 36.0, "granian-asgi": 40.0}])
    (e,) = bench.per_round_ratios(ms)
    assert e["cpu_ratios"] == pytest.approx([0.8, 0.9]) and e["lower"] == 2


def opts(**kw):
    base = dict(rounds=1, duration=1, warmup=1, connections=64, wrk_threads=1, threads=4, pin=True,
                server_cpus="0", wrk_cpus="1", workers=1, worker_counts=None, max_other_cpu=10.0,
                apps="asgi-hello", modes="keep-alive", ws_window=1, ws_size=64)
    base.update(kw)
    return argparse.Namespace(**base)


def report(rounds, ms):
    rows = bench.combine_rounds(ms) if rounds > 1 else ms
    bench.add_ratios(rows)
    info = {"nproc": 2, "cpu_model": "x", "memory": "1 GiB", "kernel": "6", "python": "3.11"}
    started = datetime.datetime.now(datetime.timezone.utc)
    return bench.render_report(opts(rounds=rounds), info, {}, rows, {}, False, "bench/run.py", started, ms)


def test_one_round_keeps_the_single_run_table():
    ms = measured([{"ferricorn-asgi": 20.0, "granian-asgi": 30.0}])
    text = report(1, ms)
    assert "| req/s | CPU µs/req | server CPU %" in text
    assert "min–max" not in text and "Per round" not in text and "rounds:" not in text


def test_rounds_report_shows_medians_spread_and_per_round_summary():
    ms = measured([{"ferricorn-asgi": 20.0, "granian-asgi": 30.0},
                   {"ferricorn-asgi": 24.0, "granian-asgi": 28.0}])
    text = report(2, ms)
    assert "| req/s median | CPU µs/req median | CPU µs/req min–max | server CPU %" in text
    assert "| 22 | 20–24 |" in text
    assert "- rounds: 2, interleaved" in text
    assert "ferricorn asgi ÷ granian asgi: 0.67, 0.86; median 0.76" in text


def test_pss_field_parsing():
    rollup = ("55d0c0a00000-7ffd4c3f5000 ---p 00000000 00:00 0                          [rollup]\n"
              "Rss:               37012 kB\nPss:               24310 kB\nPss_Dirty:          9120 kB\n"
              "Pss_Anon:           8800 kB\nPss_File:          15400 kB\nShared_Clean:      12000 kB\n")
    assert bench.kib_field(rollup, "Pss:") == 24310
    assert bench.kib_field(rollup, "Rss:") == 37012
    assert bench.kib_field("Pss_Anon:  8800 kB\n", "Pss:") is None
    assert bench.kib_field("Pss:\n", "Pss:") is None


def test_tree_pss_of_a_live_process_and_dash_when_unreadable(monkeypatch):
    if not os.path.exists(f"/proc/{os.getpid()}/smaps_rollup"):
        pytest.fail("this kernel has no /proc/PID/smaps_rollup (Linux 4.14+)")
    pss, rss = bench.tree_mib(os.getpid(), bench.PSS), bench.tree_mib(os.getpid(), bench.RSS)
    assert 0 < pss <= rss * 1.01 + 1
    assert bench.tree_mib(os.getpid(), ("no-such-file", "Pss:")) is None  # as on a kernel without it

    def denied(path, *args, **kw):
        if str(path).endswith("/smaps_rollup"):
            raise PermissionError(13, "Permission denied", path)
        return open(path, *args, **kw)

    monkeypatch.setattr(bench, "open", denied, raising=False)  # another user's server
    assert bench.tree_mib(os.getpid(), bench.PSS) is None
    assert bench.tree_mib(os.getpid(), bench.RSS) == pytest.approx(rss, rel=0.2)
    monkeypatch.undo()
    r = dataclasses.replace(measured([{"ferricorn-asgi": 20.0}])[0], rss_idle_mib=37.0, rss_load_mib=38.0)
    line = bench.render_table([r], with_workers=False).splitlines()[2]
    assert "| 37.0 / 38.0 | — |" in line
    r.pss_idle_mib = 24.3
    assert "| 37.0 / 38.0 | 24.3 |" in bench.render_table([r], with_workers=False).splitlines()[2]
