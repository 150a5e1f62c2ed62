"""Key layout: the only module that builds or parses key bytes.

Keys are designed for range scans in LMDB's byte order:

- user ids are phone numbers in E.164 form (``+`` then 8-15 ASCII digits,
  the first not ``0``), stored as their UTF-8 bytes; they never contain
  ``b"\\x00"``, so ``b"\\x00"`` separates key parts and ``phone + b"\\x00"``
  is a prefix that matches that user only (``+1234\\x00`` is not a prefix of
  ``+12345\\x00``);
- integers are unsigned big-endian, 8 bytes, so byte order is numeric order.

docs/storage.md has the full table (database, key, value).
"""

from __future__ import annotations

import re
import struct

from storage.errors import InvalidArgument

__all__ = [
    "SEP", "MAX_CLIENT_ID", "phone_bytes", "client_id_bytes", "u64", "from_u64",
    "inbox_key", "inbox_prefix", "inbox_seq", "dedup_key", "dedup_ttl_key",
    "dedup_key_of_ttl", "group_read_key", "prefix_end", "group_bytes", "member_key", "GROUP_ID",
    "node_bytes", "outq_key", "outq_prefix", "outq_seq", "MAX_NODE", "nonce_key", "block_key",
]

SEP = b"\x00"
MAX_CLIENT_ID = 64                      # bytes of UTF-8

_PHONE = re.compile(r"\+[1-9][0-9]{7,14}")     # [0-9], not \d: ASCII digits only
_U64 = struct.Struct(">Q")


_VALID: dict[str, bytes] = {}           # phones already checked (a cache, bounded)
_VALID_MAX = 100_000


def phone_bytes(phone: str) -> bytes:
    """The key bytes of a user id; raises ``InvalidArgument`` unless E.164."""
    raw = _VALID.get(phone) if type(phone) is str else None
    if raw is not None:
        return raw
    if type(phone) is not str or not _PHONE.fullmatch(phone):
        raise InvalidArgument(f"not an E.164 phone number: {phone!r}")
    raw = phone.encode()
    if len(_VALID) >= _VALID_MAX:
        _VALID.clear()
    _VALID[phone] = raw
    return raw


def client_id_bytes(client_id: str) -> bytes:
    """A client-chosen message id as key bytes: 1 to ``MAX_CLIENT_ID`` bytes."""
    if type(client_id) is not str:
        raise InvalidArgument(f"client id must be a str, not {type(client_id).__name__}")
    raw = client_id.encode()
    if not 0 < len(raw) <= MAX_CLIENT_ID:
        raise InvalidArgument(f"client id must be 1..{MAX_CLIENT_ID} bytes: {client_id!r}")
    return raw


def u64(n: int) -> bytes:
    """``n`` as 8 big-endian bytes (sorts numerically)."""
    return _U64.pack(n)


def from_u64(raw: bytes) -> int:
    return _U64.unpack(raw)[0]


def inbox_prefix(user: bytes) -> bytes:
    """Every inbox key of ``user`` starts with this."""
    return user + SEP


def inbox_key(user: bytes, seq: int) -> bytes:
    """``inbox``: ``phone \\x00 seq(u64)``."""
    return user + SEP + _U64.pack(seq)


def inbox_seq(key: bytes) -> int:
    """The sequence number at the end of an inbox key."""
    return _U64.unpack_from(key, len(key) - 8)[0]


def dedup_key(sender: bytes, client_id: bytes) -> bytes:
    """``dedup``: ``sender \\x00 client_id`` (the first ``\\x00`` ends the
    phone, so a client id may hold any bytes)."""
    return sender + SEP + client_id


def dedup_ttl_key(ts_ms: int, dedup: bytes) -> bytes:
    """``dedup_ttl``: ``ts(u64) dedup_key``, the time index used to prune."""
    return _U64.pack(ts_ms) + dedup


def dedup_key_of_ttl(key: bytes) -> bytes:
    return key[8:]


def group_read_key(ts_ms: int, reader: bytes, dedup: bytes) -> bytes:
    """``group_reads``: ``ts(u64) reader \\x00 sender \\x00 client_id``: a
    member's READ of a group message, once; ``ts`` is the message's, so the
    entries are pruned by age with its dedup record."""
    return _U64.pack(ts_ms) + reader + SEP + dedup


# A group id is its creator's phone, "/", and a key the creator chose (1..32
# of [A-Za-z0-9_-]): unique without coordination, and a resent create names
# the same group. No b"\x00", so ``phone \x00 group`` keys split cleanly.
GROUP_ID = r"\+[1-9][0-9]{7,14}/[A-Za-z0-9_-]{1,32}"
_GROUP = re.compile(GROUP_ID)


def group_bytes(group: str) -> bytes:
    """The key bytes of a group id; raises ``InvalidArgument`` if malformed."""
    if type(group) is not str or not _GROUP.fullmatch(group):
        raise InvalidArgument(f"not a group id: {group!r}")
    return group.encode()


def member_key(user: bytes, group: bytes) -> bytes:
    """``user_groups`` and ``group_missed``: ``phone \x00 group``."""
    return user + SEP + group


def block_key(blocker: bytes, blocked: bytes) -> bytes:
    """``blocks``: ``blocker \x00 blocked``; ``blocker \x00`` prefixes one
    user's block list, in byte order."""
    return blocker + SEP + blocked


# A node name (a cluster member: ``outq``, ``outq_meta``, ``outq_applied``):
# 1..MAX_NODE bytes of UTF-8 without b"\x00", so ``node \x00 seq`` splits
# cleanly and a key starting with b"\x00" in ``outq_meta`` is never a node.
MAX_NODE = 64


def node_bytes(node: str) -> bytes:
    """The key bytes of a node name; raises ``InvalidArgument`` if malformed."""
    raw = node.encode() if type(node) is str else b""
    if not 0 < len(raw) <= MAX_NODE or SEP in raw:
        raise InvalidArgument(f"a node name is 1..{MAX_NODE} bytes without NUL: {node!r}")
    return raw


def outq_prefix(node: bytes) -> bytes:
    """Every ``outq`` key of destination ``node`` starts with this."""
    return node + SEP


def outq_key(node: bytes, seq: int) -> bytes:
    """``outq``: ``node \x00 seq(u64)``."""
    return node + SEP + _U64.pack(seq)


def outq_seq(key: bytes) -> int:
    return _U64.unpack_from(key, len(key) - 8)[0]


def nonce_key(ts_ms: int, user: bytes, device: int, nonce: bytes) -> bytes:
    """``media_nonces``: ``ts(u64) phone \x00 device(u64) nonce(16 bytes)``:
    every part is in the signed request, so a replay builds the same key,
    and the time first lets the sweep take the oldest by a range."""
    return _U64.pack(ts_ms) + user + SEP + _U64.pack(device) + nonce


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``
    (``None`` when there is none: the prefix is all ``0xff``)."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return None
    return trimmed[:-1] + bytes([trimmed[-1] + 1])
