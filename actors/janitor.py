"""``Janitor``: forgets the client ids of messages past their retention.

Every SEND records ``(sender, client id)`` (``storage.mailbox``): a resend
of the same id returns the first result instead of storing the message
again, and a read receipt is only accepted for an id the peer really sent
to the reader. Nothing deleted those records, so the ``dedup`` table grew
by one entry per message for the life of the node. This actor runs
``prune_dedup`` (oldest first, through the ``dedup_ttl`` time index) with
a cut-off of ``dedup_retention`` seconds ago (node config, default 30
days: a client that comes back after longer and resends a message whose
ACK it lost would have it stored twice), every ``dedup_prune_every``
seconds (default 60). A pass deletes at most ``PRUNE_LIMIT`` records, one
storage op, so the writer's batches stay short; a full pass is followed by
the next one at once, until the backlog is gone.

Every worker process of a node shares one LMDB environment, so only the
first worker (``worker_index`` 0) prunes; the others' janitors stay idle.
A failed pass is logged and tried again at the next interval.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.actor import Actor

__all__ = ["Janitor", "JANITOR_NAME", "RETENTION", "PRUNE_EVERY", "PRUNE_LIMIT"]

JANITOR_NAME = "janitor"
RETENTION = 30 * 86_400.0     # seconds a client id is remembered
PRUNE_EVERY = 60.0            # seconds between passes
PRUNE_LIMIT = 2_000           # records deleted per pass (one storage op)

log = logging.getLogger("switchboard.janitor")


@dataclass(frozen=True, slots=True)
class Prune:
    """The janitor's own timer: run a pass."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """A pass is done: ``count`` records forgotten, or ``error``."""
    count: int
    error: BaseException | None = None


_PRUNE = Prune()


class Janitor(Actor):
    def __init__(self) -> None:
        self.running = False          # a pass is in the writer
        self.forgotten = 0            # records forgotten since start

    def init(self) -> None:
        config = self.system.env.get("config", {})
        self.mail = self.system.env["mailbox"]
        self.retention = float(config.get("dedup_retention", RETENTION))
        self.every = float(config.get("dedup_prune_every", PRUNE_EVERY))
        if self.retention <= 0 or self.every <= 0:
            raise ValueError("dedup_retention and dedup_prune_every must be > 0")
        self.active = config.get("worker_index", 0) == 0
        if self.active:
            self.system.send_after(self.every, self.ref, _PRUNE)

    def handle_prune(self, msg: Prune) -> None:
        if self.running:
            return
        self.running = True
        before = int((time.time() - self.retention) * 1000)
        notify = self.ref.notify
        self.mail.prune_dedup(before, PRUNE_LIMIT).add_done_callback(
            lambda done: notify(Pruned(0, done.exception()) if done.exception() is not None
                                else Pruned(done.result())))

    def handle_pruned(self, msg: Pruned) -> None:
        self.running = False
        if msg.error is not None:
            log.error("dedup prune failed: %r", msg.error)
        else:
            self.forgotten += msg.count
        full = msg.error is None and msg.count >= PRUNE_LIMIT
        if full:                      # a backlog: the next pass at once
            self.ref.notify(_PRUNE)
        else:
            self.system.send_after(self.every, self.ref, _PRUNE)

    def terminate(self, reason: Any) -> None:
        if self.forgotten:
            log.info("forgot %d client ids older than %g s", self.forgotten, self.retention)
