"""Blocking: the users each user has blocked (WhatsApp's "block contact").

The list is stored with the blocker: ``blocks`` holds ``blocker \\x00
blocked`` -> ``b""``, and the blocker's ``inbox_meta`` counts it (``blk``,
absent while 0). The count is what keeps the check free for everyone else:
the inbox append of a 1:1 message (``storage.mailbox.store_message``) and
of a delivered receipt (``ack_inbox``) already hold the recipient's (or the
acker's) meta, and look the pair up only when ``blk`` is nonzero.

What a block does in storage (the rest is the session's, actors/blocking.py):

- a 1:1 message from a blocked sender is dropped where the recipient's
  inbox append happens (so at the recipient's home node in a cluster): its
  dedup record is written as for any message, marked ``blk``, so a resend
  gets the same answer and the message is never stored, and a READ naming
  it is skipped (``store_read``);
- the blocker's ack of an older message from a blocked user yields no
  ``delivered`` receipt.

Transactions and ops: ``set_block`` / ``SetBlock`` (block or unblock, at
most ``limit`` blocked users: ``BlocksFull``); reads ``blocked_list``,
``is_blocked``, ``blocks_pair`` (the pair check given a loaded meta).
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.errors import InvalidArgument
from storage.keys import SEP, block_key, phone_bytes, prefix_end
from storage.kv import Txn
from storage.metas import Metas, Remote, load_meta
from storage.records import quick_pickle

__all__ = ["set_block", "blocked_list", "is_blocked", "blocks_pair", "SetBlock", "BlocksFull",
           "MAX_BLOCKED"]

MAX_BLOCKED = 10_000          # users one user may block (node config ``max_blocked``)


class BlocksFull(InvalidArgument):
    """The user has blocked ``limit`` users already (INVALID on the wire)."""

    def __init__(self, phone: str, limit: int):
        super().__init__(f"{phone} has blocked {limit} users, the most allowed: unblock some first")
        self.phone, self.limit = phone, limit


def set_block(txn: Txn, user: str, target: str, on: bool, limit: int = MAX_BLOCKED,
              remote: Remote | None = None) -> bool:
    """Block (``on``) or unblock ``target`` for ``user``; whether anything
    changed (repeating either is a no-op, so a resend is safe). Refusals,
    raised before any write: ``InvalidArgument`` (oneself, a malformed id),
    ``UnknownUser`` (``target`` has no account here and is not homed on
    another node), ``BlocksFull``. Unblocking is never refused but for a
    malformed id: an account deleted meanwhile can still be unblocked."""
    ub, tb = phone_bytes(user), phone_bytes(target)
    if ub == tb:
        raise InvalidArgument("a user cannot block themselves")
    metas = Metas.of(txn, remote)
    key = block_key(ub, tb)
    held = txn.get("blocks", key) is not None
    if held == on:
        return False
    if on:
        metas.require_user(tb, target)
    meta = metas[ub]
    count = meta.get("blk", 0)
    if on and count >= limit:
        raise BlocksFull(user, limit)
    if on:
        txn.put("blocks", key, b"")
        meta["blk"] = count + 1
    else:
        txn.delete("blocks", key)
        if count > 1:
            meta["blk"] = count - 1
        else:
            meta.pop("blk", None)
    metas.save()
    return True


def blocks_pair(txn: Txn, meta: dict, blocker: bytes, blocked: bytes) -> bool:
    """Whether ``blocker`` (whose inbox meta is ``meta``) blocked ``blocked``:
    a dict lookup, and a ``get`` only for a user who blocked someone."""
    return bool(meta.get("blk")) and txn.get("blocks", block_key(blocker, blocked)) is not None


def is_blocked(txn: Txn, blocker: str, blocked: str) -> bool:
    """Whether ``blocker`` has blocked ``blocked`` (a read: two gets at most)."""
    bb = phone_bytes(blocker)
    return blocks_pair(txn, load_meta(txn, bb), bb, phone_bytes(blocked))


def blocked_list(txn: Txn, user: str) -> list[str]:
    """The users ``user`` has blocked, in byte order of their ids."""
    ub = phone_bytes(user)
    if not load_meta(txn, ub).get("blk"):
        return []
    prefix = ub + SEP
    return [k[len(prefix):].decode() for k, _ in txn.range("blocks", prefix, prefix_end(prefix))]


@quick_pickle
@dataclass(frozen=True, slots=True)
class SetBlock:
    user: str
    target: str
    on: bool
    limit: int = MAX_BLOCKED
    remote: Remote | None = None

    def __call__(self, txn: Txn) -> bool:
        return set_block(txn, self.user, self.target, self.on, self.limit, self.remote)
