"""``Blocking``: the session's side of blocking a contact (a mixin of
``actors.session.Session``, kept apart so the session module stays about
messaging). storage/blocks.py holds the list, with the blocker, and drops a
blocked sender's 1:1 messages at the inbox append; what is left is routed
traffic, checked where the session handles it:

- ``blocked``: the users this user blocked, read from LMDB when the session
  starts (nothing to read while the count in its inbox_meta is 0) and kept
  in step by BLOCK / UNBLOCK, which only this session makes. A target is
  added when BLOCK arrives (a SEND pipelined behind it is refused already)
  and taken out again if the write is refused; UNBLOCK takes effect at its
  commit;
- SEND to a blocked user: INVALID "you blocked this user: unblock them
  first"; READ of a blocked user's messages: ACKed, no receipt;
- TYPING either way between the two: ACKed, not routed (the sender's
  session drops what goes to a user it blocked, the receiver's what comes
  from one);
- presence: a watcher sees a user it blocked, or who blocked it, as offline
  with no last seen, now (SUBSCRIBE) and at every change (dropped). "Who
  blocked me" is read from the store, so it holds for users whose home is
  this node (every worker of a node shares the store); the block list of a
  user homed on another node is not here (docs/cluster.md).

Messages: ``BlockUser``, ``GetBlocked`` (answered with ``BlockedPage``s and
an ACK of the count), ``BlockStored``.
"""

from __future__ import annotations

import asyncio
import logging

from actors.messages import (INTERNAL, INVALID, UNKNOWN_USER, Acked, BlockedPage, BlockStored,
                             BlockUser, GetBlocked, PresenceChanged, Rejected)
from storage import HomeUnknown, InvalidArgument, UnknownUser
from storage.blocks import MAX_BLOCKED

__all__ = ["Blocking", "PAGE_USERS", "YOU_BLOCKED"]

log = logging.getLogger("switchboard.blocking")

PAGE_USERS = 1024             # user ids per BLOCK_LIST (wire.MAX_BLOCK_LIST)
YOU_BLOCKED = "you blocked this user: unblock them first"
_NOBODY: frozenset = frozenset()    # shared by the sessions of users who block nobody (most)


class Blocking:
    """Mixed into ``Session``: needs ``self.mail``, ``self.user``, ``self.ref``,
    ``self.system`` and ``_answer``; ``init_blocks`` runs in ``init``."""

    def init_blocks(self) -> None:
        users = self.mail.blocked_list(self.user)
        self.blocked: set[str] | frozenset = set(users) if users else _NOBODY
        config = self.system.env.get("config") or {}
        self.max_blocked = int(config.get("max_blocked", MAX_BLOCKED))

    def handle_block_user(self, msg: BlockUser) -> None:
        if msg.user == self.user:
            self._answer(msg, Rejected(msg.ref, INVALID, "a user cannot block themselves"))
            return
        added = msg.on and msg.user not in self.blocked
        if added:
            if self.blocked is _NOBODY:
                self.blocked = set()
            self.blocked.add(msg.user)
        future = self.mail.set_block(self.user, msg.user, msg.on, self.max_blocked)
        cast = self.ref.notify              # a completion we asked for: never refused
        future.add_done_callback(lambda done: cast(BlockStored((msg, added), done)))

    def handle_block_stored(self, msg: BlockStored) -> None:
        request, added = msg.request
        future = msg.future
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            if added and request.user in self.blocked:
                self.blocked.discard(request.user)
            self._answer(request, Rejected(request.ref, _reason(error), str(error)))
            return
        if not request.on and request.user in self.blocked:     # (never in _NOBODY)
            self.blocked.discard(request.user)
        self._answer(request, Acked(request.ref))

    def handle_get_blocked(self, msg: GetBlocked) -> None:
        users = self.mail.blocked_list(self.user)
        for i in range(0, len(users), PAGE_USERS):
            self._answer(msg, BlockedPage(tuple(users[i:i + PAGE_USERS])))
        self._answer(msg, Acked(msg.ref, len(users)))

    def hidden(self, other: str) -> bool:
        """Whether ``other``'s presence is hidden from this user: either
        blocked the other (the second read only for a user who blocked someone)."""
        return other in self.blocked or self.mail.is_blocked(other, self.user)

    def presence_seen(self, state: PresenceChanged) -> PresenceChanged:
        """``state`` as this user may see it: offline, no last seen, if hidden."""
        if self.hidden(state.user):
            return PresenceChanged(state.user, False, None)
        return state


def _reason(error: BaseException) -> str:
    if isinstance(error, UnknownUser):
        return UNKNOWN_USER
    if isinstance(error, InvalidArgument):      # BlocksFull among them
        return INVALID
    if not isinstance(error, HomeUnknown):
        log.error("block write failed: %r", error, exc_info=error)
    return INTERNAL
