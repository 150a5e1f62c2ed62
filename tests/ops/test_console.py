"""``run.py top`` / ``run.py status``: settings parsing, the text layout, exit
codes, and a real two-worker ``run.py node`` read through any worker's port."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pytest

from ops import console
from supervisor.launcher import free_port
from tests.launched import ROOT, _node_up, launched_node, wait_until
from transport.node_status import merge


def test_parse_settings_knows_the_monitor_keys():
    assert console.parse_settings(["alert_actor_high=500", "alert-sustain=2.5",
                                   "overload_rss_mb=off", "node_name=n1"], webhook="http://h/x") == {
        "alert_actor_high": 500, "alert_sustain": 2.5, "overload_rss_mb": None,
        "node_name": "n1", "alert_webhook": "http://h/x"}
    with pytest.raises(ValueError, match="KEY one of"):
        console.parse_settings(["nonsense=1"])
    with pytest.raises(ValueError, match="not a number"):
        console.parse_settings(["alert_actor_high=lots"])


def test_every_setting_in_the_operations_tables_can_be_set():
    """Each setting docs/operations.md lists (a row whose first cell names
    it) is a key ``--set`` takes: ``max_blocked`` was listed, and refused."""
    text = (ROOT / "docs" / "operations.md").read_text()
    names = set()
    for row in re.findall(r"^\| ([^|]+) \|", text, re.M):
        cells = re.findall(r"`([a-z][a-z0-9_]*)`", row)
        if cells and not row.startswith("(fixed)") and not cells[0].startswith("switchboard_"):
            names.update(cells)
    assert {"max_blocked", "code_budget", "offline_cap", "frame_rate", "alert_sustain"} <= names
    for name in sorted(names):
        value = console._CHOICES.get(name, ("1",))[0]
        assert name in console.parse_settings([f"{name}={value}"]), name


def _view():
    status = {"at": time.time(), "worker": 0, "pid": 4242, "actors": 12, "queued": 1500,
              "max_queue": 1500, "connections": 3,
              "alerts": [{"text": "actor <Blocker#9> queue 1500 >= 1000 for >= 5 s",
                          "value": 1500, "for_s": 7.0}],
              "kinds": {"Blocker": {"count": 1, "queued": 1500, "max": 1500}},
              "top": [{"actor": "<Blocker#9>", "kind": "Blocker", "queue": 1500}],
              "rates": {"frames_in": 1234.5, "frames_out": 10.0, "store_ops": 3.0},
              "alert_events": [], "restarts": [{"supervisor": "chat", "child": "presence", "count": 2}],
              "recent_restarts": [], "storage": None, "offline": None, "thresholds": {},
              "process": {"rss_bytes": 50 << 20, "loop_lag_ms": 0.4, "sample_ms": 0.05},
              "overload": {}}
    return merge({"name": "n1"}, [{"slot": 0, "port": 8222, "status": status},
                                  {"slot": 1, "port": 8223, "status": None, "error": "unreachable: x"}])


def test_render_shows_totals_alerts_workers_and_mailboxes():
    text = console.render(_view())
    assert "Switchboard node n1" in text and "workers 1/2 up" in text
    assert "queued 1,500" in text and "frames in 1,234" in text
    assert "! w0 actor <Blocker#9> queue 1500 >= 1000 for >= 5 s (for 7 s)" in text
    assert re.search(r"\n\s+0\s+4242\s+8222\s+12\s+1,500", text)
    assert "DOWN: unreachable: x" in text
    assert "1,500  w0 <Blocker#9>" in text and "w0 chat / presence: 2" in text
    assert console.health(_view()) == console.DEGRADED


def test_status_of_an_unreachable_node_exits_2(capsys):
    args = Namespace(command="status", host="127.0.0.1", http_port=free_port())
    assert console.main(args) == console.UNREACHABLE
    assert "unreachable" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)


@pytest.mark.timeout(60)
def test_status_and_top_read_a_two_worker_node_through_either_port(tmp_path):
    with launched_node(tmp_path, 2) as (launcher, log_path, tag):
        # Step 1: the node is up; the launcher logged each worker's HTTP port.
        _node_up(log_path, wait_until)
        ports = wait_until(lambda: re.search(r"worker HTTP ports (\d+) (\d+)", log_path.read_text()),
                           timeout=10).groups()
        # Step 2: status through worker 1's port merges both workers: exit 0.
        wait_until(lambda: _run("status", "--http-port", ports[1]).returncode == 0, timeout=10)
        done = _run("status", "--http-port", ports[1])
        assert "workers 2/2 up" in done.stdout, done
        # Step 3: top redraws twice and stops.
        done = _run("top", "--http-port", ports[0], "--iterations", "2", "--interval", "0.2")
        assert done.returncode == 0 and done.stdout.count("\x1b[H\x1b[2J") == 2
        assert "WORKER" in done.stdout and "QueueMonitor" in done.stdout
        # Step 4: after the node stops, status says unreachable: exit 2.
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
    assert _run("status", "--http-port", ports[0]).returncode == 2
