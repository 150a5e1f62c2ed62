"""``KeyWait``: group messages held until the sender key that opens them
arrives (docs/e2e.md, "A group message before its key").

A sender hands its sender key to a member over their 1:1 session before
its group send, but on a cluster the two take different paths (the 1:1
message through the sender's node's outbound queue to the member's node,
the group message through the group's node), so the group message can
reach the member first. Instead of giving up on it (``Undecryptable``,
acknowledged: lost for good), the member's SDK holds it, as Signal
clients wait for a missing sender key:

- Held: an item whose opening fails for want of a key (``NoSenderKey``:
  no key from this sender for this group, or not this key id; or its
  subclass ``SenderKeyBehind``: signed by the key held but further ahead
  than a chain may skip, a newer copy of the key opens it). A bad,
  tampered or replayed ciphertext is ``Undecryptable`` at once.
- Order per (group, sender): once an item of (group, sender) is held, the
  later ones of that pair wait behind it, unopened. When a key of that
  pair arrives (``key_arrived``), the held items are opened in arrival
  order, up to the first that still lacks its key. Other senders, and
  other groups, are not held up.
- Not acknowledged while held: the item stays in the server's inbox (the
  receive path acknowledges each seq on its own, so later items are
  acknowledged meanwhile, and the server keeps pushing them: its pushes do
  not wait for acknowledgements). A re-push after a reconnect is a
  duplicate (``InboxTracker``); after a restart of the client it is pushed
  again and held again (or opened, if the key came meanwhile).
- Bounded: an item is held at most ``timeout`` seconds (60 by default)
  and at most ``limit`` items (1,000) are held at a time (past it, the
  oldest gives up early). An item that gives up becomes ``Undecryptable``
  (acknowledged once the app takes it, as before); the ones behind it are
  then tried, since they may be under a key that is here.
- Asking (Signal's sender-key retry): once a pair has waited ``ask_after``
  seconds (2) with no key, ``ask(group, sender)`` is called, then again
  every ``ask_every`` seconds (20) while it still waits; never more often
  per pair, even across waits (the pairs asked are remembered for
  ``ask_every``, at most ``limit`` of them). The key may be lost (this
  device lost its state, or the distribution never came): its sender then
  hands its current key again (``client/group_requests.py``). That key is
  at its current iteration, so it opens what the sender writes from then
  on; the held items written before stay shut (``Undecryptable``).

Pure bookkeeping around callbacks: ``opener(frame)`` returns the
plaintext or None (an ``Undecryptable``), or raises ``NoSenderKey`` (hold
it); ``deliver(frame, body, why)`` turns the outcome into the app's event;
``ask(group, sender)`` asks the sender for its key. The clock is the
running loop's.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from transport import wire
from transport.e2e import NoSenderKey

__all__ = ["KeyWait", "KEY_WAIT", "MAX_HELD", "ASK_AFTER", "ASK_EVERY"]

log = logging.getLogger("switchboard.client")

KEY_WAIT = 60.0                 # seconds a group message waits for its sender key
MAX_HELD = 1_000                # group messages held at a time, all groups and senders
ASK_AFTER = 2.0                 # seconds held before the sender is asked for its key
ASK_EVERY = 20.0                # seconds between two requests for one (group, sender), at least

Opener = Callable[[wire.Message], "bytes | None"]
Deliver = Callable[[wire.Message, "bytes | None", str], Any]
Ask = Callable[[str, str], Any]


@dataclass(slots=True)
class _Held:
    frame: wire.Message
    deliver: Deliver
    deadline: float             # loop time


class KeyWait:
    def __init__(self, opener: Opener, *, timeout: float = KEY_WAIT, limit: int = MAX_HELD,
                 ask: Ask | None = None, ask_after: float = ASK_AFTER, ask_every: float = ASK_EVERY):
        self.opener, self.timeout, self.limit = opener, timeout, limit
        self.ask, self.ask_after, self.ask_every = ask, ask_after, ask_every
        self.queues: dict[tuple[str, str], deque[_Held]] = {}    # (group, sender) -> held, oldest first
        self.count = 0
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._next_ask: dict[tuple[str, str], float] = {}   # held pairs: when to ask (loop time)
        self._asked: dict[tuple[str, str], float] = {}      # pairs asked: when, oldest first

    def receive(self, frame: wire.Message, deliver: Deliver) -> None:
        """A new group item: opened and delivered now, or held."""
        pair = (frame.group, frame.sender)
        if pair not in self.queues:
            try:
                body = self._open(frame)
            except NoSenderKey as error:
                log.debug("group %s message %s from %s held: %s", frame.group, frame.id,
                          frame.sender, error)
                self.queues[pair] = deque()
                now = asyncio.get_running_loop().time()
                self._next_ask[pair] = max(now + self.ask_after,
                                           self._asked.get(pair, -self.ask_every) + self.ask_every)
            else:
                deliver(frame, body, "did not decrypt")
                return
        else:
            log.debug("group %s message %s from %s held behind an earlier one",
                      frame.group, frame.id, frame.sender)
        loop = asyncio.get_running_loop()
        self.queues[pair].append(_Held(frame, deliver, loop.time() + self.timeout))
        self.count += 1
        while self.count > self.limit:
            oldest = min(self.queues, key=lambda p: self.queues[p][0].deadline)
            self._give_up(oldest, f"over {self.limit} held awaiting sender keys")
            self._release(oldest)
            self._arm(oldest)
        self._arm(pair)

    def key_arrived(self, group: str, sender: str) -> None:
        """A sender key of ``sender`` in ``group`` was kept: open what it can."""
        pair = (group, sender)
        if pair in self.queues:
            self._release(pair)
            self._arm(pair)

    def close(self) -> None:
        """Forget every held item (not acknowledged: the server pushes them
        again at the next login)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.queues.clear()
        self._next_ask.clear()
        self.count = 0

    # -- inside -------------------------------------------------------------------------------------
    def _open(self, frame: wire.Message) -> bytes | None:
        try:
            return self.opener(frame)
        except NoSenderKey:
            raise
        except Exception as error:  # noqa: BLE001 - one bad item must not kill the link
            log.warning("group %s message %s: %r", frame.group, frame.id, error)
            return None

    def _release(self, pair: tuple[str, str]) -> None:
        """Open the held items of ``pair`` in order, up to the first that
        still lacks its key."""
        queue = self.queues.get(pair)
        while queue:
            held = queue[0]
            try:
                body = self._open(held.frame)
            except NoSenderKey:
                return
            queue.popleft()
            self.count -= 1
            held.deliver(held.frame, body, "did not decrypt")

    def _give_up(self, pair: tuple[str, str], why: str) -> None:
        held = self.queues[pair].popleft()
        self.count -= 1
        log.warning("group %s message %s from %s: %s", held.frame.group, held.frame.id,
                    held.frame.sender, why)
        held.deliver(held.frame, None, why)

    def _arm(self, pair: tuple[str, str]) -> None:
        """The timer of ``pair``: at its oldest item's deadline or when its
        sender is to be asked, whichever is first (or none, the queue gone,
        when nothing of ``pair`` is held any more)."""
        timer = self._timers.pop(pair, None)
        if timer is not None:
            timer.cancel()
        queue = self.queues.get(pair)
        if not queue:
            self.queues.pop(pair, None)
            self._next_ask.pop(pair, None)
            return
        when = queue[0].deadline if self.ask is None else min(queue[0].deadline, self._next_ask[pair])
        self._timers[pair] = asyncio.get_running_loop().call_at(when, self._due, pair)

    def _due(self, pair: tuple[str, str]) -> None:
        self._timers.pop(pair, None)
        queue, now = self.queues.get(pair), asyncio.get_running_loop().time()
        while queue and queue[0].deadline <= now:
            self._give_up(pair, f"no sender key from {pair[1]} within {self.timeout:g} s")
            self._release(pair)         # those behind may be under a key that is here
        if self.queues.get(pair) and self.ask is not None and self._next_ask[pair] <= now:
            self._ask(pair, now)
        self._arm(pair)

    def _ask(self, pair: tuple[str, str], now: float) -> None:
        """Ask ``pair``'s sender for its key; remember when (bounded)."""
        self._next_ask[pair] = now + self.ask_every
        self._asked.pop(pair, None)
        self._asked[pair] = now
        while self._asked and (len(self._asked) > self.limit
                               or next(iter(self._asked.values())) <= now - self.ask_every):
            del self._asked[next(iter(self._asked))]
        try:
            self.ask(*pair)
        except Exception as error:  # noqa: BLE001 - a failed request must not stop the wait
            log.warning("group %s: asking %s for its sender key failed: %r", pair[0], pair[1], error)
