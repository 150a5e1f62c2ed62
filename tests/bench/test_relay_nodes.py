"""Smoke run of ``run.py bench relay --nodes 2`` at tiny sizes: the real
command, real node processes (one node of one and of two workers, then a
cluster of two nodes with every message crossing between them). It must
finish within a minute, print a comparison table with messages delivered
and latencies measured in every row, and leave no process behind: every
process it starts inherits this test's tag, which is swept at the end."""

from __future__ import annotations

import re
import sys

import pytest

from tests.launched import run_tagged

pytestmark = pytest.mark.timeout(120)

ROWS = ("1 node x 1 worker", "1 node x 2 workers", "2 nodes x 1 worker (cross-node)")


def _row(output: str, label: str) -> list[float]:
    """The numbers of the table row ``label`` (delivered/s first, then the
    latencies, CPU and the ratio)."""
    lines = [line for line in output.splitlines()
             if line.startswith(label) and not line.startswith(f"{label}:")]
    assert lines, f"no row {label!r} in:\n{output}"
    return [float(x.replace(",", "")) for x in re.findall(r"[\d,]+\.?\d*", lines[-1][len(label):])]


def test_bench_relay_two_nodes_smoke():
    done, left = run_tagged(
        [sys.executable, "run.py", "bench", "relay", "--nodes", "2", "--pairs", "4",
         "--window", "8", "--duration", "1", "--warmup", "0.5", "--rounds", "1",
         "--clients", "1"], timeout=60)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not left, f"processes left behind: {left}"
    for label in ROWS:
        delivered, e2e_p50, e2e_p99, ack_p50, ack_p99, rcpt_p50, rcpt_p99, *_ = _row(output, label)
        assert delivered > 0, (label, output)
        assert 0 < e2e_p50 <= e2e_p99 and 0 < ack_p50 <= ack_p99 and 0 < rcpt_p50 <= rcpt_p99, \
            (label, output)
    cross = [line for line in output.splitlines() if line.startswith(f"run 1/1, {ROWS[2]}")]
    assert cross and "errors none" in cross[0], output
    assert re.search(r"unacked at the end 0, receipts missing at the end 0", cross[0]), cross[0]
