"""``LogLimit``: at most ``burst`` lines a period, then how many were left
out (tests/e2e/test_log_flood.py: against a node)."""

from __future__ import annotations

import logging

import pytest

from transport.log_limit import LogLimit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_past_the_burst_are_counted_and_reported_when_the_period_ends(caplog):
    caplog.set_level(logging.INFO, "limit-test")
    clock = Clock()
    limit = LogLimit(logging.getLogger("limit-test"), "lines", burst=3, period=10.0, clock=clock)
    for i in range(8):
        limit.log(logging.INFO, "line %d", i)
    assert [r.getMessage() for r in caplog.records] == ["line 0", "line 1", "line 2"]
    clock.now += 5.0
    limit.flush()                                   # the period is not over: nothing yet
    assert len(caplog.records) == 3
    clock.now += 5.0
    limit.flush()
    assert caplog.records[-1].levelno == logging.WARNING
    assert caplog.records[-1].getMessage() == (
        "5 more lines in the last 10 s (at most 3 logged per 10 s)")
    limit.log(logging.INFO, "again")                # a new period has room again
    limit.flush()                                   # and nothing was left out of it
    assert [r.getMessage() for r in caplog.records[-2:]][-1] == "again"
    assert len(caplog.records) == 5


def test_the_next_line_reports_what_the_last_period_left_out(caplog):
    caplog.set_level(logging.INFO, "limit-test")
    clock = Clock()
    limit = LogLimit(logging.getLogger("limit-test"), "lines", burst=1, period=2.0, clock=clock)
    limit.log(logging.INFO, "a")
    limit.log(logging.INFO, "b")
    clock.now += 3.0
    limit.log(logging.INFO, "c")
    assert [r.getMessage() for r in caplog.records] == [
        "a", "1 more lines in the last 3 s (at most 1 logged per 2 s)", "c"]


def test_a_limit_needs_room():
    with pytest.raises(ValueError):
        LogLimit(logging.getLogger("x"), "lines", burst=0)
    with pytest.raises(ValueError):
        LogLimit(logging.getLogger("x"), "lines", period=0)
