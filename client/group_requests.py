"""``KeyRequests``: sender-key requests, both ways (docs/e2e.md, "Groups":
"A lost sender key"), Signal's sender-key retry.

A member can lack a sender's key for good: it lost its state for the
group, or joined during a send, or the distribution message was lost. The
sender does not know (it handed the key once), so nothing would come until
its next re-key. So:

- **Asking** (``ask``, called by ``KeyWait`` once a group message has
  waited ``ASK_AFTER`` seconds for its key, and at most every
  ``ASK_EVERY`` seconds per (group, sender) while it waits): this device
  sends the sender a ``SenderKeyRequest(group)`` over their 1:1 session,
  an SDK-internal message (id ``__...``: no app event on either side). At
  most ``ASKING`` requests are on their way at a time; past that, one is
  skipped (the next tick asks again).
- **Answering** (``answer``, for a ``SenderKeyRequest`` that came over 1:1):
  only if this device has an own sender key for the group, at most once
  per (requester, group) every ``ANSWER_EVERY`` seconds (the newest
  ``ANSWERED_KEPT`` pairs remembered; when that many were answered within
  it, others wait) and ``ANSWERING`` at a time; then only if the requester
  is a current member, by the membership this client holds
  (``GroupInfo`` of the last GROUP_INFO, dropped at every group event) or,
  when it holds none, by asking the server (GROUP_INFO), as for a key of an
  unknown group. The answer is the *current* distribution message, sent
  the normal way (``SenderKeyCodec._handing``: saved in ``given``). Its
  chain is at the current iteration: the requester cannot open anything
  sent before, and a resent key only ever moves a receiver's chain
  forward. Anything else is dropped, logged, never answered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from transport import wire
from transport.e2e import SenderKeyMessage, SenderKeyRequest
from client.errors import ServerError
from client.ids import new_internal_id
from client.link import checked

__all__ = ["KeyRequests", "ANSWER_EVERY", "ASKING", "ANSWERING"]

log = logging.getLogger("switchboard.client")

ASKING = 16                     # requests on their way at a time
ANSWERING = 16                  # answers being checked or sent at a time
ANSWER_EVERY = 10.0             # seconds between two answers to one (requester, group), at least
ANSWERED_KEPT = 1_024           # (requester, group) pairs remembered as answered


class KeyRequests:
    def __init__(self, codec: Any):
        self.codec = codec
        self.client, self.store = codec.client, codec.store
        self._asking: set[tuple[str, str]] = set()
        self._answering: set[tuple[str, str]] = set()
        self._answered: dict[tuple[str, str], float] = {}    # (requester, group) -> loop time, oldest first
        self.asked = self.answered = self.dropped = 0       # counters

    # -- asking ----------------------------------------------------------------------------------
    def ask(self, group: str, sender: str) -> None:
        """Ask ``sender`` for its sender key of ``group`` (in the background)."""
        pair = (group, sender)
        if sender == self.client.user or pair in self._asking:
            return
        if len(self._asking) >= ASKING:
            log.warning("group %s: not asking %s for its sender key now (%d requests on "
                        "their way)", group, sender, len(self._asking))
            return
        self._asking.add(pair)
        self.client._spawn(self._ask(pair))

    async def _ask(self, pair: tuple[str, str]) -> None:
        group, sender = pair
        try:
            await self.client._send_sealed(sender, SenderKeyRequest(group), (), new_internal_id())
            self.asked += 1
            log.info("group %s: asked %s for its sender key", group, sender)
        except Exception as error:  # noqa: BLE001 - the wait goes on; it asks again later
            log.warning("group %s: asking %s for its sender key failed: %r", group, sender, error)
        finally:
            self._asking.discard(pair)

    # -- answering --------------------------------------------------------------------------------
    def answer(self, requester: str, group: str) -> None:
        """A ``SenderKeyRequest(group)`` from ``requester``: answer it in the
        background if allowed (see the module docstring), else drop it."""
        try:
            checked(wire.GroupInfo(group))
        except ValueError:
            return self._drop(requester, group, "not a group id")
        if requester == self.client.user:
            return self._drop(requester, group, "from this user")
        if not self.store.has_group(group) or self.store.group(group).own is None:
            return self._drop(requester, group, "no sender key of ours in that group")
        pair, now = (requester, group), asyncio.get_running_loop().time()
        while self._answered and next(iter(self._answered.values())) <= now - ANSWER_EVERY:
            del self._answered[next(iter(self._answered))]
        if pair in self._answered or pair in self._answering:
            return self._drop(requester, group, f"answered less than {ANSWER_EVERY:g} s ago")
        if len(self._answered) >= ANSWERED_KEPT or len(self._answering) >= ANSWERING:
            return self._drop(requester, group, "too many requests")
        self._answered[pair] = now
        self._answering.add(pair)
        self.client._spawn(self._answer(pair))

    async def _answer(self, pair: tuple[str, str]) -> None:
        requester, group = pair
        client = self.client
        try:
            info = client._groups.states.get(group)
            if info is None:
                try:
                    info = await client.group_info(group)
                except (ServerError, ValueError) as error:
                    return self._drop(requester, group, f"GROUP_INFO: {error}")
            if requester not in info.members or client.user not in info.members:
                return self._drop(requester, group, "not a current member")
            own = self.store.group(group).own if self.store.has_group(group) else None
            if own is None:
                return self._drop(requester, group, "no sender key of ours in that group")
            await client._send_sealed(requester, SenderKeyMessage(own.distribution_message()), (),
                                      new_internal_id(), sealed=self.codec._handing(group, own, requester))
            self.answered += 1
            log.info("group %s: sender key handed again to %s, at its request", group, requester)
        except Exception as error:  # noqa: BLE001 - one answer failing must not end the others
            log.warning("group %s: answering %s failed: %r", group, requester, error)
        finally:
            self._answering.discard(pair)

    def _drop(self, requester: str, group: str, why: str) -> None:
        self.dropped += 1
        log.warning("group %s: sender key request from %s dropped: %s", group, requester, why)
