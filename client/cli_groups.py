"""The terminal client's group commands and group output (a mixin of
``client.cli.Chat``, which keeps the 1:1 chat; this module keeps groups).

    /groups                       the groups you are in
    /newgroup KEY NAME [+N ...]   create "<you>/KEY" named NAME with members +N...
    /group ID                     chat in a group: your lines go to every member
    /members                      the current group's members and admins
    /add +N ...  /remove +N ...   (admins) change the members
    /admin +N    /unadmin +N      (admins) promote, demote
    /rename NAME                  (admins)
    /leave                        leave the current group

Output: ``[12:01] Team | +15550002: hi``; your own group messages with
ticks per member, printed again as they change:
``[12:01] you → Team: hello ✓✓ (+15550002 ✓✓ read, +15550003 ✓✓)``; and
``-- Team: +15550001 added +15550003`` for the group's system messages.
"""

from __future__ import annotations

from typing import Any

from client import events as ev
from client.groups import GroupEvent, GroupInfo, GroupMessage, GroupReceipt, is_group
from client.sdk import checked
from transport import wire

__all__ = ["GroupCommands", "GROUP_HELP"]

GROUP_HELP = """groups: /groups   /newgroup KEY NAME [+N ...]   /group ID   /members
        /add +N ...   /remove +N ...   /admin +N   /unadmin +N   /rename NAME   /leave"""

_DONE = {"created": "created the group", "added": "added", "removed": "removed",
         "left": "left", "promoted": "made admin", "demoted": "is no longer admin of",
         "renamed": "renamed the group to"}


class GroupCommands:
    """Needs the host's ``client``, ``out``, ``spawn``, ``request``, ``peer``,
    ``mine`` and ``blue`` (see ``client.cli.Chat``)."""

    client: Any
    peer: str | None
    mine: dict[str, list]

    def group_command(self, word: str, rest: str) -> bool:
        """Handle a group command; False if ``word`` is not one."""
        group = self.peer if self.peer and is_group(self.peer) else None
        members = [w for w in rest.split() if w.startswith("+")]
        if word == "/groups":
            self.spawn(self.list_groups())
        elif word == "/newgroup":
            key, _, name = rest.partition(" ")
            name = " ".join(w for w in name.split() if not w.startswith("+"))
            self.spawn(self.new_group(key, name, members))
        elif word == "/group":
            self.open_group(rest)
        elif word not in ("/members", "/add", "/remove", "/admin", "/unadmin", "/rename",
                          "/leave"):
            return False
        elif group is None:
            self.out("-- open a group first: /group ID (/groups lists yours)")
        elif word == "/members":
            self.spawn(self.show_members(group))
        elif word == "/add":
            self.spawn(self.request(self.client.add_members(group, members)))
        elif word == "/remove":
            self.spawn(self.request(self.client.remove_members(group, members)))
        elif word in ("/admin", "/unadmin"):
            self.spawn(self.request(self.client.set_admin(group, rest, word == "/admin")))
        elif word == "/rename":
            self.spawn(self.request(self.client.rename_group(group, rest)))
        elif word == "/leave":
            self.spawn(self.request(self.client.leave_group(group)))
        return True

    @property
    def group_names(self) -> dict[str, str]:
        """Group id -> name, as last seen (made on first use, so the host's
        ``__init__`` stays the 1:1 chat's)."""
        return self.__dict__.setdefault("_group_names", {})

    def label(self, group: str) -> str:
        return self.group_names.get(group, group)

    # -- commands ------------------------------------------------------------------------
    def open_group(self, group: str) -> None:
        try:
            checked(wire.GroupLeave(group))
        except ValueError:
            self.out("-- usage: /group ID (a group id: +CREATOR/KEY; /groups lists yours)")
            return
        self.peer = group
        self.out(f"-- chatting in {self.label(group)} ({group})")
        self.spawn(self.show_members(group))

    async def new_group(self, key: str, name: str, members: list[str]) -> None:
        try:
            group = await self.client.create_group(key, name, members)
        except Exception as error:          # noqa: BLE001 - reported, never fatal to the chat
            self.out(f"-- {error}")
            return
        self.group_names[group] = name
        self.peer = group
        self.out(f"-- created {name} ({group}); chatting in it")

    async def list_groups(self) -> None:
        try:
            infos = await self.client.group_info()
        except Exception as error:          # noqa: BLE001
            self.out(f"-- {error}")
            return
        if not infos:
            self.out("-- you are in no group (/newgroup KEY NAME +N ... creates one)")
        for info in infos:
            self.group_names[info.group] = info.name
            self.out(f"-- {info.name}: {info.group} ({len(info.members)} members)")

    async def show_members(self, group: str) -> None:
        try:
            info: GroupInfo = await self.client.group_info(group)
        except Exception as error:          # noqa: BLE001
            self.out(f"-- {error}")
            return
        self.group_names[group] = info.name
        who = ", ".join(m + (" (admin)" if m in info.admins else "") for m in info.members)
        self.out(f"-- {info.name}: {who}")

    # -- events ------------------------------------------------------------------------
    def group_event(self, event: Any) -> bool:
        """Show a group event; False if ``event`` is not one."""
        kind = type(event)
        if kind is GroupMessage:
            text = event.body.decode("utf-8", "replace")
            where = self.label(event.group)
            if event.group == self.peer:
                self.out(f"[{_clock(event.ts)}] {where} | {event.sender}: {text}")
                self.spawn(self.request(
                    self.client.mark_group_read(event.group, event.sender, [event.id])))
            else:
                self.out(f"[{_clock(event.ts)}] {where} | {event.sender}: {text}"
                         f"   (/group {event.group} to reply)")
        elif kind is GroupReceipt:
            self.member_ticks(event.id)
        elif kind is GroupEvent:
            if event.name:
                self.group_names[event.group] = event.name
            if event.event == "missed":
                what = (f"{event.count} message(s)" if event.count
                        else "changes to the group")
                self.out(f"-- {event.name}: {what} did not reach you (your inbox was full); "
                         f"/members shows it as it is now")
            else:
                whom = " ".join(event.users) if event.event not in ("left", "renamed") else ""
                tail = event.name if event.event == "renamed" else ""
                self.out(f"-- {event.name}: {event.by} {_DONE[event.event]} {whom}{tail}".rstrip())
        else:
            return False
        return True

    def member_ticks(self, id: str) -> None:
        mine = self.mine.get(id)
        if mine is None:
            return
        ticks = self.client.group_ticks(id)
        status = self.client.status(id) or ev.Status.SENT
        each = ", ".join(f"{m} {s.ticks}" for m, s in sorted(ticks.items()))
        self.out(f"[{_clock(mine[2])}] you → {self.label(mine[0])}: {mine[1]} "
                 f"{status.ticks} ({each})")


def _clock(ms: int | None) -> str:
    from client.cli import clock
    return clock(ms)
