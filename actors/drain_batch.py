"""``DrainBatch``: one storage op per drain of an actor's mailbox.

A mixin for the actors that write for their requests (``Session``,
``Group``). Requests are queued as they are handled; the first one queued
casts ``SubmitBatch`` to the actor itself, which arrives after everything
already in the mailbox, so one drain becomes one ``_submit`` (the actor's
own: build the ops, hand them to storage). ``BATCH_MAX`` bounds an op: a
longer drain is split into several, in order.
"""

from __future__ import annotations

from typing import Any

from actors.messages import SubmitBatch

__all__ = ["DrainBatch"]

_SUBMIT = SubmitBatch()       # immutable: one instance serves every cast


class DrainBatch:
    BATCH_MAX = 128           # requests per storage op

    batch: list
    submit_cast: bool         # a SubmitBatch is in the mailbox

    def init_batch(self) -> None:
        self.batch = []
        self.submit_cast = False

    def _queue(self, request: Any) -> None:
        if not self.submit_cast:
            self.submit_cast = True
            self.ref.notify(_SUBMIT)            # behind everything already queued
        self.batch.append(request)
        if len(self.batch) >= self.BATCH_MAX:
            self._submit()

    def handle_submit_batch(self, msg: SubmitBatch) -> None:
        self.submit_cast = False
        self._submit()

    def _submit(self) -> None:
        raise NotImplementedError
