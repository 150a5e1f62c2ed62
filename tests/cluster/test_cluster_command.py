"""``run.py cluster --nodes 3``: one command starts a local cluster of three
real nodes that know each other; a node that dies is started again (like
OTP's heart); SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid

import pytest

from supervisor.procs import process_tree
from tests.cluster.cluster_nodes import knows
from tests.launched import ROOT, tagged_pids, wait_until

pytestmark = pytest.mark.timeout(120)


def test_run_cluster_starts_three_nodes_restarts_a_dead_one_and_stops(tmp_path):
    tag = uuid.uuid4().hex
    env = {**os.environ, "SWITCHBOARD_TEST_TAG": tag}
    log_path = tmp_path / "cluster.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "run.py", "cluster", "--nodes", "3", "--data-dir",
             str(tmp_path / "data"), "--port", "0", "--media-port", "0", "--http-port", "0"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        log = lambda: log_path.read_text()            # noqa: E731
        wait_until(lambda: len(re.findall(r"node up: clients", log())) == 3, 60, 0.1)
        wait_until(lambda: all(knows(log(), n, m) for n in "ABC" for m in "ABC"), 20, 0.1)
        for name in "ABC":
            assert (tmp_path / "data" / name / "lmdb").exists(), name
        # SIGKILL node B's launcher: the cluster command starts B again
        b = re.search(r"node B: pid (\d+)", log())
        assert b, log()
        os.kill(int(b.group(1)), signal.SIGKILL)
        wait_until(lambda: "node B started again" in log(), 20, 0.1)
        wait_until(lambda: len(re.findall(r"node up: clients", log())) == 4, 60, 0.1)
        # SIGTERM: every node stops, and nothing of the cluster is left
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_until(lambda: not tagged_pids(f"SWITCHBOARD_TEST_TAG={tag}".encode()), 20, 0.2)
    finally:
        if proc.poll() is None:
            for pid in process_tree(proc.pid):
                os.kill(pid, signal.SIGKILL)
        for pid in tagged_pids(f"SWITCHBOARD_TEST_TAG={tag}".encode()):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("args, complaint", [
    (["--name", "A/1"], "a node name is 1 to 32 letters"),
    (["--name", ""], "a node name is 1 to 32 letters"),
    (["--name", "B", "--join", "nohost"], "expected HOST:PORT"),
    (["--name", "B", "--join", "127.0.0.1:0"], "expected HOST:PORT"),
    (["--join", "127.0.0.1:1900"], None),       # refused later: --join needs --name
])
def test_bad_cluster_options_are_refused_clearly(args, complaint, tmp_path):
    proc = subprocess.run([sys.executable, "run.py", "node", "--data-dir", str(tmp_path), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert (complaint or "--join needs --name") in proc.stderr, proc.stderr
