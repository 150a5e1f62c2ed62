"""The outbound queue ("outq"): inbox appends owed to users homed on other
nodes, stored here until their node confirms it applied them.

Each node of a cluster has its own store, and a user's inbox, account and
dedup records live at the user's home node. An append for a user homed
elsewhere (a message, a receipt, a group item: ``storage.metas`` routes
them) cannot touch that node's store in this transaction, and must not be
lost if this node or the link dies after the sender's ack. So it is put
into a durable FIFO for the destination node *in the same transaction* as
everything else the op wrote (the sender's dedup record, the acked item's
deletion), and a forwarder ships it later: store-and-forward, as SMTP
queues mail per destination host and XMPP servers queue stanzas per
server-to-server stream. One queue per destination node, so one slow or
dead node holds back only what is owed to it.

Exactly once. The forwarder ships ``peek`` batches (at least once: it
resends until the destination confirms) and trims what was confirmed. The
destination ``apply``s a shipment in one transaction together with a
per-origin watermark (``outq_applied``: the highest seq applied), and skips
items at or below it: a resend after a lost confirmation changes nothing,
and the returned ``upto`` is what the origin may ``trim``. Seqs are per
destination, start at 1 and are never reused (``outq_meta`` keeps ``next``
even when the queue empties).

Why an epoch. A node whose store is wiped and recreated (a disk replaced,
a restore) starts its seqs at 1 again, and the destination's watermark
would make it skip them all as resends. Each store draws a random
``epoch`` once; a shipment names it, and an epoch other than the one
stored for that origin resets the origin's watermark. (One epoch is kept
per origin: a shipment of the old epoch arriving after the new one's
would be applied again; a forwarder ships one batch at a time, and a wiped
store's forwarder is gone.)

Items (msgpack-able tuples):

- ``("msg", sender, client_id, to, body, ts_ms, media[, device])``: a 1:1
  message accepted at the sender's home; applied with
  ``mailbox.store_message`` (dedup on (sender, client id) here too:
  ``store_read`` checks that record later). A refusal here
  (``OfflineFull``, ``UnknownUser``, ``StaleDevice``: ``device``, the
  recipient's device the body is sealed for, is not the one registered
  here) is not an error of the shipment: a ``failed`` receipt goes back to
  the sender; a duplicate (or a reused id, ``DuplicateId``) is skipped;
- ``("unsent", sender, client_id, to)``: queued back to the origin with
  the ``failed`` receipt of a ``StaleDevice`` refusal, ahead of it: the
  origin forgets the id (its dedup record, if it is this shipped message),
  so the sender's resend under the same id, sealed again, is stored and
  shipped rather than answered as a duplicate;
- ``("item", user, kind, packed)``: an inbox item already packed
  (``records.pack_item``), ``kind`` "message", "receipt" or "event" (a
  group item); appended as ``Metas`` does; for a user unknown here it is
  dropped with a warning (there is no inbox to append to);
- ``("group", member, kind, packed, group, name, by)``: a group message or
  event, applied under the destination's caps (``_apply_group``);
- ``("missed", member, group, name, by, count, ts)``: group items folded at
  the origin, applied as the member's MISSED for the group.

Bounded: past ``high`` items held for a node, group items for its members
fold instead of queuing (``storage.outq_fold``, which says why).

A malformed shipment (an unknown item, seqs not increasing, a field
``store_message`` rejects) raises ``InvalidArgument`` and nothing of it is
applied (the op rolls back): the origin runs code this node does not
understand, and skipping items would lose messages silently.

``apply`` needs ``storage.mailbox`` and ``storage.metas``, which need
``put``: it imports them when called, so this module imports neither.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

from storage.errors import (DuplicateId, InvalidArgument, OfflineFull, StaleDevice,
                            StorageError, UnknownUser)
from storage.keys import (client_id_bytes, dedup_key, dedup_ttl_key, node_bytes, outq_key,
                          outq_prefix, outq_seq, phone_bytes, prefix_end)
from storage.group_missed import fold_missed
from storage.kv import Txn
from storage.records import (InboxItem, Message, Receipt, pack, quick_pickle, unpack,
                             unpack_item, unpack_tuple)

__all__ = ["epoch", "put", "peek", "trim", "pending", "apply", "Applied", "Apply", "Trim", "Gap",
           "Epoch", "ITEM_KINDS"]

log = logging.getLogger(__name__)

_EPOCH = b"\x00epoch"           # in outq_meta; no node name starts with b"\x00"
ITEM_KINDS = ("message", "receipt", "event")
_ARITY = {"msg": (7, 8), "item": (4,), "group": (7,), "missed": (7,), "unsent": (4,)}


def epoch(txn: Txn) -> str:
    """This store's epoch: drawn at random by the first call (in a write
    transaction), the same ever after."""
    raw = txn.get("outq_meta", _EPOCH)
    if raw is not None:
        return unpack(raw)
    value = secrets.token_hex(8)
    txn.put("outq_meta", _EPOCH, pack(value))
    return value


def _check_item(item: Any) -> tuple:
    if type(item) not in (tuple, list) or not item or len(item) not in _ARITY.get(item[0], ()):
        raise InvalidArgument(f"not an outq item: {item!r:.200}")
    if item[0] == "msg" and len(item) == 8 and not (type(item[7]) is int and item[7] >= 1):
        raise InvalidArgument(f"not an outq item: {item!r:.200}")
    if item[0] in ("item", "group") and (item[2] not in ITEM_KINDS or type(item[3]) is not bytes):
        raise InvalidArgument(f"not an outq item: {item!r:.200}")
    if item[0] == "missed" and not (type(item[3]) is str and type(item[5]) is int
                                    and item[5] >= 0 and type(item[6]) is int):
        raise InvalidArgument(f"not an outq item: {item!r:.200}")
    return tuple(item)


def _meta(txn: Txn, nb: bytes) -> dict:
    raw = txn.get("outq_meta", nb)
    return {"next": 1, "held": 0} if raw is None else unpack(raw)


def put(txn: Txn, dest: str, item: tuple) -> int:
    """Append ``item`` to ``dest``'s queue; its seq there."""
    nb = node_bytes(dest)
    item = _check_item(item)
    meta = _meta(txn, nb)
    seq = meta["next"]
    txn.put("outq", outq_key(nb, seq), pack(item))
    meta["next"] = seq + 1
    meta["held"] += 1
    txn.put("outq_meta", nb, pack(meta))
    return seq


def peek(txn: Txn, dest: str, limit: int = 512, after: int = 0,
         max_bytes: int | None = None) -> list[tuple[int, tuple]]:
    """Up to ``limit`` of ``dest``'s items with seq > ``after``, oldest
    first, as (seq, item); with ``max_bytes``, no more than fit in it (at
    least one): the scan stops there, nothing more is read or unpacked."""
    nb = node_bytes(dest)
    prefix = outq_prefix(nb)
    start = outq_key(nb, after + 1) if after > 0 else prefix
    items, total = [], 0
    for k, v in txn.range("outq", start, prefix_end(prefix), limit=limit):
        total += len(v)
        if max_bytes is not None and total > max_bytes and items:
            break
        items.append((outq_seq(k), unpack_tuple(v)))
    return items


def trim(txn: Txn, dest: str, upto: int, high: int | None = None) -> int:
    """Delete ``dest``'s items with seq <= ``upto``; how many there were.
    With ``high``, queue what was folded for ``dest`` in the room left."""
    nb = node_bytes(dest)
    if type(upto) is not int or upto < 0:
        raise InvalidArgument(f"upto must be an int >= 0, not {upto!r}")
    prefix = outq_prefix(nb)
    gone = [k for k, _ in txn.range("outq", prefix, outq_key(nb, upto + 1))]
    for key in gone:
        txn.delete("outq", key)
    if gone:
        meta = _meta(txn, nb)
        meta["held"] -= len(gone)
        txn.put("outq_meta", nb, pack(meta))
    if high is not None:
        from storage.outq_fold import unfold     # (it imports this module)
        unfold(txn, dest, nb, high)
    return len(gone)


def pending(txn: Txn) -> dict[str, int]:
    """Items queued per destination node (those with any), from the counts
    in ``outq_meta``: one key per node ever written to, no item scan."""
    held = {}
    for key, raw in txn.range("outq_meta", b"\x01"):     # past _EPOCH
        n = unpack(raw)["held"]
        if n:
            held[key.decode()] = n
    return held


# -- the destination's side ------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class Applied:
    """What ``apply`` did: ``upto``, the origin's highest seq applied here
    (what the origin may trim), and every item appended to a local inbox,
    in order, as (user, InboxItem), to nudge their sessions; ``media``:
    for each 1:1 message stored here that names media blobs, (the node
    they were uploaded to, their hashes): this node fetches the ones it
    lacks (transport/media_fetch.py)."""
    upto: int
    nudges: list[tuple[str, InboxItem]]
    media: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)


class Gap(StorageError):
    """A shipment that follows one this node never applied (lost with a
    gateway that died, say): applying it would move the watermark past
    items never seen. Refused whole; the origin ships again from what was
    confirmed."""

    def __init__(self, origin: str, after: int, done: int):
        super().__init__(f"shipment from {origin} follows seq {after}; applied up to {done}")


def apply(txn: Txn, origin: str, epoch: str, items: list[tuple[int, tuple]], cap: int,
          remote=None, after: int | None = None) -> Applied:
    """Apply a shipment of ``origin``'s items (``peek`` output) exactly once:
    those at or below the watermark stored for (origin, epoch) are skipped.
    ``cap``: the offline cap for the messages; ``remote`` as in
    ``storage.metas`` (an item for a user homed elsewhere is queued on).
    ``after``: the last seq of the shipment sent before this one (several
    may be in flight): ``Gap`` if this node has not applied up to it yet;
    None for a first shipment (nothing before it to check)."""
    from storage.metas import Metas         # (module doc: the import cycle)
    ob = node_bytes(origin)
    if type(epoch) is not str or not epoch:
        raise InvalidArgument(f"an epoch is a non-empty str, not {epoch!r}")
    raw = txn.get("outq_applied", ob)
    mark = unpack(raw) if raw is not None else None
    done = mark["seq"] if mark is not None and mark["epoch"] == epoch else 0
    if after is not None and after > done:
        raise Gap(origin, after, done)
    fresh, last = [], done
    for entry in items:
        seq, item = entry if type(entry) in (tuple, list) and len(entry) == 2 else (None, None)
        if type(seq) is not int or seq < 1:
            raise InvalidArgument(f"not a (seq, item) pair: {entry!r:.200}")
        item = _check_item(item)
        if seq <= done:
            continue
        if seq <= last:
            raise InvalidArgument(f"seqs from {origin} not increasing: {seq} after {last}")
        fresh.append(item)
        last = seq
    if not fresh:
        return Applied(done, [])
    metas = Metas.of(txn, remote)
    nudges: list[tuple[str, InboxItem]] = []
    media: list[tuple[str, tuple[str, ...]]] = []
    for item in fresh:
        if item[0] == "msg":
            if _apply_msg(txn, metas, item, cap, nudges, origin) and item[6]:
                media.append((origin, tuple(item[6])))
        elif item[0] == "missed":
            from storage.outq_fold import apply_missed
            apply_missed(txn, metas, item, nudges)
        else:
            _APPLY[item[0]](txn, metas, item, cap, nudges)
    metas.save()
    txn.put("outq_applied", ob, pack({"epoch": epoch, "seq": last}))
    return Applied(last, nudges, media)


def _apply_msg(txn: Txn, metas, item: tuple, cap: int, nudges: list, origin: str) -> bool:
    """True if the message was stored in an inbox here (its blobs held).
    Its receipts go to the sender's home, or back to ``origin`` while the
    home map here does not list the sender yet (``Metas.append``)."""
    from storage.mailbox import store_message
    _, sender, client_id, to, body, ts, media, *device = item
    try:
        stored = store_message(txn, sender, client_id, to, body, ts, cap, metas, tuple(media),
                               origin=origin, device=device[0] if device else None)
    except (OfflineFull, UnknownUser, StaleDevice) as refused:
        log.info("outq: %s refused here (%s): a failed receipt goes to %s",
                 client_id, refused, sender)
        if isinstance(refused, StaleDevice):    # the origin lets the id be sent again
            put(txn, origin, ("unsent", sender, client_id, to))
        _append(metas, sender, Receipt("failed", client_id, to, ts), nudges, via=origin)
        return False
    except DuplicateId as reused:
        log.warning("outq: message skipped: %s", reused)
        return False
    if stored.seq and not stored.duplicate:
        nudges.append((to, InboxItem(stored.seq, "message", Message(client_id, sender, ts, body))))
        return True
    return False


def _apply_item(txn: Txn, metas, item: tuple, cap: int, nudges: list) -> None:
    _, user, kind, value = item
    ub = _known(metas, user, f"a {kind}")
    seq = ub and _add(metas, ub, kind, value)
    if seq:
        nudges.append((user, unpack_item(seq, value)))


def _apply_group(txn: Txn, metas, item: tuple, cap: int, nudges: list) -> None:
    """A group message or event for a member homed here, under this node's
    caps: past them it folds into the member's ``missed`` marker for the
    group, as on the group's own node (storage/groups.py)."""
    _, user, kind, value, group, name, by = item
    ub = _known(metas, user, f"a group {kind}")
    if ub is None:
        return
    node = metas.node_of(ub)
    if node is not None:                        # moved on since: queue it on, caps and all
        put(txn, node, item)
        return
    if metas[ub]["msgs" if kind == "message" else "evts"] >= cap:
        member, marker, old = fold_missed(txn, metas, group, name, user, by,
                                          1 if kind == "message" else 0, unpack(value)["ts"])
        if old is not None:
            nudges[:] = [n for n in nudges if n[0] != user or n[1].seq != old]
        nudges.append((member, marker))
        return
    nudges.append((user, unpack_item(_add(metas, ub, kind, value), value)))


def _apply_unsent(txn: Txn, metas, item: tuple, cap: int, nudges: list) -> None:
    """Forget ``client_id``'s dedup record if it is the message shipped to
    ``to`` from here (seq 0) that its home refused for a stale device."""
    _, sender, client_id, to = item
    dk = dedup_key(phone_bytes(sender), client_id_bytes(client_id))
    raw = txn.get("dedup", dk)
    first = unpack(raw) if raw is not None else None
    if first is None or first["to"] != to or first["seq"] != 0:
        return
    txn.delete("dedup", dk)
    txn.delete("dedup_ttl", dedup_ttl_key(first["ts"], dk))


_APPLY = {"item": _apply_item, "group": _apply_group, "unsent": _apply_unsent}


def _append(metas, user: str, receipt: Receipt, nudges: list, via: str | None = None) -> None:
    """A receipt for ``user`` (queued on if homed elsewhere, or to ``via``
    while the home map does not list ``user`` yet; dropped with a warning
    if unknown here and no ``via``)."""
    if via is not None:
        ub = phone_bytes(user)
        seq = metas.append(ub, receipt, via)
    else:
        ub = _known(metas, user, f"a {receipt.kind} receipt")
        seq = ub and metas.append(ub, receipt)
    if seq:
        nudges.append((user, InboxItem(seq, "receipt", receipt)))


def _known(metas, user: str, what: str) -> bytes | None:
    """``user``'s key, if it has an account here or a home elsewhere; else
    None, logged: an item for nobody is dropped (nothing to append to)."""
    ub = phone_bytes(user)
    try:
        metas.require_user(ub, user)
    except UnknownUser:
        log.warning("outq: %s for %s dropped: no such user here", what, user)
        return None
    return ub


def _add(metas, ub: bytes, kind: str, value: bytes) -> int:
    """Append a packed item of ``kind``; its seq (0: queued on)."""
    if kind == "event":
        return metas.append_event(ub, value)
    return metas.append_packed(ub, kind == "message", value)


# -- ops ---------------------------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class Apply:
    origin: str
    epoch: str
    items: tuple | list
    cap: int
    remote: Any = None          # Callable[[str], str | None]; ops are never pickled
    after: int | None = None

    def __call__(self, txn: Txn) -> Applied:
        return apply(txn, self.origin, self.epoch, self.items, self.cap, self.remote, self.after)


@quick_pickle
@dataclass(frozen=True, slots=True)
class Trim:
    dest: str
    upto: int
    high: int | None = None

    def __call__(self, txn: Txn) -> int:
        return trim(txn, self.dest, self.upto, self.high)


@quick_pickle
@dataclass(frozen=True, slots=True)
class Epoch:
    """Creates the epoch on first use; hence an op, not a read."""

    def __call__(self, txn: Txn) -> str:
        return epoch(txn)
