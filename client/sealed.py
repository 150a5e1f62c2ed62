"""``SealedCopies``: the plaintext of each 1:1 message this device sealed,
kept until the recipient has it, so that it can be sealed again for the
recipient's new device (docs/e2e.md, "A recipient's replaced device").

A body is sealed for one device of the recipient. If that device was
replaced before the message reached the server (STALE_DEVICE) or, in a
cluster, before it reached the recipient's home node (a FAILED receipt), the
ciphertext can never be opened, and the message keys that made it are gone:
only the plaintext can be sealed again. So the SDK keeps, per message id,
the recipient, the device the body was sealed for, the media it names and
the plaintext envelope, from the moment the body enters the outbox until a
DELIVERED (or READ) receipt says the recipient has it, or the message fails
for good. At most ``KEPT`` are kept, the oldest forgotten first (a late
refusal of a forgotten one is reported as before, not sealed again).

Kept like the rest of the profile (E2EStore): ``<profile>/sealed/<id>.bin``,
0600, written atomically (temp file, fsync, rename); or in memory. These
files hold plaintext, like ``opened/``: for as long as a message is not
delivered. An id that is not a valid wire message id is never a file name
(nothing is kept for it).

File: ``u8 version=1 | u64 device | u64 failed_seq | u8 reseals | u16 n |
recipient (UTF-8, n bytes) | u8 m | m x 64 hex digits (media) | envelope``.
``failed_seq``: the FAILED receipt that made it be sealed again (a re-push
of that receipt after a restart is not a new refusal); ``reseals``: how
many times it was sealed again (bounded by the resealer).
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Callable

__all__ = ["SealedCopies", "Sealed", "KEPT"]

log = logging.getLogger("switchboard.client")

KEPT = 1000                     # copies kept at most (the oldest forgotten first)
_VERSION = 1
_HEAD = struct.Struct(">BQQBH")
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")    # the wire's message id: safe as a file name
_MEDIA = re.compile(rb"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Sealed:
    """One kept copy: ``envelope`` was sealed for ``device`` of ``to``."""
    to: str
    device: int
    envelope: bytes
    media: tuple[str, ...] = ()
    failed_seq: int = 0
    reseals: int = 0

    def to_bytes(self) -> bytes:
        to = self.to.encode()
        return (_HEAD.pack(_VERSION, self.device, self.failed_seq, self.reseals, len(to)) + to
                + bytes([len(self.media)]) + b"".join(m.encode() for m in self.media)
                + self.envelope)

    @classmethod
    def from_bytes(cls, data: bytes) -> "Sealed":
        version, device, failed_seq, reseals, n = _HEAD.unpack_from(data)
        if version != _VERSION:
            raise ValueError(f"sealed copy version {version}")
        at = _HEAD.size
        to = data[at:at + n].decode()
        count = data[at + n]
        at += n + 1
        media = tuple(data[at + 64 * i:at + 64 * (i + 1)] for i in range(count))
        if not all(_MEDIA.fullmatch(m) for m in media):
            raise ValueError("sealed copy: bad media hash")
        return cls(to, device, data[at + 64 * count:], tuple(m.decode() for m in media),
                   failed_seq, reseals)


class SealedCopies:
    """Message id -> ``Sealed``, in memory or under ``directory``, whose
    files ``write`` writes (``e2e_store.write_private``: 0600, atomic)."""

    def __init__(self, directory: str | None = None,
                 write: Callable[[str, bytes], None] | None = None, kept: int = KEPT):
        self.directory, self.write, self.kept = directory, write, kept
        self._order: OrderedDict[str, Sealed | None] = OrderedDict()    # None: on disk only
        if directory is not None:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            names = [n for n in os.listdir(directory)
                     if n.endswith(".bin") and _ID.fullmatch(n[:-4])]
            names.sort(key=lambda n: os.stat(os.path.join(directory, n)).st_mtime_ns)
            for name in names:
                self._order[name[:-4]] = None

    def __len__(self) -> int:
        return len(self._order)

    def keep(self, id: str, copy: Sealed) -> None:
        """Keep ``copy`` of message ``id`` (replacing one kept before)."""
        if not _ID.fullmatch(id):
            return
        if self.directory is not None:
            self.write(os.path.join(self.directory, f"{id}.bin"), copy.to_bytes())
        self._order[id] = copy if self.directory is None else None
        self._order.move_to_end(id)
        while len(self._order) > self.kept:
            self.forget(next(iter(self._order)))

    def get(self, id: str) -> Sealed | None:
        if id not in self._order:
            return None
        copy = self._order[id]
        if copy is not None:
            return copy
        try:
            with open(os.path.join(self.directory, f"{id}.bin"), "rb") as f:
                return Sealed.from_bytes(f.read())
        except FileNotFoundError:
            self._order.pop(id, None)
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as error:
            log.warning("sealed copy of %s unreadable: %s", id, error)
        return None

    def update(self, id: str, **changes) -> None:
        """Change fields of the copy of ``id`` (if one is kept)."""
        copy = self.get(id)
        if copy is not None:
            self.keep(id, replace(copy, **changes))

    def forget(self, id: str) -> None:
        if self._order.pop(id, 0) == 0 or self.directory is None:
            return
        try:
            os.unlink(os.path.join(self.directory, f"{id}.bin"))
        except FileNotFoundError:
            pass
