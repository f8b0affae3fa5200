"""Faults an operator meets (issue 20): `--max-requests` bounds what a worker
serves (so it bounds a leak), and `QUIT`/`INT` stop a worker at once, even
one stuck in the app."""

import signal
import time
from collections import Counter

import pytest
from conftest import get, raw_request, parse_response, wait_until, worker_args, worker_classes

BUDGET = 20


@worker_classes()
@pytest.mark.parametrize("workers", [1, 2])
def test_max_requests_bounds_what_each_worker_serves(start_server, worker, workers):
    # One client, one request at a time, new connection each: nothing is in
    # flight when a budget runs out, so no worker may serve past it (one
    # request of slack). Before: the old worker served on until the
    # master's tick and its replacement's boot (123 of 20 with -w 2).
    srv = start_server("-b", "127.0.0.1:0", "-w", str(workers), "--max-requests", str(BUDGET),
                       *worker_args(worker), "basic:app", workers_booted=workers)
    served = Counter()
    for _ in range(150):
        status, _, body = get(srv.port, "/pid", headers="Connection: close\r\n")
        assert status == 200, body
        served[int(body)] += 1
    assert max(served.values()) <= BUDGET + 1, served
    # Replacements took over without a failed request, and every worker
    # but the current ones served its whole budget.
    assert len(served) >= 150 // (BUDGET + 1)
