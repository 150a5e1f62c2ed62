"""Inbox: every message and receipt owed to a user, until the user acks it.

Transactions (plain functions over a ``Txn``) and their ops (frozen
dataclasses to ``submit``):

- ``store_message`` / ``StoreMessage``: idempotent on (sender, client id);
  appends a ``message`` item to the recipient's inbox unless it holds
  ``cap`` messages already (``OfflineFull``) or names a device of the
  recipient that is not the current one (``StaleDevice``);
- ``ack_inbox`` / ``AckInbox``: deletes acked items (idempotent) and, for
  each message deleted, appends a ``delivered`` receipt to its sender's
  inbox in the same transaction;
- ``store_read`` / ``StoreRead``: appends ``read`` receipts to a peer's inbox;
- ``set_last_seen`` / ``SetLastSeen``, ``SetLastSeenMany``; ``prune_dedup`` / ``PruneDedup``;
- reads: ``inbox_after``, ``inbox_count``, ``inbox_meta``,
  ``get_last_seen``, ``recount_inbox`` (an audit by full scan).

Sequence numbers are per user, start at 1, and are assigned inside the
write transaction from ``inbox_meta`` (never from a process-local cache:
several worker processes share one environment and LMDB serializes their
writers). Only messages count toward ``cap``; receipts do not, because a
receipt is the consequence of *another* user's ack or read, and refusing it
would either fail that user's ack (their inbox could never drain) or lose
the receipt silently. Receipts stay bounded all the same: each message
yields at most one ``delivered`` receipt, and ``read`` receipts are limited
per call (the session layer rate-limits calls). Group items (system events,
``missed`` markers) are counted apart as well (``evts``, among ``rcpts``):
they have a cap of their own, applied by storage/groups.py.

In a cluster (``remote`` given: ``storage.metas``), a user homed on another
node has no inbox here: a message to them is deduplicated here (so a resend
is neither queued twice nor refused) and queued for their node
(``storage.outq``), which applies its own cap and dedup; ``Stored.seq`` is
then 0. Receipts for such a user are queued the same way, and their
``RoutedReceipt.seq`` is 0: "went to another node, nothing to nudge here".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from storage import blob_refs, outq
from storage.blocks import blocks_pair
from storage.errors import (DuplicateId, HomeUnknown, InvalidArgument, OfflineFull, StaleDevice,
                            UnknownUser)
from storage.keys import (client_id_bytes, dedup_key, dedup_key_of_ttl, dedup_ttl_key, from_u64,
                          group_bytes, group_read_key, inbox_key, inbox_prefix, inbox_seq,
                          member_key, phone_bytes, prefix_end, u64)
from storage.kv import Txn
from storage.metas import Metas as _Metas, Remote, current_device, load_meta as _load_meta
from storage.records import (InboxItem, InboxMeta, Receipt, RoutedReceipt, Stored,
                             pack, pack_message, quick_pickle, unpack, unpack_item)

__all__ = [
    "store_message", "ack_inbox", "store_read", "inbox_after", "inbox_count",
    "inbox_meta", "recount_inbox", "set_last_seen", "get_last_seen", "prune_dedup",
    "StoreMessage", "AckInbox", "StoreRead", "SetLastSeen", "SetLastSeenMany", "PruneDedup",
    "MAX_READ_IDS",
]

MAX_READ_IDS = 1000


# -- writes ---------------------------------------------------------------------
def store_message(txn: Txn, sender: str, client_id: str, to: str, body: bytes,
                  ts_ms: int, cap: int, metas: _Metas | None = None,
                  media: tuple[str, ...] = (), remote: Remote | None = None,
                  origin: str | None = None, device: int | None = None) -> Stored:
    """Append a message to ``to``'s inbox. Every refusal is raised before
    anything is written (``UserBatch`` relies on it); with ``metas`` given,
    the caller saves them (and their ``remote`` is used). ``media``: blob
    hashes the message refers to, held (``blob_refs``) until the recipient
    acks it. ``to`` homed on another node: queued there (module doc).
    ``origin``: the node that shipped it (``storage.outq``), kept with the
    message and its dedup record for its receipts (``Metas.append``).
    ``device``: the device of ``to`` the body is sealed for; another than
    the one registered is ``StaleDevice``, after the dedup check (a resend
    of a message stored before the device changed is still a duplicate),
    and at ``to``'s home for one queued for another node (the item carries it)."""
    sb, tb, cid = phone_bytes(sender), phone_bytes(to), client_id_bytes(client_id)
    if type(body) is not bytes:
        raise InvalidArgument("message body must be bytes")
    if media:
        media = blob_refs.check(media)
    dk = dedup_key(sb, cid)
    raw = txn.get("dedup", dk)
    if raw is not None:
        first = unpack(raw)
        if first["to"] != to:
            raise DuplicateId(sender, client_id, first["to"], to)
        return Stored(first["seq"], first["ts"], duplicate=True)
    own = metas is None
    if own:
        metas = _Metas.of(txn, remote)
    node = metas.node_of(tb)
    if node is not None:                    # its home applies require_user, cap, blob_refs
        item = ("msg", sender, client_id, to, body, ts_ms, tuple(media))
        outq.put(txn, node, item if device is None else (*item, device))
        _record_sent(txn, dk, to, 0, ts_ms)
        return Stored(0, ts_ms)
    metas.require_user(tb, to)
    if device is not None:
        current = current_device(txn, tb)
        if current != device:
            raise StaleDevice(to, device, current)
    meta = metas[tb]
    if meta.get("blk") and blocks_pair(txn, meta, tb, sb):  # dropped unseen (storage.blocks)
        _record_sent(txn, dk, to, 0, ts_ms, origin, blocked=True)
        return Stored(0, ts_ms)
    if meta["msgs"] >= cap:
        raise OfflineFull(to, cap)
    seq = metas.append_packed(tb, True, pack_message(client_id, sender, ts_ms, body,
                                                     media=media, node=origin))
    if media:
        blob_refs.hold(txn, media, ts_ms)
    if own:
        metas.save()
    _record_sent(txn, dk, to, seq, ts_ms, origin)
    return Stored(seq, ts_ms)


def _record_sent(txn: Txn, dk: bytes, to: str, seq: int, ts_ms: int,
                 origin: str | None = None, blocked: bool = False) -> None:
    record = {"to": to, "seq": seq, "ts": ts_ms}
    if origin is not None:
        record["node"] = origin
    if blocked:                             # never stored: the recipient blocked the sender
        record["blk"] = True
    txn.put("dedup", dk, pack(record))
    txn.put("dedup_ttl", dedup_ttl_key(ts_ms, dk), b"")


def ack_inbox(txn: Txn, user: str, seqs: Iterable[int], ts_ms: int,
              metas: _Metas | None = None, remote: Remote | None = None
              ) -> list[RoutedReceipt]:
    """Delete ``user``'s items ``seqs`` (those already gone are skipped) and
    route a ``delivered`` receipt to the sender of each message deleted
    (seq 0: queued for the sender's node)."""
    ub = phone_bytes(user)
    own = metas is None
    if own:
        metas = _Metas.of(txn, remote)
    routed: list[RoutedReceipt] = []
    found: dict[int, dict] = {}             # read once, checked before the first write
    seqs = sorted(set(seqs))
    for seq in seqs:
        raw = txn.get("inbox", inbox_key(ub, seq))
        if raw is not None:
            value = found[seq] = unpack(raw)
            if value["type"] == "message":  # its receipt can be placed
                metas.reachable(phone_bytes(value["from"]), value.get("node"))
    for seq in seqs:
        key = inbox_key(ub, seq)
        value = found.get(seq)
        if value is None:                   # maybe appended by this call: a self-sent
            raw = txn.get("inbox", key)     # message's receipt (a receipt, no receipt of its own)
            if raw is None:
                continue
            value = unpack(raw)
        if value["type"] != "message":
            txn.delete("inbox", key)
            metas[ub]["rcpts"] -= 1
            if value["type"] == "group":
                metas[ub]["evts"] -= 1
            continue
        sender = value["from"]
        sb = phone_bytes(sender)
        txn.delete("inbox", key)
        metas[ub]["msgs"] -= 1
        if "media" in value:
            blob_refs.release(txn, value["media"], ts_ms)
        if metas[ub].get("blk") and "group" not in value and blocks_pair(txn, metas[ub], ub, sb):
            continue                        # no tick for a user this one blocked
        receipt = Receipt("delivered", value["id"], user, ts_ms, value.get("group"))
        routed.append(RoutedReceipt(sender, metas.append(sb, receipt, value.get("node")), receipt))
    if own:
        metas.save()
    return routed


def store_read(txn: Txn, reader: str, peer: str, ids: Iterable[str], ts_ms: int,
               metas: _Metas | None = None, group: str | None = None,
               remote: Remote | None = None) -> list[RoutedReceipt]:
    """Append a ``read`` receipt for each of ``peer``'s message ids that
    ``reader`` really received, once: sent to ``reader``, or to ``group``
    since ``reader`` joined it (the sender's dedup record says where each
    id went, at which group version, and which members got a ``missed``
    marker instead). Other ids are skipped: a client cannot fill anyone's
    inbox with receipts for messages it never got or read already
    (receipts are not under the offline cap). An id older than the dedup
    retention is skipped too. Every refusal is raised before anything is
    written. A ``peer`` homed on another node: the dedup record checked is
    the one written HERE when its message was applied (``storage.outq``),
    and the receipts are queued (seq 0)."""
    ids = list(ids)
    rb = phone_bytes(reader)
    pb = phone_bytes(peer)
    if group is not None:
        gb = group_bytes(group)
    if len(ids) > MAX_READ_IDS:
        raise InvalidArgument(f"at most {MAX_READ_IDS} ids per read receipt call")
    ids = list(dict.fromkeys(ids))          # an id named twice in one call is read once
    for cid in ids:
        client_id_bytes(cid)
    own = metas is None
    if own:
        metas = _Metas.of(txn, remote)
    try:
        metas.require_user(pb, peer)
        unknown = False
    except UnknownUser:
        if group is not None:               # the group's node: the home map lags (a member
            if metas.remote is not None:    # cannot have read a message of a user never known)
                raise HomeUnknown(peer) from None
            raise
        unknown = True          # maybe homed elsewhere, the map here not saying so yet
    to = reader if group is None else group
    if group is not None:
        joined = txn.get("user_groups", member_key(rb, gb))
        if joined is None or reader == peer:
            ids = []                        # not a member, or its own message: nothing to read
        joined_at = from_u64(joined) if joined else 0       # b"": joined before versions were kept
    routed = []
    for cid in ids:
        dk = dedup_key(pb, client_id_bytes(cid))
        raw = txn.get("dedup", dk)
        first = None if raw is None else unpack(raw)
        if first is None or first["to"] != to or first.get("read") or first.get("blk"):
            continue                        # (blk: dropped unseen, storage.blocks)
        if unknown and "node" not in first:
            continue                        # only a message shipped from its home says where
        if group is None:                   # a 1:1 message is read once
            first["read"] = True
            txn.put("dedup", dk, pack(first))
        else:
            if first.get("v", 0) < joined_at or reader in first.get("missed", ()):
                continue                    # sent before the reader joined, or not to it
            rk = group_read_key(first["ts"], rb, dk)
            if txn.get("group_reads", rk) is not None:
                continue                    # read once per member
            txn.put("group_reads", rk, b"")
        receipt = Receipt("read", cid, reader, ts_ms, group)
        routed.append(RoutedReceipt(peer, metas.append(pb, receipt, first.get("node")), receipt))
    if unknown and not routed:
        raise UnknownUser(peer)             # (nothing was written)
    if own:
        metas.save()
    return routed


def set_last_seen(txn: Txn, user: str, ts_ms: int) -> int:
    """Record that ``user`` was seen at ``ts_ms``; last seen never goes back
    (two workers may report out of order). Returns the stored value."""
    key = phone_bytes(user)
    raw = txn.get("lastseen", key)
    if raw is not None and unpack(raw) >= ts_ms:
        return unpack(raw)
    txn.put("lastseen", key, pack(ts_ms))
    return ts_ms


def prune_dedup(txn: Txn, before_ms: int, limit: int = 10_000) -> int:
    """Forget the client ids of messages stored before ``before_ms`` (at most
    ``limit`` per call, oldest first), and the group reads of those
    messages; returns how many ids were forgotten. A
    resend older than that would be stored again: run this with a cut-off
    well past any client's retry window."""
    stale = [k for k, _ in txn.range("dedup_ttl", u64(0), u64(before_ms), limit=limit)]
    for key in stale:
        txn.delete("dedup_ttl", key)
        txn.delete("dedup", dedup_key_of_ttl(key))
    for key, _ in list(txn.range("group_reads", u64(0), u64(before_ms), limit=limit)):
        txn.delete("group_reads", key)      # the reads of group messages as old
    return len(stale)


# -- reads ----------------------------------------------------------------------
def inbox_after(txn: Txn, user: str, after_seq: int = 0, limit: int | None = 100
                ) -> list[InboxItem]:
    """``user``'s items with seq > ``after_seq``, in seq order."""
    ub = phone_bytes(user)
    start = inbox_key(ub, after_seq + 1)
    end = prefix_end(inbox_prefix(ub))
    return [unpack_item(inbox_seq(k), v) for k, v in txn.range("inbox", start, end, limit=limit)]


def inbox_meta(txn: Txn, user: str) -> InboxMeta:
    m = _load_meta(txn, phone_bytes(user))
    return InboxMeta(m["next"], m["msgs"], m["rcpts"], m["evts"])


def inbox_count(txn: Txn, user: str) -> int:
    """Items (messages and receipts) ``user`` has not acked."""
    return inbox_meta(txn, user).count


def recount_inbox(txn: Txn, user: str) -> InboxMeta:
    """What ``inbox_meta`` should say, from a full scan of the inbox: an
    audit for tests and repair tools (O(items))."""
    ub = phone_bytes(user)
    msgs = rcpts = evts = 0
    for _, raw in txn.range("inbox", inbox_prefix(ub), prefix_end(inbox_prefix(ub))):
        kind = unpack(raw)["type"]
        if kind == "message":
            msgs += 1
        else:
            rcpts += 1
            evts += kind == "group"
    last = txn.last("inbox", inbox_prefix(ub))
    top = inbox_seq(last[0]) + 1 if last else 1
    return InboxMeta(max(top, _load_meta(txn, ub)["next"]), msgs, rcpts, evts)


def get_last_seen(txn: Txn, user: str) -> int | None:
    raw = txn.get("lastseen", phone_bytes(user))
    return None if raw is None else unpack(raw)


# -- ops ------------------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class StoreMessage:
    sender: str
    client_id: str
    to: str
    body: bytes
    ts_ms: int
    cap: int
    remote: Remote | None = None

    def __call__(self, txn: Txn) -> Stored:
        return store_message(txn, self.sender, self.client_id, self.to, self.body,
                             self.ts_ms, self.cap, remote=self.remote)


@quick_pickle
@dataclass(frozen=True, slots=True)
class AckInbox:
    user: str
    seqs: tuple[int, ...]
    ts_ms: int
    remote: Remote | None = None

    def __call__(self, txn: Txn) -> list[RoutedReceipt]:
        return ack_inbox(txn, self.user, self.seqs, self.ts_ms, remote=self.remote)


@quick_pickle
@dataclass(frozen=True, slots=True)
class StoreRead:
    reader: str
    peer: str
    ids: tuple[str, ...]
    ts_ms: int
    group: str | None = None
    remote: Remote | None = None

    def __call__(self, txn: Txn) -> list[RoutedReceipt]:
        return store_read(txn, self.reader, self.peer, self.ids, self.ts_ms, group=self.group,
                          remote=self.remote)


@quick_pickle
@dataclass(frozen=True, slots=True)
class SetLastSeen:
    user: str
    ts_ms: int

    def __call__(self, txn: Txn) -> int:
        return set_last_seen(txn, self.user, self.ts_ms)


@quick_pickle
@dataclass(frozen=True, slots=True)
class SetLastSeenMany:
    """Several users' last seen in one op (``actors.last_seen``)."""
    seen: tuple[tuple[str, int], ...]

    def __call__(self, txn: Txn) -> int:
        for user, ts_ms in self.seen:
            set_last_seen(txn, user, ts_ms)
        return len(self.seen)


@quick_pickle
@dataclass(frozen=True, slots=True)
class PruneDedup:
    before_ms: int
    limit: int = 10_000

    def __call__(self, txn: Txn) -> int:
        return prune_dedup(txn, self.before_ms, self.limit)
