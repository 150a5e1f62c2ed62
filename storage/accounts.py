"""Accounts: registration codes and the device registered for a phone.

Transactions (plain functions over a ``Txn``) and their ops (frozen
dataclasses to ``submit``):

- ``put_code`` / ``PutCode``: store a pending one-time code (hashed) with its
  expiry, resetting the attempts counter;
- ``check_code`` / ``CheckCode``: compare a code, counting the attempt;
  ``ok`` consumes the code, ``expired`` drops it (the caller rate-limits
  with ``CodeCheck.attempts``);
- ``register_device`` / ``RegisterDevice``: (re)register a phone with a new
  device key; the device id goes up by one and the previous key stops being
  valid at once;
- ``confirm_device`` / ``ConfirmDevice``: both in ONE transaction: check the
  code (given as its hash) and, if right, register the device; a wrong code
  is answered, not raised, so its attempt is counted (``storage.api`` turns
  it into ``BadCode`` for the caller);
- reads: ``get_account``; ``stale_device``, the check of a SEND that
  names the recipient's device (``storage.mailbox.store_message`` makes it
  again in its transaction).

Codes are stored hashed (``hash_code(phone, code)``, SHA-256 of both, is the
hash ``check_code`` expects; ``confirm_device`` takes whatever hash the
caller stored), so the database never holds a usable code; with 6-digit
codes this hides them only from casual reading, which is why codes are
short-lived and attempts count.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from storage import keydir
from storage.errors import InvalidArgument
from storage.keys import client_id_bytes, dedup_key, phone_bytes
from storage.kv import Txn
from storage.metas import current_device
from storage.records import Account, CodeCheck, Confirmation, pack, quick_pickle, unpack

__all__ = [
    "hash_code", "put_code", "check_code", "confirm_device", "register_device",
    "get_account", "stale_device", "PutCode", "CheckCode", "ConfirmDevice", "RegisterDevice",
]

VERIFY_KEY_SIZE = 32


def hash_code(phone: str, code: str) -> bytes:
    """What ``put_code`` stores for ``code``: SHA-256 of phone, NUL, code."""
    return hashlib.sha256(phone.encode() + b"\x00" + code.encode()).digest()


def put_code(txn: Txn, phone: str, code_hash: bytes, expires_at_ms: int) -> None:
    txn.put("codes", phone_bytes(phone),
            pack({"hash": bytes(code_hash), "exp": expires_at_ms, "attempts": 0}))


def check_code(txn: Txn, phone: str, code: str, now_ms: int) -> CodeCheck:
    """Check a plain code against one stored as ``hash_code(phone, code)``."""
    return _check(txn, phone, hash_code(phone, code), now_ms)


def _check(txn: Txn, phone: str, code_hash: bytes, now_ms: int) -> CodeCheck:
    key = phone_bytes(phone)
    raw = txn.get("codes", key)
    if raw is None:
        return CodeCheck("missing", 0)
    pending = unpack(raw)
    attempts = pending["attempts"] + 1
    if now_ms >= pending["exp"]:
        txn.delete("codes", key)
        return CodeCheck("expired", attempts)
    if hmac.compare_digest(pending["hash"], code_hash):
        txn.delete("codes", key)
        return CodeCheck("ok", attempts)
    pending["attempts"] = attempts
    txn.put("codes", key, pack(pending))
    return CodeCheck("bad", attempts)


def confirm_device(txn: Txn, phone: str, code_hash: bytes, verify_key: bytes,
                   now_ms: int, remote: Any = None) -> Confirmation:
    """``check_code`` with the code's hash, then ``register_device`` if it
    was right: one transaction, so a code is never consumed without the
    device being registered, nor the reverse."""
    _verify_key(verify_key)
    check = _check(txn, phone, bytes(code_hash), now_ms)
    if check.status != "ok":
        return Confirmation(None, check)
    device_id, notices = _register(txn, phone, verify_key, now_ms, remote)
    return Confirmation(device_id, check, tuple(notices))


def _verify_key(verify_key: bytes) -> None:
    if type(verify_key) is not bytes or len(verify_key) != VERIFY_KEY_SIZE:
        raise InvalidArgument(f"verify key must be {VERIFY_KEY_SIZE} bytes")


def register_device(txn: Txn, phone: str, verify_key: bytes, now_ms: int,
                    remote: Any = None) -> int:
    """Make ``verify_key`` the phone's only valid device key; returns the new
    device id (1 for a first registration). The inbox is kept; the old
    device's published keys are not (``keydir.device_replaced``)."""
    return _register(txn, phone, verify_key, now_ms, remote)[0]


def _register(txn: Txn, phone: str, verify_key: bytes, now_ms: int,
              remote: Any = None) -> tuple[int, list]:
    key = phone_bytes(phone)
    _verify_key(verify_key)
    raw = txn.get("users", key)
    device_id = 1 if raw is None else unpack(raw)["device"] + 1
    txn.put("users", key, pack({"device": device_id, "key": verify_key, "at": now_ms}))
    notices = [] if raw is None else keydir.device_replaced(txn, phone, device_id, now_ms, remote)
    return device_id, notices


def get_account(txn: Txn, phone: str) -> Account | None:
    raw = txn.get("users", phone_bytes(phone))
    if raw is None:
        return None
    v = unpack(raw)
    return Account(phone, v["device"], v["key"], v["at"])


def stale_device(txn: Txn, sender: str, client_id: str, to: str, device: int) -> int | None:
    """``to``'s current device when it is not ``device`` and ``sender`` has
    not stored message ``client_id`` yet (a resend of one stored before
    the device changed is answered as stored); else None, as when ``to``
    has no account here (its home, or the store, decides)."""
    current = current_device(txn, phone_bytes(to))
    if current is None or current == device:
        return None
    if txn.get("dedup", dedup_key(phone_bytes(sender), client_id_bytes(client_id))) is not None:
        return None
    return current


def all_phones(txn: Txn) -> list[str]:
    """Every registered phone (a cluster node announces them as homed on it)."""
    return [key.decode() for key, _ in txn.range("users", b"", b"\xff")]


# -- ops ------------------------------------------------------------------------
@quick_pickle
@dataclass(frozen=True, slots=True)
class PutCode:
    phone: str
    code_hash: bytes
    expires_at_ms: int

    def __call__(self, txn: Txn) -> None:
        return put_code(txn, self.phone, self.code_hash, self.expires_at_ms)


@quick_pickle
@dataclass(frozen=True, slots=True)
class CheckCode:
    phone: str
    code: str
    now_ms: int

    def __call__(self, txn: Txn) -> CodeCheck:
        return check_code(txn, self.phone, self.code, self.now_ms)


@quick_pickle
@dataclass(frozen=True, slots=True)
class ConfirmDevice:
    phone: str
    code_hash: bytes
    verify_key: bytes
    now_ms: int
    remote: Any = None          # storage/metas.py: key contacts homed on other nodes

    def __call__(self, txn: Txn) -> Confirmation:
        return confirm_device(txn, self.phone, self.code_hash, self.verify_key, self.now_ms,
                              self.remote)


@quick_pickle
@dataclass(frozen=True, slots=True)
class RegisterDevice:
    phone: str
    verify_key: bytes
    now_ms: int
    remote: Any = None          # as ConfirmDevice's

    def __call__(self, txn: Txn) -> int:
        return register_device(txn, self.phone, self.verify_key, self.now_ms, self.remote)
