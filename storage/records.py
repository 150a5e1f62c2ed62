"""Records the domain transactions return, and their value encodings.

Every record is a frozen dataclass. Values are msgpack maps with short,
stable field names (docs/storage.md lists them); ``pack_*``/``unpack_*`` are
the only code that knows those names. Times are integer milliseconds since
the Unix epoch throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, Literal

import msgpack

__all__ = [
    "Account", "CodeCheck", "CodeStatus", "Confirmation", "InboxMeta", "Message", "Receipt",
    "InboxItem", "Stored", "RoutedReceipt", "GroupEvent", "GroupRecord", "pack", "unpack",
    "pack_item", "pack_message", "unpack_item", "unpack_tuple", "KeyNotice", "pack_key_notice",
]

CodeStatus = Literal["ok", "bad", "expired", "missing"]
ReceiptKind = Literal["delivered", "read", "failed"]


# One Packer for the module (``packb`` builds a new one per call, ~2x the
# cost). ``pack`` runs in C without calling back into Python (no ``default``
# hook), so the GIL makes sharing it between the writer thread and the
# event loop's thread safe.
pack = msgpack.Packer(use_bin_type=True, datetime=False).pack


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


def unpack_tuple(raw: bytes) -> Any:
    """``unpack`` with every array as a tuple (``storage.outq`` items)."""
    return msgpack.unpackb(raw, raw=False, use_list=False)


# -- accounts -------------------------------------------------------------------
def quick_pickle(cls: type) -> type:
    """Pickle ``cls`` as ``cls(*fields)``. Records cross processes in the
    mesh's batches (actors/cluster.py), and the default pickling of a slotted
    dataclass calls ``dataclasses.fields()`` for every object both ways: a
    quarter of a worker's Thespian thread under cross-worker load, and a
    fifth of its event loop with the LMDB writer in a process of its own
    (storage/kv_process.py), whose ops and results cross pickled."""
    names = [f.name for f in fields(cls)]
    if len(names) > 1:
        get = attrgetter(*names)
        cls.__reduce__ = lambda self: (cls, get(self))
    else:                                   # attrgetter of one name gives no tuple
        cls.__reduce__ = lambda self: (cls, tuple(getattr(self, n) for n in names))
    return cls


# HOT: the records made several times per message relayed (Message,
# Receipt, InboxItem, Stored, RoutedReceipt; and the ops UserBatch and
# GroupBatch, unpickled by the LMDB writer) are not ``frozen``: a frozen
# dataclass's __init__ sets each field through ``object.__setattr__``, ~3x
# the cost of a plain one (0.66 against 0.21 us for three fields, measured),
# and a worker builds ~10 of them per message, most unpickled from the LMDB
# writer's answers. They are still hashable (``unsafe_hash``) and nothing
# assigns to them: treat them as immutable.

@quick_pickle
@dataclass(frozen=True, slots=True)
class Account:
    """A registered phone number and its current device.

    ``device_id`` counts registrations (1 for the first); only the device
    holding ``verify_key`` (an Ed25519 verify key, 32 bytes) is valid.
    """
    phone: str
    device_id: int
    verify_key: bytes
    registered_at: int


@quick_pickle
@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The outcome of ``check_code``: ``status`` is ``"ok"`` (the code is
    consumed), ``"bad"``, ``"expired"`` (the code is dropped) or
    ``"missing"`` (no pending code); ``attempts`` counts checks of the
    current code, this one included, for the caller's rate limit."""
    status: CodeStatus
    attempts: int


@quick_pickle
@dataclass(frozen=True, slots=True)
class Confirmation:
    """The outcome of ``confirm_device``: the new ``device_id`` when the code
    was right (``check.status == "ok"``), else None."""
    device_id: int | None
    check: CodeCheck
    notices: tuple = ()     # keydir.RoutedNotice: key contacts told of the new device


# -- inbox ----------------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class InboxMeta:
    """Per-user inbox bookkeeping (``inbox_meta``): the next sequence number
    to assign and exact counts of the items held. ``next_seq`` never goes
    back, even when the inbox empties. ``events``: of the ``receipts`` (every
    item that is not a message), the group items, which have their own cap
    (storage/groups.py)."""
    next_seq: int = 1
    messages: int = 0
    receipts: int = 0
    events: int = 0

    @property
    def count(self) -> int:
        return self.messages + self.receipts


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention: see HOT
class Message:
    """A chat message owed to its recipient. ``id`` is the sender's client id;
    (``sender``, ``id``) is unique. ``group`` is the group it was sent to
    (None for a 1:1 message)."""
    id: str
    sender: str
    ts: int
    body: bytes
    group: str | None = None


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention: see HOT
class Receipt:
    """A receipt owed to a message's sender: user ``by`` got (``delivered``)
    or read (``read``) the sender's message ``id`` at ``ts``; ``group`` when
    that message went to a group (one receipt per member). ``failed``: the
    sender's node accepted the message (the sender had its ack) but the
    node where ``by`` is homed refused it: ``by``'s inbox was full or there
    is no such user (``storage.outq``); ``ts`` is the message's. An
    explicit, asynchronous refusal, never a silent drop."""
    kind: ReceiptKind
    id: str
    by: str
    ts: int
    group: str | None = None


@quick_pickle
@dataclass(frozen=True, slots=True)
class GroupEvent:
    """A system message of a group, owed to a member: ``event`` is
    ``created``, ``added``, ``removed``, ``left``, ``promoted``, ``demoted``,
    ``renamed`` (``by`` did it to ``users``; ``name`` is the group's name
    after it) or ``missed`` (this member's inbox was full: ``count`` group
    messages were not stored for them, the last from ``by``)."""
    group: str
    event: str
    by: str
    users: tuple[str, ...]
    name: str
    ts: int
    count: int = 0


@quick_pickle
@dataclass(frozen=True, slots=True)
class GroupRecord:
    """A group as stored: ``members`` in join order (oldest first), which is
    the order an admin is chosen in when the last one leaves; ``version``
    counts committed changes."""
    id: str
    name: str
    created_by: str
    created_at: int
    admins: tuple[str, ...]
    members: tuple[str, ...]
    version: int


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention: see HOT
class InboxItem:
    """One item of a user's inbox, in ``seq`` order; ``kind`` is
    ``"message"`` (payload a ``Message``), ``"receipt"`` (a ``Receipt``) or
    ``"group"`` (a ``GroupEvent``)."""
    seq: int
    kind: Literal["message", "receipt", "group"]
    payload: Message | Receipt | GroupEvent


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention: see HOT
class Stored:
    """The result of ``store_message``: the message's seq in the recipient's
    inbox and its server timestamp. ``duplicate`` is true when the sender had
    already stored this client id; seq and ts are then the original ones."""
    seq: int
    ts_ms: int
    duplicate: bool = False


@quick_pickle
@dataclass(slots=True, unsafe_hash=True)    # immutable by convention: see HOT
class RoutedReceipt:
    """A receipt just appended to user ``to``'s inbox at ``seq``; the caller
    nudges ``to``'s actor with it."""
    to: str
    seq: int
    receipt: Receipt


# -- inbox item values ----------------------------------------------------------
def pack_message(id: str, sender: str, ts: int, body: bytes, group: str | None = None,
                 media: tuple[str, ...] = (), node: str | None = None) -> bytes:
    """``pack_item(Message(id, sender, ts, body, group))`` without the record;
    ``media``: the blob hashes it refers to (released when it is acked);
    ``node``: the node it was shipped from (``storage.outq``), where its
    receipts go if the home map here does not know the sender yet."""
    if group is None and not media and node is None:
        return pack({"type": "message", "id": id, "from": sender, "ts": ts, "body": body})
    value = {"type": "message", "id": id, "from": sender, "ts": ts, "body": body}
    if group is not None:
        value["group"] = group
    if media:
        value["media"] = list(media)
    if node is not None:
        value["node"] = node
    return pack(value)


def pack_item(payload: Message | Receipt | GroupEvent) -> bytes:
    if isinstance(payload, Message):
        return pack_message(payload.id, payload.sender, payload.ts, payload.body, payload.group)
    if isinstance(payload, GroupEvent):
        return pack({"type": "group", "group": payload.group, "ev": payload.event,
                     "by": payload.by, "users": list(payload.users), "name": payload.name,
                     "ts": payload.ts, "count": payload.count})
    value = {"type": "receipt", "kind": payload.kind, "id": payload.id,
             "by": payload.by, "ts": payload.ts}
    if payload.group is not None:
        value["group"] = payload.group
    return pack(value)


def unpack_item(seq: int, raw: bytes) -> InboxItem:
    v = unpack(raw)
    kind = v["type"]
    if kind == "message":
        return InboxItem(seq, "message",
                         Message(v["id"], v["from"], v["ts"], v["body"], v.get("group")))
    if kind == "key_changed":
        return InboxItem(seq, "key_changed", KeyNotice(v["user"], v["device"], v["ts"]))
    if kind == "group":
        return InboxItem(seq, "group", GroupEvent(v["group"], v["ev"], v["by"], tuple(v["users"]),
                                                  v["name"], v["ts"], v["count"]))
    return InboxItem(seq, "receipt", Receipt(v["kind"], v["id"], v["by"], v["ts"], v.get("group")))


# -- key directory --------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class KeyNotice:
    """``user`` registered a new device (``device``) at ``ts``: its identity
    key changed. An inbox item of kind ``"key_changed"`` (storage.keydir)."""
    user: str
    device: int
    ts: int


def pack_key_notice(notice: KeyNotice) -> bytes:
    return pack({"type": "key_changed", "user": notice.user, "device": notice.device,
                 "ts": notice.ts})
