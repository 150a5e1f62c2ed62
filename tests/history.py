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
    """What every client saw. A 1:1 message has one recipient, its ``to``;
    a group message (``to`` the group) one per member but its sender, and
    each recipient counts apart: delivered to each once, in its sender's
    order, with a receipt from each."""

    def __init__(self) -> None:
        # id -> (sender, to, body, order, recipients)
        self.sends: dict[str, tuple[str, str, bytes, int, frozenset[str]]] = {}
        self.acks: set[str] = set()
        self.deliveries: list[tuple[str, str, str, bytes, str]] = []  # (id, sender, to, body, at)
        self.receipts: list[tuple[str, str, str, str]] = []           # (id, kind, by, to)
        self.reads: set[tuple[str, str]] = set()                      # (id, by): READ acked
        self._order = 0

    # -- recording ----------------------------------------------------------------
    def send(self, msg_id: str, sender: str, to: str, body: bytes,
             members: frozenset[str] | None = None) -> None:
        """``sender`` sends ``msg_id`` to user ``to``, or to group ``to`` of
        ``members``."""
        if msg_id not in self.sends:          # a resend keeps the first order
            self._order += 1
            recipients = frozenset({to}) if members is None else frozenset(members) - {sender}
            self.sends[msg_id] = (sender, to, body, self._order, recipients)

    def ack(self, msg_id: str) -> None:
        self.acks.add(msg_id)

    def deliver(self, msg_id: str, sender: str, to: str, body: bytes,
                at: str | None = None) -> None:
        """``at`` (default ``to``: a 1:1 message) got ``msg_id``."""
        self.deliveries.append((msg_id, sender, to, body, to if at is None else at))

    def receipt(self, msg_id: str, kind: str, by: str, to: str) -> None:
        """``to`` got a ``kind`` receipt ("delivered" / "read") for ``msg_id``
        from ``by``."""
        self.receipts.append((msg_id, kind, by, to))

    def read(self, msg_id: str, by: str | None = None) -> None:
        """``by``'s (default: the recipient's) READ of ``msg_id`` was
        acknowledged by the server."""
        self.reads.add((msg_id, self.sends[msg_id][1] if by is None else by))

    def due(self) -> int:
        """Deliveries and receipts still due (for a drain to wait on)."""
        got = {(d[0], d[4]) for d in self.deliveries}
        have = {(m, kind, by) for m, kind, by, _ in self.receipts}
        return (sum((m, r) not in got for m in self.acks for r in self.sends[m][4])
                + sum((m, "delivered", r) not in have for m, r in got)
                + sum((m, "read", r) not in have for m, r in self.reads))

    # -- checking ------------------------------------------------------------------
    def check(self) -> Verdict:
        counts: dict[tuple[str, str], int] = defaultdict(int)
        unexpected, per_conversation = [], defaultdict(list)
        for msg_id, sender, to, body, at in self.deliveries:
            counts[(msg_id, at)] += 1
            sent = self.sends.get(msg_id)
            if sent is None or sent[:3] != (sender, to, body) or at not in sent[4]:
                unexpected.append(msg_id)
            elif counts[(msg_id, at)] == 1:
                per_conversation[(sender, to, at)].append(msg_id)
        delivered = set(counts)
        verdict = Verdict(
            sent=len(self.sends), acked=len(self.acks), delivered=len(delivered),
            lost=sorted(_name(m, r, self.sends[m][1]) for m in self.acks
                        for r in self.sends[m][4] if (m, r) not in delivered),
            duplicated=sorted(_name(m, r, self.sends.get(m, (0, r))[1])
                              for (m, r), n in counts.items() if n > 1),
            unexpected=sorted(set(unexpected)),
            unacked_delivered=sum(m not in self.acks for m, _ in delivered),
        )
        for ids in per_conversation.values():
            verdict.reordered.extend(self._inversions(ids))
        self._check_receipts(verdict, delivered)
        return verdict

    def _check_receipts(self, verdict: Verdict, delivered: set[tuple[str, str]]) -> None:
        seen: set[tuple[str, str, str]] = set()
        for msg_id, kind, by, to in self.receipts:
            sent = self.sends.get(msg_id)
            if sent is None or sent[0] != to or by not in sent[4] or (msg_id, kind, by) in seen:
                verdict.stray_receipts.append(f"{kind} {msg_id} from {by} to {to}")
            seen.add((msg_id, kind, by))
        verdict.read = len(self.reads)
        verdict.unticked = sorted(
            [f"delivered {_name(m, r, self.sends[m][1])}" for m, r in delivered
             if m in self.sends and (m, "delivered", r) not in seen]
            + [f"read {_name(m, r, self.sends[m][1])}" for m, r in self.reads
               if (m, "read", r) not in seen])

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


def _name(msg_id: str, recipient: str, to: str) -> str:
    """A message to one recipient: its id, with the recipient if it is one
    member of a group."""
    return msg_id if recipient == to else f"{msg_id} to {recipient}"
