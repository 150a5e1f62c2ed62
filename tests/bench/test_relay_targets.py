"""What ``run.py bench relay`` says of the issue's targets (bench/relay_targets.py):
which target a run measures, met or not on each side of its threshold, and
what a run of the floor means for any server."""

from __future__ import annotations

import argparse

import pytest

from bench.relay_targets import verdicts


def _args(rate: float = 0.0, pairs: int = 100, window: int = 32, until: str = "ack",
          floor: bool = False) -> argparse.Namespace:
    return argparse.Namespace(rate=rate, pairs=pairs, window=window, window_until=until,
                              floor=floor)


def _rounds(delivered: list[float], p99: list[float] | None = None) -> list[dict]:
    p99 = p99 or [1.0] * len(delivered)
    return [{"delivered_per_s": d, "e2e_p99": p} for d, p in zip(delivered, p99)]


@pytest.mark.parametrize("delivered, verdict", [
    ([51_000, 49_000, 50_500], "met (50,500)"),           # the median of the rounds decides
    ([49_999, 49_000, 52_000], "not met (49,999)"),
])
def test_closed_loop_is_judged_on_the_median_throughput(delivered, verdict):
    [line] = verdicts(_args(), _rounds(delivered))
    assert line.startswith("target (2 cores, load generator included): >= 50,000 delivered")
    assert line.endswith(verdict)


@pytest.mark.parametrize("delivered, p99, verdict", [
    ([25_000] * 3, [19.0, 25.0, 12.0], "met (p99 19.0 ms, 25,000 delivered/s)"),
    ([25_000] * 3, [19.0, 25.0, 21.0], "not met (p99 21.0 ms, 25,000 delivered/s)"),
    ([24_800] * 3, [19.0] * 3, "met (p99 19.0 ms, 24,800 delivered/s)"),      # within 1%
    ([20_000] * 3, [5.0] * 3, "not met (p99 5.0 ms, 20,000 delivered/s: did not keep up)"),
])
def test_open_loop_at_25000_is_judged_on_p99_and_keeping_up(delivered, p99, verdict):
    [line] = verdicts(_args(rate=25_000), _rounds(delivered, p99))
    assert "e2e p99 < 20 ms at 25,000 msgs/s with 100 pairs, window 32" in line
    assert line.endswith(verdict)


@pytest.mark.parametrize("args", [_args(rate=10_000), _args(pairs=4), _args(window=8),
                                  _args(until="receipt"), _args(rate=25_000, pairs=50)])
def test_another_load_names_the_loads_the_targets_are_for(args):
    [line] = verdicts(args, _rounds([25_000]))
    assert "are measured with 100 pairs, window 32" in line and "met" not in line


def test_the_floor_tells_what_the_host_allows():
    missed = verdicts(_args(rate=25_000, floor=True), _rounds([25_000], [44.0]))
    assert missed[0].startswith("the floor (nothing stored): e2e p99 < 20 ms")
    assert "not met (p99 44.0 ms" in missed[0]
    assert "no server speaking this protocol meets it" in missed[1]
    reached = verdicts(_args(rate=25_000, floor=True), _rounds([25_000], [8.0]))
    assert "met (p99 8.0 ms" in reached[0] and "not met" not in reached[0]
    assert "a node may meet it here" in reached[1]
