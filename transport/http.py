"""HTTP: the operator's dashboard, ``/metrics`` and the status API (aiohttp).

``HttpListener`` is a light actor in the worker's tree (under ``ops``). It
serves on ``bind`` (loopback by default) at this worker's port:
``config["http_ports"][worker_index]`` when the launcher assigned one per
worker, else ``config["http_port"]`` (default 8222; 0 picks a free port).
The bound port goes to ``system.env["http_port"]``.

The aiohttp server runs on **its own thread and event loop**, not on the
worker's: a busy chat loop (long turns under load) would otherwise delay
every page, scrape and websocket push, and a stuck one would hide itself.
The two threads share only immutable data: the ``QueueMonitor`` replaces
``Board.latest`` / ``Board.history`` whole and the HTTP side only reads
them. If the server thread dies, the actor crashes and ``ops`` restarts it.

Routes:

- ``GET /``: the dashboard (``web/dashboard.html``; assets under ``/static/``);
- ``GET /metrics``: Prometheus text (``transport.metrics``);
- ``GET /api/status``: this worker's latest snapshot (JSON);
- ``GET /api/node``: the node's view, every worker merged (``transport.node_status``);
  in a cluster with ``outq`` and ``cluster`` (every node: ``transport.cluster_status``);
- ``GET /api/summary``: this node's compact summary, what other nodes' dashboards
  fetch from worker 0;
- ``GET /ws``: a websocket that sends ``{"type": "history", "points": [...]}``
  once, then ``{"type": "status", "node": {...}}`` every ``dashboard_push`` s
  (default 1);
- ``GET /healthz``: ``ok``.

The thread and the actor's lifecycle are ``transport.http_thread``'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from actors.monitor import Board
from transport.metrics import CONTENT_TYPE, registry_for, render
from transport.http_thread import AppThread, AppThreadActor
from transport.node_status import NodeView

__all__ = ["HttpListener", "Dashboard", "WEB_DIR", "DEFAULT_HTTP_PORT"]

log = logging.getLogger("switchboard.http")

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
DEFAULT_HTTP_PORT = 8222


class HttpListener(AppThreadActor):
    def __init__(self, host: str | None = None, port: int | None = None):
        self.host, self.port = host, port

    def make_server(self) -> AppThread:
        env = self.system.env
        config = env.get("config") or {}
        slot = int(config.get("worker_index", 0))
        ports = list(config.get("http_ports") or ())
        host = self.host or config.get("bind", "127.0.0.1")
        if self.port is not None:
            port = self.port
        elif slot < len(ports):
            port = ports[slot]
        else:
            port = int(config.get("http_port", DEFAULT_HTTP_PORT))
        board = env.setdefault("board", Board())
        node = {"name": config.get("node_name") or f"{host}:{config.get('port', '?')}",
                "bind": host, "client_port": config.get("port"),
                "admin_port": config.get("admin_port"), "http_ports": ports or None,
                "data_dir": config.get("data_dir"), "workers": max(1, len(ports))}
        federation = env.get("federation")
        view = NodeView(board, node, slot, ports, _peer_host(host),
                        float(config.get("dashboard_push", 1.0)), federation=federation)
        self.dashboard = Dashboard(board, view, federation)
        self.slot, self.host = slot, host
        return AppThread(self.dashboard.app, host, port, "http", background=view.run,
                         reuse_port=True)         # beside the launcher's reserve_port

    async def init(self) -> None:
        await super().init()
        log.info("dashboard on http://%s:%d/ (worker %d)", self.host, self.bound_port, self.slot)


def _peer_host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


class Dashboard:
    """The routes of the operator's HTTP server (run by an ``AppThread``)."""

    def __init__(self, board: Any, view: NodeView, federation: Any = None):
        self.board, self.view = board, view
        self.registry = registry_for(board, federation)
        self.sockets: set[web.WebSocketResponse] = set()

    # -- the app ------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.dashboard)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/node", self.node)
        app.router.add_get("/api/summary", self.summary)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_static("/static/", WEB_DIR)
        app.on_shutdown.append(self._close_sockets)
        return app

    async def dashboard(self, request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / "dashboard.html",
                                headers={"Cache-Control": "no-cache"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = render(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def status(self, request: web.Request) -> web.Response:
        snap = self.view.own_status()
        if request.query.get("history"):
            snap = {**(snap or {}), "history": list(self.board.history)}
        return web.json_response(snap)

    async def node(self, request: web.Request) -> web.Response:
        self.view.want_cluster()
        view = self.view.latest
        if view is None or ("cluster" in view and not view["cluster"]["asked"]):
            view = await self.view.refresh()      # the first read after a quiet spell
        return web.json_response(view)

    async def summary(self, request: web.Request) -> web.Response:
        if self.view.summary is None:
            await self.view.refresh()
        return web.json_response(self.view.summary)

    async def _close_sockets(self, app: web.Application) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001, message=b"server shutting down")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=30.0)
        await ws.prepare(request)
        self.sockets.add(ws)
        queue = self.view.subscribe()
        reader = asyncio.ensure_future(_read_until_closed(ws))
        try:
            await ws.send_str(json.dumps({"type": "history", "points": list(self.view.history)}))
            if self.view.latest is not None:
                await ws.send_str(json.dumps({"type": "status", "node": self.view.latest}))
            while not ws.closed:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    break
                await ws.send_str(getter.result())
        except (ConnectionError, RuntimeError):
            pass                                # the browser went away mid-send
        finally:
            self.view.unsubscribe(queue)
            self.sockets.discard(ws)
            reader.cancel()
            await ws.close()
        return ws


async def _read_until_closed(ws: web.WebSocketResponse) -> None:
    async for msg in ws:
        if msg.type in (WSMsgType.CLOSE, WSMsgType.ERROR):
            break
