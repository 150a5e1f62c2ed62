"""Media request nonces, taken once per node: the replay check of uploads.

A media upload is signed by the device over its time, a random nonce and
the body's SHA-256 (transport/media_auth.py), and refused when its time is
more than the window (5 minutes) from the server's. Within the window a
captured upload could be sent again, so each upload's nonce is taken once.
Every worker process of a node serves the same media port (SO_REUSEPORT),
so a per-process memory would let a replay through on another worker, and
would forget on a restart; the nonces live in the node's LMDB instead,
which all its workers share and whose write transactions are serialized
across processes: the check and the put are one transaction, exact.

``media_nonces``: ``ts(u64) phone \\x00 device(u64) nonce`` -> ``b""``
(``keys.nonce_key``): every part comes from the signed request, so a
replay builds the same key. One more key, ``WATERMARK``, holds the sweep's
cut-off (u64).

``TakeNonce(user, device, nonce, ts_ms, before_ms)``: ``before_ms`` is the
start of the window by the caller's clock (a time below it is out of the
window). One transaction:

1. a ``ts_ms`` below the watermark is ``"stale"`` (its record may have
   been swept: refused, as out of the window);
2. a key already held is ``"replayed"``;
3. else it is put: ``"fresh"``;
4. the sweep: up to ``SWEEP`` records with a time below ``before_ms`` are
   deleted, oldest first, and the watermark is raised to ``before_ms``
   when any was. Another worker's clock, or a request that waited in the
   writer, may still accept a time below that cut-off: step 1 refuses it,
   so a swept nonce is never taken twice.

So the table holds the uploads of the last window or so (a time may run up
to the window ahead of the server's, and lives the window past itself)
plus an expired backlog that each upload shrinks by up to ``SWEEP - 1``:
bounded, and one small write per upload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from storage.errors import InvalidArgument
from storage.keys import from_u64, nonce_key, phone_bytes, u64
from storage.kv import Txn
from storage.records import quick_pickle

__all__ = ["TakeNonce", "take", "held", "FRESH", "REPLAYED", "STALE", "SWEEP", "WATERMARK"]

FRESH, REPLAYED, STALE = "fresh", "replayed", "stale"
SWEEP = 32                      # expired records deleted per take, at most
WATERMARK = b"\xff"             # sorts after every key: their times are below 2**56 ms
_DB = "media_nonces"
_NONCE = re.compile(r"[0-9a-f]{32}")
_LIMITS = {"device": 1 << 64, "ts_ms": 1 << 56, "before_ms": 1 << 56}   # times: below WATERMARK


def _check(user: str, device: int, nonce: str, ts_ms: int, before_ms: int) -> bytes:
    for name, n in (("device", device), ("ts_ms", ts_ms), ("before_ms", before_ms)):
        if type(n) is not int or not 0 <= n < _LIMITS[name]:
            raise InvalidArgument(f"{name} must be an int in 0..{_LIMITS[name] - 1}, not {n!r}")
    if type(nonce) is not str or _NONCE.fullmatch(nonce) is None:
        raise InvalidArgument(f"a nonce is 32 lowercase hex digits, not {nonce!r}")
    return nonce_key(ts_ms, phone_bytes(user), device, bytes.fromhex(nonce))


def take(txn: Txn, user: str, device: int, nonce: str, ts_ms: int, before_ms: int) -> str:
    """``FRESH`` (now held), ``REPLAYED`` or ``STALE``; sweeps (module doc)."""
    key = _check(user, device, nonce, ts_ms, before_ms)
    raw = txn.get(_DB, WATERMARK)
    watermark = 0 if raw is None else from_u64(raw)
    if ts_ms < watermark:
        outcome = STALE
    elif txn.get(_DB, key) is not None:
        outcome = REPLAYED
    else:
        txn.put(_DB, key, b"")
        outcome = FRESH
    expired = [k for k, _ in txn.range(_DB, b"", u64(before_ms), limit=SWEEP)]
    for k in expired:
        txn.delete(_DB, k)
    if expired and before_ms > watermark:
        txn.put(_DB, WATERMARK, u64(before_ms))
    return outcome


def held(txn: Txn) -> int:
    """Records in the table (the watermark not counted)."""
    return sum(1 for k, _ in txn.range(_DB, b"", WATERMARK))


@quick_pickle
@dataclass(frozen=True, slots=True)
class TakeNonce:
    user: str
    device: int
    nonce: str
    ts_ms: int
    before_ms: int

    def __call__(self, txn: Txn) -> str:
        return take(txn, self.user, self.device, self.nonce, self.ts_ms, self.before_ms)
