"""Groups: the group record, its membership changes and its fan-out, as
transactions over a ``Txn`` (the group actor's storage side).

``GroupBatch`` runs one group's queued requests as ONE op, in order, each
with its own result, the way ``storage.batch.UserBatch`` does for a user:
the record is read once, written once, and every inbox item a request
produces (the fanned-out message, the system events announcing a change) is
appended in the same transaction as the change itself. So a member sees a
change exactly when it is committed, and an offline member finds it all in
the inbox on return, in order. Every refusal is raised before the request
writes anything (``StorageError``: it fails alone); any other exception
rolls the whole op back.

Requests are plain tuples, the first item saying what and the second who
asks (the storage layer knows nothing of actors):

- ``(CREATE, user, name, members)`` -> the group id (the group must be in
  ``user``'s namespace: ``user/key``; a create of an existing group of the
  same creator is a duplicate and changes nothing)
- ``(ADD, user, users)``, ``(REMOVE, user, users)``, ``(LEAVE, user)``,
  ``(ADMIN, user, target, is_admin)``, ``(RENAME, user, name)`` -> the
  group's version after it (already true: no change, no event)
- ``(SEND, user, client_id, body)`` -> the commit time; idempotent on
  (user, client_id), which shares ``dedup`` with 1:1 messages

Rules: only members send; only admins add, remove, promote, demote and
rename; anyone leaves; the creator is the first admin; when the last admin
goes, the oldest remaining member (first in join order) is promoted, with
its own ``promoted`` event; the last admin cannot demote itself.

Full inboxes. A member whose inbox holds ``cap`` messages does not get a
group message, and a member whose inbox holds ``cap`` group items (events
and markers, ``inbox_meta.evts``) does not get a system event: either is
folded into the member's one ``missed`` marker for the group, so nothing
is lost silently and a group is never blocked by one member. The marker's
``count`` says how many messages it stands for (0: only events were
missed; the group's state is one GROUP_INFO away; ``storage.group_missed``
replaces the marker at each fold). A superseded marker never reaches the
nudges (``Outcome.appended``). Joining takes an event slot:
a CREATE or ADD naming a user whose inbox holds ``cap`` group items is
refused (``EventsFull``, nothing written), so markers stay one per group
the member joined while it had room, and no one can grow another user's
inbox without bound by making groups around them. Events never count
toward the message cap, nor messages toward the event cap.

A member homed on another node (``remote``, as in ``storage.metas``) gets
its items through that node's outbound queue (``storage.outq``); its
inbox_meta is not here, so none of the caps above is applied to it here.
Past ``outq_high`` items queued for that node, its items fold into one
MISSED per member and group there (``storage.outq_fold``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable

from storage.errors import (DuplicateId, EventsFull, GroupFull, InvalidArgument, NotAdmin,
                            NotMember, StorageError, UnknownGroup)
from storage.keys import (client_id_bytes, dedup_key, dedup_ttl_key, group_bytes,
                          member_key, phone_bytes, prefix_end, u64)
from storage.group_missed import fold_missed
from storage.kv import Txn
from storage.mailbox import _Metas
from storage.outq_fold import put_group
from storage.records import (GroupEvent, GroupRecord, InboxItem, Message, pack, pack_item,
                             pack_message, quick_pickle, unpack)

__all__ = ["GroupBatch", "Outcome", "get_group", "groups_of", "group_id",
           "CREATE", "ADD", "REMOVE", "LEAVE", "ADMIN", "RENAME", "SEND", "MAX_NAME"]

CREATE, ADD, REMOVE, LEAVE, ADMIN, RENAME, SEND = (
    "create", "add", "remove", "leave", "admin", "rename", "send")
MAX_NAME = 100


def group_id(creator: str, key: str) -> str:
    """The id of the group ``creator`` creates under ``key``."""
    return f"{creator}/{key}"


@quick_pickle
@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's result: ``value`` (the ACK's), the inbox items it
    appended as ``(user, InboxItem)`` in append order (to nudge), and
    whether it was a duplicate (nothing written)."""
    value: Any
    appended: tuple[tuple[str, InboxItem], ...] = ()
    duplicate: bool = False


class _Group:
    """One op's view of a group: the record as a dict, written back once."""

    def __init__(self, txn: Txn, group: str, ts: int, cap: int, group_cap: int,
                 remote: Callable[[str], str | None] | None = None,
                 outq_high: int | None = None):
        self.txn, self.id, self.gb = txn, group, group_bytes(group)
        self.ts, self.cap, self.group_cap, self.outq_high = ts, cap, group_cap, outq_high
        self.metas = _Metas.of(txn, remote)
        raw = txn.get("groups", self.gb)
        self.g: dict | None = None if raw is None else unpack(raw)
        self.changed = False
        self.reached = False                # every member's items can be placed (``reach``)
        self.superseded: set[tuple[str, int]] = set()   # (member, seq) of markers replaced

    # -- checks (raise before any write) -------------------------------------------
    def need(self, user: str) -> dict:
        phone_bytes(user)
        if self.g is None:
            raise UnknownGroup(self.id)
        if user not in self.g["members"]:
            raise NotMember(self.id, user)
        self.reach()
        return self.g

    def reach(self) -> None:
        """In a cluster, ``HomeUnknown`` unless every member's items can be
        placed (``Metas.reachable``): asked before an op's first write, as
        every refusal is. The map here may lag the directory (a restart)."""
        if self.metas.remote is not None and not self.reached:
            for m in self.g["members"]:
                self.metas.reachable(phone_bytes(m))
            self.reached = True             # members joining later passed require_user

    def need_admin(self, user: str) -> dict:
        g = self.need(user)
        if user not in g["admins"]:
            raise NotAdmin(self.id, user)
        return g

    def users(self, users: Any) -> list[str]:
        if type(users) not in (list, tuple):
            raise InvalidArgument("users must be a list")
        for u in users:
            phone_bytes(u)
        return list(dict.fromkeys(users))

    def room_to_join(self, users: list[str]) -> None:
        """Refuse a join for whom the first event would not fit (module doc)."""
        for u in users:
            ub = phone_bytes(u)
            if self.metas.node_of(ub) is not None:
                continue                    # homed elsewhere: its node's cap (not applied yet)
            held = self.metas[ub]["evts"]
            if held >= self.cap:
                raise EventsFull(u, held, self.cap)

    # -- writes -----------------------------------------------------------------------
    def announce(self, event: str, by: str, users: list[str], to: list[str]) -> tuple:
        """Append one system event to the inbox of each user in ``to``; a
        user holding ``cap`` group items gets it folded into its marker."""
        payload = GroupEvent(self.id, event, by, tuple(users), self.g["name"], self.ts)
        value = pack_item(payload)
        metas, cap = self.metas, self.cap
        told: list[tuple[str, InboxItem]] = []
        for u in to:
            ub = phone_bytes(u)
            if metas.node_of(ub) is not None:   # queued; capped at its home
                self.queue(u, "event", value, by)
            elif metas[ub]["evts"] >= cap:
                told.append(self.missed(u, by, 0))
            else:
                told.append((u, InboxItem(metas.append_event(ub, value), "group", payload)))
        return tuple(told)

    def missed(self, member: str, by: str, messages: int) -> tuple[str, InboxItem]:
        member, item, old = fold_missed(self.txn, self.metas, self.id, self.g["name"], member,
                                        by, messages, self.ts)
        if old is not None:
            self.superseded.add((member, old))
        return member, item

    def queue(self, member: str, kind: str, value: bytes, by: str) -> None:
        """A group item for a member homed on another node: queued with what
        that node needs to apply its own caps (``outq._apply_group``), or,
        past ``outq_high`` items queued for it, folded (``storage.outq_fold``)."""
        put_group(self.txn, self.metas.node_of(phone_bytes(member)),
                  ("group", member, kind, value, self.id, self.g["name"], by), self.outq_high)

    def bump(self) -> int:
        self.g["v"] += 1
        self.changed = True
        return self.g["v"]

    def join(self, users: list[str]) -> None:
        """Add ``users``, joining at the version this change makes (called
        after its ``bump``): a member is owed only the messages sent since,
        and reads only those (``storage.mailbox.store_read``)."""
        self.g["members"].extend(users)
        joined = u64(self.g["v"])
        for u in users:
            self.txn.put("user_groups", member_key(phone_bytes(u), self.gb), joined)

    def drop(self, users: list[str], by: str) -> tuple:
        """Remove ``users``; promote the oldest member if no admin is left."""
        gone = set(users)
        g = self.g
        g["members"] = [m for m in g["members"] if m not in gone]
        g["admins"] = [a for a in g["admins"] if a not in gone]
        for u in users:
            self.txn.delete("user_groups", member_key(phone_bytes(u), self.gb))
        if g["admins"] or not g["members"]:
            return ()
        oldest = g["members"][0]
        g["admins"].append(oldest)
        return self.announce("promoted", by, [oldest], g["members"])

    def record(self) -> GroupRecord | None:
        g = self.g
        if g is None:
            return None
        return GroupRecord(self.id, g["name"], g["by"], g["at"], tuple(g["admins"]),
                           tuple(g["members"]), g["v"])


def _name(name: Any) -> str:
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise InvalidArgument(f"a group name is 1..{MAX_NAME} characters")
    return name


# -- the requests ------------------------------------------------------------------
def _create(gr: _Group, user: str, name: Any, members: Any) -> Outcome:
    phone_bytes(user)
    if not gr.id.startswith(user + "/"):
        raise InvalidArgument(f"{user} cannot create {gr.id}")
    if gr.g is not None:
        return Outcome(gr.id, duplicate=True)
    name = _name(name)
    members = [user] + [m for m in gr.users(members) if m != user]
    if len(members) > gr.group_cap:
        raise GroupFull(gr.id, gr.group_cap)
    for m in members[1:]:
        gr.metas.require_user(phone_bytes(m), m)
    gr.room_to_join(members)
    gr.g = {"name": name, "by": user, "at": gr.ts, "admins": [user], "members": [], "v": 0}
    gr.bump()
    gr.join(members)
    return Outcome(gr.id, gr.announce("created", user, members[1:], members))


def _add(gr: _Group, user: str, users: Any) -> Outcome:
    g = gr.need_admin(user)
    new = [u for u in gr.users(users) if u not in g["members"]]
    if len(g["members"]) + len(new) > gr.group_cap:
        raise GroupFull(gr.id, gr.group_cap)
    for u in new:
        gr.metas.require_user(phone_bytes(u), u)
    gr.room_to_join(new)
    if not new:
        return Outcome(g["v"])
    gr.bump()
    gr.join(new)
    return Outcome(g["v"], gr.announce("added", user, new, g["members"]))


def _remove(gr: _Group, user: str, users: Any) -> Outcome:
    g = gr.need_admin(user)
    gone = [u for u in gr.users(users) if u in g["members"]]
    if not gone:
        return Outcome(g["v"])
    told = gr.announce("removed", user, gone, list(g["members"]))
    told += gr.drop(gone, user)
    gr.bump()
    return Outcome(g["v"], told)


def _leave(gr: _Group, user: str) -> Outcome:
    phone_bytes(user)
    if gr.g is None:
        raise UnknownGroup(gr.id)
    g = gr.g
    if user not in g["members"]:
        return Outcome(g["v"])              # already out: a resent LEAVE
    gr.reach()
    told = gr.announce("left", user, [user], list(g["members"]))
    told += gr.drop([user], user)
    gr.bump()
    return Outcome(g["v"], told)


def _admin(gr: _Group, user: str, target: Any, is_admin: Any) -> Outcome:
    g = gr.need_admin(user)
    phone_bytes(target)
    if type(is_admin) is not bool:
        raise InvalidArgument("is_admin must be a bool")
    if target not in g["members"]:
        raise NotMember(gr.id, target)
    if (target in g["admins"]) == is_admin:
        return Outcome(g["v"])
    if not is_admin and g["admins"] == [target]:
        raise InvalidArgument("a group keeps at least one admin: promote another first")
    if is_admin:
        g["admins"].append(target)
    else:
        g["admins"].remove(target)
    gr.bump()
    event = "promoted" if is_admin else "demoted"
    return Outcome(g["v"], gr.announce(event, user, [target], g["members"]))


def _rename(gr: _Group, user: str, name: Any) -> Outcome:
    g = gr.need_admin(user)
    name = _name(name)
    if name == g["name"]:
        return Outcome(g["v"])
    g["name"] = name
    gr.bump()
    return Outcome(g["v"], gr.announce("renamed", user, [], g["members"]))


def _send(gr: _Group, user: str, client_id: Any, body: Any) -> Outcome:
    txn, sb, cid = gr.txn, phone_bytes(user), client_id_bytes(client_id)
    if type(body) is not bytes:
        raise InvalidArgument("message body must be bytes")
    dk = dedup_key(sb, cid)
    raw = txn.get("dedup", dk)
    if raw is not None:                     # first: a resend is answered even if removed since
        first = unpack(raw)
        if first["to"] != gr.id:
            raise DuplicateId(user, client_id, first["to"], gr.id)
        return Outcome(first["ts"], duplicate=True)
    g = gr.need(user)
    ts, metas, cap = gr.ts, gr.metas, gr.cap
    message = Message(client_id, user, ts, body, gr.id)
    value = pack_message(client_id, user, ts, body, gr.id)
    appended, missed = [], []
    for m in g["members"]:
        if m == user:
            continue
        mb = phone_bytes(m)
        if metas.node_of(mb) is not None:   # queued; capped at its home
            gr.queue(m, "message", value, user)
            continue
        if metas[mb]["msgs"] >= cap:
            missed.append(m)
            continue
        appended.append((m, InboxItem(metas.append_packed(mb, True, value), "message", message)))
    for m in missed:
        appended.append(gr.missed(m, user, 1))
    record = {"to": gr.id, "seq": 0, "ts": ts, "v": g["v"]}
    if missed:                              # got a marker, not the message: nothing to READ
        record["missed"] = missed
    txn.put("dedup", dk, pack(record))
    txn.put("dedup_ttl", dedup_ttl_key(ts, dk), b"")
    return Outcome(ts, tuple(appended))


_RUN: dict[str, Callable[..., Outcome]] = {
    CREATE: _create, ADD: _add, REMOVE: _remove, LEAVE: _leave, ADMIN: _admin,
    RENAME: _rename, SEND: _send,
}


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention (storage.batch.UserBatch)
class GroupBatch:
    """One group's requests as one op: ``(results, record)``, a result
    ``(True, Outcome)`` or ``(False, StorageError)`` per request and the
    group record after them all (None if there is no such group)."""
    group: str
    requests: tuple[tuple, ...]
    ts_ms: int
    cap: int                # a member's offline cap (messages in its inbox)
    group_cap: int          # members per group
    remote: Callable[[str], str | None] | None = None   # storage.metas: who is homed elsewhere
    outq_high: int | None = None    # items queued for a node past which its members' fold

    def __call__(self, txn: Txn) -> tuple[list[tuple[bool, Any]], GroupRecord | None]:
        gr = _Group(txn, self.group, self.ts_ms, self.cap, self.group_cap, self.remote,
                    self.outq_high)
        results: list[tuple[bool, Any]] = []
        for request in self.requests:
            try:
                run = _RUN.get(request[0])
                if run is None:
                    raise InvalidArgument(f"unknown group request {request[0]!r}")
                results.append((True, run(gr, *request[1:])))
            except StorageError as refused:    # raised before any write: fails alone
                results.append((False, refused))
        if gr.changed:
            txn.put("groups", gr.gb, pack(gr.g))
        gr.metas.save()
        if gr.superseded:                   # a marker replaced later in this op: not to nudge
            gone = gr.superseded
            results = [(ok, replace(v, appended=tuple(
                (u, item) for u, item in v.appended if (u, item.seq) not in gone)))
                if ok else (ok, v) for ok, v in results]
        return results, gr.record()


# -- reads ---------------------------------------------------------------------------
def get_group(txn: Txn, group: str) -> GroupRecord | None:
    gb = group_bytes(group)
    raw = txn.get("groups", gb)
    if raw is None:
        return None
    g = unpack(raw)
    return GroupRecord(group, g["name"], g["by"], g["at"], tuple(g["admins"]),
                       tuple(g["members"]), g["v"])


def groups_of(txn: Txn, user: str, limit: int | None = 1000) -> list[str]:
    """The ids of the groups ``user`` is a member of, in id order."""
    prefix = member_key(phone_bytes(user), b"")
    return [k[len(prefix):].decode()
            for k, _ in txn.range("user_groups", prefix, prefix_end(prefix), limit=limit)]

