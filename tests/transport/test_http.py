"""The HTTP listener: /metrics parses with Prometheus' own parser, the status
API and the websocket, the node view merging workers, the webhook sink."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from actors import StartError
from actors.counters import counters_of
from actors.monitor import MonitorSettings, QueueMonitor
from supervisor.launcher import free_port
from tests.actors.test_monitor import Blocker
from tests.conftest import wait_for
from transport.http import HttpListener
from transport.node_status import merge
from transport.webhook import WebhookSink

FAST = MonitorSettings(monitor_interval=0.02, alert_actor_high=50, alert_actor_low=5,
                       alert_sustain=0, offline_scan=0)


@pytest.fixture
async def served(system):
    """A monitor and an HTTP listener on a free port; yields the base URL."""
    system.env["config"] = {"http_port": 0, "dashboard_push": 0.05, "node_name": "test-node"}
    await system.spawn(QueueMonitor, FAST)
    http = await system.spawn(HttpListener)
    await wait_for(lambda: system.env["board"].latest)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield f"http://127.0.0.1:{system.env['http_port']}", session
    await http.stop()


async def test_metrics_parse_with_the_prometheus_parser(system, served):
    base, session = served
    # Step 1: something to count: a backed-up actor (an alert) and some frames.
    gate = asyncio.Event()
    blocker = await system.spawn(Blocker, gate)
    for i in range(120):
        blocker.cast(i)
    counters_of(system).frames_in += 7
    await wait_for(lambda: system.env["board"].latest["alerts"])
    # Step 2: scrape and parse.
    async with session.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in families.values() for s in f.samples}
    assert samples[("switchboard_actors", (("kind", "Blocker"),))] == 1
    assert samples[("switchboard_mailbox_queued", (("kind", "Blocker"),))] == 119
    assert samples[("switchboard_mailbox_length_bucket", (("kind", "Blocker"), ("le", "100")))] == 0
    assert samples[("switchboard_mailbox_length_bucket", (("kind", "Blocker"), ("le", "1000")))] == 1
    assert samples[("switchboard_frames_in_total", ())] == 7
    assert samples[("switchboard_alerts_active", (("kind", "actor"),))] == 1
    assert samples[("switchboard_alerts_raised_total", (("kind", "actor"),))] == 1
    assert families["switchboard_mailbox_length"].type == "histogram"
    assert "switchboard_cluster_nodes" not in families          # standalone: no cluster
    assert families["switchboard_supervisor_restarts"].type == "counter"
    for name in ("switchboard_connections", "switchboard_loop_lag_seconds",
                 "switchboard_monitor_sample_seconds", "process_resident_memory_bytes"):
        assert name in families, name
    gate.set()


async def test_status_node_and_dashboard_routes(served):
    base, session = served
    async with session.get(f"{base}/api/status?history=1") as response:
        status = await response.json()
    assert status["worker"] == 0 and status["kinds"]["QueueMonitor"]["count"] == 1
    assert status["history"] and {"t", "queued", "frames_in"} <= set(status["history"][-1])
    async with session.get(f"{base}/api/node") as response:
        node = await response.json()
    assert node["node"]["name"] == "test-node"
    assert "cluster" not in node and "outq" not in node          # standalone
    async with session.get(f"{base}/api/summary") as response:
        summary = await response.json()
    assert summary["name"] == "test-node" and summary["workers_up"] == 1 and summary["outq"] is None
    assert node["totals"]["up"] == 1 and node["workers"][0]["up"]
    async with session.get(f"{base}/") as response:
        page = await response.text()
    assert 'id="alerts"' in page and "/static/vendor/uPlot.iife.min.js" in page
    for asset in ("dashboard.js", "dashboard.css", "vendor/uPlot.iife.min.js", "vendor/uPlot.min.css"):
        async with session.get(f"{base}/static/{asset}") as response:
            assert response.status == 200, asset
    async with session.get(f"{base}/healthz") as response:
        assert await response.text() == "ok"


async def test_websocket_sends_history_then_a_status_at_least_once_a_second(served):
    base, session = served
    async with session.ws_connect(f"{base}/ws") as ws:
        first = await ws.receive_json(timeout=2)
        assert first["type"] == "history"
        loop = asyncio.get_running_loop()
        started, stamps = loop.time(), []
        while len(stamps) < 4:
            msg = await ws.receive_json(timeout=2)
            if msg["type"] == "status":
                stamps.append(msg["node"]["at"])
        assert loop.time() - started < 2.0 and stamps == sorted(stamps)
        assert msg["node"]["totals"]["actors"] >= 2


async def test_a_taken_port_fails_the_start(system):
    with __import__("socket").socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        system.env["config"] = {"http_port": taken.getsockname()[1]}
        with pytest.raises(StartError):
            await system.spawn(HttpListener)


def test_merge_sums_workers_and_shows_a_down_one():
    def snap(slot, queued, alerts=()):
        return {"at": 1.0, "worker": slot, "pid": 100 + slot, "actors": 10, "queued": queued,
                "max_queue": queued, "connections": 2, "alerts": list(alerts),
                "kinds": {"Session": {"count": 5, "queued": queued, "max": queued}},
                "top": [{"actor": f"<S#{slot}>", "kind": "Session", "queue": queued}],
                "rates": {"frames_in": 10.0}, "alert_events": [], "restarts": [],
                "recent_restarts": [], "storage": None, "offline": None, "thresholds": {},
                "process": {"rss_bytes": 1, "loop_lag_ms": 0.1, "sample_ms": 0.1},
                "overload": {}}
    view = merge({"name": "n"}, [
        {"slot": 0, "port": 1, "status": snap(0, 5)},
        {"slot": 1, "port": 2, "status": snap(1, 70, [{"text": "a", "value": 70}])},
        {"slot": 2, "port": 3, "status": None, "error": "unreachable: refused"}])
    t = view["totals"]
    assert (t["workers"], t["up"], t["actors"], t["queued"], t["max_queue"], t["alerts"]) == (3, 2, 20, 75, 70, 1)
    assert t["rates"]["frames_in"] == 20.0
    assert view["kinds"]["Session"] == {"count": 10, "queued": 75, "max": 70}
    assert [(r["worker"], r["queue"]) for r in view["top"]] == [(1, 70), (0, 5)]
    assert view["workers"][2] == {"slot": 2, "port": 3, "up": False, "error": "unreachable: refused"}
    assert view["alerts"][0]["worker"] == 1


async def test_webhook_posts_events_and_a_failure_is_only_logged(caplog):
    got = []

    async def hook(request):
        got.append(await request.json())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        sink = WebhookSink(f"http://127.0.0.1:{port}/hook", timeout=2, node="n1")
        sink([{"state": "raised", "text": "t"}])
        await wait_for(lambda: got)
        assert got == [{"source": "switchboard", "node": "n1", "seq": 1,
                        "events": [{"state": "raised", "text": "t"}]}]
        dead = WebhookSink(f"http://127.0.0.1:{free_port()}/hook", timeout=1)
        with caplog.at_level(logging.WARNING, "switchboard.webhook"):
            dead([{"state": "cleared"}])
            await wait_for(lambda: dead.failed == 1)
        assert "alert webhook" in caplog.text and "failed" in caplog.text
    finally:
        await runner.cleanup()
    with pytest.raises(ValueError):
        WebhookSink("file:///etc/passwd")


async def test_the_offline_histogram_counts_an_inbox_past_the_last_bound(system, served):
    """A user at the offline cap (10,000 messages) with receipts waiting
    too holds more items than the last bound: ``+Inf`` still counts it."""
    from types import SimpleNamespace
    from prometheus_client import CollectorRegistry, generate_latest
    from actors.queue_sample import OfflineSizes
    from transport.metrics import SnapshotCollector

    sizes = OfflineSizes()
    sizes.add(10_000, 5)
    sizes.add(1, 0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(SimpleNamespace(
        latest={**system.env["board"].latest, "offline": sizes.as_dict()})))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(generate_latest(registry).decode())
               for s in f.samples}
    assert samples[("switchboard_offline_users", ())] == 2
    assert samples[("switchboard_offline_queue_length_bucket", (("le", "10000"),))] == 1
    assert samples[("switchboard_offline_queue_length_bucket", (("le", "+Inf"),))] == 2


async def test_the_node_view_reaches_a_sibling_worker_on_ipv6_loopback(system):
    """With ``--bind ::1`` the view builds ``http://[::1]:port`` URLs (a
    bare ``::1:port`` is no URL: every sibling showed as unreachable)."""
    from transport.node_status import NodeView
    system.env["config"] = {"bind": "::1", "http_port": 0, "dashboard_push": 0.05}
    await system.spawn(QueueMonitor, FAST)
    http = await system.spawn(HttpListener)
    await wait_for(lambda: system.env["board"].latest)
    sibling = system.env["http_port"]
    view = NodeView(system.env["board"], {"name": "n"}, 0, [free_port(), sibling], "::1")
    async with aiohttp.ClientSession() as session:
        view._session = session
        row = await view._worker(1, sibling)
    assert row["status"] is not None, row["error"]
    await http.stop()
