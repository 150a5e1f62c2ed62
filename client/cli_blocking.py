"""The terminal client's block commands (a mixin of ``client.cli.Chat``).

    /block +N       their messages, presence and typing stop reaching you
    /unblock +N     new messages flow again (not those sent meanwhile)
    /blocked        the numbers you have blocked

Output: ``-- blocked +15550002``, ``-- unblocked +15550002``, and
``-- blocked: +15550002, +15550003`` (or ``-- you have blocked nobody``);
a refusal as ``-- <the server's message>``.
"""

from __future__ import annotations

from typing import Any

from client.sdk import checked
from transport import wire

__all__ = ["BlockCommands", "BLOCK_HELP"]

BLOCK_HELP = "blocking: /block +N   /unblock +N   /blocked"


class BlockCommands:
    """Needs the host's ``client``, ``out`` and ``spawn`` (``client.cli.Chat``)."""

    client: Any

    def block_command(self, word: str, rest: str) -> bool:
        """Handle a block command; False if ``word`` is not one."""
        if word == "/blocked":
            self.spawn(self.list_blocked())
        elif word in ("/block", "/unblock"):
            try:
                checked(wire.Block(rest))
            except ValueError:
                self.out(f"-- usage: {word} +NUMBER (E.164)")
                return True
            self.spawn(self.set_block(rest, word == "/block"))
        else:
            return False
        return True

    async def set_block(self, user: str, on: bool) -> None:
        try:
            await (self.client.block(user) if on else self.client.unblock(user))
        except Exception as error:          # noqa: BLE001 - shown, input goes on
            self.out(f"-- {error}")
            return
        self.out(f"-- {'blocked' if on else 'unblocked'} {user}")

    async def list_blocked(self) -> None:
        try:
            users = await self.client.blocked()
        except Exception as error:          # noqa: BLE001
            self.out(f"-- {error}")
            return
        self.out(f"-- blocked: {', '.join(users)}" if users else "-- you have blocked nobody")
