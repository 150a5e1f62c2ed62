"""``WebhookSink``: alert transitions POSTed as JSON to an operator's URL.

A sink is a callable the ``QueueMonitor`` hands each sample's alert
transitions to (``system.env["alert_sinks"]``). This one must never slow the
monitor or the worker: ``__call__`` only schedules the POST on the running
loop and returns; the POST has a total timeout, and a failure (refused,
timed out, an HTTP error status) is logged and dropped, never retried and
never raised. The body is::

    {"source": "switchboard", "node": "...", "seq": 7, "events": [
        {"kind": "actor", "subject": "<Session#12 '+1555...'>", "state": "raised",
         "value": 1500, "peak": 1500, "since": 1764000000.1, "at": 1764000005.1,
         "worker": 0, "text": "actor <...> queue 1500 >= 1000 for >= 5 s"}]}

``seq`` counts POSTs from this worker, so a receiver can order them.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import aiohttp

__all__ = ["WebhookSink"]

log = logging.getLogger("switchboard.webhook")


class WebhookSink:
    def __init__(self, url: str, timeout: float = 5.0, node: str | None = None):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"alert webhook must be an http(s) URL, not {url!r}")
        self.url, self.timeout, self.node = url, timeout, node
        self.seq = itertools.count(1)
        self.sent = self.failed = 0
        self._tasks: set[asyncio.Task] = set()

    def __call__(self, events: list[dict[str, Any]]) -> None:
        body = {"source": "switchboard", "node": self.node, "seq": next(self.seq),
                "events": events}
        task = asyncio.get_running_loop().create_task(self._post(body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any]) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.post(self.url, json=body) as response:
                    if response.status >= 300:
                        raise RuntimeError(f"HTTP {response.status}")
            self.sent += 1
        except asyncio.CancelledError:
            raise
        except Exception as exc:              # noqa: BLE001 - logged, never fatal
            self.failed += 1
            log.warning("alert webhook %s failed (seq %s): %s", self.url, body["seq"],
                        exc or type(exc).__name__)

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"
