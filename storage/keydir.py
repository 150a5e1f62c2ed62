"""Key directory: each user's published end-to-end key bundle, the one-time
prekeys the directory hands out, and who must hear when a user's keys change.

The server never parses or checks a bundle here: ``transport`` verifies its
signatures and splits it before the session calls in (crypto stays in
``transport/``); storage keeps opaque bytes.

Transactions (plain functions over a ``Txn``) and their ops:

- ``publish_keys`` / ``PublishKeys``: the device's bundle, after checking
  that its identity is the key the account registered (``WrongIdentity``);
  replaces the signed part, adds the one-time prekeys (an id already held
  is overwritten; an id at or below ``spent``, the highest id ever handed
  out, is ignored: so a resent publish is harmless), refuses to go past
  ``cap`` held (``KeysFull``, nothing stored). Returns how many are held.
- ``fetch_keys`` / ``FetchKeys``: a user's signed part, the device id, and
  the lowest-numbered one-time prekey, deleted in the same transaction that
  raises ``spent`` to its id, so no two fetchers ever get the same one, not
  even after a resent publish. ``NoKeys`` if nothing is published.
  With ``one_time`` False none is handed out (the fetcher only asks which
  device is current, for a session the other side began).
  The fetch also records the two users as *key contacts* of each other.
- ``count_keys``: one-time prekeys held (None: no bundle), a read.
- ``device_replaced``: called by ``accounts.register_device`` in the
  transaction that replaces a device: deletes the old bundle and prekeys and
  appends a ``key_changed`` item to the inbox of every key contact.

Why ``spent`` is enough to refuse a re-handed prekey: a device numbers its
prekeys from one increasing counter (docs/e2e.md), and fetches pop the
lowest id, so every id at or below the highest one handed out was either
handed out or is a resend of one that was. ``device_replaced`` drops the
record with its ``spent``: the new device counts afresh.

Who hears of a key change, and why: the *key contacts* of a user are
everyone who fetched the user's bundle and everyone whose bundle the user
fetched. An end-to-end session always starts with one side fetching the
other's bundle, so this is exactly the set of users holding a session with
the old key, in either direction: the ones whose next message would be
encrypted for a device that no longer exists, or who would otherwise accept
a new identity without a word. Contacts are kept after a change (a later
change is announced too). Notices count with receipts toward the inbox
counters (never toward the offline cap: refusing one would lose it).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from storage.errors import InvalidArgument, StorageError, UnknownUser
from storage.keys import SEP, phone_bytes, prefix_end
from storage.kv import Txn
from storage.mailbox import _Metas
from storage.metas import Remote
from storage.records import KeyNotice, pack, pack_key_notice, quick_pickle, unpack

__all__ = [
    "publish_keys", "fetch_keys", "count_keys", "device_replaced", "key_contacts",
    "add_key_contact", "AddKeyContact",
    "PublishKeys", "FetchKeys", "FetchedKeys", "RoutedNotice",
    "NoKeys", "WrongIdentity", "KeysFull", "MAX_HELD",
]

MAX_HELD = 500                          # one-time prekeys the directory holds per user
_U32 = struct.Struct(">I")


class NoKeys(StorageError):
    """The user has not published a key bundle (or replaced the device since)."""

    def __init__(self, phone: str):
        super().__init__(f"{phone} has no published keys")
        self.phone = phone


class WrongIdentity(StorageError):
    """A bundle whose identity is not the key this account registered."""


class KeysFull(StorageError):
    """Publishing would hold more one-time prekeys than the cap."""

    def __init__(self, held: int, adding: int, cap: int):
        super().__init__(f"{held} one-time prekeys held + {adding} new > {cap}")
        self.held, self.adding, self.cap = held, adding, cap


@quick_pickle
@dataclass(frozen=True, slots=True)
class FetchedKeys:
    """``signed``: the bundle without one-time prekeys, as published;
    ``one_time``: ``(id, key)`` handed out (now deleted), or None."""
    device: int
    signed: bytes
    one_time: tuple[int, bytes] | None


@quick_pickle
@dataclass(frozen=True, slots=True)
class RoutedNotice:
    """A ``key_changed`` item just appended to user ``to``'s inbox at ``seq``."""
    to: str
    seq: int
    notice: KeyNotice


def _otk_key(user: bytes, prekey_id: int) -> bytes:
    return user + SEP + _U32.pack(prekey_id)


def _account(txn: Txn, user: bytes, phone: str) -> dict:
    raw = txn.get("users", user)
    if raw is None:
        raise UnknownUser(phone)
    return unpack(raw)


def publish_keys(txn: Txn, user: str, identity: bytes, signed: bytes,
                 one_time: tuple[tuple[int, bytes], ...], cap: int = MAX_HELD) -> int:
    ub = phone_bytes(user)
    account = _account(txn, ub, user)
    if account["key"] != identity:
        raise WrongIdentity("the bundle's identity is not this device's registered key")
    if type(signed) is not bytes or not signed:
        raise InvalidArgument("the signed part must be bytes")
    raw = txn.get("keys", ub)
    record = {"otk": 0, "spent": 0} if raw is None else unpack(raw)
    held, spent = record["otk"], record.get("spent", 0)
    kept = [(i, k) for i, k in one_time if i > spent]
    new = [i for i, _ in kept if txn.get("otk", _otk_key(ub, i)) is None]
    if held + len(new) > cap:
        raise KeysFull(held, len(new), cap)
    for prekey_id, key in kept:
        txn.put("otk", _otk_key(ub, prekey_id), key)
    held += len(new)
    txn.put("keys", ub, pack({"device": account["device"], "signed": signed,
                              "otk": held, "spent": spent}))
    return held


def fetch_keys(txn: Txn, fetcher: str, user: str, one_time: bool = True) -> FetchedKeys:
    fb, ub = phone_bytes(fetcher), phone_bytes(user)
    if fb == ub:
        raise InvalidArgument("fetch your own keys from your device, not the directory")
    _account(txn, ub, user)
    raw = txn.get("keys", ub)
    if raw is None:
        raise NoKeys(user)
    record = unpack(raw)
    handed = None
    found = list(txn.range("otk", ub + SEP, prefix_end(ub + SEP), limit=1)) if one_time else ()
    if found:
        key, value = found[0]
        handed = (_U32.unpack_from(key, len(key) - 4)[0], bytes(value))
        txn.delete("otk", key)
        record["otk"] -= 1
        record["spent"] = max(record.get("spent", 0), handed[0])
        txn.put("keys", ub, pack(record))
    txn.put("key_contacts", ub + SEP + fb, b"")
    txn.put("key_contacts", fb + SEP + ub, b"")
    return FetchedKeys(record["device"], record["signed"], handed)


def add_key_contact(txn: Txn, phone: str, contact: str) -> None:
    """Tell ``contact`` when ``phone``'s keys change: the half of a fetch's
    contact rows that belongs on ``phone``'s home, when ``phone`` fetched
    the keys of a user homed on another node (docs/cluster.md)."""
    txn.put("key_contacts", phone_bytes(phone) + SEP + phone_bytes(contact), b"")


def count_keys(txn: Txn, user: str) -> int | None:
    raw = txn.get("keys", phone_bytes(user))
    return None if raw is None else unpack(raw)["otk"]


def key_contacts(txn: Txn, user: str) -> list[str]:
    ub = phone_bytes(user)
    return [k[len(ub) + 1:].decode() for k, _ in
            txn.range("key_contacts", ub + SEP, prefix_end(ub + SEP))]


def device_replaced(txn: Txn, user: str, device: int, ts_ms: int,
                    remote: Remote | None = None) -> list[RoutedNotice]:
    """The account now has a new device: forget its keys, tell its contacts
    (a contact homed on another node through the outq: seq 0 here)."""
    ub = phone_bytes(user)
    txn.delete("keys", ub)
    stale = [k for k, _ in txn.range("otk", ub + SEP, prefix_end(ub + SEP))]
    for key in stale:
        txn.delete("otk", key)
    contacts = key_contacts(txn, user)
    if not contacts:
        return []
    metas = _Metas.of(txn, remote)
    notice = KeyNotice(user, device, ts_ms)
    value = pack_key_notice(notice)
    routed = []
    for contact in contacts:
        cb = phone_bytes(contact)
        if metas.node_of(cb) is None and txn.get("users", cb) is None:
            continue
        routed.append(RoutedNotice(contact, metas.append_packed(cb, False, value), notice))
    metas.save()
    return routed


# -- ops ------------------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class PublishKeys:
    user: str
    identity: bytes
    signed: bytes
    one_time: tuple[tuple[int, bytes], ...]
    cap: int = MAX_HELD

    def __call__(self, txn: Txn) -> int:
        return publish_keys(txn, self.user, self.identity, self.signed, self.one_time, self.cap)


@quick_pickle
@dataclass(frozen=True, slots=True)
class AddKeyContact:
    phone: str
    contact: str

    def __call__(self, txn: Txn) -> None:
        add_key_contact(txn, self.phone, self.contact)


@quick_pickle
@dataclass(frozen=True, slots=True)
class FetchKeys:
    fetcher: str
    user: str
    one_time: bool = True

    def __call__(self, txn: Txn) -> FetchedKeys:
        return fetch_keys(txn, self.fetcher, self.user, self.one_time)
