"""Blocking a contact in the SDK: the ``Blocking`` API mixed into ``Client``.

    await client.block(spammer)      # their messages, presence and typing stop reaching us
    await client.unblock(spammer)    # new messages flow again (not those sent meanwhile)
    await client.blocked()           # ["+1...", ...], the server's list

Plain requests, idempotent on the server (blocking twice changes nothing),
so ``_call`` may resend them after a reconnect. The server keeps the list;
``blocked()`` asks for it (BLOCKED: BLOCK_LIST pages, then the ACK). A SEND
to a user this one blocked fails with a ``ServerError`` INVALID ("you
blocked this user: unblock them first"). docs/protocol.md, "Blocking".
"""

from __future__ import annotations

from transport import wire
from client.link import checked

__all__ = ["Blocking"]


class Blocking:
    """Mixed into ``Client`` (needs ``_call``); ``Client._on_push`` hands
    each BLOCK_LIST to ``_block_page`` first."""

    _block_pages: list[set[str]] | None = None    # one per blocked() call in flight

    async def block(self, user: str) -> None:
        """BLOCK ``user``: ServerError INVALID for oneself or past the server's
        limit, UNKNOWN_USER for a number with no account."""
        await self._call(checked(wire.Block(user)))

    async def unblock(self, user: str) -> None:
        """UNBLOCK ``user`` (also fine when not blocked)."""
        await self._call(checked(wire.Unblock(user)))

    async def blocked(self) -> list[str]:
        """The users this user has blocked, sorted."""
        pages: set[str] = set()
        if self._block_pages is None:
            self._block_pages = []
        self._block_pages.append(pages)
        try:
            await self._call(wire.Blocked())
        finally:
            self._block_pages.remove(pages)
        return sorted(pages)

    def _block_page(self, frame: wire.Frame) -> bool:
        """Whether ``frame`` was a BLOCK_LIST (taken here)."""
        if type(frame) is not wire.BlockList:
            return False
        for pages in self._block_pages or ():
            pages.update(frame.users)
        return True
