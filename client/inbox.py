"""Inbox bookkeeping: which items the app has, which RECEIVED to send.

The server pushes inbox items (MESSAGE, RECEIPT) in seq order and pushes
every un-acknowledged one again after a reconnect, so the client sees some
items twice. ``InboxTracker`` decides, per arriving item, whether it is new
(hand it to the app) or a duplicate, and collects the seqs to acknowledge:

- new: not seen before (by seq; a MESSAGE also by (sender, id)). It is
  ``queued`` until the app takes it from ``events()``, then ``delivered``
  and due for RECEIVED.
- duplicate of a delivered item: acknowledged again (the first RECEIVED may
  have been lost), not delivered.
- duplicate of a queued item: ignored; the RECEIVED follows when the app
  takes the first copy.
- a MESSAGE with a new seq but a (sender, id) already seen: acknowledged at
  once, not delivered (the app already has that message).

A seq is forgotten once the server ACKs a RECEIVED for it: the server has
deleted the item and never pushes it again. (sender, id) keys are kept for
the last ``KEYS_KEPT`` messages. Pure bookkeeping: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterable

__all__ = ["InboxTracker", "MAX_SEQS_PER_FRAME"]

MAX_SEQS_PER_FRAME = 1024       # wire limit on RECEIVED.seqs
KEYS_KEPT = 10_000


class InboxTracker:
    def __init__(self, keys_kept: int = KEYS_KEPT):
        self.queued: set[int] = set()       # in the event queue, not yet taken by the app
        self.delivered: set[int] = set()    # taken by the app, RECEIVED not yet ACKed
        self.to_ack: set[int] = set()       # delivered, RECEIVED not yet sent
        self.acking: set[int] = set()       # in a RECEIVED awaiting its ACK
        self._keys: OrderedDict[Hashable, None] = OrderedDict()
        self._keys_kept = keys_kept

    def arrived(self, seq: int, key: Hashable | None = None) -> bool:
        """An item came in; True if it is new and should go to the app."""
        if seq in self.queued:
            return False
        if seq in self.delivered:
            if seq not in self.acking:
                self.to_ack.add(seq)
            return False
        if key is not None and key in self._keys:
            self.delivered.add(seq)
            self.to_ack.add(seq)
            return False
        self.queued.add(seq)
        if key is not None:
            self._keys[key] = None
            if len(self._keys) > self._keys_kept:
                self._keys.popitem(last=False)
        return True

    def handed(self, seq: int) -> None:
        """The app took the item: acknowledge it."""
        self.queued.discard(seq)
        self.delivered.add(seq)
        self.to_ack.add(seq)

    def take(self, limit: int = MAX_SEQS_PER_FRAME) -> list[int]:
        """Up to ``limit`` seqs for one RECEIVED, lowest first; they are now in flight."""
        if not self.to_ack:
            return []
        seqs = sorted(self.to_ack)[:limit]
        self.to_ack.difference_update(seqs)
        self.acking.update(seqs)
        return seqs

    def confirmed(self, seqs: Iterable[int]) -> None:
        """The server ACKed a RECEIVED: these items are gone from the inbox."""
        for seq in seqs:
            self.acking.discard(seq)
            self.delivered.discard(seq)

    def unconfirmed(self, seqs: Iterable[int]) -> None:
        """A RECEIVED failed (connection lost, INTERNAL): send these again."""
        for seq in seqs:
            if seq in self.acking:
                self.acking.discard(seq)
                self.to_ack.add(seq)

    def retry_all(self) -> None:
        """After a reconnect: every RECEIVED in flight is sent again."""
        self.to_ack |= self.acking
        self.acking.clear()

    @property
    def pending(self) -> int:
        """Seqs still to be acknowledged (to send or in flight)."""
        return len(self.to_ack) + len(self.acking)
