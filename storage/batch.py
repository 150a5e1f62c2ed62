"""``UserBatch``: one user's queued inbox requests as ONE op (group commit
inside a session's mailbox drain).

A session that finds several requests in its mailbox (SENDs, RECEIVEDs,
READs, often dozens when a client pipelines) hands them to the writer as one
op instead of one op each: one future, one queue entry, one nested
transaction, one ``inbox_meta`` read and write per user touched, one
``users`` lookup per recipient. The requests run in the order given, inside
the op's transaction, through the same functions as the single ops
(``storage.mailbox``), so per-conversation order, dedup on (sender, client
id), the offline cap and the receipts are exactly theirs; with ``remote``,
what is owed to users homed on other nodes is queued for them
(``storage.outq``), as those functions do.

Each request gets its own result, ``(True, value)`` or ``(False,
exception)``: a request the store refuses (``StorageError``: unknown user,
full inbox, reused id, invalid argument) fails alone, because those
transactions raise every refusal before they write anything. Any other
exception (an LMDB error such as ``MDB_MAP_FULL``) escapes, and the whole op
is rolled back: every request of the batch fails with it, nothing of it is
stored, and nothing of it can have been acknowledged.

Requests are plain tuples (the storage layer knows nothing of actors):

- ``(SEND, client_id, to, body)``, ``(SEND, client_id, to, body, media)``
  or ``(SEND, client_id, to, body, media, device)`` -> ``Stored``
  (``media``: blob hashes, held until acked: ``blob_refs``; ``device``:
  the recipient's device the body is sealed for, else ``StaleDevice``)
- ``(ACK, seqs)`` -> ``list[RoutedReceipt]`` (delivered receipts)
- ``(READ, peer, ids)`` or ``(READ, peer, ids, group)`` ->
  ``list[RoutedReceipt]`` (read receipts; ``group`` for a group's messages)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from storage.errors import InvalidArgument, StorageError
from storage.kv import Txn
from storage.mailbox import _Metas, ack_inbox, store_message, store_read
from storage.records import Receipt, RoutedReceipt, Stored, quick_pickle

__all__ = ["UserBatch", "SEND", "ACK", "READ"]

SEND, ACK, READ = "send", "ack", "read"


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention, as records' HOT ones:
class UserBatch:                            # the writer unpickles ~3 per message (0.79 -> 0.45 us)
    user: str
    requests: tuple[tuple, ...]
    ts_ms: int
    cap: int
    remote: Callable[[str], str | None] | None = None   # storage.metas: who is homed elsewhere

    def __call__(self, txn: Txn) -> list[tuple[bool, Any]]:
        user, ts, cap = self.user, self.ts_ms, self.cap
        metas = _Metas.of(txn, self.remote)
        results: list[tuple[bool, Any]] = []
        append = results.append
        for request in self.requests:
            kind = request[0]
            try:
                if kind == SEND:
                    n = len(request)
                    value = store_message(txn, user, request[1], request[2], request[3],
                                          ts, cap, metas, request[4] if n > 4 else (),
                                          device=request[5] if n > 5 else None)
                elif kind == ACK:
                    value = ack_inbox(txn, user, request[1], ts, metas)
                elif kind == READ:
                    value = store_read(txn, user, request[1], request[2], ts, metas,
                                       request[3] if len(request) > 3 else None)
                else:
                    raise InvalidArgument(f"unknown batch request {kind!r}")
            except StorageError as refused:     # raised before any write: fails alone
                append((False, refused))
            else:
                append((True, value))
        metas.save()
        return results

    # -- crossing from the LMDB writer process (storage.kv_process) in tuples ------
    @staticmethod
    def to_wire(results: list[tuple[bool, Any]]) -> list:
        """``results`` as plain tuples: ~5x cheaper to pickle and unpickle
        than the records (measured), and the writer answers thousands per
        second. A refusal stays an exception."""
        out = []
        for ok, value in results:
            if not ok:
                out.append((False, value))
            elif type(value) is Stored:
                out.append((True, (value.seq, value.ts_ms, value.duplicate)))
            else:
                out.append((True, [(r.to, r.seq, r.receipt.kind, r.receipt.id, r.receipt.by,
                                    r.receipt.ts, r.receipt.group) for r in value]))
        return out

    @staticmethod
    def from_wire(data: list) -> list[tuple[bool, Any]]:
        out = []
        for ok, value in data:
            if not ok:
                out.append((False, value))
            elif type(value) is tuple:
                out.append((True, Stored(*value)))
            else:
                out.append((True, [RoutedReceipt(to, seq, Receipt(kind, id_, by, ts, group))
                                   for to, seq, kind, id_, by, ts, group in value]))
        return out
