"""``Retirement``: the sender keys a group member's replaced device made
(docs/e2e.md, "Groups": "A member registers a new device").

Purpose: a sender key received from a member verifies that member's
signature for as long as it is kept. When the member registers a new
device, its old device (or whoever holds that device's state) still has
the signing keys of its sender keys, so with a hostile server's help it
could go on posting as the member. So the keys received from the member
before the change *retire*:

- **Retiring** (``start``): they still open messages for a short grace,
  since what the old device sent before the change may still be on its way
  (on a cluster a group message can lag a node restart by seconds). The
  grace ends at the first of: a key of the member's new device arrives for
  this group (``arrived``: a key id not retiring; from then on the member
  writes under it); ``RETIRE_AFTER`` seconds (300) after the change was
  seen; ``RETIRE_MESSAGES`` (100) messages opened under them. Then the
  keys are dropped (the caller drops the ids returned).
- **Retired**: their ids are remembered (the newest ``RETIRED_KEPT`` per
  member), so a message under one is refused at once (``refused``), and a
  distribution of one is not kept again.

A second notice of the same change (the server's KEY_CHANGED, then the new
identity seen in a first message) changes nothing: keys already retiring
keep their grace. The clock is passed in (seconds since the epoch), as
everywhere in ``transport.e2e``: the grace survives a restart.

Format (inside ``GroupCipher``'s, from its version 4)::

    u16 n | n x (member | u64 until | u16 left | u8 k | k x u32 key id)   retiring
    u16 m | m x (member | u8 k | k x u32 key id)                          retired
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from transport.e2e_core import Reader, pack_str

__all__ = ["Retirement", "Retiring", "RETIRE_AFTER", "RETIRE_MESSAGES", "RETIRED_KEPT"]

RETIRE_AFTER = 300              # seconds a replaced device's keys still open messages, at most
RETIRE_MESSAGES = 100           # messages they still open, at most
RETIRED_KEPT = 8                # key ids remembered per member (retiring, or retired: the newest)
MEMBERS_KEPT = 1024             # members with retired keys remembered per group (the newest)


@dataclass(slots=True)
class Retiring:
    key_ids: tuple[int, ...]
    until: int                  # seconds since the epoch: the grace ends then
    left: int                   # messages they may still open

    def over(self, now: float) -> bool:
        return now >= self.until or self.left <= 0


class Retirement:
    """Per member: keys retiring (in their grace) and key ids retired."""

    def __init__(self, retiring: dict[str, Retiring] | None = None,
                 retired: dict[str, tuple[int, ...]] | None = None):
        self.retiring: dict[str, Retiring] = retiring or {}
        self.retired: dict[str, tuple[int, ...]] = retired or {}     # oldest first

    def start(self, member: str, key_ids, now: float) -> bool:
        """``member``'s device changed; ``key_ids``: the keys held from it.
        True if any of them starts retiring (those already retiring keep
        their grace)."""
        current = self.retiring.get(member)
        old = current.key_ids if current is not None else ()
        new = tuple(k for k in key_ids if k not in old)
        if not new:
            return False
        if current is None:
            self.retiring[member] = Retiring(new[-RETIRED_KEPT:], int(now) + RETIRE_AFTER, RETIRE_MESSAGES)
        else:
            current.key_ids = (old + new)[-RETIRED_KEPT:]
        return True

    def refused(self, member: str, key_id: int, now: float) -> bool:
        """A message (or a distribution) under ``key_id`` must be refused:
        a retired key, or a retiring one past its grace. Changes nothing."""
        if key_id in self.retired.get(member, ()):
            return True
        current = self.retiring.get(member)
        return current is not None and key_id in current.key_ids and current.over(now)

    def opened(self, member: str, key_id: int, now: float) -> tuple[int, ...]:
        """A message of ``member`` under ``key_id`` opened: one fewer left if
        that key is retiring. Returns the ids to drop (the grace is over)."""
        current = self.retiring.get(member)
        if current is None:
            return ()
        if key_id in current.key_ids:
            current.left -= 1
        return self.end(member) if current.over(now) else ()

    def arrived(self, member: str, key_id: int) -> tuple[int, ...]:
        """A key of ``member`` is kept: if it is not a retiring one, it comes
        from the new device and the grace ends; returns the ids to drop."""
        current = self.retiring.get(member)
        if current is None or key_id in current.key_ids:
            return ()
        return self.end(member)

    def end(self, member: str) -> tuple[int, ...]:
        """The grace of ``member``'s retiring keys is over: they retire."""
        current = self.retiring.pop(member, None)
        if current is None:
            return ()
        ids = (*self.retired.pop(member, ()), *current.key_ids)[-RETIRED_KEPT:]
        self.retired[member] = ids
        while len(self.retired) > MEMBERS_KEPT:
            del self.retired[next(iter(self.retired))]
        return current.key_ids

    # -- persistence ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        parts = [struct.pack(">H", len(self.retiring))]
        for member, r in self.retiring.items():
            parts += [pack_str(member), struct.pack(">QHB", r.until, r.left, len(r.key_ids)),
                      *(struct.pack(">I", k) for k in r.key_ids)]
        parts.append(struct.pack(">H", len(self.retired)))
        for member, ids in self.retired.items():
            parts += [pack_str(member), bytes((len(ids),)), *(struct.pack(">I", k) for k in ids)]
        return b"".join(parts)

    @classmethod
    def read(cls, r: Reader) -> "Retirement":
        def ids() -> tuple[int, ...]:
            n = r.u8()
            if not 0 < n <= RETIRED_KEPT:
                raise r.fail(f"{n} retired sender key ids for one member, 1 to {RETIRED_KEPT}")
            return tuple(r.u32() for _ in range(n))
        retiring: dict[str, Retiring] = {}
        for _ in range(r.u16()):
            member, until, left = r.text(), r.u64(), r.u16()
            retiring[member] = Retiring(ids(), until, left)
        retired: dict[str, tuple[int, ...]] = {}
        for _ in range(r.u16()):
            member = r.text()
            retired[member] = ids()
        return cls(retiring, retired)
