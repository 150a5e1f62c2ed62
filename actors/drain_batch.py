"""``DrainBatch``: one storage op per drain of an actor's mailbox.

A mixin for the actors that write for their requests (``Session``,
``Group``). Requests are queued as they are handled and handed to storage
together when the actor is about to wait (its ``drained`` hook: the mailbox
is empty, or an async handler is next), so one drain becomes one
``_submit`` (the actor's own: build the ops, hand them to storage).
``BATCH_MAX`` bounds an op: a longer drain is split into several, in order.
(It used to cast a ``SubmitBatch`` to itself behind the backlog: three
mailbox messages per chat message that the hook does without.)

The store settles a ``Landed`` (``self.landing(requests)``) in place of a
future: the outcome is cast to the actor as ``BatchStored`` the moment the
writer's answer is read, where a future's done callback would wait one more
turn of the loop (each turn is milliseconds under load: docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Any

from actors.messages import BatchStored

__all__ = ["DrainBatch", "Landed"]


class DrainBatch:
    BATCH_MAX = 128           # requests per storage op

    batch: list

    def init_batch(self) -> None:
        self.batch = []

    def _queue(self, request: Any) -> None:
        self.batch.append(request)
        if len(self.batch) >= self.BATCH_MAX:
            self._submit()

    def drained(self) -> None:
        self.submit_queued()

    def submit_queued(self) -> None:
        if self.batch:
            self._submit()

    def _submit(self) -> None:
        raise NotImplementedError

    def landing(self, requests: tuple) -> "Landed":
        """What the store settles for the op of ``requests`` (``into``)."""
        return Landed(self.ref.notify, requests)   # a completion asked for: never refused


class Landed:
    """A ``storage.kv.Settles`` that casts ``BatchStored`` to its actor."""

    __slots__ = ("notify", "requests")

    def __init__(self, notify: Any, requests: tuple):
        self.notify = notify
        self.requests = requests

    def done(self) -> bool:
        return False                # settled once, by the store

    def set_result(self, value: Any) -> None:
        self.notify(BatchStored(self.requests, None, value))

    def set_exception(self, error: BaseException) -> None:
        self.notify(BatchStored(self.requests, error, None))
