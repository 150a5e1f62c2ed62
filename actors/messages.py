"""Internal commands and events of the messaging server.

Separate from the wire frames in ``transport/wire.py``: only
``transport/tcp.py`` translates between the two. Commands are imperative
(``SendMessage``), events past tense (``Acked``). All are plain module-level
frozen dataclasses, so they can cross a process boundary by pickle.

Fields are documented the pykka way, on the class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# -- reasons a request fails (transport maps them to wire error codes) ---------
UNKNOWN_USER = "unknown_user"
OFFLINE_FULL = "offline_full"
RATE_LIMITED = "rate_limited"
BAD_CODE = "bad_code"
LOGIN_FAILED = "login_failed"
INVALID = "invalid"
INTERNAL = "internal"
SESSION_REPLACED = "session_replaced"
STALE_DEVICE = "stale_device"


class ClientPort(Protocol):
    """What a session sees of its client connection (``transport.tcp``)."""

    def push(self, event: Any) -> bool | None:
        """Send one of the events below to the client. ``False``: the
        client is backed up and this inbox item was NOT sent; stop pushing
        inbox items until it asks again with ``ResumePushes``."""

    def resume(self) -> None:
        """The session handled ``ResumePushes``: inbox pushes flow again."""

    def flush(self) -> None:
        """Send now what ``push`` has queued (a no-op when nothing is): the
        session calls it when its mailbox is drained, a loop turn before the
        connection's own flush would run."""

    def close(self, reason: str, text: str) -> None:
        """Tell the client why (a fatal error) and close the connection."""

    def bind(self, session: Any) -> None:
        """``session`` now serves this client; requests sent to an earlier
        incarnation that crashed are failed so the client retries them."""


# -- commands from the connection to its session ------------------------------
# Each request carries ``client``, the connection it arrived on: its answer
# (ACK or ERROR with ``ref``) goes back there, never to a newer connection of
# the same user, whose refs mean other requests.
@dataclass(frozen=True)
class Attach:
    """Take ``client`` as this session's connection (replacing any other)."""
    client: Any


@dataclass(frozen=True)
class Detach:
    """``client`` is gone; linger, then stop if nobody attaches again."""
    client: Any


@dataclass(frozen=True)
class SendMessage:
    """Store ``body`` for ``to`` under the sender's ``id``; ack ``ref`` after commit.
    ``media``: hex SHA-256 of the blobs the body refers to (blob references);
    ``device``: the device of ``to`` the body is sealed for (STALE_DEVICE
    when it is not ``to``'s current one)."""
    ref: int
    id: str
    to: str
    body: bytes
    client: Any = field(default=None, compare=False, repr=False)
    media: tuple[str, ...] = ()
    device: int | None = None


@dataclass(frozen=True)
class AckInbox:
    """The client holds inbox items ``seqs``: delete them (sends delivered receipts)."""
    ref: int
    seqs: tuple[int, ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class MarkRead:
    """The user read messages ``ids`` from ``peer``: send read receipts
    (``group``: they were messages of that group)."""
    ref: int
    peer: str
    ids: tuple[str, ...]
    client: Any = field(default=None, compare=False, repr=False)
    group: str | None = None


@dataclass(frozen=True)
class Subscribe:
    """Send presence of ``users`` now and whenever it changes."""
    ref: int
    users: tuple[str, ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SetTyping:
    """Tell ``to`` whether this user is typing (routed, never stored)."""
    ref: int
    to: str
    typing: bool
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Heartbeat:
    """The client is alive (a PING)."""
    ref: int
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class ResumePushes:
    """``client`` caught up after refusing inbox pushes (it was backed up):
    push again, every item after ``upto``, the last one it took."""
    upto: int
    client: Any = field(default=None, compare=False, repr=False)


# -- between actors -----------------------------------------------------------------
@dataclass(frozen=True)
class InboxAppended:
    """Inbox item ``seq`` was committed for this user: push what is new.
    ``items``, when the sender has them, are the ``InboxItem``s just
    committed for this user (contiguous seqs ending at ``seq``), so the
    session can push them without reading them back from LMDB."""
    seq: int
    items: tuple = ()


@dataclass(frozen=True)
class BatchStored:
    """The op for ``requests`` (``SendMessage``, ``AckInbox``, ``MarkRead``, in
    order) committed, with the op's ``value`` (one result per request), or
    failed as a whole with ``error``."""
    requests: tuple
    error: BaseException | None
    value: Any


@dataclass(frozen=True)
class FlushInbox:
    """Push the next page of the inbox to the client."""


@dataclass(frozen=True)
class PresenceChanged:
    """``user`` went on- or offline; ``last_seen`` in ms when offline."""
    user: str
    online: bool
    last_seen: int | None


@dataclass(frozen=True)
class TypingChanged:
    """``sender`` started or stopped typing to this user."""
    sender: str
    typing: bool


@dataclass(frozen=True)
class LingerExpired:
    """The session's linger timer ran out (``token`` tells stale timers apart)."""
    token: int


# -- events from the session to its client (``ClientPort.push``) ---------------------
@dataclass(frozen=True)
class Acked:
    """Request ``ref`` succeeded with ``value``."""
    ref: int
    value: Any = None


@dataclass(frozen=True)
class Rejected:
    """Request ``ref`` failed with ``reason`` (one of the constants above);
    ``retry_after`` (seconds) when a retry can pass, for RATE_LIMITED."""
    ref: int
    reason: str
    text: str
    retry_after: float | None = None


# -- groups: commands from the connection, forwarded by the session to the group's
# actor (``actors.group``), which answers ``client`` after the commit ------------------
UNKNOWN_GROUP = "unknown_group"
NOT_MEMBER = "not_member"
NOT_ADMIN = "not_admin"
GROUP_FULL = "group_full"


class GroupCommand:
    """Base of the commands a ``Group`` actor serializes (the session has
    one handler for all of them: ``handle_group_command``)."""
    __slots__ = ()


@dataclass(frozen=True)
class CreateGroup(GroupCommand):
    """Create the group ``<user>/<key>`` named ``name`` with ``members``."""
    ref: int
    key: str
    name: str
    members: tuple[str, ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class AddMembers(GroupCommand):
    ref: int
    group: str
    users: tuple[str, ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RemoveMembers(GroupCommand):
    ref: int
    group: str
    users: tuple[str, ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class LeaveGroup(GroupCommand):
    ref: int
    group: str
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SetAdmin(GroupCommand):
    """Promote (``admin``) or demote ``user``."""
    ref: int
    group: str
    user: str
    admin: bool
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RenameGroup(GroupCommand):
    ref: int
    group: str
    name: str
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class SendGroup(GroupCommand):
    """Fan ``body`` out to every other member under the sender's ``id``."""
    ref: int
    id: str
    group: str
    body: bytes
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GetGroups:
    """Push the state of ``group`` (None: of every group the user is in),
    then ACK (answered by the session, from LMDB)."""
    ref: int
    group: str | None
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GroupRequest:
    """A session hands ``user``'s group ``command`` to the group actor."""
    user: str
    command: Any


@dataclass(frozen=True)
class GroupIdle:
    """The group actor's idle timer ran out (``token`` tells stale timers apart)."""
    token: int


# -- key directory: commands from the connection to its session (answered after
# the commit), and the event that answers a fetch ------------------------------------
BAD_BUNDLE = "bad_bundle"
WRONG_IDENTITY = "wrong_identity"
NO_KEYS = "no_keys"
KEYS_FULL = "keys_full"


@dataclass(frozen=True)
class PublishKeys:
    """Store this device's key bundle, already verified by the transport:
    ``identity`` (must be the registered device key), ``signed`` (the bundle
    without one-time prekeys, opaque here) and the ``one_time`` prekeys."""
    ref: int
    identity: bytes
    signed: bytes
    one_time: tuple[tuple[int, bytes], ...]
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class FetchKeys:
    """Hand out ``user``'s bundle with at most one one-time prekey (none
    unless ``one_time``: the fetcher asks which device is current)."""
    ref: int
    user: str
    client: Any = field(default=None, compare=False, repr=False)
    one_time: bool = True


@dataclass(frozen=True)
class CountKeys:
    """How many one-time prekeys of this user the directory still holds."""
    ref: int
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class KeysFetched:
    """The answer to ``FetchKeys`` ``ref``: the transport joins ``signed`` and
    ``one_time`` (``(id, key)`` or None) into one bundle."""
    ref: int
    device: int
    signed: bytes
    one_time: tuple[int, bytes] | None


@dataclass(frozen=True)
class KeysStored:
    """A key directory op for ``request`` completed; ``future`` holds its result."""
    request: Any
    future: Any


@dataclass(frozen=True)
class RefuseRequest:
    """A request the transport found invalid after decoding (e.g. a key
    bundle whose signature fails): the session answers ``ref`` with
    ``Rejected(reason, text)``, in order with the client's other requests."""
    ref: int
    reason: str
    text: str
    client: Any = field(default=None, compare=False, repr=False)


# -- blocking (actors/blocking.py) --------------------------------------------
@dataclass(frozen=True)
class BlockUser:
    """Block (``on``) or unblock ``user`` for the session's user."""
    ref: int
    user: str
    on: bool
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class GetBlocked:
    """Push the block list in ``BlockedPage``s, then ACK its length."""
    ref: int
    client: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class BlockedPage:
    """A page of the block list (the wire's BLOCK_LIST)."""
    users: tuple[str, ...]


@dataclass(frozen=True)
class BlockStored:
    """``request`` (a ``BlockUser``) was committed or refused: ``future``."""
    request: Any
    future: Any
