"""A history checker in Jepsen's total-queue style.

A run records what every client saw: each ``send`` (before it leaves the
client), each server ``ack`` (one tick), each ``deliver`` (the message handed
to the receiving application) and each ``receipt``. After a final drain the
checker classifies, per message id:

- **lost**: acknowledged by the server but never delivered;
- **duplicated**: handed to the receiving application more than once;
- **unexpected**: delivered, but never sent (or to the wrong recipient, or
  with a different body);
- **reordered**: within one conversation (sender -> recipient), delivered
  before a message that was sent, and acknowledged, before it;
- **unticked**: delivered, but its sender never got the DELIVERED receipt
  (two ticks) from its recipient; or marked read (the READ acknowledged by
  the server), but its sender never got the READ receipt (blue ticks);
- **stray receipts**: a receipt for a message its receiver did not send, or
  from someone else than its recipient, or the same receipt twice.

Unacknowledged messages may or may not be delivered (the sender may have
died before the ack); they are counted but are not errors. Recording is
cheap (tuples appended to lists) and safe from any coroutine of one loop.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["History", "Verdict"]


@dataclass
class Verdict:
    sent: int
    acked: int
    delivered: int
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    reordered: list[tuple[str, str]] = field(default_factory=list)   # (early, late): late came first
    unacked_delivered: int = 0
    read: int = 0                                                    # READs acknowledged
    unticked: list[str] = field(default_factory=list)               # "delivered <id>" / "read <id>"
    stray_receipts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected or self.reordered
                    or self.unticked or self.stray_receipts)

    def summary(self) -> str:
        return (f"sent {self.sent}, acked {self.acked}, delivered {self.delivered}, "
                f"read {self.read}: "
                f"lost {len(self.lost)}, duplicated {len(self.duplicated)}, "
                f"unexpected {len(self.unexpected)}, reordered {len(self.reordered)}, "
                f"unticked {len(self.unticked)}, stray receipts {len(self.stray_receipts)}")


class History:
    def __init__(self) -> None:
        self.sends: dict[str, tuple[str, str, bytes, int]] = {}   # id -> (sender, to, body, order)
        self.acks: set[str] = set()
        self.deliveries: list[tuple[str, str, str, bytes]] = []   # (id, sender, to, body)
        self.receipts: list[tuple[str, str, str, str]] = []       # (id, kind, by, to)
        self.reads: set[str] = set()                              # ids whose READ was acked
        self._order = 0

    # -- recording ----------------------------------------------------------------
    def send(self, msg_id: str, sender: str, to: str, body: bytes) -> None:
        if msg_id not in self.sends:          # a resend keeps the first order
            self._order += 1
            self.sends[msg_id] = (sender, to, body, self._order)

    def ack(self, msg_id: str) -> None:
        self.acks.add(msg_id)

    def deliver(self, msg_id: str, sender: str, to: str, body: bytes) -> None:
        self.deliveries.append((msg_id, sender, to, body))

    def receipt(self, msg_id: str, kind: str, by: str, to: str) -> None:
        """``to`` got a ``kind`` receipt ("delivered" / "read") for ``msg_id``
        from ``by``."""
        self.receipts.append((msg_id, kind, by, to))

    def read(self, msg_id: str) -> None:
        """The recipient's READ of ``msg_id`` was acknowledged by the server."""
        self.reads.add(msg_id)

    def ticks_missing(self) -> int:
        """How many receipts are still due (for a drain to wait on)."""
        have = {(m, kind) for m, kind, _, _ in self.receipts}
        delivered = {d[0] for d in self.deliveries}
        return (sum((m, "delivered") not in have for m in delivered)
                + sum((m, "read") not in have for m in self.reads))

    # -- checking ------------------------------------------------------------------
    def check(self) -> Verdict:
        counts: dict[str, int] = defaultdict(int)
        unexpected, per_conversation = [], defaultdict(list)
        for msg_id, sender, to, body in self.deliveries:
            counts[msg_id] += 1
            sent = self.sends.get(msg_id)
            if sent is None or sent[:3] != (sender, to, body):
                unexpected.append(msg_id)
            elif counts[msg_id] == 1:
                per_conversation[(sender, to)].append(msg_id)
        delivered = set(counts)
        verdict = Verdict(
            sent=len(self.sends), acked=len(self.acks), delivered=len(delivered),
            lost=sorted(self.acks - delivered),
            duplicated=sorted(m for m, n in counts.items() if n > 1),
            unexpected=sorted(set(unexpected)),
            unacked_delivered=len(delivered - self.acks),
        )
        for ids in per_conversation.values():
            verdict.reordered.extend(self._inversions(ids))
        self._check_receipts(verdict, delivered)
        return verdict

    def _check_receipts(self, verdict: Verdict, delivered: set[str]) -> None:
        seen: set[tuple[str, str]] = set()
        for msg_id, kind, by, to in self.receipts:
            sent = self.sends.get(msg_id)
            if sent is None or sent[:2] != (to, by) or (msg_id, kind) in seen:
                verdict.stray_receipts.append(f"{kind} {msg_id} from {by} to {to}")
            seen.add((msg_id, kind))
        verdict.read = len(self.reads)
        verdict.unticked = sorted([f"delivered {m}" for m in delivered
                                   if m in self.sends and (m, "delivered") not in seen]
                                  + [f"read {m}" for m in self.reads if (m, "read") not in seen])

    def _inversions(self, delivered_ids: list[str]) -> list[tuple[str, str]]:
        """Pairs of acked messages delivered against their send order: for
        each delivered message, any acked message sent before it that came
        later."""
        found = []
        highest: tuple[int, str] | None = None       # latest-sent acked message seen so far
        for msg_id in delivered_ids:
            order = self.sends[msg_id][3]
            if msg_id in self.acks:
                if highest is not None and order < highest[0]:
                    found.append((msg_id, highest[1]))
                if highest is None or order > highest[0]:
                    highest = (order, msg_id)
        return found
