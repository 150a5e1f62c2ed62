"""The device check of a SEND that names the recipient's device
(docs/protocol.md, "Stale devices"), made by the connection as the SEND
arrives, before it is handed to the session, so that the send gate
(``transport.flow``) holds back every later SEND of the connection in the
order the client wrote them.

A body sealed end to end for a device the recipient has replaced can never
be opened: stored, it would reach the new device as ``Undecryptable``. So a
SEND whose ``device`` is not the recipient's current device is refused with
STALE_DEVICE and nothing is stored; the client fetches the recipient's keys
and seals the same message again, under the same id. A SEND whose id is
stored already is let through (the session answers it as stored), and so is
one without ``device`` (older clients: no lookup at all, no cost).

Where the recipient is homed on another node of a cluster, its account is
not here: the check is made at its home when the message lands there
(``storage.outq``), which answers with a FAILED receipt. The storage
transaction checks again (``storage.mailbox.store_message``): a device
replaced between this check and the commit is refused there, STALE_DEVICE
too, but without the gate (the SENDs behind it were checked already, and
any sealed for the same device are refused as well: ids only grow).

``stale_text(system, sender, frame)``: why the SEND is stale, or None.
"""

from __future__ import annotations

import logging
from typing import Any

from storage import StorageError
from transport import wire

__all__ = ["stale_text"]

log = logging.getLogger("switchboard.tcp")


def stale_text(system: Any, sender: str, frame: wire.Send) -> str | None:
    """The ERROR text for ``frame`` (which names a device) if that device is
    not its recipient's current one and its id is not stored yet; else None."""
    mail = system.env.get("mailbox")
    if mail is None:
        return None
    federation = system.env.get("federation")
    if federation is not None and federation.remote(frame.to) is not None:
        return None                         # checked at its home, where it lands
    try:
        current = mail.stale_device(sender, frame.id, frame.to, frame.device)
    except StorageError as error:           # the store is closing: the session answers
        log.warning("device check of %s skipped: %r", frame.id, error)
        return None
    if current is None:
        return None
    return (f"device {frame.device} of {frame.to} was replaced by device {current}: "
            f"fetch their keys and seal the message again")
