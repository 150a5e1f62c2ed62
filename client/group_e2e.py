"""``SenderKeyCodec``: group bodies end-to-end encrypted with sender keys
(docs/e2e.md, "Groups"), the ``GroupCodec`` an end-to-end ``Client`` uses.

Each member has its own sender key per group (a ``GroupCipher``, saved in
the ``E2EStore``). A group message is encrypted once, whatever the group's
size; the server fans the ciphertext out.

- ``prepare(group)`` (before every group send): every current member who
  has not had this device's current sender key gets its distribution
  message, over the 1:1 session (``SenderKeyMessage`` envelope, which
  authenticates it), and the group send waits until those are committed,
  so each member's inbox holds the key before the message. A member with
  no published keys (NO_KEYS), or one whose keys cannot be fetched now
  (RATE_LIMITED: KEYS_FETCH allows ~100 new contacts a minute, so a first
  send to a big group reaches only that many), is skipped, announced
  (``GroupKeysPending`` event) and tried again at the next send: it gets
  the message but cannot read it. The others can. A member removed
  while the keys are in flight re-keys (``on_event``): then the round is
  done again with the new key and the new member list (at most
  ``PREPARE_ROUNDS`` times), so ``seal`` never uses a key nobody has.
- ``seal`` / ``open``: ``GroupCipher.encrypt`` / ``decrypt``; a message that
  does not decrypt opens to None (an ``Undecryptable`` event, acknowledged).
  ``open_item`` first writes the plaintext aside under the item's seq
  (``E2EStore.remember_opened``, like a 1:1 message), then saves the moved
  chain: a re-push after a restart, before RECEIVED was confirmed, opens
  from that copy instead of failing as a replay.
- ``receive`` (the receive path): ``open_item``, except that an item whose
  sender key is not here yet (``NoSenderKey``: on a cluster the group
  message can overtake the 1:1 message handing the key) is held, not
  acknowledged, until that key arrives (``_keep``) or ``held.timeout``
  seconds pass (``client/group_hold.py``); after ``held.ask_after``
  seconds its sender is asked for its key (``requests``,
  ``client/group_requests.py``, which also answers such requests). A
  sender this device saw removed is not waited for (its new key would be
  refused).
- ``process(sender, distribution)``: a sender key received over 1:1, for
  a group this device knows (it has the group's state: a group event or
  an earlier key made it), unless this device saw its sender removed and
  not added again (``GroupCipher.removed``); for any other group, and
  such a sender, the server is asked
  (GROUP_INFO, at most ``UNKNOWN_PENDING`` at a time) and the key is kept
  only if this user is a member. So a contact cannot make this device
  keep one file per made-up group name.
- ``on_event``: a member ``removed`` or ``left``: forget their keys, make a
  new own sender key (``member_removed``), and send it, at the next group
  send, to the members that remain only. The one who left holds only old
  chain keys, which never encrypt again: it cannot read what follows. When
  this user is the one removed, its keys of the group are dropped.
- A new member gets the current sender key at the next send (no re-key: a
  chain only moves forward, so it cannot read what came before).
- ``device_changed(user)``: ``user`` has a new device (the server's
  KEY_CHANGED notice, or a new identity seen in a bundle or a first
  message). Its old device, or whoever holds that device's state, knows
  this device's current sender key of every group it was handed in, so
  each such group gets a new own key (``GroupCipher.device_changed``),
  handed at the next send to the current members only, over sessions with
  their current devices. Who was handed a key is saved with it
  (``GroupCipher.handed``, just before the key enters the outbox), so this
  holds across restarts. The keys received from ``user`` (its old
  device's) retire in every group (``GroupCipher.retire``): they open
  messages for a short grace, then are dropped, and a message under one is
  refused.

Distribution is remembered in memory only (``holders``, for the own key it
was made for); after a restart it is sent again (harmless: a resent key can
move a chain forward, never back).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

from transport import wire
from transport.e2e import E2EError, Envelope, NoSenderKey, SenderKey, SenderKeyMessage, SenderKeyRequest
from client.errors import ClientError, ServerError
from client.group_hold import KeyWait
from client.group_requests import KeyRequests
from client.groups import GroupCodec, GroupKeysPending
from client.ids import new_internal_id
from client.link import checked

__all__ = ["SenderKeyCodec"]

log = logging.getLogger("switchboard.client")

_LEAVING = frozenset({"removed", "left"})
_JOINING = frozenset({"created", "added"})
_LATER = frozenset({wire.ErrorCode.NO_KEYS, wire.ErrorCode.RATE_LIMITED})  # skip, retry next send
PREPARE_ROUNDS = 4              # re-keys tolerated during one send's key distribution
UNKNOWN_PENDING = 16            # distributions for unknown groups checked at a time


class SenderKeyCodec(GroupCodec):
    def __init__(self, client: Any):
        self.client = client
        self.store = client._e2e.store
        self.holders: dict[str, set[str]] = {}   # group -> members holding our current key
        self._holding: dict[str, SenderKey] = {}  # group -> the own key ``holders`` is about
        self._locks: dict[str, asyncio.Lock] = {}
        self._unknown: dict[tuple[str, str], bytes] = {}   # (group, sender) -> being checked
        self.requests = KeyRequests(self)       # asking for keys, and answering such requests
        self.held = KeyWait(self._open_or_wait, ask=self.requests.ask)  # awaiting their key

    async def prepare(self, group: str) -> None:
        async with self._locks.setdefault(group, asyncio.Lock()):
            for _ in range(PREPARE_ROUNDS):
                if await self._distribute(group):
                    return
            raise ClientError(f"group {group} was re-keyed {PREPARE_ROUNDS} times during one send")

    async def _distribute(self, group: str) -> bool:
        """One round of ``prepare``; False if a member left meanwhile (the
        own key was replaced while the keys were in flight): ``seal`` would
        use a key nobody has yet, so the round is done again."""
        client = self.client
        info = client._groups.states.get(group) or await client.group_info(group)
        cipher = self.store.group(group)
        distribution = cipher.distribution_message()        # made on first use
        own = cipher.own
        self.store.save_group(group)
        holders = self.holders.get(group)
        if holders is None or self._holding.get(group) is not own:   # re-keyed: nobody has it
            holders = self.holders[group] = set()
            self._holding[group] = own
        missing = [m for m in info.members if m != client.user and m not in holders]
        results = await asyncio.gather(
            *(client._send_sealed(m, SenderKeyMessage(distribution), (), new_internal_id(),
                                  sealed=self._handing(group, own, m)) for m in missing),
            return_exceptions=True)
        if self.store.group(group).own is not own or self.holders.get(group) is not holders:
            return False                                    # re-keyed by on_event meanwhile
        pending: dict[wire.ErrorCode, list[str]] = {}
        for member, result in zip(missing, results):
            if isinstance(result, ServerError) and result.code in _LATER:
                pending.setdefault(result.code, []).append(member)
            elif isinstance(result, BaseException):
                raise result
            else:
                holders.add(member)
        for code, users in pending.items():
            log.warning("group %s: %d members without this sender key (%s); they cannot "
                        "read this message", group, len(users), code.name.lower())
            client._emit(GroupKeysPending(group, tuple(users), code.name.lower()))
        return True

    def _handing(self, group: str, own: SenderKey, member: str):
        """What runs once ``own``'s distribution is sealed for ``member``
        (its session with ``member``'s device as of now), just before it
        enters the outbox: ``member`` is saved among those holding ``own``."""
        def handed() -> None:
            cipher = self.store.group(group)
            if cipher.own is own:           # else re-keyed meanwhile: that key never encrypts
                cipher.handed(member)
                self.store.save_group(group)
        return handed

    def device_changed(self, user: str) -> None:
        """``user`` registered a new device: re-key every group whose current
        own key was handed to ``user`` (to its old device), and retire the
        keys received from ``user`` (made by its old device) in every group."""
        for group in self.store.group_ids():
            cipher = self.store.group(group)
            rekeyed = cipher.device_changed(user) is not None
            retiring = cipher.retire(user)
            if rekeyed or retiring:
                self.store.save_group(group)
            if rekeyed:
                self.holders[group] = set()         # the new key goes to every member
                log.info("group %s: new sender key, %s has a new device", group, user)
            if retiring:
                log.info("group %s: the sender keys of %s's old device retire", group, user)

    def seal(self, group: str, body: bytes) -> bytes:
        ciphertext = self.store.group(group).encrypt(body)
        self.store.save_group(group)
        return ciphertext

    def open(self, group: str, sender: str, body: bytes) -> bytes | None:
        try:
            plaintext = self.store.group(group).decrypt(sender, body)
        except E2EError as error:
            log.warning("group %s message from %s rejected: %s", group, sender, error)
            return None
        self.store.save_group(group)
        return plaintext

    def open_item(self, seq: int, group: str, sender: str, id: str, body: bytes) -> bytes | None:
        try:
            return self._open_item(seq, group, sender, id, body)
        except E2EError as error:
            log.warning("group %s message from %s rejected: %s", group, sender, error)
            return None

    def _open_item(self, seq: int, group: str, sender: str, id: str, body: bytes) -> bytes:
        tag = f"{group}\0{id}"                  # never equal to a 1:1 item's id
        known = self.store.opened(seq, sender, tag)
        if known is not None:
            return known
        if not self.store.has_group(group):     # looking must not make it a known group
            raise NoSenderKey(f"no sender key of group {group} yet")
        plaintext = self.store.group(group).decrypt(sender, body)
        self.store.remember_opened(seq, sender, tag, plaintext)   # the copy, then the chain
        self.store.save_group(group)
        return plaintext

    def receive(self, frame: wire.Message, deliver) -> None:
        """``open_item``, but an item whose sender key is not here yet is held
        (``client/group_hold.py``) until it comes, unacknowledged."""
        self.held.receive(frame, deliver)

    def _open_or_wait(self, frame: wire.Message) -> bytes | None:
        """The plaintext; None if it never will open; NoSenderKey: hold it."""
        group, sender = frame.group, frame.sender
        try:
            return self._open_item(frame.seq, group, sender, frame.id, frame.body)
        except NoSenderKey as error:
            if not (self.store.has_group(group) and sender in self.store.group(group).removed):
                raise                           # its key may be on its way
            log.warning("group %s message from %s, removed, rejected: %s", group, sender, error)
        except E2EError as error:
            log.warning("group %s message from %s rejected: %s", group, sender, error)
        return None

    def close(self) -> None:
        self.held.close()

    def on_envelope(self, sender: str, envelope: Envelope) -> bool:
        """A 1:1 envelope for the SDK itself (no app event): a sender key
        (``process``) or a request for ours (``requests.answer``). False if
        ``envelope`` is not one of these."""
        if isinstance(envelope, SenderKeyMessage):
            self.process(sender, envelope.distribution)
        elif isinstance(envelope, SenderKeyRequest):
            self.requests.answer(sender, envelope.group)
        else:
            return False
        return True

    def process(self, sender: str, distribution: bytes) -> None:
        group = SenderKey.from_distribution(distribution).group
        checked(wire.GroupInfo(group))          # ValueError: not a group id at all
        known = self.store.has_group(group) or group in self.client._groups.states
        if known and sender not in self.store.group(group).removed:
            self._keep(group, sender, distribution)
        elif len(self._unknown) < UNKNOWN_PENDING and (group, sender) not in self._unknown:
            self._unknown[group, sender] = distribution
            self.client._spawn(self._check(group, sender))
        else:
            log.warning("group %s: sender key from %s dropped (unknown group)", group, sender)

    def _keep(self, group: str, sender: str, distribution: bytes) -> None:
        kept = self.store.group(group).process(sender, distribution)
        self.store.save_group(group)
        if not kept:                            # its device was replaced: refused
            log.warning("group %s: a retired sender key from %s dropped", group, sender)
            return
        self.held.key_arrived(group, sender)    # what waited for it opens now

    async def _check(self, group: str, sender: str) -> None:
        """Keep a key of a group this device does not know, or from a member
        it saw removed, if the server says this user is a member of it (and
        ``sender`` too)."""
        try:
            info = await self.client.group_info(group)
        except (ServerError, ValueError) as error:
            log.warning("group %s: sender key from %s dropped: %s", group, sender, error)
            return
        finally:
            distribution = self._unknown.pop((group, sender))
        if sender in info.members and self.client.user in info.members:
            self.store.group(group).member_added(sender)    # removed once, a member again
            self._keep(group, sender, distribution)

    def on_event(self, group: str, event: str, users: Iterable[str]) -> None:
        users = set(users)
        if event not in _LEAVING or self.client.user not in users:
            if not self.store.has_group(group):  # a member: its keys are welcome from now on
                self.store.group(group)
                self.store.save_group(group)
        if event not in _LEAVING:
            if event in _JOINING and self.store.has_group(group):
                cipher = self.store.group(group)
                for user in users:
                    cipher.member_added(user)
                self.store.save_group(group)
            return
        if self.client.user in users:
            self.store.drop_group(group)
            self.holders.pop(group, None)
            self._holding.pop(group, None)
            return
        cipher = self.store.group(group)
        for user in users:
            cipher.member_removed(user)
        self.store.save_group(group)
        self.holders[group] = set()                         # the new key goes to who remains
