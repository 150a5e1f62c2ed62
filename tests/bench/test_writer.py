"""Smoke run of ``run.py bench writer`` at a tiny size, with each way of
making ids: the real command against a real fsync'd LMDB in a temp dir; it
must print a round and the median, with figures that are times."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("ids", ["sdk", "random", "counter"])
def test_bench_writer_smoke(ids):
    done = subprocess.run([sys.executable, "run.py", "bench", "writer", "--pairs", "10",
                           "--per-commit", "30", "--commits", "10", "--rounds", "2",
                           "--ids", ids], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"ids {ids}, fsync on" in done.stdout
    rows = re.findall(r"^ *(\d+|median) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", done.stdout,
                      re.MULTILINE)
    assert [r[0] for r in rows] == ["1", "2", "median"], done.stdout
    for row in rows:
        wall, cpu, commit, commit_cpu = map(float, row[1:])
        assert wall > 0 and cpu > 0 and commit > 0 and commit_cpu >= 0, done.stdout


def test_bench_writer_refuses_a_commit_smaller_than_the_pairs():
    done = subprocess.run([sys.executable, "run.py", "bench", "writer", "--pairs", "10",
                           "--per-commit", "5"], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "--per-commit >= --pairs" in done.stderr
