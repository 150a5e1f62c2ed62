"""Group chats in the SDK: the ``Groups`` API mixed into ``Client``, the
group events it yields, and ``GroupInbox``, its share of the receive path.

    gid = await client.create_group("team", "Team", [bob, carol])  # "<me>/team"
    await client.send_group(gid, b"hello all")      # outbox, same-id resends
    client.group_ticks(message_id)                  # {bob: DELIVERED, carol: READ}

Sending goes through the same outbox as 1:1 messages (an entry whose ``to``
is a group id goes out as GROUP_SEND), so a group message is recorded
before it is sent and resent with the same id after every login until the
server ACKs it. Membership calls (create, add, remove, leave, admin,
rename) are plain requests; the server makes them idempotent (a resent
create names the same group, adding a member twice changes nothing).

Bodies stay opaque bytes here. ``GroupCodec`` is the one place a group
message body is produced (``seal``, on send) and opened (``open``, on
receive): an end-to-end client plugs in the sender-keys codec
(``client/group_e2e.py``); the base class passes bytes through.

Events (inbox items, acknowledged with RECEIVED like 1:1 ones):

- ``GroupMessage(seq, id, group, sender, ts, body)``;
- ``GroupReceipt(seq, kind, id, group, by, ts)``: member ``by`` received
  or read this user's group message ``id`` (the per-member ticks);
- ``GroupEvent(seq, group, event, by, users, name, ts, count)``: a system
  message: ``created``, ``added``, ``removed``, ``left``, ``promoted``,
  ``demoted``, ``renamed``, or ``missed`` (this user's inbox was full:
  ``count`` messages of the group did not reach it).

Not an inbox item: ``GroupKeysPending(group, users, reason)``: an end-to-end
group send went out, but ``users`` could not be handed this device's
sender key first (no published keys, or this user's KEYS_FETCH rate limit
ran out): they get the message and cannot read it; they are tried again
at the next send.

``group_info`` returns ``GroupInfo`` snapshots (not events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from transport import wire
from client.errors import ClientError
from client.events import Status, Undecryptable
from client.ids import app_id
from client.link import checked

__all__ = ["Groups", "GroupInbox", "GroupCodec", "GroupMessage", "GroupReceipt", "GroupEvent",
           "GroupInfo", "GroupKeysPending", "is_group", "group_frame", "GROUP_INBOX_EVENTS"]

log = logging.getLogger("switchboard.client")

_EVENT_NAMES = {k: k.name.lower() for k in wire.GroupEventKind}


def is_group(to: str) -> bool:
    """A group id (``creator/key``) rather than a phone number."""
    return "/" in to


def group_frame(id: str, to: str, body: bytes) -> wire.Frame:
    """The frame an outbox entry to a group goes out as."""
    return wire.GroupSend(id, to, body)


@dataclass(frozen=True, slots=True)
class GroupMessage:
    seq: int
    id: str
    group: str
    sender: str
    ts: int
    body: bytes         # as opened by the client's GroupCodec


@dataclass(frozen=True, slots=True)
class GroupReceipt:
    seq: int
    kind: Status        # DELIVERED or READ
    id: str
    group: str
    by: str
    ts: int


@dataclass(frozen=True, slots=True)
class GroupEvent:
    seq: int
    group: str
    event: str          # created added removed left promoted demoted renamed missed
    by: str
    users: tuple[str, ...]
    name: str
    ts: int
    count: int = 0


@dataclass(frozen=True, slots=True)
class GroupKeysPending:
    group: str
    users: tuple[str, ...]
    reason: str         # no_keys or rate_limited


@dataclass(frozen=True, slots=True)
class GroupInfo:
    group: str
    name: str
    created_by: str
    admins: tuple[str, ...]
    members: tuple[str, ...]    # join order, oldest first
    version: int


GROUP_INBOX_EVENTS = (GroupMessage, GroupReceipt, GroupEvent)


class GroupCodec:
    """How group bodies are sealed and opened: plain bytes by default. A
    sender-keys codec replaces it (``Client.group_codec = ...``)."""

    def seal(self, group: str, body: bytes) -> bytes:
        return body

    def open(self, group: str, sender: str, body: bytes) -> bytes | None:
        """The plaintext, or None if it cannot be opened."""
        return body

    def open_item(self, seq: int, group: str, sender: str, id: str, body: bytes) -> bytes | None:
        """``open`` for inbox item ``seq``; a codec whose opening consumes
        keys keeps the plaintext until the item is acknowledged, so a
        re-push after a restart opens to the same message."""
        return self.open(group, sender, body)

    def receive(self, frame: wire.Message, deliver: Callable[[wire.Message, bytes | None, str], Any]
                ) -> None:
        """A new group MESSAGE: ``deliver(frame, body or None, why not)``,
        now, or later (a codec may hold an item whose key is not here yet,
        unacknowledged meanwhile)."""
        try:
            body = self.open_item(frame.seq, frame.group, frame.sender, frame.id, frame.body)
        except Exception as error:  # noqa: BLE001 - one bad item must not kill the link
            log.warning("group %s message %s: %r", frame.group, frame.id, error)
            body = None
        deliver(frame, body, "did not decrypt")

    def close(self) -> None:
        """The client is over (drop what is held: it was not acknowledged)."""

    async def prepare(self, group: str) -> None:
        """Before a send to ``group`` (e.g. hand out keys to its members)."""

    def on_event(self, group: str, event: str, users: tuple[str, ...]) -> None:
        """A system event of ``group`` arrived (e.g. re-key when a member left)."""


class GroupInbox:
    """The group frames of the receive path (used by ``receiving.Receiver``):
    group inbox items become events, deduplicated and acknowledged through
    the receiver's tracker; receipts become per-member ticks."""

    def __init__(self, receiver: Any, on_status: Callable[[str, Status], Any]):
        self.receiver, self.on_status = receiver, on_status
        self.codec = GroupCodec()
        self.states: dict[str, GroupInfo] = {}
        self.ticks: dict[str, dict[str, Status]] = {}    # message id -> member -> status
        self.expected: dict[str, frozenset[str]] = {}    # message id -> its recipients
        self.collectors: list[list[GroupInfo]] = []

    def on_push(self, frame: wire.Frame) -> bool:
        """Handle ``frame`` if it belongs to a group; False if it does not."""
        kind, r = type(frame), self.receiver
        if kind is wire.Message and frame.group is not None:
            if r.inbox.arrived(frame.seq, (frame.sender, frame.id)):
                self.codec.receive(frame, self.opened)     # now, or once its key is here
            else:
                r._schedule()
        elif kind is wire.Receipt and frame.group is not None:
            if frame.kind is wire.ReceiptKind.FAILED:   # never sent for a group (MISSED says it)
                log.warning("group %s: a FAILED receipt for %s by %s, ignored",
                            frame.group, frame.id, frame.by)
                if r.inbox.arrived(frame.seq):
                    r.inbox.handed(frame.seq)           # acknowledged, not shown
                r._schedule()
                return True
            status = Status.READ if frame.kind == wire.ReceiptKind.READ else Status.DELIVERED
            self._tick(frame.id, frame.by, status)
            if r.inbox.arrived(frame.seq):
                r.emit(GroupReceipt(frame.seq, status, frame.id, frame.group, frame.by, frame.ts))
            else:
                r._schedule()
        elif kind is wire.GroupEvent:
            self.states.pop(frame.group, None)          # stale now: fetched again when needed
            if r.inbox.arrived(frame.seq):
                try:
                    self.codec.on_event(frame.group, _EVENT_NAMES[frame.event], frame.users)
                except Exception as error:  # noqa: BLE001 - the event is still the app's
                    log.warning("group %s event: %r", frame.group, error)
                r.emit(GroupEvent(frame.seq, frame.group, _EVENT_NAMES[frame.event], frame.by,
                                  frame.users, frame.name, frame.ts, frame.count))
            else:
                r._schedule()
        elif kind is wire.GroupState:
            info = GroupInfo(frame.group, frame.name, frame.created_by, frame.admins,
                             frame.members, frame.version)
            self.states[frame.group] = info
            for collector in self.collectors:
                collector.append(info)
        else:
            return False
        return True

    def opened(self, frame: wire.Message, body: bytes | None, why: str) -> None:
        """The codec's outcome for a group MESSAGE: the app's event (its
        RECEIVED goes out once the app takes it)."""
        self.receiver.emit(
            GroupMessage(frame.seq, frame.id, frame.group, frame.sender, frame.ts, body)
            if body is not None else      # the codec could not open it
            Undecryptable(frame.seq, frame.id, frame.sender, frame.ts, f"group {frame.group}: {why}"))

    def close(self) -> None:
        self.codec.close()

    def sent(self, id: str, recipients: Iterable[str] | None) -> None:
        """Remember whom group message ``id`` is for (None: not known)."""
        self.ticks.setdefault(id, {})
        if recipients is not None:
            self.expected[id] = frozenset(recipients)

    def _tick(self, id: str, by: str, status: Status) -> None:
        ticks = self.ticks.setdefault(id, {})
        if status <= ticks.get(by, Status.SENT):
            return
        ticks[by] = status
        expected = self.expected.get(id)
        if expected is None:                     # whom it was for is unknown: first tick moves it
            self.on_status(id, status)
        elif all(ticks.get(m, Status.SENT) >= status for m in expected):
            self.on_status(id, status)           # every member has it: the message has it


class Groups:
    """The group half of ``Client`` (a mixin: it uses the client's
    ``_call``, ``_sender``, ``_receiver`` and ``user``)."""

    _groups: GroupInbox

    @property
    def group_codec(self) -> GroupCodec:
        return self._groups.codec

    @group_codec.setter
    def group_codec(self, codec: GroupCodec) -> None:
        self._groups.codec = codec

    async def create_group(self, key: str, name: str, members: Iterable[str] = ()) -> str:
        """GROUP_CREATE ``<me>/<key>`` with ``members`` (this user is its
        first admin); returns the group id. Creating it again is a no-op."""
        return await self._call(checked(wire.GroupCreate(key, name, tuple(members))))

    async def add_members(self, group: str, users: Iterable[str]) -> int:
        """GROUP_ADD (admins only); returns the group's version."""
        return await self._call(checked(wire.GroupAdd(group, tuple(users))))

    async def remove_members(self, group: str, users: Iterable[str]) -> int:
        """GROUP_REMOVE (admins only); returns the group's version."""
        return await self._call(checked(wire.GroupRemove(group, tuple(users))))

    async def leave_group(self, group: str) -> int:
        return await self._call(checked(wire.GroupLeave(group)))

    async def set_admin(self, group: str, user: str, admin: bool = True) -> int:
        """GROUP_ADMIN: promote (or demote) ``user`` (admins only)."""
        return await self._call(checked(wire.GroupAdmin(group, user, admin)))

    async def rename_group(self, group: str, name: str) -> int:
        return await self._call(checked(wire.GroupRename(group, name)))

    async def group_info(self, group: str | None = None) -> GroupInfo | list[GroupInfo]:
        """The group's state (members only), or with no ``group`` the states
        of every group this user is in."""
        frame = checked(wire.GroupInfo(group))
        collected: list[GroupInfo] = []
        self._groups.collectors.append(collected)
        try:
            await self._call(frame)
        finally:
            self._groups.collectors.remove(collected)
        if group is None:
            return list({info.group: info for info in collected}.values())
        # The state this call was answered with: the cache may have lost it
        # already, to a GROUP_EVENT pushed between the GROUP_STATE and the ACK.
        mine = [info for info in collected if info.group == group]
        if not mine:
            raise ClientError(f"GROUP_INFO {group} was acknowledged without its GROUP_STATE")
        return mine[-1]

    async def send_group(self, group: str, body: bytes, id: str | None = None) -> Any:
        """Send ``body`` to every other member of ``group``; returns at the
        server's ACK (``Sent``), like ``send``. Through the outbox: queued
        while offline, resent with the same id until acknowledged."""
        self._check_open()
        id = app_id(id)
        checked(wire.GroupSend(id, group, body))       # the id, the group, a body of bytes
        digest = self._sender.digest(body)
        joined = self._sender.join(id, group, digest)   # a retry: same id, group and body
        if joined is None:
            await self._groups.codec.prepare(group)
            self._check_open()                  # the session may have ended meanwhile
            joined = self._sender.join(id, group, digest)
        if joined is not None:
            return await joined
        frame = checked(wire.GroupSend(id, group, self._groups.codec.seal(group, body)))
        try:
            wire.encode(frame, max_frame=self.max_frame)
        except wire.FrameError as error:
            raise ValueError(f"message too large: {error.message}") from None
        state = self._groups.states.get(group)
        self._groups.sent(frame.id, None if state is None else
                          [m for m in state.members if m != self.user])
        return await self._sender.add(frame.id, group, frame.body, digest=digest)

    def group_ticks(self, id: str) -> dict[str, Status]:
        """Per member, how far this user's group message ``id`` got
        (members without an entry have not received it yet)."""
        return dict(self._groups.ticks.get(id, {}))

    async def mark_group_read(self, group: str, sender: str, ids: Iterable[str]) -> None:
        """READ for ``sender``'s messages ``ids`` in ``group`` (their read ticks)."""
        ids = tuple(ids)
        for i in range(0, len(ids), 512):
            frame = checked(wire.Read(sender, ids[i:i + 512], group))
            self._receiver.flush()      # RECEIVED (delivered) goes out before READ
            await self._call(frame)
