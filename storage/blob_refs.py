"""Blob references: how many stored messages refer to each media blob, so
blobs no message refers to any more can be collected.

Bodies are end-to-end encrypted, so the server cannot read which blob a
message points to; a SEND names them in clear instead (its optional
``media`` list of hex SHA-256, docs/protocol.md). ``mailbox.store_message``
calls ``hold`` in the transaction that appends the message, and
``mailbox.ack_inbox`` calls ``release`` in the one that deletes it, so a
count is never out of step with the inbox.

``blob_refs``: ``sha256 (32 bytes)`` -> ``{n: references, at: ms of the
last change}``. An entry whose count fell to 0 stays until the collector
has let its grace period pass: the recipient gets that long after
acknowledging a message to download its media. ``keep(txn, since_ms)`` is
what the collector must not delete: every blob held, and every blob
released after ``since_ms`` (``kept`` asks the same of one blob); ``forget(txn, before_ms)`` drops the entries
released before it (the collector runs it after deleting the files).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from storage.errors import InvalidArgument
from storage.kv import Txn
from storage.records import pack, quick_pickle, unpack

__all__ = ["check", "hold", "release", "keep", "kept", "forget", "count", "Forget"]

_HEX = frozenset("0123456789abcdef")
MAX_REFS = 16                   # per message (the wire's limit too)


def check(hashes: Iterable[str]) -> tuple[str, ...]:
    """The hashes if every one is 64 lowercase hex digits, else InvalidArgument."""
    hashes = tuple(hashes)
    if len(hashes) > MAX_REFS:
        raise InvalidArgument(f"at most {MAX_REFS} media refs per message")
    for h in hashes:
        if type(h) is not str or len(h) != 64 or not _HEX.issuperset(h):
            raise InvalidArgument(f"a media ref is a hex SHA-256: {h!r}")
    return hashes


def _change(txn: Txn, hashes: Iterable[str], delta: int, ts_ms: int) -> None:
    for h in set(hashes):
        key = bytes.fromhex(h)
        raw = txn.get("blob_refs", key)
        n = 0 if raw is None else unpack(raw)["n"]
        txn.put("blob_refs", key, pack({"n": max(0, n + delta), "at": ts_ms}))


def hold(txn: Txn, hashes: Iterable[str], ts_ms: int) -> None:
    _change(txn, hashes, 1, ts_ms)


def release(txn: Txn, hashes: Iterable[str], ts_ms: int) -> None:
    _change(txn, hashes, -1, ts_ms)


def count(txn: Txn, sha256: str) -> int:
    raw = txn.get("blob_refs", bytes.fromhex(sha256))
    return 0 if raw is None else unpack(raw)["n"]


def keep(txn: Txn, since_ms: int) -> set[str]:
    """Blobs referenced now, or released at or after ``since_ms``."""
    return {k.hex() for k, raw in txn.range("blob_refs", b"")
            if (v := unpack(raw))["n"] > 0 or v["at"] >= since_ms}


def kept(txn: Txn, sha256: str, since_ms: int) -> bool:
    """Whether ``keep(txn, since_ms)`` has this blob: the collector's second
    look at one blob, after taking it out of sight (storage/blobs.py)."""
    raw = txn.get("blob_refs", bytes.fromhex(sha256))
    return raw is not None and ((v := unpack(raw))["n"] > 0 or v["at"] >= since_ms)


def forget(txn: Txn, before_ms: int) -> int:
    stale = [k for k, raw in txn.range("blob_refs", b"")
             if (v := unpack(raw))["n"] == 0 and v["at"] < before_ms]
    for key in stale:
        txn.delete("blob_refs", key)
    return len(stale)


@quick_pickle
@dataclass(frozen=True, slots=True)
class Forget:
    before_ms: int

    def __call__(self, txn: Txn) -> int:
        return forget(txn, self.before_ms)
