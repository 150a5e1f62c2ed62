"""Message ids: unique per sender, and in time order.

A message id is the sender's choice (the server deduplicates a resend by
(sender, id)), so any unique string works. This one is 16 chars of
[A-Za-z0-9_-]: the send time (ms since the Unix epoch, 48 bits) then 48
random bits, written as base64 digits in an alphabet listed in byte order.
Ids made later sort later, byte for byte, which is what the server's dedup
index wants: it is keyed (sender, id), so each sender's new records go to
the end of that sender's range, on the page the last one went to, where
random ids put each on a page of its own (docs/storage.md, measured in
docs/benchmarks.md). Two ids made in the same millisecond differ in their
random part (a collision: 1 in 2^48).

The time is the device clock. The server never reads it back: a wrong
clock changes nothing it checks (a clock set back costs it a little
locality).

The SDK's own messages (a group sender key handed to a member) have ids
that start with ``INTERNAL``: the app gets no event naming them (no
``Sent``, no ``Receipt``), and ids it chooses may not start so.
"""

from __future__ import annotations

import base64
import random
import time

__all__ = ["new_message_id", "new_internal_id", "is_internal", "app_id", "ALPHABET", "INTERNAL"]

ALPHABET = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"   # byte order

# base64 writes digit d as its alphabet's d-th char: map those to ALPHABET's.
_ORDERED = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", ALPHABET)


def new_message_id(now_ms: int | None = None) -> str:
    """A fresh id: ``now_ms`` (default: this device's clock) as 6 bytes, then
    6 random bytes (not secret: the id only has to be unique), as 16 chars
    of ``ALPHABET``."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not 0 <= ms < 1 << 48:            # 2**48 ms: until the year 10889
        raise ValueError(f"time out of range for a message id: {ms} ms")
    raw = ((ms << 48) | random.getrandbits(48)).to_bytes(12, "big")
    return base64.b64encode(raw).translate(_ORDERED).decode()


INTERNAL = "__"                 # the prefix of the SDK's own messages' ids


def new_internal_id() -> str:
    """A fresh id for a message the SDK sends for itself."""
    return INTERNAL + new_message_id()


def is_internal(id: str) -> bool:
    return id.startswith(INTERNAL)


def app_id(id: str | None) -> str:
    """The id of a message the app sends: its own, or a fresh one."""
    if id is None:
        return new_message_id()
    if isinstance(id, str) and is_internal(id):
        raise ValueError(f"invalid id: ids starting with {INTERNAL!r} are the SDK's own")
    return id
