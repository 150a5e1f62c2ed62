"""The ``missed`` marker: what a member whose inbox is full gets instead
of a group's message or event (docs/storage.md, storage/groups.py "Full
inboxes").

A member holds at most one unread marker per group. ``fold_missed`` folds
one more message (or an event: ``messages`` 0) into it: the unread marker
is replaced by a new one carrying the running count, so an online member
is pushed the new count (a count raised in place would never reach a
member already pushed that seq), or a first one is appended. Used on the
group's node (``storage.groups``) and, for a member homed on another node,
at that node (``storage.outq``, ``storage.outq_fold``).
"""

from __future__ import annotations

from typing import Any

from storage.keys import group_bytes, inbox_key, member_key, phone_bytes
from storage.kv import Txn
from storage.records import GroupEvent, InboxItem, pack, pack_item, unpack

__all__ = ["fold_missed"]


def fold_missed(txn: Txn, metas: Any, group: str, name: str, member: str, by: str,
                messages: int, ts: int) -> tuple[str, InboxItem, int | None]:
    """Fold into ``member``'s ``missed`` marker for ``group``: the unread
    one is replaced by a new one carrying the running count (so it is
    pushed), or a first one is appended. Returns the new marker and the seq
    of the one it replaced (None if none). Also used where a member homed
    on another node is capped (storage/outq.py)."""
    mb = phone_bytes(member)
    key = member_key(mb, group_bytes(group))
    count, replaced = messages, None
    raw = txn.get("group_missed", key)
    if raw is not None:
        old_seq = unpack(raw)
        old = txn.get("inbox", inbox_key(mb, old_seq))
        if old is not None:             # still unread
            count += unpack(old)["count"]
            metas.delete_event(mb, old_seq)
            replaced = old_seq
    payload = GroupEvent(group, "missed", by, (), name, ts, count)
    seq = metas.append_event(mb, pack_item(payload))
    txn.put("group_missed", key, pack(seq))
    return member, InboxItem(seq, "group", payload), replaced
