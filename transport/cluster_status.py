"""The cluster's view: every node of the cluster, as one node's HTTP sees it.

A node's own view (``transport.node_status``) covers its workers. In a
cluster the operator wants every node on one page, so the worker serving
the dashboard also asks each other node's worker-0 HTTP (its address is in
the cluster directory: ``NodeInfo.http``) for that node's *summary*
(``GET /api/summary``: ``summary`` of its own latest view, a few hundred
bytes, no cluster part, so nothing recurses). The requests go out
concurrently with a short timeout (``NODE_TIMEOUT``); a node the directory
marks down is not asked, and one that does not answer shows as
``unreachable`` with the error. Nothing here touches the chat loop: it
runs in the HTTP thread and reads the worker's ``Federation`` (plain
attributes, replaced or bumped by the chat loop; a dict is copied whole
under the GIL) and the node's LMDB (a read transaction on this thread).

- ``federation_counters(federation)``: what this worker's ``Federation``
  counted (``shipped_items``, ``applied_items``; only the gateway, worker 0,
  ships and applies), added to the worker's ``/api/status``;
- ``outq(federation, workers)``: the node's outbound queue: items waiting
  per destination (``Mailbox.outq_pending``), group items folded for it
  past ``outq_high`` (``Mailbox.outq_folded``) and the workers' counters summed;
- ``summary(view)``: a node's compact summary (pure);
- ``cluster_part(federation, own, fetched)``: the ``cluster`` part of the
  view (pure given its inputs): one row per node, and every node's alerts
  with the node's name;
- ``ClusterFetch``: fetches the other nodes' summaries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp

__all__ = ["http_root", "federation_counters", "outq", "summary", "cluster_part", "known_nodes",
           "ClusterFetch", "NODE_TIMEOUT"]


def http_root(host: str, port: int) -> str:
    """``http://host:port``; an IPv6 address goes in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

log = logging.getLogger("switchboard.http")

NODE_TIMEOUT = 0.8        # seconds a node's worker-0 HTTP has to answer


def federation_counters(federation: Any) -> dict[str, Any] | None:
    """This worker's federation counters, or None outside a cluster."""
    if federation is None:
        return None
    return {"node": federation.node, "gateway": bool(federation.gateway),
            "shipped_items": int(federation.shipped_items),
            "applied_items": int(federation.applied_items)}


def known_nodes(federation: Any) -> dict[str, Any]:
    """A copy of ``federation.nodes`` (name -> NodeInfo), safe to iterate
    while the chat loop replaces or grows it."""
    for _ in range(3):
        try:
            return dict(federation.nodes)
        except RuntimeError:               # changed size during the copy
            continue
    return {}


def outq(federation: Any, workers: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """The node's outbound queue: ``pending`` (destination -> items waiting,
    0 for every other known node), ``folded`` (destination -> group items
    folded for it past ``outq_high``, not in ``pending``: each fold is
    queued as one MISSED item when room comes back; only destinations with
    a fold), ``shipped_items`` / ``applied_items`` (summed over
    ``workers``' snapshots' ``federation`` counters; this worker's own when
    ``workers`` is None), ``error`` if the store could not be read."""
    if federation is None:
        return None
    pending = {name: 0 for name in known_nodes(federation) if name != federation.node}
    folded: dict[str, int] = {}
    error = None
    try:
        pending.update(federation.mail.outq_pending())
        folded = federation.mail.outq_folded()
    except Exception as exc:               # noqa: BLE001 - a closed store must not break a page
        error = f"{type(exc).__name__}: {exc}"
    counters = [w["federation"] for w in (workers or ()) if (w or {}).get("federation")] \
        if workers is not None else [federation_counters(federation)]
    return {"pending": dict(sorted(pending.items())), "folded": dict(sorted(folded.items())),
            "error": error,
            "shipped_items": sum(c["shipped_items"] for c in counters),
            "applied_items": sum(c["applied_items"] for c in counters)}


def summary(view: dict[str, Any]) -> dict[str, Any]:
    """A node's view cut down to what another node's dashboard shows."""
    t = view["totals"]
    return {"at": view["at"], "name": view["node"].get("name"),
            "workers": t["workers"], "workers_up": t["up"], "actors": t["actors"],
            "queued": t["queued"], "max_queue": t["max_queue"],
            "connections": t["connections"],
            "messages_in": t["rates"].get("messages_in", 0),
            "messages_out": t["rates"].get("messages_out", 0),
            "alerts": [{k: a.get(k) for k in ("worker", "text", "value", "peak", "for_s")}
                       for a in view["alerts"]],
            "outq": view.get("outq")}


def cluster_part(federation: Any, own: dict[str, Any] | None,
                 fetched: dict[str, dict[str, Any]], asked: bool = True) -> dict[str, Any]:
    """Rows for every node the federation knows (this one first, then by
    name): ``name``, ``state`` (``up``, ``down``: the directory says so,
    ``unreachable``: up in the directory but its HTTP did not answer),
    ``client`` and ``http`` ("host:port"), ``summary`` (or None), ``error``,
    ``queued_to`` (items this node's queue holds for it) and ``folded_to``
    (group items folded for it past ``outq_high``, beside the queue; None
    for this node). ``fetched`` maps a node to
    ``{"summary": ..., "error": ...}``; ``asked`` is False when nobody
    wanted the other nodes lately and they were not asked."""
    here = federation.node
    queue = (own or {}).get("outq") or {}
    pending, folded = queue.get("pending") or {}, queue.get("folded") or {}
    nodes = known_nodes(federation)
    rows = []
    for name in sorted(set(nodes) | {here}, key=lambda n: (n != here, n)):
        info = nodes.get(name)
        got = fetched.get(name) or {}
        row = {"name": name, "self": name == here,
               "client": _address(info.client) if info is not None else None,
               "http": _address(info.http) if info is not None else None,
               "queued_to": pending.get(name, 0) if name != here else None,
               "folded_to": folded.get(name, 0) if name != here else None,
               "summary": None, "error": None}
        if name == here:
            row.update(state="up", summary=own)
        elif info is None or not info.up:
            row.update(state="down", error="marked down by the cluster directory")
        elif got.get("summary") is not None:
            row.update(state="up", summary=got["summary"])
        else:
            row.update(state="unreachable" if asked else "up",
                       error=got.get("error") or ("not asked" if not asked else "no answer"))
        rows.append(row)
    alerts = [{**a, "node": row["name"]} for row in rows if row["summary"]
              for a in row["summary"]["alerts"]]
    return {"node": here, "asked": asked, "nodes": rows,
            "up": sum(r["state"] == "up" for r in rows),
            "down": sum(r["state"] != "up" for r in rows),
            "alerts": alerts}


def _address(pair: Any) -> str | None:
    return None if not pair else f"{pair[0]}:{pair[1]}"


class ClusterFetch:
    """Asks the other nodes' worker-0 HTTP for their summaries, concurrently."""

    def __init__(self, federation: Any, timeout: float = NODE_TIMEOUT):
        self.federation, self.timeout = federation, timeout

    async def fetch(self, session: aiohttp.ClientSession | None) -> dict[str, dict[str, Any]]:
        """``{node: {"summary": dict | None, "error": str | None}}`` for every
        other node the directory says is up."""
        targets = {name: info for name, info in known_nodes(self.federation).items()
                   if name != self.federation.node and info.up}
        if session is None:
            return {name: {"summary": None, "error": "starting"} for name in targets}
        answers = await asyncio.gather(*(self._one(session, info.http)
                                         for info in targets.values()))
        return dict(zip(targets, answers))

    async def _one(self, session: aiohttp.ClientSession, http: Any) -> dict[str, Any]:
        if not http:
            return {"summary": None, "error": "no HTTP address in the directory"}
        started = time.monotonic()
        try:
            async with session.get(f"{http_root(http[0], http[1])}/api/summary",
                                   timeout=aiohttp.ClientTimeout(total=self.timeout)) as response:
                response.raise_for_status()
                return {"summary": await response.json(), "error": None}
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:
            waited = time.monotonic() - started
            return {"summary": None,
                    "error": f"unreachable: {type(exc).__name__} {exc}".strip()
                    + f" ({waited:.1f} s)"}
