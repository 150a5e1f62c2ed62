"""Upgrades: bring an environment written with an earlier key layout to this one.

``upgrade(env, dbs)`` runs where the environment is opened for writing
(``storage.kv_lmdb.open_env``: the writer process, or the in-process store),
before any op. Every step finds its own old data, converts it a chunk per
write transaction (each chunk whole or not at all, so a kill in the middle
loses nothing and the next open goes on where it stopped), and costs one
failed lookup once it is done. The steps, oldest first:

1. **Dedup records keyed by id first** (2026-12-07). They were keyed
   ``sender \\0 client_id`` in the database ``dedup``; they are keyed
   ``client_id \\0 sender`` in ``dedup_by_id`` now (``storage.keys.dedup_key``
   says why), and their ``dedup_ttl`` entries name the new key. A record
   moves with its ``dedup_ttl`` entry; ``dedup`` is dropped once empty.
"""

from __future__ import annotations

import logging
from typing import Any

import lmdb

from storage.keys import SEP, dedup_key, dedup_ttl_key
from storage.records import unpack

__all__ = ["upgrade", "LEGACY_DEDUP"]

log = logging.getLogger("switchboard.storage")

LEGACY_DEDUP = b"dedup"
CHUNK = 10_000


def upgrade(env: lmdb.Environment, dbs: dict[str, Any]) -> int:
    """Run every step that has old data to convert; returns the records moved."""
    return _dedup_by_id(env, dbs, CHUNK)


def _dedup_by_id(env: lmdb.Environment, dbs: dict[str, Any], chunk: int) -> int:
    try:
        with env.begin(write=True) as txn:
            old = env.open_db(LEGACY_DEDUP, txn=txn, create=False)
    except lmdb.NotFoundError:
        return 0
    new, ttl = dbs["dedup_by_id"], dbs["dedup_ttl"]
    moved = 0
    while True:
        with env.begin(write=True) as txn:
            records = []
            for key, value in txn.cursor(db=old):
                records.append((key, value))
                if len(records) == chunk:
                    break
            if not records:
                txn.drop(old, delete=True)
                break
            for key, value in records:
                sender, _, client_id = key.partition(SEP)     # a phone holds no \0
                ts = unpack(value)["ts"]
                txn.delete(key, db=old)
                txn.delete(dedup_ttl_key(ts, key), db=ttl)
                fresh = dedup_key(sender, client_id)
                txn.put(fresh, value, db=new)
                txn.put(dedup_ttl_key(ts, fresh), b"", db=ttl)
        moved += len(records)
    if moved:
        log.info("upgraded %d dedup records to the id-first layout", moved)
    return moved
