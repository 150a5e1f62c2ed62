"""``Sealing``: a 1:1 end-to-end message from plaintext to the outbox, and
sealed again when the recipient's device was replaced under it (used by
``Client`` with end-to-end encryption; docs/e2e.md, "A recipient's replaced
device").

- ``send(to, envelope, media, id, sealed)``: encrypt for ``to``'s device
  (``Encryption.seal``) and queue the body with that device, which the SEND
  names; the plaintext is kept (``client.sealed``, written before the
  outbox entry) until the message is delivered or fails for good. A retry
  of a queued id joins it, reusing its ciphertext (``Sender.join``); a
  different message under that id is a ValueError. ``sealed`` runs once the
  body is encrypted, before it is queued.
- ``stale(entry, conn)`` (``Sender.on_stale``): the server refused ``entry``
  with STALE_DEVICE. The sender holds every SEND back; every queued message
  to that recipient sealed for that device is sealed again, in order, from
  its copy, for the device the directory names now (``Encryption.reseal``:
  a new session, the trust store deciding, ``IdentityChanged`` if the
  identity is new), its body replaced in place; sending then resumes from
  the first of them, so nothing overtakes it, and the server's send gate
  has refused whatever was in flight behind it. At most ``MAX_RESEALS``
  attempts per message: one that cannot be sealed again (the new device
  has published no keys yet, the device keeps changing, no copy is kept)
  fails with ``SendFailed``, and the refused SEND goes once more as it was,
  which the server refuses again without holding anything back.
- ``failed(receipt)`` (``Receiver.on_failed``): in a cluster a message to a
  user homed on another node is acknowledged by this user's node and
  checked where it lands; a body sealed for a replaced device comes back as
  a FAILED receipt (and the refusal frees its id here). If the kept copy
  was sealed for a device the directory no longer names, the message is
  sealed again and queued again under the same id (a second ``Sent``), and
  the receipt is acknowledged without an event; otherwise the receipt is a
  failure, as before (``Receiver.release``). Receipts are checked one at a
  time, in the order they came, so messages go out again in their order. A
  re-push of a handled receipt after a restart is known by its seq
  (``Sealed.failed_seq``).
- ``done(id)`` (``Sender.on_done``): delivered, or failed for good: the copy
  goes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any

from transport import wire
from transport.e2e import Envelope
from client import events as ev
from client.connection import Connection
from client.errors import ConnectionLost, ServerError
from client.ids import new_message_id
from client.link import checked
from client.outbox import OutboxEntry
from client.sealed import Sealed

__all__ = ["Sealing", "MAX_RESEALS"]

log = logging.getLogger("switchboard.client")

MAX_RESEALS = 3                 # attempts to seal one message again, then it fails


class Sealing:
    def __init__(self, client: Any):
        self.client = client
        self.e2e, self.sender, self.receiver = client._e2e, client._sender, client._receiver
        self.copies = self.e2e.store.sealed
        self._checking: set[int] = set()        # FAILED receipts being checked (seqs) ...
        self._one_at_a_time = asyncio.Lock()     # ... in the order they came: queued again so
        self.sender.on_stale, self.sender.on_done = self.stale, self.done
        self.receiver.on_failed = self.failed

    # -- sending --------------------------------------------------------------------------
    async def send(self, to: str, envelope: Envelope, media: tuple[str, ...], id: str | None,
                   sealed: Any = None) -> ev.Sent:
        client = self.client
        client._check_open()
        frame = checked(wire.Send(new_message_id() if id is None else id, to, b"", media))
        if to == client.user:
            raise ValueError("cannot send a message to yourself")
        plaintext = envelope.encode()
        digest = self.sender.digest(plaintext, *(m.encode() for m in media))
        joined = self.sender.join(frame.id, to, digest)
        if joined is not None:
            return await joined

        def queue(body: bytes, device: int) -> asyncio.Future:
            client._check_open()                # the session may have ended during the fetch
            joined = self.sender.join(frame.id, to, digest)    # a retry made meanwhile
            if joined is not None:
                return joined
            try:
                wire.encode(wire.Send(frame.id, to, body, media, device),
                            max_frame=client.max_frame)
            except wire.FrameError as error:
                raise ValueError(f"message too large: {error.message}") from None
            if sealed is not None:
                sealed()
            self.copies.keep(frame.id, Sealed(to, device, plaintext, tuple(media)))
            return self.sender.add(frame.id, to, body, media, digest, device)
        return await (await self.e2e.seal(to, envelope, queue))

    def done(self, id: str) -> None:
        self.copies.forget(id)

    # -- STALE_DEVICE -----------------------------------------------------------------------
    def stale(self, entry: OutboxEntry, conn: Connection) -> None:
        self.sender.hold()
        self.client._spawn(self._seal_again(entry, conn))

    async def _seal_again(self, entry: OutboxEntry, conn: Connection) -> None:
        to, stale = entry.to, entry.device
        queued = [e for e in self.sender.outbox if e.to == to and e.device == stale]
        try:
            try:
                copies = [(e, self.copies.get(e.id)) for e in queued]
                if entry.reseals >= MAX_RESEALS:
                    raise ServerError(wire.ErrorCode.STALE_DEVICE,
                                      f"{to} replaced their device {entry.reseals + 1} times "
                                      f"while this message was on its way; not sent")
                if self.copies.get(entry.id) is None:
                    raise ServerError(wire.ErrorCode.STALE_DEVICE,
                                      f"sealed for a replaced device of {to}, and no copy is "
                                      f"kept to seal again")
                kept = [(e, c) for e, c in copies if c is not None]
                device, bodies = await self.e2e.reseal(to, stale, [c.envelope for _, c in kept])
            except asyncio.CancelledError:
                raise
            except Exception as error:          # noqa: BLE001 - reported as the failure it is
                self._give_up(entry, conn, queued, error)
                return
            for (e, copy), body in zip(kept, bodies):
                self.sender.replace(e.id, body, device)
                self.copies.keep(e.id, replace(copy, device=device))
            lost = ServerError(wire.ErrorCode.STALE_DEVICE, "no copy kept to seal again")
            for e, copy in copies:
                if copy is None:
                    self.sender.fail(e.id, lost)
        finally:
            self.sender.unhold()

    def _give_up(self, entry: OutboxEntry, conn: Connection, queued: list[OutboxEntry],
                 error: Exception) -> None:
        """``queued`` cannot be sealed again: they fail; ``entry``'s SEND goes
        once more as it was, which lifts the server's send gate."""
        log.info("messages to %s sealed for replaced device %s: %s", entry.to, entry.device, error)
        if conn is self.sender.conn and conn.usable:
            try:
                conn.request(wire.Send(entry.id, entry.to, entry.body, entry.media, entry.device),
                             lambda ack, error: None)
            except (ConnectionLost, wire.FrameError):
                pass                            # a new connection has no gate
        if not isinstance(error, ServerError):
            error = ServerError(wire.ErrorCode.STALE_DEVICE, f"cannot seal it again: {error}")
        for e in queued:
            self.sender.fail(e.id, error)

    # -- a FAILED receipt (a cluster: the recipient's home checked the device) -------------------
    def failed(self, receipt: wire.Receipt) -> bool:
        copy = self.copies.get(receipt.id)
        if copy is None or copy.to != receipt.by:
            return False                        # not a message this device can seal again
        if copy.failed_seq == receipt.seq:      # handled before a restart
            self.receiver.swallow(receipt.seq)
        elif receipt.seq not in self._checking:
            self._checking.add(receipt.seq)
            self.client._spawn(self._check(receipt, copy))
        return True

    async def _check(self, receipt: wire.Receipt, copy: Sealed) -> None:
        async with self._one_at_a_time:
            await self._check_one(receipt, copy)

    async def _check_one(self, receipt: wire.Receipt, copy: Sealed) -> None:
        try:
            body = None
            if copy.reseals < MAX_RESEALS and await self.e2e.current_device(copy.to) != copy.device:
                device, (body,) = await self.e2e.reseal(copy.to, copy.device, [copy.envelope])
        except asyncio.CancelledError:
            raise
        except Exception as error:              # noqa: BLE001 - then it failed, as it says
            log.info("message %s to %s not sealed again: %r", receipt.id, copy.to, error)
        finally:
            self._checking.discard(receipt.seq)
        if body is None:
            self.receiver.release(receipt)
            return
        try:                                    # the outbox first: a crash after it seals again
            self.sender.requeue(receipt.id, copy.to, body, copy.media, device)
        except Exception as error:              # noqa: BLE001 - the client is closing
            log.info("message %s not queued again: %r", receipt.id, error)
            return
        self.copies.keep(receipt.id, replace(copy, device=device, failed_seq=receipt.seq,
                                             reseals=copy.reseals + 1))
        self.receiver.swallow(receipt.seq)
