"""The operator's view of a cluster: a real two-node cluster (``run.py node``
subprocesses) read through node A's HTTP: ``/api/node``'s cluster part,
``/metrics``, ``run.py status`` / ``top``, and the dashboard in a real
headless Chromium; node B SIGKILLed shows as down within seconds, and what
a group says to a user homed there past ``outq_high`` shows as folded
beside the queue."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.browser import headless_driver, missing
from tests.cluster.cluster_nodes import ClusterNode, cluster
from tests.e2e.conftest import login, register
from tests.launched import ROOT, wait_until
from transport import wire

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550001001", "+15550002002"


def http_port(node: ClusterNode) -> int:
    """Worker 0's HTTP port, as the launcher logged it."""
    return int(wait_until(lambda: re.search(r"dashboard: http://[\d.]+:(\d+)/", node.log()),
                          10).group(1))


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def samples(port: int) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(get(port, "/metrics")) for s in f.samples}


def states(port: int) -> dict[str, str]:
    view = json.loads(get(port, "/api/node"))
    return {row["name"]: row["state"] for row in view["cluster"]["nodes"]}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=20)


async def test_api_metrics_status_and_top_show_both_nodes_and_the_queue(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        a_port, b_port = http_port(c["A"]), http_port(c["B"])
        # Step 1: A's view has both nodes up, B's summary fetched from B.
        wait_until(lambda: states(a_port) == {"A": "up", "B": "up"}, 10, 0.2)
        view = json.loads(get(a_port, "/api/node"))
        rows = {row["name"]: row for row in view["cluster"]["nodes"]}
        assert rows["A"]["self"] and rows["B"]["client"] == f"127.0.0.1:{c['B'].node.port}"
        assert rows["B"]["summary"]["name"] == "B" and rows["B"]["summary"]["workers_up"] == 1
        assert view["outq"]["pending"] == {"B": 0}
        # Step 2: alice (home A) sends bob (home B) 5 messages: A ships, B applies.
        alice, bob = await register(c["A"].node, ALICE), await register(c["B"].node, BOB)
        ca = await login(c["A"].node, alice)
        for i in range(5):
            assert isinstance(await ca.answer(ca.send(wire.Send(f"m{i}", BOB, b"hi", ref=ca.ref()))),
                              wire.Ack)
        wait_until(lambda: samples(b_port).get(("switchboard_outq_applied_items_total", ())) == 5,
                   10, 0.1)
        got = samples(a_port)
        assert got[("switchboard_cluster_nodes", (("state", "up"),))] == 2
        assert got[("switchboard_cluster_nodes", (("state", "down"),))] == 0
        assert got[("switchboard_outq_shipped_items_total", ())] >= 5
        wait_until(lambda: samples(a_port)[("switchboard_outq_items", (("dest", "B"),))] == 0, 5, 0.1)
        # Step 3: run.py status and top through A's port list both nodes; status exits 0.
        done = run("status", "--http-port", str(a_port))
        assert done.returncode == 0, done
        assert "CLUSTER  2/2 nodes up" in done.stdout
        assert re.search(r"\nA\*\s+up\s+127\.0\.0\.1:\d+", done.stdout), done.stdout
        assert re.search(r"\nB\s+up\s+127\.0\.0\.1:%d" % c["B"].node.port, done.stdout)
        top = run("top", "--http-port", str(a_port), "--iterations", "1")
        assert top.returncode == 0 and "CLUSTER  2/2 nodes up" in top.stdout, top
        # Step 4: B is killed: A shows it down, and what alice sends now waits in A's queue.
        c["B"].kill()
        wait_until(lambda: states(a_port)["B"] == "down", 10, 0.2)
        assert isinstance(await ca.answer(ca.send(wire.Send("late", BOB, b"hi", ref=ca.ref()))),
                          wire.Ack)
        got = samples(a_port)
        assert got[("switchboard_cluster_nodes", (("state", "down"),))] == 1
        assert got[("switchboard_outq_items", (("dest", "B"),))] == 1
        # (the view is refreshed once a second: wait for the one after the send)
        down = r"\nB\s+down\s+127\.0\.0\.1:\d+\s+1\s+marked down by the cluster directory"
        done = wait_until(lambda: (d := run("status", "--http-port", str(a_port)))
                          and re.search(down, d.stdout) and d, 5, 0.2)
        assert done.returncode == 1 and "CLUSTER  1/2 nodes up" in done.stdout, done
        await ca.close()


@pytest.mark.skipif(missing() is not None, reason=f"headless Chromium: {missing()}")
async def test_the_dashboard_shows_every_node_and_a_killed_one_down(tmp_path):
    from selenium.webdriver.common.by import By
    with cluster(tmp_path, ("A", "B"), settings=("outq_high=2",)) as c:
        a_port = http_port(c["A"])
        alice, bob = await register(c["A"].node, ALICE), await register(c["B"].node, BOB)
        driver = headless_driver()
        try:
            text = lambda element_id: driver.find_element(By.ID, element_id).text   # noqa: E731

            def row(name: str) -> str:
                """``class|cell|cell...`` of node ``name``'s row, read in one
                script (the page replaces its rows on every push)."""
                return driver.execute_script("""
                    for (const tr of document.querySelectorAll("#cluster tbody tr")) {
                      const cells = [...tr.cells].map((td) => td.textContent);
                      if (cells[0] === arguments[0]) return tr.className + "|" + cells.join("|");
                    }
                    return "";""", name)
            # Step 1: the page goes live; the Cluster table shows A (this node) and B, both up.
            driver.get(f"http://127.0.0.1:{a_port}/")
            wait_until(lambda: text("conn") == "live", 15, 0.1)
            assert driver.find_element(By.ID, "cluster-panel").is_displayed()
            wait_until(lambda: row("B").startswith("|B|up|"), 10, 0.1)
            assert row("A").startswith("|A|up (this node)|127.0.0.1:")
            assert text("cluster-title") == "Cluster: 2 of 2 nodes up"
            # Step 2: B is SIGKILLed: its row turns red and says down within 10 s.
            c["B"].kill()
            wait_until(lambda: row("B").startswith("down|B|down|127.0.0.1:"), 10, 0.1)
            assert text("cluster-title") == "Cluster: 1 of 2 nodes up"
            assert row("A").startswith("|A|up")
            # Step 3: alice makes a group with bob and says 5 things in it: past
            # outq_high (2) what is for bob folds; B's row shows both figures.
            ca, gid = await login(c["A"].node, alice), f"{ALICE}/crew"
            assert isinstance(await ca.answer(ca.send(
                wire.GroupCreate("crew", "Crew", (BOB,), ref=ca.ref())), 5), wire.Ack)
            for i in range(5):
                assert isinstance(await ca.answer(ca.send(
                    wire.GroupSend(f"g{i}", gid, b"hi", ref=ca.ref())), 5), wire.Ack)
            await ca.close()
            # queued: "created" and g0; folded: g1..g4
            wait_until(lambda: row("B").split("|")[8] == "2 (+4 folded)", 10, 0.1)
            view = json.loads(get(a_port, "/api/node"))
            b_row = {r["name"]: r for r in view["cluster"]["nodes"]}["B"]
            assert (b_row["queued_to"], b_row["folded_to"]) == (2, 4)
            assert view["outq"]["folded"] == {"B": 4}
            done = run("status", "--http-port", str(a_port))
            assert re.search(r"\nB\s+down\s+127\.0\.0\.1:\d+\s+2 \(\+4 folded\)\s+marked down",
                             done.stdout), done.stdout
        finally:
            driver.quit()
