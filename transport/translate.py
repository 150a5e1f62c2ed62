"""The two tables between wire frames and internal messages.

``command_for(frame, client)``: a logged-in client's frame -> the command
for its session, carrying the connection to answer. ``frame_for(event)``:
what a session pushes -> the frame to send; ``bytes_for(event)``: the same frame encoded, straight from the event for the
hot ones (ACKs, MESSAGEs, RECEIPTs) without building the frame object.
Nothing else in the code base converts between the two vocabularies.
"""

from __future__ import annotations

from typing import Any, Callable

from actors.messages import (
    AckInbox, Acked, Heartbeat, MarkRead, PresenceChanged, Rejected, SendMessage, SetTyping,
    Subscribe, TypingChanged,
)
from actors.messages import (AddMembers, CreateGroup, GetGroups, LeaveGroup, RemoveMembers,
                             RenameGroup, SendGroup, SetAdmin)
from storage.records import GroupRecord, InboxItem
from actors.messages import BlockedPage, BlockUser, CountKeys, GetBlocked, KeysFetched
from transport import key_directory, wire
from transport.flow import retry_ms

__all__ = ["command_for", "frame_for", "bytes_for"]

_COMMANDS: dict[type, Callable[[Any, Any], Any]] = {
    wire.Send: lambda f, c: SendMessage(f.ref, f.id, f.to, f.body, c, f.media, f.device),
    wire.KeysPublish: key_directory.publish_command,
    wire.KeysFetch: key_directory.fetch_command,
    wire.KeysCount: lambda f, c: CountKeys(f.ref, c),
    wire.Received: lambda f, c: AckInbox(f.ref, f.seqs, c),
    wire.Read: lambda f, c: MarkRead(f.ref, f.peer, f.ids, c, f.group),
    wire.Subscribe: lambda f, c: Subscribe(f.ref, f.users, c),
    wire.Typing: lambda f, c: SetTyping(f.ref, f.to, f.typing, c),
    wire.Ping: lambda f, c: Heartbeat(f.ref, c),
    wire.GroupCreate: lambda f, c: CreateGroup(f.ref, f.key, f.name, f.members, c),
    wire.GroupAdd: lambda f, c: AddMembers(f.ref, f.group, f.users, c),
    wire.GroupRemove: lambda f, c: RemoveMembers(f.ref, f.group, f.users, c),
    wire.GroupLeave: lambda f, c: LeaveGroup(f.ref, f.group, c),
    wire.GroupAdmin: lambda f, c: SetAdmin(f.ref, f.group, f.user, f.admin, c),
    wire.GroupRename: lambda f, c: RenameGroup(f.ref, f.group, f.name, c),
    wire.GroupSend: lambda f, c: SendGroup(f.ref, f.id, f.group, f.body, c),
    wire.GroupInfo: lambda f, c: GetGroups(f.ref, f.group, c),
    wire.Block: lambda f, c: BlockUser(f.ref, f.user, True, c),
    wire.Unblock: lambda f, c: BlockUser(f.ref, f.user, False, c),
    wire.Blocked: lambda f, c: GetBlocked(f.ref, c),
}

# storage's receipt kinds ("delivered", "read", "failed") are the wire's names in lower case
_RECEIPT_KINDS = {kind.name.lower(): kind for kind in wire.ReceiptKind}


_GROUP_EVENTS = {kind.name.lower(): kind for kind in wire.GroupEventKind}


def _item(item: InboxItem) -> wire.Frame:
    p = item.payload
    if item.kind == "message":
        return wire.Message(item.seq, p.id, p.sender, p.ts, p.body, p.group)
    if item.kind == "key_changed":
        return wire.KeyChanged(item.seq, p.user, p.device, p.ts)
    if item.kind == "group":
        return wire.GroupEvent(item.seq, p.group, _GROUP_EVENTS[p.event], p.by, p.users, p.name,
                               p.ts, p.count)
    return wire.Receipt(item.seq, _RECEIPT_KINDS[str(p.kind)], p.id, p.by, p.ts, p.group)


_FRAMES: dict[type, Callable[[Any], wire.Frame]] = {
    Acked: lambda e: wire.Ack(e.value, ref=e.ref),
    Rejected: lambda e: wire.Error(wire.ErrorCode[e.reason.upper()], e.text[:256],
                                   None if e.retry_after is None else retry_ms(e.retry_after),
                                   ref=e.ref),
    InboxItem: _item,
    PresenceChanged: lambda e: wire.Presence(e.user, e.online, e.last_seen),
    TypingChanged: lambda e: wire.TypingEvent(e.sender, e.typing),
    KeysFetched: key_directory.fetched_ack,
    BlockedPage: lambda e: wire.BlockList(e.users),
    GroupRecord: lambda e: wire.GroupState(e.id, e.name, e.created_by, e.admins, e.members,
                                           e.version),
}


def _item_bytes(item: InboxItem) -> bytes:
    p = item.payload
    if item.kind == "message":
        return wire.encode_message(item.seq, p.id, p.sender, p.ts, p.body, p.group)
    if item.kind == "group" or item.kind == "key_changed":
        return wire.encode(_item(item))
    return wire.encode_receipt(item.seq, _RECEIPT_KINDS[str(p.kind)], p.id, p.by, p.ts, p.group)


_BYTES: dict[type, Callable[[Any], bytes]] = {
    Acked: lambda e: wire.encode_ack(e.ref, e.value),
    InboxItem: _item_bytes,
}


def command_for(frame: wire.Frame, client: Any) -> Any:
    return _COMMANDS[type(frame)](frame, client)


def frame_for(event: Any) -> wire.Frame:
    return _FRAMES[type(event)](event)


def bytes_for(event: Any) -> bytes:
    fast = _BYTES.get(type(event))
    return fast(event) if fast is not None else wire.encode(frame_for(event))
