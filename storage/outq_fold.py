"""Bounding the outbound queue to a node that does not drain it (it is
down, maybe for good, or slower than its senders): ``storage.outq``'s
group items, folded.

1:1 SENDs to users homed there are held back before they are stored, past
``outq_high`` items queued (RATE_LIMITED: ``actors/shipping.py``). Group
fan-out cannot be held back that way: one member homed on a node that is
gone would block the group for everyone, which a full inbox never does
(storage/groups.py). So it is treated as a full inbox is: past ``high``
items held for the node, a group message or event for a member homed there
is not queued but folded, in the same transaction, into one record per
(node, member, group) in ``outq_missed`` (a running count of messages, the
latest ``by``, name and time). A trim that leaves room below ``high`` queues
each record as one ``("missed", member, group, name, by, count, ts)`` item,
which the member's home applies as its own fold would (``fold_missed``: one
unread MISSED per group, the counts added). An item for a pair that has a
record folds too, even below ``high``, so the member's inbox keeps the
group's order. Nothing is dropped silently: the member sees a MISSED with
the count, as the protocol says of a full inbox (docs/protocol.md).
``outq_meta`` counts the folds (``folded``) and the items folded into them
(``folded_items``; a fold record has its own ``items``), which ``folded``
reads for the operator's view (transport/cluster_status.py).

What is left unbounded, and why it is bounded elsewhere: delivered and read
receipts for users homed there (at most two per message that node shipped
here), FAILED receipts (one per message refused), key-change notices (one
per contact and re-registration, which the registrar limits to three per
phone in ten minutes).
"""

from __future__ import annotations

from storage import outq
from storage.group_missed import fold_missed
from storage.keys import group_bytes, member_key, node_bytes, phone_bytes, prefix_end
from storage.kv import Txn
from storage.records import pack, unpack

__all__ = ["put_group", "unfold", "apply_missed", "folded"]


def put_group(txn: Txn, dest: str, item: tuple, high: int | None = None) -> None:
    """Queue a ``group`` item for ``dest``, or fold it (module doc) when
    ``high`` items are held for ``dest`` or the pair has a fold already."""
    nb = node_bytes(dest)
    meta = outq._meta(txn, nb)
    _, member, kind, value, group, name, by = outq._check_item(item)
    key = nb + b"\x00" + member_key(phone_bytes(member), group_bytes(group))
    raw = txn.get("outq_missed", key) if meta.get("folded") else None
    if high is None or (raw is None and meta["held"] < high):
        outq.put(txn, dest, item)
        return
    fold = unpack(raw) if raw is not None else {"count": 0}
    fold.update(count=fold["count"] + (kind == "message"), items=fold.get("items", 0) + 1,
                name=name, by=by, ts=unpack(value)["ts"])
    txn.put("outq_missed", key, pack(fold))
    if raw is None:
        meta["folded"] = meta.get("folded", 0) + 1
    meta["folded_items"] = meta.get("folded_items", 0) + 1
    txn.put("outq_meta", nb, pack(meta))


def unfold(txn: Txn, dest: str, nb: bytes, high: int) -> None:
    """Queue the folds for ``dest`` (as ``missed`` items) while there is room."""
    meta = outq._meta(txn, nb)
    room = high - meta["held"]
    if room <= 0 or not meta.get("folded"):
        return
    start = nb + b"\x00"
    done = list(txn.range("outq_missed", start, prefix_end(start), limit=room))
    items = 0
    for key, raw in done:
        member, group = key[len(start):].decode().split("\x00")
        fold = unpack(raw)
        items += fold.get("items", 0)
        txn.delete("outq_missed", key)
        outq.put(txn, dest, ("missed", member, group, fold["name"], fold["by"], fold["count"],
                   fold["ts"]))
    meta = outq._meta(txn, nb)
    meta["folded"] -= len(done)
    meta["folded_items"] = max(0, meta.get("folded_items", 0) - items)
    txn.put("outq_meta", nb, pack(meta))


def folded(txn: Txn) -> dict[str, int]:
    """Group items folded per destination node (those with any fold), from
    ``outq_meta``: what waits past ``high`` beside the items queued
    (``outq.pending``); each fold is queued as one item when room comes
    back. Folds written before ``folded_items`` was kept count as 0."""
    held = {}
    for key, raw in txn.range("outq_meta", b"\x01"):     # past outq's epoch key
        meta = unpack(raw)
        if meta.get("folded"):
            held[key.decode()] = meta.get("folded_items", 0)
    return held


def apply_missed(txn: Txn, metas, item: tuple, nudges: list) -> None:
    """Group items the origin folded (its queue here was full): into the
    member's MISSED for the group, as a fold here would."""
    _, user, group, name, by, count, ts = item
    ub = outq._known(metas, user, "a group's missed items")
    if ub is None:
        return
    node = metas.node_of(ub)
    if node is not None:                        # moved on since: queue it on
        outq.put(txn, node, item)
        return
    member, marker, old = fold_missed(txn, metas, group, name, user, by, count, ts)
    if old is not None:
        nudges[:] = [n for n in nudges if n[0] != user or n[1].seq != old]
    nudges.append((member, marker))
