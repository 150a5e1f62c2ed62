"""The node's view: every worker's snapshot merged into one.

Each worker process publishes its own snapshot (``/api/status``, from its
``QueueMonitor``). Whichever worker serves a dashboard, ``/api/node`` or
``run.py top`` builds the node's view itself: its own snapshot from its
board, its siblings' over loopback HTTP (their ports are in
``config["http_ports"]``, one per worker slot), then ``merge``. One
websocket per browser and no cross-origin requests; a worker that does not
answer within ``PEER_TIMEOUT`` shows as unreachable and the rest still show.
In a cluster the view also gets ``outq`` (the node's outbound queue) and
``cluster`` (every node of the cluster: ``transport.cluster_status``); the
other nodes are asked only while someone watches (a websocket is open, or
``/api/node`` was read in the last ``WANT_FOR`` s), so an idle node does
not poll the cluster.

``merge`` is pure; ``NodeView`` runs in the HTTP thread's loop, refreshes
the view every ``push_interval`` s, keeps a ring of chart points and hands
each refresh (as JSON text, encoded once) to the websocket subscribers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from typing import Any

import aiohttp

from transport.cluster_status import (ClusterFetch, cluster_part, federation_counters, http_root,
                                      outq, summary)

__all__ = ["merge", "node_point", "NodeView", "PEER_TIMEOUT", "WANT_FOR"]

PEER_TIMEOUT = 0.5
WANT_FOR = 10.0           # seconds the cluster is polled after an /api/node read
_RATE_KEYS = ("frames_in", "frames_out", "messages_in", "messages_out", "store_ops",
              "commits", "dead_letters")


def merge(node: dict[str, Any], workers: list[dict[str, Any]]) -> dict[str, Any]:
    """The node's view from ``workers``: rows ``{"slot", "port", "status"
    (a snapshot or None), "error"}``."""
    snaps = [(w["slot"], w["status"]) for w in workers if w.get("status")]
    kinds: dict[str, dict[str, Any]] = {}
    for _, s in snaps:
        for kind, k in s["kinds"].items():
            into = kinds.setdefault(kind, {"count": 0, "queued": 0, "max": 0})
            into["count"] += k["count"]
            into["queued"] += k["queued"]
            into["max"] = max(into["max"], k["max"])

    def gather(key: str, limit: int, order: Any = None) -> list[dict[str, Any]]:
        rows = [{**row, "worker": slot} for slot, s in snaps for row in s.get(key) or ()]
        if order is not None:
            rows.sort(key=order)
        return rows[:limit]

    stores = [s["storage"] for _, s in snaps if s.get("storage")]
    offline = max((s["offline"] for _, s in snaps if s.get("offline")),
                  key=lambda o: o["at"], default=None)    # one LMDB: the newest scan
    return {
        "at": time.time(),
        "node": node,
        "workers": [_worker_row(w) for w in workers],
        "totals": {
            "workers": len(workers), "up": len(snaps),
            "actors": sum(s["actors"] for _, s in snaps),
            "queued": sum(s["queued"] for _, s in snaps),
            "max_queue": max((s["max_queue"] for _, s in snaps), default=0),
            "connections": sum(s["connections"] for _, s in snaps),
            "alerts": sum(len(s["alerts"]) for _, s in snaps),
            "rates": {k: round(sum(s["rates"].get(k, 0) for _, s in snaps), 1)
                      for k in _RATE_KEYS},
        },
        "kinds": dict(sorted(kinds.items(), key=lambda kv: (-kv[1]["queued"], kv[0]))),
        "top": gather("top", 10, lambda r: -r["queue"]),
        "alerts": gather("alerts", 50, lambda r: -r["value"]),
        "alert_events": gather("alert_events", 30, lambda r: -r["at"]),
        "restarts": gather("restarts", 100, lambda r: (r["supervisor"], r["child"])),
        "recent_restarts": gather("recent_restarts", 20, lambda r: -r["at"]),
        "storage": {
            "ops": sum(st["ops"] for st in stores),
            "batches": sum(st["batches"] for st in stores),
            "pending": sum(st["pending"] for st in stores),
            "median_commit_ms": max((st["median_commit_ms"] for st in stores), default=0.0),
            "p99_commit_ms": max((st["p99_commit_ms"] for st in stores), default=0.0),
        } if stores else None,
        "offline": offline,
        "thresholds": snaps[0][1]["thresholds"] if snaps else None,
    }


def _worker_row(w: dict[str, Any]) -> dict[str, Any]:
    s = w.get("status")
    if not s:
        return {"slot": w["slot"], "port": w["port"], "up": False, "error": w.get("error")}
    return {"slot": w["slot"], "port": w["port"] or s.get("http_port"), "up": True, "pid": s["pid"],
            "actors": s["actors"], "queued": s["queued"], "max_queue": s["max_queue"],
            "connections": s["connections"], "alerts": len(s["alerts"]),
            "rss_bytes": s["process"]["rss_bytes"], "loop_lag_ms": s["process"]["loop_lag_ms"],
            "sample_ms": s["process"]["sample_ms"], "age_s": round(time.time() - s["at"], 2),
            "rates": s["rates"], "overload": s["overload"], "mesh": s.get("mesh")}


def node_point(view: dict[str, Any]) -> dict[str, Any]:
    """One chart point of the node's view."""
    t = view["totals"]
    return {"t": view["at"], **{k: t["rates"][k] for k in
                                ("frames_in", "frames_out", "messages_in", "messages_out",
                                 "store_ops")},
            "queued": t["queued"], "max_queue": t["max_queue"], "alerts": t["alerts"]}


class NodeView:
    """Refreshes the node's view in the HTTP thread (see the module docstring)."""

    def __init__(self, board: Any, node: dict[str, Any], slot: int, ports: list[int],
                 host: str, push_interval: float = 1.0, history: int = 300,
                 federation: Any = None):
        self.board, self.node, self.slot = board, node, slot
        self.federation = federation
        self.fetch = ClusterFetch(federation) if federation is not None else None
        self.wanted_until = 0.0
        self.summary: dict[str, Any] | None = None
        self.ports, self.host, self.push_interval = ports, host, push_interval
        self.history: deque[dict[str, Any]] = deque(board.history, maxlen=history)
        self.latest: dict[str, Any] | None = None
        self.subscribers: set[asyncio.Queue] = set()
        self._session: aiohttp.ClientSession | None = None

    async def run(self) -> None:
        """Refresh forever (cancelled when the HTTP server stops)."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=PEER_TIMEOUT))
        try:
            while True:
                started = time.monotonic()
                await self.refresh()
                await asyncio.sleep(max(0.05, self.push_interval - (time.monotonic() - started)))
        finally:
            await self._session.close()

    def own_status(self) -> dict[str, Any] | None:
        """This worker's snapshot (``/api/status``), with its federation's
        counters in a cluster."""
        snap = self.board.latest
        if snap is None or self.federation is None:
            return snap
        return {**snap, "federation": federation_counters(self.federation)}

    def want_cluster(self) -> None:
        """Someone reads the view: poll the other nodes for ``WANT_FOR`` s."""
        self.wanted_until = time.monotonic() + WANT_FOR

    async def refresh(self) -> dict[str, Any]:
        asked = self.fetch is not None and (bool(self.subscribers)
                                            or time.monotonic() < self.wanted_until)
        others = self.fetch.fetch(self._session) if asked else asyncio.sleep(0, {})
        rows, fetched = await asyncio.gather(
            asyncio.gather(*(self._worker(slot, port)
                             for slot, port in enumerate(self.ports or [None]))), others)
        view = merge(self.node, list(rows))
        if self.federation is not None:
            view["outq"] = outq(self.federation, [r["status"] for r in rows])
            self.summary = summary(view)
            view["cluster"] = cluster_part(self.federation, self.summary, fetched, asked)
        else:
            self.summary = summary(view)
        self.latest = view
        if view["totals"]["up"]:
            self.history.append(node_point(view))
        text = json.dumps({"type": "status", "node": view})
        for queue in self.subscribers:
            if queue.full():
                queue.get_nowait()              # a slow browser gets the newest only
            queue.put_nowait(text)
        return view

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(maxsize=2)
        self.subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self.subscribers.discard(queue)

    async def _worker(self, slot: int, port: int | None) -> dict[str, Any]:
        if slot == self.slot or port is None or self._session is None:
            own = self.own_status()
            return {"slot": slot, "port": port, "status": own,
                    "error": None if own else "no sample yet"}
        try:
            async with self._session.get(f"{http_root(self.host, port)}/api/status") as response:
                response.raise_for_status()
                return {"slot": slot, "port": port, "status": await response.json(), "error": None}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            return {"slot": slot, "port": port, "status": None,
                    "error": f"unreachable: {type(exc).__name__} {exc}".strip()}
