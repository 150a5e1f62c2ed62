"""``Encryption``: the SDK's end-to-end half (used by ``Client``): keys
published to the directory, a session per contact, every 1:1 body sealed
before it enters the outbox and opened before it becomes an event.

- ``prepare`` (before LOGIN) loads the device's keys or makes them on
  first use (``E2EStore``); ``after_login`` publishes them with
  KEYS_PUBLISH; at every later login asks KEYS_COUNT and tops the
  one-time prekeys up to ``ONE_TIME`` when fewer than ``LOW_WATER`` are
  left, and rotates the signed prekey after a week. Of the one-time
  prekeys the directory has handed out but no first message has used yet,
  only the newest ``HANDED_OUT_KEPT`` are kept. When the directory holds
  nothing for keys that are not new, the key was registered again: the
  directory forgot which one-time prekeys it had handed out, so they are
  all replaced (one handed out twice would open one first message only);
  and its contacts got KEY_CHANGED: they dropped their sessions with it
  and retire the sender keys they had from it, so it drops its sessions
  too (the next message to each starts a new one) and makes a new own
  sender key in every group (``rekey_groups``).
- ``seal(to, envelope, then)``: under a per-contact lock, fetches the
  contact's bundle (KEYS_FETCH, tried again for a few seconds while the
  answer is "try again" or does not come) if there is no session, checks the identity
  against the trust store (``IdentityChanged`` event if it changed),
  encrypts, saves the session, and only then calls ``then(ciphertext,
  device)`` (the outbox), inside the lock, so bodies enter the outbox in
  the order they were encrypted. ``device`` is the contact's device the
  session is with (the SEND names it): the directory's answer with the
  bundle, or, for a session the contact began, a lookup that hands out no
  one-time prekey (KEYS_FETCH ``one_time`` false), once per identity; a
  lookup that finds another identity begins a new session with it. A
  resend reuses the outbox's ciphertext: same bytes, no second message key.
- ``reseal(to, stale, envelopes)``: the contact replaced device ``stale``:
  a new session with the device the directory names now (as a first send:
  the trust store decides, ``IdentityChanged``), the envelopes encrypted in
  order; ``current_device(to)``: which device the directory names now.
- ``open(sender, body)``: for a first message checks the identity (a new
  one: event, and a fresh session record), decrypts, decodes the envelope,
  saves the session and the keys, and returns the envelope; raises
  ``E2EError`` for anything tampered with, replayed or malformed.
  ``open_item`` (the receive path) writes the plaintext copy of the item
  before it saves the session (E2EStore, "Opened messages").
- ``key_changed(seq, user, device)``: the server's KEY_CHANGED notice:
  forget the sessions with ``user``; the next send fetches the new device's
  bundle. Once per notice: a re-push after a restart keeps the new session,
  and so does a notice of the device a session was begun with already
  (a message sealed again after STALE_DEVICE got there first).
- ``on_device_changed(user)`` (set by the client): called for each
  KEY_CHANGED notice and each new identity of a contact (a bundle or a
  first message), before the event: the group codec replaces the sender
  keys that ``user``'s old device holds (client/group_e2e.py).
- ``safety_number(user)``: the 60 digits to compare out of band.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from transport import wire
from transport.crypto import DeviceKey
from transport.e2e import (
    Envelope, KeyBundle, SessionRecord, message_info, safety_number,
)
from client import events as ev
from client.e2e_store import E2EStore
from client.errors import RequestTimeout, ServerError

__all__ = ["Encryption", "ONE_TIME", "LOW_WATER", "HANDED_OUT_KEPT"]

ONE_TIME = 100                  # one-time prekeys kept published
LOW_WATER = 20                  # top up below this many
HANDED_OUT_KEPT = 500           # handed out, not yet used by a first message: the newest kept
ROTATE_AFTER = 7 * 86_400       # seconds: a new signed prekey every week
FETCH_TRIES = 5                 # KEYS_FETCH requests (each up to the request timeout) ...
FETCH_BACKOFF = 0.25            # ... s before the second, doubling: ~4 s of waits between
_KEY_CHANGED = "\0key-changed"  # the id a handled KEY_CHANGED is remembered under


class Encryption:
    def __init__(self, store: E2EStore, call: Callable[[wire.Frame], Awaitable[Any]],
                 emit: Callable[[Any], None]):
        self.store, self.call, self.emit = store, call, emit
        self.user: str | None = None
        self._new = False                       # keys made at this login, not yet published
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_device_changed: Callable[[str], None] | None = None

    @property
    def keys(self):
        return self.store.keys

    # -- the directory ----------------------------------------------------------------------
    def prepare(self, user: str, device_key: DeviceKey) -> None:
        """Before LOGIN: load or make the keys, so pushed messages can be opened."""
        self.user = user
        self._new = self.store.keys_for(device_key)[1]

    async def after_login(self) -> None:
        """Publish this device's keys, or top them up (see the module docstring)."""
        keys, new, self._new = self.keys, self._new, False
        held = None if new else await self.call(wire.KeysCount())
        if held is None:                        # nothing published (new keys, or a new device)
            if not new:                         # this key registered again: its contacts
                self.store.drop_sessions()      # dropped their sessions with it and retire
                self.store.rekey_groups()       # the sender keys they had from it
            if not new and keys.one_time:       # the directory forgot which of these it
                keys.one_time.clear()           # handed out: fresh ones only
            missing = max(0, ONE_TIME - len(keys.one_time))
            if missing:
                keys.add_one_time(missing)
                self.store.save_keys()
            await self._publish(keys.bundle(one_time=False), list(keys.bundle().one_time))
            return
        rotate = time.time() - keys.signed_prekey.created > ROTATE_AFTER
        if rotate:
            keys.rotate_signed_prekey()
        retired = keys.retire_handed_out(held, HANDED_OUT_KEPT)
        added = keys.add_one_time(ONE_TIME - held) if held < LOW_WATER else []
        if rotate or added or retired:
            self.store.save_keys()
        if rotate or added:
            await self._publish(keys.bundle(one_time=False), added)

    async def _publish(self, bundle: KeyBundle, one_time: list) -> None:
        for i in range(0, max(1, len(one_time)), wire.MAX_PUBLISH):
            part = bundle.with_one_time(one_time[i:i + wire.MAX_PUBLISH])
            await self.call(wire.KeysPublish(part.to_bytes()))

    # -- sending ------------------------------------------------------------------------------
    async def seal(self, to: str, envelope: Envelope, then: Callable[[bytes, int], Any]) -> Any:
        """Encrypt ``envelope`` for ``to``, save, and return ``then(ciphertext, device)``."""
        lock = self._locks.setdefault(to, asyncio.Lock())
        async with lock:
            record = self.store.session(to)
            if record.current is None:
                record = await self._start(to)
            device = self.store.device(to)
            if device is None:                  # a session ``to`` began: which device is it?
                record, device = await self._learn_device(to, record)
            body = record.encrypt(envelope.encode())
            self.store.save_session(to)
            return then(body, device)

    async def reseal(self, to: str, stale: int, envelopes: list[bytes]) -> tuple[int, list[bytes]]:
        """``to`` replaced device ``stale``: encrypt ``envelopes`` (plaintext,
        in order) for the device that replaced it; (that device, bodies).
        Raises what a first send would (NO_KEYS: the new device has not
        published keys yet, ...); ServerError STALE_DEVICE if the directory
        still names ``stale``."""
        async with self._locks.setdefault(to, asyncio.Lock()):
            record, device = self.store.session(to), self.store.device(to)
            if record.current is None or device is None or device == stale:
                record = await self._start(to)  # older sessions kept: messages in flight open
                device = self.store.device(to)
            if device == stale:
                raise ServerError(wire.ErrorCode.STALE_DEVICE,
                                  f"the directory still names device {stale} of {to}")
            bodies = [record.encrypt(envelope) for envelope in envelopes]
            self.store.save_session(to)
            return device, bodies

    async def current_device(self, to: str) -> int:
        """The device of ``to`` the directory names now (no prekey spent)."""
        return (await self._fetch(to, one_time=False))["device"]

    async def _start(self, to: str) -> SessionRecord:
        answer = await self._fetch(to)
        bundle = KeyBundle.from_bytes(answer["bundle"]).verify()
        self._observe(to, bundle.identity)
        record = self.store.session(to)
        record.initiate(self.keys, bundle)
        self.store.set_device(to, bundle.identity, answer["device"])
        return record

    async def _learn_device(self, to: str, record: SessionRecord) -> tuple[SessionRecord, int]:
        """The device of ``to`` whose identity ``record`` is with, asked of
        the directory without spending a one-time prekey; if the directory
        names another identity, ``to`` replaced that device: a new session."""
        answer = await self._fetch(to, one_time=False)
        bundle = KeyBundle.from_bytes(answer["bundle"]).verify()
        if bundle.identity == record.peer_identity:
            self.store.set_device(to, bundle.identity, answer["device"])
            return record, answer["device"]
        record = await self._start(to)
        return record, self.store.device(to)

    async def _fetch(self, to: str, one_time: bool = True) -> Any:
        """KEYS_FETCH ``to``'s bundle. One request already asks again while
        the answer is "try again" (INTERNAL), within the request timeout;
        a restarting cluster node can take longer than that (its directory is
        rebuilt from the nodes' rejoins), so the whole request is made again
        after a backoff while it ends in "try again" or no answer: a message
        written meanwhile goes out a few seconds later rather than failing,
        as a SEND would be retried. A refusal (NO_KEYS, UNKNOWN_USER,
        RATE_LIMITED, ...) fails at once, and so does the last try
        (``FETCH_TRIES``)."""
        delay = FETCH_BACKOFF
        for attempt in range(1, FETCH_TRIES + 1):
            try:
                return await self.call(wire.KeysFetch(to, one_time))
            except RequestTimeout:
                if attempt == FETCH_TRIES:
                    raise
            except ServerError as error:
                if error.code is not wire.ErrorCode.INTERNAL or attempt == FETCH_TRIES:
                    raise
            await asyncio.sleep(delay)
            delay *= 2

    def _observe(self, user: str, identity: bytes) -> bool:
        """Trust on first use; a changed identity is announced. True if it changed."""
        change = self.store.trust.observe(user, identity)
        self.store.save_trust()
        if change is None:
            return False
        self._device_changed(user)
        self.emit(ev.IdentityChanged(user, self._number(user, identity)))
        return True

    # -- receiving ----------------------------------------------------------------------------
    def open_item(self, seq: int, sender: str, id: str, body: bytes) -> Envelope:
        """``open`` for inbox item ``seq``, remembering the result until it is
        acknowledged, so a re-push after a crash opens again (E2EStore).
        The copy is written before the session that consumed its key: a
        crash between the two leaves the old session, which opens it again."""
        known = self.store.opened(seq, sender, id)
        if known is not None:
            return Envelope.decode(known)
        plaintext, prekey = self._decrypt(sender, body)
        self.store.remember_opened(seq, sender, id, plaintext)
        self._save(sender, prekey)
        return Envelope.decode(plaintext)

    def open(self, sender: str, body: bytes) -> Envelope:
        """Decrypt and decode ``body`` from ``sender``; ``E2EError`` if it cannot be."""
        plaintext, prekey = self._decrypt(sender, body)
        self._save(sender, prekey)
        return Envelope.decode(plaintext)

    def _decrypt(self, sender: str, body: bytes) -> tuple[bytes, bool]:
        """The plaintext of ``body`` (the session moved in memory only) and
        whether it was a first (prekey) message. A first message from a new
        identity is decrypted with a fresh record before anything is
        believed: a tampered identity changes nothing."""
        info = message_info(body)
        known = self.store.trust.identity(sender)
        if info.prekey and known is not None and info.identity != known:
            record = SessionRecord()
            plaintext = record.decrypt(self.keys, body)
            self.store.replace_session(sender, record)   # the old identity's sessions are void
            self._observe(sender, info.identity)
        else:
            plaintext = self.store.session(sender).decrypt(self.keys, body)
            if info.prekey and known is None:
                self._observe(sender, info.identity)
        return plaintext, info.prekey

    def _save(self, sender: str, prekey: bool) -> None:
        self.store.save_session(sender)
        if prekey:
            self.store.save_keys()              # its one-time prekey is gone

    def key_changed(self, seq: int, user: str, device: int | None = None) -> None:
        """KEY_CHANGED item ``seq``: replace the sender keys ``user``'s old
        device holds (``on_device_changed``), drop the sessions with ``user``, once.
        The notice is pushed again after a restart until its RECEIVED is
        confirmed; by then a new session with the new device may exist,
        so a notice already handled (remembered like an opened message,
        after the drop) changes nothing, nor does one naming ``device``
        when the current session is with it already (``reseal`` began it,
        and the trust store announced the change then)."""
        if self.store.opened(seq, user, _KEY_CHANGED) is not None:
            return
        if device is None or self.store.device(user) != device:
            self._device_changed(user)
            self.store.drop_session(user)
        self.store.remember_opened(seq, user, _KEY_CHANGED, b"")

    def _device_changed(self, user: str) -> None:
        if self.on_device_changed is not None:
            self.on_device_changed(user)

    # -- safety numbers -------------------------------------------------------------------------
    async def safety_number(self, user: str) -> str:
        """The safety number with ``user`` (fetching their keys if none are known)."""
        identity = self.store.trust.identity(user)
        if identity is None:
            async with self._locks.setdefault(user, asyncio.Lock()):
                if self.store.session(user).current is None:
                    await self._start(user)
            identity = self.store.trust.identity(user)
        return self._number(user, identity)

    def _number(self, user: str, identity: bytes) -> str:
        return safety_number(self.user, self.keys.identity, user, identity)
