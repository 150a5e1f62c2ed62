"""Records the domain transactions return, and their value encodings.

Every record is a frozen dataclass. Values are msgpack maps with short,
stable field names (docs/storage.md lists them); ``pack_*``/``unpack_*`` are
the only code that knows those names. Times are integer milliseconds since
the Unix epoch throughout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import msgpack

__all__ = [
    "Account", "CodeCheck", "CodeStatus", "Confirmation", "InboxMeta", "Message", "Receipt",
    "InboxItem", "Stored", "RoutedReceipt", "pack", "unpack",
    "pack_item", "pack_message", "unpack_item", "KeyNotice", "pack_key_notice",
]

CodeStatus = Literal["ok", "bad", "expired", "missing"]
ReceiptKind = Literal["delivered", "read"]


# One Packer for the module (``packb`` builds a new one per call, ~2x the
# cost). ``pack`` runs in C without calling back into Python (no ``default``
# hook), so the GIL makes sharing it between the writer thread and the
# event loop's thread safe.
pack = msgpack.Packer(use_bin_type=True, datetime=False).pack


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False)


# -- accounts -------------------------------------------------------------------
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


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """The outcome of ``check_code``: ``status`` is ``"ok"`` (the code is
    consumed), ``"bad"``, ``"expired"`` (the code is dropped) or
    ``"missing"`` (no pending code); ``attempts`` counts checks of the
    current code, this one included, for the caller's rate limit."""
    status: CodeStatus
    attempts: int


@dataclass(frozen=True, slots=True)
class Confirmation:
    """The outcome of ``confirm_device``: the new ``device_id`` when the code
    was right (``check.status == "ok"``), else None."""
    device_id: int | None
    check: CodeCheck
    notices: tuple = ()     # keydir.RoutedNotice: key contacts told of the new device


# -- inbox ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class InboxMeta:
    """Per-user inbox bookkeeping (``inbox_meta``): the next sequence number
    to assign and exact counts of the items held. ``next_seq`` never goes
    back, even when the inbox empties."""
    next_seq: int = 1
    messages: int = 0
    receipts: int = 0

    @property
    def count(self) -> int:
        return self.messages + self.receipts


@dataclass(frozen=True, slots=True)
class Message:
    """A chat message owed to its recipient. ``id`` is the sender's client id;
    (``sender``, ``id``) is unique."""
    id: str
    sender: str
    ts: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Receipt:
    """A receipt owed to a message's sender: user ``by`` got (``delivered``)
    or read (``read``) the sender's message ``id`` at ``ts``."""
    kind: ReceiptKind
    id: str
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One item of a user's inbox, in ``seq`` order; ``kind`` is
    ``"message"`` (payload a ``Message``) or ``"receipt"`` (a ``Receipt``)."""
    seq: int
    kind: Literal["message", "receipt"]
    payload: Message | Receipt


@dataclass(frozen=True, slots=True)
class Stored:
    """The result of ``store_message``: the message's seq in the recipient's
    inbox and its server timestamp. ``duplicate`` is true when the sender had
    already stored this client id; seq and ts are then the original ones."""
    seq: int
    ts_ms: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class RoutedReceipt:
    """A receipt just appended to user ``to``'s inbox at ``seq``; the caller
    nudges ``to``'s actor with it."""
    to: str
    seq: int
    receipt: Receipt


# -- inbox item values ----------------------------------------------------------
def pack_message(id: str, sender: str, ts: int, body: bytes, media: tuple[str, ...] = ()) -> bytes:
    """``pack_item(Message(id, sender, ts, body))`` without the record;
    ``media``: the blob hashes it refers to (released when it is acked)."""
    if not media:
        return pack({"type": "message", "id": id, "from": sender, "ts": ts, "body": body})
    return pack({"type": "message", "id": id, "from": sender, "ts": ts, "body": body,
                 "media": list(media)})


def pack_item(payload: Message | Receipt) -> bytes:
    if isinstance(payload, Message):
        return pack_message(payload.id, payload.sender, payload.ts, payload.body)
    return pack({"type": "receipt", "kind": payload.kind, "id": payload.id,
                 "by": payload.by, "ts": payload.ts})


def unpack_item(seq: int, raw: bytes) -> InboxItem:
    v = unpack(raw)
    if v["type"] == "message":
        return InboxItem(seq, "message", Message(v["id"], v["from"], v["ts"], v["body"]))
    if v["type"] == "key_changed":
        return InboxItem(seq, "key_changed", KeyNotice(v["user"], v["device"], v["ts"]))
    return InboxItem(seq, "receipt", Receipt(v["kind"], v["id"], v["by"], v["ts"]))


# -- key directory --------------------------------------------------------------
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
