"""Smoke run of ``run.py bench census`` at a tiny size: the real command (a
worker tree in its process, a load-generator process logging users in); it
must print the per-user figure and the allocating lines, and leave no
process behind (everything it starts inherits this test's tag)."""

from __future__ import annotations

import re
import sys

import pytest

from tests.launched import run_tagged

pytestmark = pytest.mark.timeout(120)


def test_bench_census_smoke():
    done, left = run_tagged([sys.executable, "run.py", "bench", "census", "60", "--top", "5"],
                            timeout=90)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not left, f"processes left behind: {left}"
    per_user = re.search(r"Python objects per user \(tracemalloc\): ([\d,]+) B", done.stdout)
    assert per_user and int(per_user.group(1).replace(",", "")) > 500, done.stdout
    lines = re.findall(r"^ +-?[\d.]+ +-?[\d.]+  .+:\d+", done.stdout, re.MULTILINE)
    assert len(lines) == 5, done.stdout
    assert "actors.session.Session: 60 objects" in done.stdout, done.stdout
