"""What ``Client.events()`` yields, and the status of a sent message.

Inbox items (they carry the ``seq`` of the user's inbox; the SDK sends
RECEIVED for them once they are handed to the app, and never hands the same
item over twice):

- ``Message(seq, id, sender, ts, body)``: a message to this user.
- ``Receipt(seq, kind, id, by, ts)``: a message this user sent was
  delivered to (``Status.DELIVERED``) or read by (``Status.READ``) ``by``,
  or (``Status.FAILED``, a cluster) refused by ``by``'s home node after
  this user's node had accepted it (their inbox is full, or there is no
  such user there): it will never be delivered, and it is not resent.
- ``FileMessage(seq, id, sender, ts, file)``: a file (``MediaInfo``: hash,
  size, key, type, name, caption); ``Client.download(file, dest)`` gets it.
- ``Undecryptable(seq, id, sender, ts, reason)``: a message that failed to
  decrypt or was malformed inside (tampered with, or for an old device).
  Never shown as text; acknowledged like any item, since it never will
  decrypt and would otherwise be pushed again at every login.
- ``KeyChanged(seq, user, device, ts)``: the server's notice that ``user``
  registered a new device; the SDK has dropped its sessions with them.

With end-to-end encryption ``Message.body`` is the decrypted text (UTF-8).

Not stored by the server, never deduplicated:

- ``Presence(user, online, last_seen)``: after ``subscribe`` and at every
  change of a subscribed user.
- ``Typing(sender, typing)``.

From the SDK itself:

- ``Sent(id, to, ts)``: the server committed a message from the outbox (one
  tick). ``send()`` returns the same object; the event also reports
  messages sent from a persisted outbox that nobody is awaiting.
- ``SendFailed(id, to, error)``: the server refused a message for good
  (UNKNOWN_USER, OFFLINE_FULL, INVALID); it left the outbox.
- ``IdentityChanged(user, safety_number)``: a contact's identity key is
  not the one seen before (a fetched bundle or a first message said so):
  show "security code changed" and the new safety number to compare.
- ``Disconnected(reason, reconnecting)`` / ``Reconnected(attempts)``: the
  connection dropped / is back (after HELLO, LOGIN, resubscribe and the
  outbox resend were started).

Timestamps (``ts``, ``last_seen``) are milliseconds since the Unix epoch,
server clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Union

from transport.e2e import MediaKey

__all__ = ["Status", "Message", "Receipt", "Presence", "Typing", "Sent", "SendFailed",
           "Disconnected", "Reconnected", "Event", "MediaInfo", "FileMessage", "Undecryptable",
           "KeyChanged", "IdentityChanged"]


class Status(IntEnum):
    """Where a message this user sent is; only ever moves up (except to
    FAILED, from QUEUED or SENT)."""
    FAILED = -1         # refused by the server, or by the recipient's node (a FAILED
                        # receipt); not in the outbox any more, never delivered
    QUEUED = 0          # in the outbox, not yet acknowledged (a clock icon)
    SENT = 1            # committed by the server: one tick
    DELIVERED = 2       # the recipient's device has it: two ticks
    READ = 3            # the recipient read it: blue ticks

    @property
    def ticks(self) -> str:
        return _TICKS[self]


_TICKS = {Status.FAILED: "✗ not delivered", Status.QUEUED: "…", Status.SENT: "✓",
          Status.DELIVERED: "✓✓", Status.READ: "✓✓ read"}


@dataclass(frozen=True, slots=True)
class Message:
    seq: int            # this user's inbox sequence number
    id: str             # the sender's message id
    sender: str
    ts: int             # when the server committed it
    body: bytes


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """How to fetch and open one file: ``key`` (a ``MediaKey``: the file
    key, the ciphertext's SHA-256, the plaintext size), ``mime``, ``name``,
    ``caption``. ``sha256`` (hex) names the blob on the server."""
    key: MediaKey
    mime: str
    name: str = ""
    caption: str = ""

    @property
    def sha256(self) -> str:
        return self.key.sha256.hex()

    @property
    def size(self) -> int:
        return self.key.size


@dataclass(frozen=True, slots=True)
class FileMessage:
    seq: int
    id: str
    sender: str
    ts: int
    file: MediaInfo


@dataclass(frozen=True, slots=True)
class Undecryptable:
    seq: int
    id: str
    sender: str
    ts: int
    reason: str         # why (for logs; never the message)


@dataclass(frozen=True, slots=True)
class KeyChanged:
    seq: int
    user: str
    device: int         # the new device id
    ts: int


@dataclass(frozen=True, slots=True)
class IdentityChanged:
    user: str
    safety_number: str  # the new one, 60 digits in groups of 5


@dataclass(frozen=True, slots=True)
class Receipt:
    seq: int            # this user's inbox sequence number
    kind: Status        # Status.DELIVERED, Status.READ or Status.FAILED
    id: str             # the id of the message this user sent
    by: str             # who received / read it
    ts: int


@dataclass(frozen=True, slots=True)
class Presence:
    user: str
    online: bool
    last_seen: int | None = None    # ms; None if never seen (or online)


@dataclass(frozen=True, slots=True)
class Typing:
    sender: str
    typing: bool


@dataclass(frozen=True, slots=True)
class Sent:
    id: str
    to: str
    ts: int             # the server's commit time


@dataclass(frozen=True, slots=True)
class SendFailed:
    id: str
    to: str
    error: Exception


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str
    reconnecting: bool  # False: the client is closed for good (see Client.closed_reason)


@dataclass(frozen=True, slots=True)
class Reconnected:
    attempts: int       # connection attempts it took


Event = Union[Message, Receipt, Presence, Typing, Sent, SendFailed, Disconnected, Reconnected,
              FileMessage, Undecryptable, KeyChanged, IdentityChanged]
