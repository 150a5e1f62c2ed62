"""``Session``: the user actor, one per logged-in user (cf. ejabberd_c2s).

Started by the registry under the ``sessions`` supervisor
(``simple_one_for_one``, ``transient``) when the user logs in; it owns the
user's inbox in LMDB and talks to the user's connection through a
``ClientPort``. It keeps nothing that matters in memory: on a restart after a
crash it re-reads the inbox and re-attaches to the connection (found in the
registry's client table), so the client loses nothing. When the client goes
it records last seen, lingers for ``linger`` seconds in case the user comes
back, then stops.

The send path never waits on the disk inside a handler. SENDs, RECEIVEDs and
READs are queued as they are handled and submitted when the mailbox is
drained (``drained``, with the connection's write), so one drain of the
mailbox becomes ONE storage op
(``storage.batch.UserBatch``: group commit inside the session, on top of the
writer's group commit across sessions). The requests run in arrival order in
one transaction, each with its own result; the completion comes back as
``BatchStored`` and every request is answered after the commit, in order (the
writer is FIFO, so batches stay in order too).

Delivery: the inbox is the truth. ``InboxAppended(seq, items)`` says "there
is something new"; the session pushes every committed item after the last one
it pushed, in seq order, so order holds whichever nudge arrives first. A
nudge carries the items it announces; when they continue exactly where the
pushes stopped they are pushed as they are, else the session reads its inbox.
A connection whose client is backed up refuses inbox pushes (``push``
returns False) until its buffer drains, then sends ``ResumePushes(upto)``:
the session pushes again from there, so a slow reader costs no memory.

On a node of several workers a nudge can miss: a sender on another worker
routes by its replica of the session directory, which learns of a login a
moment after the session has read its inbox (docs/cluster.md). So there the
session reads its inbox again ``SETTLE`` seconds after attaching, and on
every node on every heartbeat (one LMDB read): a message whose nudge was
lost, for whatever reason, waits at most that long, never for good.

Messages: ``Attach``, ``Detach``, ``SendMessage``, ``AckInbox``, ``MarkRead``,
``Subscribe``, ``SetTyping``, ``Heartbeat``, ``InboxAppended``,
``PresenceChanged``, ``TypingChanged``, ``BatchStored``,
``FlushInbox``, ``ResumePushes``, ``LingerExpired``; the key directory's (``PublishKeys``,
``FetchKeys``, ``CountKeys``, ``KeysStored``, ``RefuseRequest``) are handled
by the ``actors.key_directory.KeyDirectory`` mixin. Group commands
(``GroupCommand``: create, add, remove, leave, admin, rename, send) are
forwarded to the group's actor (``actors.group.forward``); ``GetGroups`` is
answered here, from LMDB. Blocking (``BlockUser``, ``GetBlocked``,
``BlockStored``, and what a block hides) is the ``actors.blocking.Blocking``
mixin's.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.actor import Actor
from actors.blocking import YOU_BLOCKED, Blocking
from actors.exits import is_normal_exit
from actors.counters import counters_of
from actors.drain_batch import DrainBatch
from actors.group import forward as forward_to_group, group_info
from actors.key_directory import KeyDirectory
from actors.last_seen import LAST_SEEN_NAME, Seen, log_failed_write
from actors.messages import (
    INTERNAL, INVALID, OFFLINE_FULL, SESSION_REPLACED, STALE_DEVICE, UNKNOWN_USER, AckInbox,
    Acked, Attach, BatchStored, Detach, FlushInbox, Heartbeat, InboxAppended, LingerExpired,
    MarkRead, PresenceChanged, Rejected, ResumePushes, SendMessage, SetTyping, Subscribe,
    TypingChanged,
)
from actors.messages import GetGroups, GroupCommand
from actors.presence import PRESENCE_NAME, Unwatch, UserOffline, UserOnline, Watch
from actors.router import nudge, route
from actors.session_homes import RemoteHomes
from actors.session_registry import clients_of
from storage import (DuplicateId, HomeUnknown, InboxItem, InvalidArgument, Message, OfflineFull,
                     StaleDevice, UnknownUser)
from storage.batch import ACK, READ, SEND

__all__ = ["Session", "PAGE"]

log = logging.getLogger("switchboard.session")

PAGE = 256                    # inbox items pushed per turn before yielding
SETTLE = 1.0                  # s after attaching, on a mesh, the inbox is read again
LAST_SEEN_EVERY_MS = 60_000   # while online, heartbeats refresh last seen this often


def now_ms() -> int:
    return int(time.time() * 1000)


class Session(RemoteHomes, KeyDirectory, Blocking, DrainBatch, Actor):
    mailbox_size = 10_000
    overflow = "crash"        # state is in LMDB: a flooded session restarts, loses nothing

    def __init__(self, user: str):
        self.user = user
        self.client: Any = None
        self.pushed_upto = 0                    # highest inbox seq pushed to this client
        self.pending: dict[str, list[Any]] = {} # message id -> requests waiting for its commit
        self.init_homes()                       # actors/session_homes.py
        self.init_batch()                       # requests queued for the next storage op
        self.linger_token = 0
        self.last_seen_written = 0

    def init(self) -> None:
        env = self.system.env
        self.mail = env["mailbox"]
        self.counters = counters_of(self.system)
        self.cap = env.get("offline_cap", 10_000)
        self.linger = env.get("linger", 5.0)
        self.init_blocks()                      # actors/blocking.py
        self.system.registry.register(("session", self.user), self.ref)
        client = clients_of(self.system).get(self.user)
        if client is not None:                  # a restart: the connection is still there
            self._attach(client)
        else:
            self._start_linger()

    def drained(self) -> None:
        self.submit_queued()                    # this drain's requests: one storage op
        if self.client is not None:
            self.client.flush()                 # this drain's pushes: one write, now

    def terminate(self, reason: Any) -> None:
        """Stopped (its linger over, or its supervisor shutting it down):
        a client still attached is going too, so the user is offline now;
        its presence watches go. A crash keeps them: the restart re-attaches
        the same connection, which does not SUBSCRIBE again (and if there is
        no restart, the registry reports the user gone when the connection
        closes: ``SessionRegistry._drop``)."""
        if not is_normal_exit(reason):
            return
        if self.client is not None:
            self._went_offline()
        self._tell_presence(Unwatch(self.user))

    # -- the connection ----------------------------------------------------------
    def handle_attach(self, msg: Attach) -> None:
        self._attach(msg.client)

    def handle_detach(self, msg: Detach) -> None:
        if msg.client is not self.client:
            return
        self.client = None
        self._went_offline()
        self._start_linger()

    def handle_linger_expired(self, msg: LingerExpired) -> None:
        if msg.token != self.linger_token or self.client is not None:
            return
        if clients_of(self.system).get(self.user) is not None:
            return          # logged in again: the registry's Attach is behind this message
        self.stop()

    def _attach(self, client: Any) -> None:
        if client is self.client:
            return
        if self.client is not None:
            self.client.close(SESSION_REPLACED, "this account logged in on another connection")
        self.client = client
        self.linger_token += 1                  # cancels a pending linger
        self.pushed_upto = 0
        client.bind(self.ref)
        self._tell_presence(UserOnline(self.user))
        self._flush()
        if self.system.env.get("cluster") is not None:      # a nudge may miss: see above
            self.system.send_after(SETTLE, self.ref, FlushInbox())

    def _start_linger(self) -> None:
        self.linger_token += 1
        self.system.send_after(self.linger, self.ref, LingerExpired(self.linger_token))

    def _push(self, event: Any) -> None:
        if self.client is not None:
            self.client.push(event)

    @staticmethod
    def _answer(request: Any, event: Any) -> None:
        """Answer ``request`` on the connection it came from (a closed one
        drops it: the client resends, and ids make the resend idempotent)."""
        if request.client is not None:
            request.client.push(event)

    # -- the inbox ----------------------------------------------------------------
    def handle_inbox_appended(self, msg: InboxAppended) -> None:
        if self.client is None or msg.seq <= self.pushed_upto:
            return
        items = msg.items
        if items and items[0].seq <= self.pushed_upto + 1:    # continues the pushes
            upto, push, pushed = self.pushed_upto, self.client.push, 0
            for item in items:
                if item.seq > upto:
                    push(item)
                    pushed += item.kind == "message"
            self.pushed_upto = items[-1].seq
            self.counters.messages_out += pushed
        else:
            self._flush()

    def handle_flush_inbox(self, msg: FlushInbox) -> None:
        if self.client is not None:
            self._flush()

    def handle_resume_pushes(self, msg: ResumePushes) -> None:
        if msg.client is self.client:           # else a stale one: attach pushes anew
            self.pushed_upto = msg.upto
            msg.client.resume()
            self._flush()

    def _flush(self) -> None:
        items = self.mail.inbox_after(self.user, self.pushed_upto, PAGE)
        for item in items:
            if self.client.push(item) is False:     # backed up: it sends ResumePushes
                self.pushed_upto = items[-1].seq
                return
            self.pushed_upto = item.seq
            self.counters.messages_out += item.kind == "message"
        if len(items) == PAGE:
            self.ref.notify(FlushInbox())

    # -- sending, acks, reads: one storage op per mailbox drain ------------------------
    def handle_send_message(self, msg: SendMessage) -> None:
        if _orphaned(msg):
            return
        if msg.to == self.user:
            self._answer(msg, Rejected(msg.ref, INVALID, "a message to oneself"))
            return
        if msg.to in self.blocked:
            self._answer(msg, Rejected(msg.ref, INVALID, YOU_BLOCKED))
            return
        waiting = self.pending.get(msg.id)
        if waiting is not None:                 # a resend while the first is in flight
            waiting.append(msg)
            return
        if self.held_back(msg):                 # a cluster's back-pressure or a lookup
            return
        self.pending[msg.id] = [msg]
        self._queue(msg)

    def handle_ack_inbox(self, msg: AckInbox) -> None:
        self._queue(msg)            # even from a closed connection: RECEIVED then BYE means it

    def handle_mark_read(self, msg: MarkRead) -> None:
        if msg.group is None and msg.peer in self.blocked:
            self._answer(msg, Acked(msg.ref))   # no read receipt while blocked
        elif not self.read_elsewhere(msg):        # a group's messages: read where it lives
            self._queue(msg)

    def _submit(self) -> None:
        requests, self.batch = tuple(self.batch), []
        if not requests:
            return
        ops = []
        for r in requests:
            if type(r) is SendMessage:
                if r.device is not None:
                    ops.append((SEND, r.id, r.to, r.body, r.media, r.device))
                else:
                    ops.append((SEND, r.id, r.to, r.body, r.media) if r.media
                               else (SEND, r.id, r.to, r.body))
            elif type(r) is AckInbox:
                ops.append((ACK, r.seqs))
            else:
                ops.append((READ, r.peer, r.ids, r.group))
        self.mail.user_batch(self.user, ops, now_ms(), self.cap, into=self.landing(requests))

    def handle_batch_stored(self, msg: BatchStored) -> None:
        error, results = msg.error, msg.value
        nudges: dict[str, list[InboxItem]] = {}
        for i, request in enumerate(msg.requests):
            ok, value = (False, error) if results is None else results[i]
            if type(request) is SendMessage:
                self._stored(request, ok, value, nudges)
            elif ok:
                for routed in value:            # receipts appended to senders' inboxes
                    if routed.seq:              # 0: queued for the sender's home node
                        nudges.setdefault(routed.to, []).append(
                            InboxItem(routed.seq, "receipt", routed.receipt))
                self._answer(request, Acked(request.ref))
            else:
                self._answer(request, Rejected(request.ref, self._reason(value), str(value)))
        nudge(self.system, nudges)

    def _stored(self, request: SendMessage, ok: bool, value: Any,
                nudges: dict[str, list[InboxItem]]) -> None:
        waiting = self.pending.pop(request.id, [request])
        if not ok and self.look_up_first(request, value, waiting):
            return
        if self.looked_up:
            self.looked_up.discard(request.id)
        if not ok:
            reason = self._reason(value)
            for r in waiting:
                self._answer(r, Rejected(r.ref, reason, str(value)))
            return
        for r in waiting:
            self._answer(r, Acked(r.ref, value.ts_ms))
        if not value.duplicate:
            self.counters.messages_in += 1
        if not value.duplicate and value.seq:   # seq 0: queued for the recipient's home node
            nudges.setdefault(request.to, []).append(InboxItem(
                value.seq, "message", Message(request.id, self.user, value.ts_ms, request.body)))

    @staticmethod
    def _reason(error: BaseException) -> str:
        if isinstance(error, OfflineFull):
            return OFFLINE_FULL
        if isinstance(error, UnknownUser):
            return UNKNOWN_USER
        if isinstance(error, StaleDevice):      # sealed for a replaced device: seal it again
            return STALE_DEVICE
        if isinstance(error, (DuplicateId, InvalidArgument)):
            return INVALID
        if isinstance(error, HomeUnknown):      # the home map lags: resent shortly
            return INTERNAL
        log.error("storage write failed: %r", error, exc_info=error)
        return INTERNAL

    # -- groups: each group's actor serializes its commands (actors/group.py) ------------
    async def handle_group_command(self, msg: GroupCommand) -> None:
        await forward_to_group(self.system, self.user, msg)

    def handle_get_groups(self, msg: GetGroups) -> None:
        if self.system.env.get("federation") is not None:
            self.group_info_elsewhere(msg)      # groups live on their creators' home nodes
            return
        for event in group_info(self.mail, self.user, msg):
            self._answer(msg, event)

    # -- presence, typing, heartbeats ---------------------------------------------------
    async def handle_subscribe(self, msg: Subscribe) -> None:
        hub = self.system.whereis(PRESENCE_NAME)
        states: Any = ()
        if hub is not None:
            states = await hub.call(Watch(self.user, msg.users))
            if isinstance(states, str):         # over the watch limit
                self._answer(msg, Rejected(msg.ref, INVALID, states))
                return
        self._answer(msg, Acked(msg.ref))       # ACK nil, then the PRESENCE frames (the spec)
        for state in states:
            self._answer(msg, self.presence_seen(state))

    def handle_presence_changed(self, msg: PresenceChanged) -> None:
        if not self.hidden(msg.user):           # blocked either way: not told
            self._push(msg)

    def handle_set_typing(self, msg: SetTyping) -> None:
        if msg.to not in self.blocked:
            route(self.system, msg.to, TypingChanged(self.user, msg.typing))
        self._answer(msg, Acked(msg.ref))

    def handle_typing_changed(self, msg: TypingChanged) -> None:
        if msg.sender not in self.blocked:
            self._push(msg)

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        now = now_ms()
        if now - self.last_seen_written >= LAST_SEEN_EVERY_MS:
            writer = self.system.whereis(LAST_SEEN_NAME)
            if writer is not None:          # stored with the others' (actors/last_seen.py)
                self.last_seen_written = now
                writer.cast(Seen(self.user, now))
            else:
                self._write_last_seen(now)  # (which sets last_seen_written)
        self._answer(msg, Acked(msg.ref, now))
        if self.client is not None:
            self._flush()                   # a nudge may have missed: see above

    def _went_offline(self) -> None:
        """The client is gone: last seen is now, and the user offline."""
        seen = now_ms()
        self._write_last_seen(seen)
        self._tell_presence(UserOffline(self.user, seen))

    def _write_last_seen(self, ts: int) -> None:
        self.last_seen_written = ts
        self.mail.set_last_seen(self.user, ts).add_done_callback(log_failed_write)

    def _tell_presence(self, event: Any) -> None:
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(event)


def _orphaned(request: Any) -> bool:
    """The connection that sent SEND ``request`` has closed: nobody can get
    the ACK, and the client resends what it still has unacked (SEND ids make
    that safe). Skipping it keeps a client that pipelines SENDs and hangs up,
    again and again, from piling work on the storage writer. RECEIVED and
    READ are not skipped: they are cheap, and a client that writes them and
    then BYE (or just closes) meant them; dropping them would re-push what
    it holds and withhold the sender's ticks."""
    return request.client is not None and request.client.closed is True
