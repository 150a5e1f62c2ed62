"""``Session``: the user actor, one per logged-in user (cf. ejabberd_c2s).

Started by the registry under the ``sessions`` supervisor
(``simple_one_for_one``, ``transient``) when the user logs in; it owns the
user's inbox in LMDB and talks to the user's connection through a
``ClientPort``. It keeps nothing that matters in memory: on a restart after a
crash it re-reads the inbox and re-attaches to the connection (found in the
registry's client table), so the client loses nothing. When the client goes
it records last seen, lingers for ``linger`` seconds in case the user comes
back, then stops.

The send path never waits on the disk inside a handler: a write is handed to
the group-commit writer and its completion comes back as a message
(``MessageStored``...), so a sender's pipelined messages share commits and
stay in order (the writer is FIFO).

Delivery: the inbox is the truth. ``InboxAppended(seq)`` only says "there is
something new"; the session pushes every committed item after the last one it
pushed, in seq order, so order holds whichever nudge arrives first.

Messages: ``Attach``, ``Detach``, ``SendMessage``, ``AckInbox``, ``MarkRead``,
``Subscribe``, ``SetTyping``, ``Heartbeat``, ``InboxAppended``,
``PresenceChanged``, ``TypingChanged``, ``MessageStored``, ``InboxAcked``,
``ReadStored``, ``FlushInbox``, ``LingerExpired``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from actors.actor import Actor
from actors.messages import (
    INTERNAL, INVALID, OFFLINE_FULL, SESSION_REPLACED, UNKNOWN_USER, AckInbox, Acked, Attach,
    Detach, FlushInbox, Heartbeat, InboxAcked, InboxAppended, LingerExpired, MarkRead,
    MessageStored, PresenceChanged, ReadStored, Rejected, SendMessage, SetTyping,
    Subscribe, TypingChanged,
)
from actors.presence import PRESENCE_NAME, Unwatch, UserOffline, UserOnline, Watch
from actors.router import route
from actors.session_registry import clients_of
from storage import DuplicateId, InvalidArgument, OfflineFull, UnknownUser

__all__ = ["Session", "PAGE"]

log = logging.getLogger("switchboard.session")

PAGE = 256                    # inbox items pushed per turn before yielding
LAST_SEEN_EVERY_MS = 60_000   # while online, heartbeats refresh last seen this often


def now_ms() -> int:
    return int(time.time() * 1000)


class Session(Actor):
    mailbox_size = 10_000
    overflow = "crash"        # state is in LMDB: a flooded session restarts, loses nothing

    def __init__(self, user: str):
        self.user = user
        self.client: Any = None
        self.pushed_upto = 0                    # highest inbox seq pushed to this client
        self.pending: dict[str, list[int]] = {} # message id -> refs waiting for its commit
        self.linger_token = 0
        self.last_seen_written = 0

    def init(self) -> None:
        env = self.system.env
        self.mail = env["mailbox"]
        self.cap = env.get("offline_cap", 10_000)
        self.linger = env.get("linger", 5.0)
        self.system.registry.register(("session", self.user), self.ref)
        client = clients_of(self.system).get(self.user)
        if client is not None:                  # a restart: the connection is still there
            self._attach(client)
        else:
            self._start_linger()

    def terminate(self, reason: Any) -> None:
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(Unwatch(self.user))

    # -- the connection ----------------------------------------------------------
    def handle_attach(self, msg: Attach) -> None:
        self._attach(msg.client)

    def handle_detach(self, msg: Detach) -> None:
        if msg.client is not self.client:
            return
        self.client = None
        seen = now_ms()
        self._write_last_seen(seen)
        self._tell_presence(UserOffline(self.user, seen))
        self._start_linger()

    def handle_linger_expired(self, msg: LingerExpired) -> None:
        if msg.token == self.linger_token and self.client is None:
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

    def _start_linger(self) -> None:
        self.linger_token += 1
        self.system.send_after(self.linger, self.ref, LingerExpired(self.linger_token))

    def _push(self, event: Any) -> None:
        if self.client is not None:
            self.client.push(event)

    # -- the inbox ----------------------------------------------------------------
    def handle_inbox_appended(self, msg: InboxAppended) -> None:
        if self.client is not None and msg.seq > self.pushed_upto:
            self._flush()

    def handle_flush_inbox(self, msg: FlushInbox) -> None:
        if self.client is not None:
            self._flush()

    def _flush(self) -> None:
        items = self.mail.inbox_after(self.user, self.pushed_upto, PAGE)
        for item in items:
            self.client.push(item)
            self.pushed_upto = item.seq
        if len(items) == PAGE:
            self.ref.cast(FlushInbox())

    # -- sending --------------------------------------------------------------------
    def handle_send_message(self, msg: SendMessage) -> None:
        waiting = self.pending.get(msg.id)
        if waiting is not None:                 # a resend while the first is in flight
            waiting.append(msg.ref)
            return
        self.pending[msg.id] = [msg.ref]
        future = self.mail.store_message(self.user, msg.id, msg.to, msg.body, now_ms(), self.cap)
        self._when_done(future, MessageStored, msg)

    def handle_message_stored(self, msg: MessageStored) -> None:
        refs = self.pending.pop(msg.request.id, [msg.request.ref])
        error = msg.future.exception()
        if error is not None:
            reason = self._reason(error)
            for ref in refs:
                self._push(Rejected(ref, reason, str(error)))
            return
        stored = msg.future.result()
        for ref in refs:
            self._push(Acked(ref, stored.ts_ms))
        if not stored.duplicate:
            route(self.system, msg.request.to, InboxAppended(stored.seq))

    def handle_ack_inbox(self, msg: AckInbox) -> None:
        self._when_done(self.mail.ack_inbox(self.user, msg.seqs), InboxAcked, msg)

    def handle_inbox_acked(self, msg: InboxAcked) -> None:
        self._answer_and_route(msg.request.ref, msg.future)

    def handle_mark_read(self, msg: MarkRead) -> None:
        future = self.mail.store_read(self.user, msg.peer, msg.ids, now_ms())
        self._when_done(future, ReadStored, msg)

    def handle_read_stored(self, msg: ReadStored) -> None:
        self._answer_and_route(msg.request.ref, msg.future)

    def _when_done(self, future: Any, event: type, request: Any) -> None:
        cast = self.ref.cast
        future.add_done_callback(lambda done: cast(event(request, done)))

    def _answer_and_route(self, ref: int, future: Any) -> None:
        error = future.exception()
        if error is not None:
            self._push(Rejected(ref, self._reason(error), str(error)))
            return
        for routed in future.result():          # receipts appended to senders' inboxes
            route(self.system, routed.to, InboxAppended(routed.seq))
        self._push(Acked(ref))

    @staticmethod
    def _reason(error: BaseException) -> str:
        if isinstance(error, OfflineFull):
            return OFFLINE_FULL
        if isinstance(error, UnknownUser):
            return UNKNOWN_USER
        if isinstance(error, (DuplicateId, InvalidArgument)):
            return INVALID
        log.error("storage write failed: %r", error, exc_info=error)
        return INTERNAL

    # -- presence, typing, heartbeats ---------------------------------------------------
    async def handle_subscribe(self, msg: Subscribe) -> None:
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            for state in await hub.call(Watch(self.user, msg.users)):
                self._push(state)
        self._push(Acked(msg.ref))

    def handle_presence_changed(self, msg: PresenceChanged) -> None:
        self._push(msg)

    def handle_set_typing(self, msg: SetTyping) -> None:
        route(self.system, msg.to, TypingChanged(self.user, msg.typing))
        self._push(Acked(msg.ref))

    def handle_typing_changed(self, msg: TypingChanged) -> None:
        self._push(msg)

    def handle_heartbeat(self, msg: Heartbeat) -> None:
        now = now_ms()
        if now - self.last_seen_written >= LAST_SEEN_EVERY_MS:
            self._write_last_seen(now)
        self._push(Acked(msg.ref, now))

    def _write_last_seen(self, ts: int) -> None:
        self.last_seen_written = ts
        future = self.mail.set_last_seen(self.user, ts)
        future.add_done_callback(_log_failure)

    def _tell_presence(self, event: Any) -> None:
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(event)


def _log_failure(future: Any) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("last-seen write failed: %r", future.exception())
