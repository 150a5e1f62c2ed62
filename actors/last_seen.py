"""``LastSeenWriter``: the heartbeats' last-seen refreshes, stored together.

While a user is online its session refreshes the stored last seen now and
then (``actors.session.LAST_SEEN_EVERY_MS``), so that a worker that dies,
and so writes no last seen on disconnect, leaves it at most that stale. As
one storage op each, those refreshes were half of an idle node's CPU: each
became an fsync'd commit of its own (20,000 users on 8 workers held at 20%
of a core, 11% without them; docs/benchmarks.md). So sessions cast
``Seen(user, ts)`` here, and every ``flush_every`` seconds (node config
``last_seen_flush``, default 5) the writer stores all it holds as ONE op
(``SetLastSeenMany``); a later time for a user replaces an earlier one.

A disconnect still writes its last seen at once (the session does, and tells
presence), so this only delays the refreshes of users still online, by at
most ``flush_every``; what a crash of this actor loses is one interval of
them. On shutdown it stores what it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from actors.actor import Actor

__all__ = ["LastSeenWriter", "Seen", "LAST_SEEN_NAME", "FLUSH_EVERY", "log_failed_write"]

LAST_SEEN_NAME = "last_seen"
FLUSH_EVERY = 5.0             # seconds between writes of the refreshes held

log = logging.getLogger("switchboard.last_seen")


@dataclass(frozen=True, slots=True)
class Seen:
    user: str
    ts_ms: int


@dataclass(frozen=True, slots=True)
class StoreSeen:
    """The writer's own timer: store what it holds."""


_STORE = StoreSeen()


class LastSeenWriter(Actor):
    def __init__(self) -> None:
        self.held: dict[str, int] = {}

    def init(self) -> None:
        env = self.system.env
        self.mail = env["mailbox"]
        self.flush_every = float(env.get("config", {}).get("last_seen_flush", FLUSH_EVERY))

    def handle_seen(self, msg: Seen) -> None:
        held = self.held
        if not held:
            self.system.send_after(self.flush_every, self.ref, _STORE)
        if msg.ts_ms > held.get(msg.user, 0):
            held[msg.user] = msg.ts_ms

    def handle_store_seen(self, msg: StoreSeen) -> None:
        self._store()

    def terminate(self, reason: Any) -> None:
        self._store()

    def _store(self) -> None:
        if self.held:
            seen, self.held = tuple(self.held.items()), {}
            self.mail.set_last_seen_many(seen).add_done_callback(log_failed_write)


def log_failed_write(future: Any) -> None:
    """Done-callback of a last-seen write (this actor's, or a session's on
    disconnect): a failure is logged, nothing waits on it."""
    if not future.cancelled() and future.exception() is not None:
        log.error("last-seen write failed: %r", future.exception())
