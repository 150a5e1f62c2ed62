"""``transport.cluster_status`` and the cluster parts of ``/metrics`` and
``run.py status``, over a real ``Federation`` (not started: its directory
replica is filled as the cluster directory would) and a real LMDB store
whose outbound queue holds a message for a user homed on node B (and,
past ``outq_high``, group items folded for that user)."""

from __future__ import annotations

import re
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.federation import Federation
from actors.monitor import Board
from ops import console
from storage import open_storage
from storage.groups import CREATE, SEND as GSEND
from supervisor.cluster_directory import NodeInfo
from transport.cluster_status import cluster_part, outq, summary
from transport.metrics import registry_for, render
from transport.node_status import merge

ALICE, BOB = "+15550000001", "+15550000002"       # homed at A, at B
T = 1_700_000_000_000


@pytest.fixture
async def federation(tmp_path):
    """Node A's gateway federation: A, B (up) and C (down) known; one item
    queued for B."""
    fed = Federation("A", "A/0", None, ("127.0.0.1", 5222), gateway=True)
    fed.nodes = {"A": NodeInfo(None, ("127.0.0.1", 5222), True, ("127.0.0.1", 8222)),
                 "B": NodeInfo(None, ("127.0.0.1", 5223), True, ("127.0.0.1", 8232)),
                 "C": NodeInfo(None, ("127.0.0.1", 5224), False, ("127.0.0.1", 8242))}
    fed.mail = open_storage("lmdb", str(tmp_path / "lmdb"))
    fed.mail.remote = lambda user: "B" if user == BOB else None
    await fed.mail.register_device(ALICE, bytes(range(32)), 1)
    await fed.mail.store_message(ALICE, "m1", BOB, b"hi", T, 1000)
    fed.shipped_items, fed.applied_items = 7, 3
    yield fed
    fed.mail.close()


def node_view(name: str, alerts=()) -> dict:
    status = {"at": time.time(), "worker": 0, "pid": 1, "actors": 12, "queued": 4, "max_queue": 3,
              "connections": 2, "alerts": list(alerts), "kinds": {}, "top": [],
              "rates": {"messages_in": 5.0, "messages_out": 4.0}, "alert_events": [],
              "restarts": [], "recent_restarts": [], "storage": None, "offline": None,
              "thresholds": {}, "process": {"rss_bytes": 1, "loop_lag_ms": 0.1, "sample_ms": 0.1},
              "overload": {}}
    return merge({"name": name}, [{"slot": 0, "port": 8222, "status": status}])


async def test_outq_lists_every_other_node_and_sums_the_workers_counters(federation):
    assert outq(federation) == {"pending": {"B": 1, "C": 0}, "folded": {}, "error": None,
                                "shipped_items": 7, "applied_items": 3}
    workers = [{"federation": {"shipped_items": 7, "applied_items": 3}},
               {"federation": {"shipped_items": 0, "applied_items": 0}}, None]
    assert outq(federation, workers)["shipped_items"] == 7
    federation.mail.close()                 # a closed store shows as an error, not a crash
    assert outq(federation)["error"].startswith("StoreClosed")


async def test_cluster_part_rows_states_and_alerts_with_the_node_name(federation):
    own = {**summary(node_view("A")), "outq": outq(federation)}
    b = summary(node_view("B", [{"worker": 0, "text": "actor <S#1> queue 1500 >= 1000",
                                 "value": 1500, "peak": 1600, "for_s": 6.0}]))
    part = cluster_part(federation, own, {"B": {"summary": b, "error": None}})
    rows = {r["name"]: r for r in part["nodes"]}
    assert [r["name"] for r in part["nodes"]] == ["A", "B", "C"]         # this node first
    assert rows["A"]["state"] == "up" and rows["A"]["self"] and rows["A"]["queued_to"] is None
    assert rows["B"]["state"] == "up" and rows["B"]["queued_to"] == 1
    assert rows["B"]["client"] == "127.0.0.1:5223" and rows["B"]["summary"]["actors"] == 12
    assert rows["C"]["state"] == "down" and rows["C"]["summary"] is None
    assert (part["up"], part["down"]) == (2, 1)
    assert part["alerts"] == [{"worker": 0, "text": "actor <S#1> queue 1500 >= 1000",
                               "value": 1500, "peak": 1600, "for_s": 6.0, "node": "B"}]
    # B up in the directory but its HTTP did not answer: unreachable, with the error.
    part = cluster_part(federation, own, {"B": {"summary": None, "error": "unreachable: x"}})
    assert part["nodes"][1]["state"] == "unreachable" and part["nodes"][1]["error"] == "unreachable: x"
    # Nobody asked lately: the other nodes were not polled, and do not count as down.
    assert cluster_part(federation, own, {}, asked=False)["nodes"][1]["state"] == "up"


async def test_group_items_folded_for_a_node_show_beside_its_queue(federation):
    # Step 1: past outq_high (1: the fixture's message fills the queue to B),
    # what a group says to BOB folds into one record instead of queuing.
    gid = f"{ALICE}/crew"
    await federation.mail.group_batch(gid, [(CREATE, ALICE, "Crew", [BOB])], T, 1000, 16,
                                      outq_high=1)
    for i in range(5):
        await federation.mail.group_batch(gid, [(GSEND, ALICE, f"g{i}", b"x")], T, 1000, 16,
                                          outq_high=1)
    queue = outq(federation)
    assert queue["pending"] == {"B": 1, "C": 0}
    assert queue["folded"] == {"B": 6}                  # the "created" event and 5 messages
    # Step 2: the rows: 1 queued for B, 6 folded beside it; none for C; A is this node.
    own = {**summary(node_view("A")), "outq": queue}
    part = cluster_part(federation, own, {"B": {"summary": summary(node_view("B")),
                                                "error": None}})
    rows = {r["name"]: r for r in part["nodes"]}
    assert (rows["B"]["queued_to"], rows["B"]["folded_to"]) == (1, 6)
    assert (rows["C"]["queued_to"], rows["C"]["folded_to"]) == (0, 0)
    assert (rows["A"]["queued_to"], rows["A"]["folded_to"]) == (None, None)
    # Step 3: the console shows both, in the QUEUED TO column; C shows no fold.
    view = node_view("A")
    view["cluster"] = part
    text = console.render(view)
    assert re.search(r"\nB +up +127\.0\.0\.1:5223 .* 1 \(\+6 folded\) +0\n", text), text
    assert re.search(r"\nC +down +127\.0\.0\.1:5224 .* 0   marked down", text), text
    # Step 4: /metrics has them too.
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(render(registry_for(Board(), federation))
                                                       .decode()) for s in f.samples}
    assert samples[("switchboard_outq_folded_items", (("dest", "B"),))] == 6
    assert samples[("switchboard_outq_folded_items", (("dest", "C"),))] == 0


async def test_console_shows_the_cluster_and_is_degraded_by_another_node(federation):
    own = {**summary(node_view("A")), "outq": outq(federation)}
    view = node_view("A")
    view["cluster"] = cluster_part(federation, own, {"B": {"summary": summary(node_view("B")),
                                                           "error": None}})
    text = console.render(view)
    assert "CLUSTER  2/3 nodes up" in text
    assert "\nA*         up           127.0.0.1:5222" in text
    assert "\nB          up           127.0.0.1:5223" in text
    assert "marked down by the cluster directory" in text
    assert console.health(view) == console.DEGRADED                      # C is down
    federation.nodes["C"].up = True
    view["cluster"] = cluster_part(federation, own, {
        "B": {"summary": summary(node_view("B")), "error": None},
        "C": {"summary": summary(node_view("C", [{"text": "hot", "value": 9}])),
              "error": None}})
    text = console.render(view)
    assert "! C w0 hot" in text and console.health(view) == console.DEGRADED
    view["cluster"]["alerts"] = []
    assert console.health(view) == console.OK


async def test_metrics_count_nodes_and_the_gateways_queue(federation):
    def scrape() -> dict:
        text = render(registry_for(Board(), federation)).decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}
    got = scrape()
    assert got[("switchboard_cluster_nodes", (("state", "up"),))] == 2
    assert got[("switchboard_cluster_nodes", (("state", "down"),))] == 1
    assert got[("switchboard_outq_items", (("dest", "B"),))] == 1
    assert got[("switchboard_outq_items", (("dest", "C"),))] == 0
    assert got[("switchboard_outq_shipped_items_total", ())] == 7
    assert got[("switchboard_outq_applied_items_total", ())] == 3
    federation.gateway = False              # another worker: the nodes only
    got = scrape()
    assert ("switchboard_cluster_nodes", (("state", "up"),)) in got
    assert not any(name.startswith("switchboard_outq") for name, _ in got)
