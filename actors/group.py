"""``Group``: the group actor, one per active group.

Started on demand under the ``groups`` supervisor (``simple_one_for_one``,
``transient``) the first time a member's session forwards it a command, and
registered as ``("group", id)``; it stops after ``group_linger`` seconds
with nothing to do. It keeps nothing that matters in memory: its state is
the group record in LMDB, read in ``init`` (so a restart after a crash, or
a start after an idle stop, begins from exactly what is committed).

It serializes the group's operations. Like a session, it queues the
commands it handles and submits them when its mailbox is drained, so
one drain of its mailbox becomes ONE storage op
(``storage.groups.GroupBatch``): the membership checks, the change, and the
inbox items it produces (the fanned-out message for every other member, the
system events announcing a change to every member and to the removed or
leaving one) are committed in one write transaction. Only then is each
command answered on the connection it came from (ack after commit), and the
members' sessions nudged with ``InboxAppended`` through ``route``, exactly
as a 1:1 message nudges its recipient.

If it crashes, the commands it had taken are answered INTERNAL ("resend")
from ``terminate``; clients resend with the same ids, and the store
deduplicates (a group SEND by (sender, id); the other commands are
idempotent: adding a member twice, leaving twice, renaming to the same name
change nothing). What was committed was committed whole; what was acked was
committed.

Messages: ``GroupRequest`` (from a session), ``BatchStored``, ``GroupIdle``.
``forward`` and ``group_info`` are the session's side.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from actors.actor import Actor
from actors.drain_batch import DrainBatch
from actors.exits import ActorError
from actors.federation import NodeUnavailable
from actors.messages import (
    GROUP_FULL, INTERNAL, INVALID, NOT_ADMIN, NOT_MEMBER, OFFLINE_FULL, UNKNOWN_GROUP,
    UNKNOWN_USER, Acked,
    AddMembers, BatchStored, CreateGroup, GetGroups, GroupIdle, GroupRequest, InboxAppended,
    LeaveGroup, Rejected, RemoveMembers, RenameGroup, SendGroup, SetAdmin,
)
from actors.router import nudge, route
from storage import (DuplicateId, GroupFull, HomeUnknown, InboxItem, InvalidArgument, NotAdmin,
                     NotMember, OfflineFull, UnknownGroup, UnknownUser)
from storage.groups import ADD, ADMIN, CREATE, LEAVE, REMOVE, RENAME, SEND, group_id
from supervisor.base import SupervisorError, start_child

__all__ = ["Group", "GROUPS_SUP_NAME", "group_of", "forward", "group_info"]

log = logging.getLogger("switchboard.group")

GROUPS_SUP_NAME = "groups"
_ANY_NEW = 2**63 - 1            # an InboxAppended seq that makes a session read its inbox

_OPS = {   # command -> storage request (the user is filled in)
    CreateGroup: lambda u, c: (CREATE, u, c.name, c.members),
    AddMembers: lambda u, c: (ADD, u, c.users),
    RemoveMembers: lambda u, c: (REMOVE, u, c.users),
    LeaveGroup: lambda u, c: (LEAVE, u),
    SetAdmin: lambda u, c: (ADMIN, u, c.user, c.admin),
    RenameGroup: lambda u, c: (RENAME, u, c.name),
    SendGroup: lambda u, c: (SEND, u, c.id, c.body),
}

_REASONS = ((UnknownGroup, UNKNOWN_GROUP), (NotMember, NOT_MEMBER), (NotAdmin, NOT_ADMIN),
            (GroupFull, GROUP_FULL), (UnknownUser, UNKNOWN_USER), (OfflineFull, OFFLINE_FULL),
            (DuplicateId, INVALID), (InvalidArgument, INVALID), (HomeUnknown, INTERNAL))


def now_ms() -> int:
    return int(time.time() * 1000)


def group_of(system: Any, group: str) -> Any:
    """The live actor of ``group`` on this worker, if any."""
    return system.whereis(("group", group))


def reason_of(error: BaseException) -> str:
    for cls, reason in _REASONS:
        if isinstance(error, cls):
            return reason
    log.error("group storage write failed: %r", error, exc_info=error)
    return INTERNAL


def _answer(request: Any, event: Any) -> None:
    if request.client is not None:
        request.client.push(event)


# -- the session's side ---------------------------------------------------------------
async def forward(system: Any, user: str, command: Any) -> None:
    """Hand ``user``'s group ``command`` to the group's actor, starting it
    if need be. A group that does not exist is refused here, from LMDB,
    without starting an actor for it (a running actor checks in its
    transaction)."""
    create = type(command) is CreateGroup
    group = group_id(user, command.key) if create else command.group
    federation = system.env.get("federation")
    home = None
    if federation is not None:
        try:                            # the replica may not list the creator yet: asked
            home = await federation.home_for(group_home(group))
        except NodeUnavailable as unsure:
            _answer(command, Rejected(command.ref, INTERNAL, f"{unsure}; resend"))
            return
    if home is not None:                # the group lives on its creator's home node
        _call_home(system, federation, home, user, group, command)
        return
    try:
        ref = group_of(system, group)
        if ref is None:
            if not create and system.env["mailbox"].get_group(group) is None:
                _answer(command, Rejected(command.ref, UNKNOWN_GROUP, f"no such group: {group}"))
                return
            ref = await _start(system, group)
        ref.cast(GroupRequest(user, command))
    except (ActorError, RuntimeError) as error:   # full, timed out, gone, failed to start
        _answer(command, Rejected(command.ref, INTERNAL, f"group busy ({error}); resend"))


def _call_home(system: Any, federation: Any, home: str, user: str, group: str,
               command: Any) -> None:
    """Run ``command`` on the group's node, one of ``user``'s commands to
    ``group`` at a time: a call to a node that went down times out (5 s)
    while a later one, made once it is back, would be stored first. If one
    is refused INTERNAL (to be resent), the ones waiting behind it are too,
    so the client resends them all in order."""
    chains = system.env.setdefault("group_calls", {})   # (user, group) -> commands waiting
    key = (user, group)
    if key in chains:
        chains[key].append(command)
        return
    chains[key] = []

    def settled(done: Any, command: Any = command) -> None:
        answer = remote_answer(command.ref, done)
        _answer(command, answer)
        waiting = chains[key]
        if type(answer) is Rejected and answer.reason == INTERNAL:
            del chains[key]
            for later in waiting:
                _answer(later, Rejected(later.ref, INTERNAL, "an earlier group command to "
                                        f"{group} was not done ({answer.text}); resend"))
        elif waiting:
            issue(waiting.pop(0))
        else:
            del chains[key]

    def issue(command: Any) -> None:
        federation.call(home, ("group", user, replace(command, client=None))).add_done_callback(
            lambda done: settled(done, command))
    issue(command)


def group_home(group: str) -> str:
    """The user whose home node holds ``group``: its creator (``group_id``)."""
    return group.split("/", 1)[0]


def remote_answer(ref: int, done: Any) -> Any:
    """The answer to a request another node ran (``Federation.call``)."""
    error = done.exception()
    if error is None:
        return done.result()
    reason = getattr(error, "reason", None)
    return Rejected(ref, reason if isinstance(reason, str) else INTERNAL, str(error))


async def _start(system: Any, group: str) -> Any:
    error = None
    for _ in range(3):        # another session may start it between our steps
        ref = group_of(system, group)
        if ref is not None:
            return ref
        sup = system.whereis(GROUPS_SUP_NAME)
        if sup is None:
            raise RuntimeError("the groups supervisor is not running")
        try:
            return await start_child(sup, (group,))
        except SupervisorError as failed:
            error = failed
    raise RuntimeError(f"could not start group {group}: {error}")


def group_info(mail: Any, user: str, request: GetGroups) -> list[Any]:
    """What answers GROUP_INFO: the state of each group asked about (the
    one named, or every group ``user`` is in), then the ACK; only members
    see a group's state."""
    if request.group is None:
        records = [r for g in mail.groups_of(user) if (r := mail.get_group(g)) is not None]
    else:
        record = mail.get_group(request.group)
        if record is None:
            return [Rejected(request.ref, UNKNOWN_GROUP, f"no such group: {request.group}")]
        if user not in record.members:
            return [Rejected(request.ref, NOT_MEMBER, f"{user} is not a member of {record.id}")]
        records = [record]
    return [*records, Acked(request.ref, len(records))]


# -- the actor ----------------------------------------------------------------------------
class Group(DrainBatch, Actor):
    mailbox_size = 10_000
    overflow = "reject"       # a flooded group refuses (INTERNAL: resend) and carries on

    def __init__(self, group: str):
        self.id = group
        self.record = None                      # the committed record (None: not created yet)
        self.pending: dict[tuple[str, str], list[GroupRequest]] = {}  # (sender, id) -> sends
        self.init_batch()                       # requests queued for the next storage op
        self.in_flight: list[tuple] = []        # batches submitted, not yet stored
        self.idle_token = 0

    def init(self) -> None:
        env = self.system.env
        self.mail = env["mailbox"]
        self.cap = env.get("offline_cap", 10_000)
        self.group_cap = env.get("group_cap", 1024)
        federation = env.get("federation")     # in a cluster: fold past its outq_high
        self.outq_high = federation.outq_high if federation is not None else None
        self.linger = env.get("group_linger", 30.0)
        self.system.registry.register(("group", self.id), self.ref)
        self.record = self.mail.get_group(self.id)      # state rebuilt from LMDB
        self.last_active = time.monotonic()
        self._start_idle()

    def terminate(self, reason: Any) -> None:
        """Answer what was taken or queued but not stored (a crash drops the
        mailbox): the client resends it, and the store deduplicates."""
        taken = [r for batch in self.in_flight for r in batch] + self.batch
        taken += [m for m in self.ref.queued() if type(m) is GroupRequest]
        for key, waiting in self.pending.items():   # resends parked behind a first send
            taken += waiting[1:]
        for request in taken:
            command = request.command
            _answer(command, Rejected(command.ref, INTERNAL, "group restarted; resend"))

    # -- commands: one storage op per mailbox drain ------------------------------------------
    def handle_group_request(self, msg: GroupRequest) -> None:
        command = msg.command
        if type(command) is SendGroup:
            key = (msg.user, command.id)
            waiting = self.pending.get(key)
            if waiting is not None:             # a resend while the first is in flight
                waiting.append(msg)
                return
            self.pending[key] = [msg]
        self._queue(msg)

    def _submit(self) -> None:
        requests, self.batch = tuple(self.batch), []
        if not requests:
            return
        ops = [_OPS[type(r.command)](r.user, r.command) for r in requests]
        self.in_flight.append(requests)
        self.mail.group_batch(self.id, ops, now_ms(), self.cap, self.group_cap,
                              into=self.landing(requests), outq_high=self.outq_high)

    def handle_batch_stored(self, msg: BatchStored) -> None:
        self.in_flight.remove(msg.requests)
        error = msg.error
        if error is None:
            results, record = msg.value
            self.record = record
        nudges: dict[str, list[InboxItem]] = {}
        for i, request in enumerate(msg.requests):
            ok, value = (False, error) if error is not None else results[i]
            self._stored(request, ok, value, nudges)
        nudge(self.system, nudges)
        self.last_active = time.monotonic()

    def _stored(self, request: GroupRequest, ok: bool, value: Any,
                nudges: dict[str, list[InboxItem]]) -> None:
        command = request.command
        waiting = [request]
        if type(command) is SendGroup:
            waiting = self.pending.pop((request.user, command.id), waiting)
        if not ok:
            reason = reason_of(value)
            for r in waiting:
                _answer(r.command, Rejected(r.command.ref, reason, str(value)))
            return
        for r in waiting:
            _answer(r.command, Acked(r.command.ref, value.value))
        for user, item in value.appended:       # (members homed elsewhere are not in it)
            nudges.setdefault(user, []).append(item)
        if value.duplicate and type(command) is SendGroup and self.record is not None:
            # stored by an incarnation that crashed before nudging: members read their inbox
            for user in self.record.members:
                if user != request.user and user not in nudges:
                    route(self.system, user, InboxAppended(_ANY_NEW))

    # -- idle stop: one timer at a time, re-armed while there is activity ---------------------
    def _start_idle(self, delay: float | None = None) -> None:
        self.idle_token += 1
        self.system.send_after(self.linger if delay is None else delay, self.ref,
                               GroupIdle(self.idle_token))

    def handle_group_idle(self, msg: GroupIdle) -> None:
        if msg.token != self.idle_token:
            return
        left = self.last_active + self.linger - time.monotonic()
        if self.batch or self.in_flight or self.pending or self.ref.mailbox_len or left > 0:
            self._start_idle(max(left, 0.01))
        else:
            self.stop()
