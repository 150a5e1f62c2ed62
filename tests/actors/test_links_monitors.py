"""Links, monitors, exit signals and the local registry, with OTP's rules:
a crash travels along links, ``normal`` does not, ``trap_exit`` turns a
signal into an ``Exit`` message, ``kill`` is untrappable but a linked
``killed`` is not, and a parent's signal stops even a trapping child.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from actors import (
    KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, Actor, AlreadyRegistered, Down, Exit,
)
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class Link:
    other: object


@dataclass(frozen=True)
class Unlink:
    other: object


@dataclass(frozen=True)
class Monitor:
    other: object


@dataclass(frozen=True)
class Demonitor:
    mref: object


@dataclass(frozen=True)
class SpawnChild:
    trap_exit: bool = True


@dataclass(frozen=True)
class ExitWith:
    reason: object


@dataclass(frozen=True)
class Ping:
    pass


class Node(Actor):
    """Links, monitors and spawns on request; records every other message
    (``Exit``, ``Down``, markers) and its terminate reason in ``seen``."""

    def __init__(self, seen: list | None = None):
        self.seen = [] if seen is None else seen

    def terminate(self, reason):
        self.seen.append(("terminate", reason))

    def handle_link(self, msg):
        self.link(msg.other)

    def handle_unlink(self, msg):
        self.unlink(msg.other)

    def handle_monitor(self, msg):
        return self.monitor(msg.other)

    def handle_demonitor(self, msg):
        self.demonitor(msg.mref)

    async def handle_spawn_child(self, msg):
        return await self.spawn_link(Node, [], trap_exit=msg.trap_exit)

    def handle_exit_with(self, msg):
        if isinstance(msg.reason, BaseException):
            raise msg.reason
        self.stop(msg.reason)

    def handle_ping(self, msg):
        return "pong"

    def handle_other(self, msg):
        self.seen.append(msg)


async def node(system, seen=None, **options):
    return await system.spawn(Node, seen, **options)


async def settled(ref, seen):
    """Everything sent to ``ref`` so far has been handled; return ``seen``."""
    await ref.call(Ping(), timeout=1)
    return seen


# -- links --------------------------------------------------------------------------
async def test_crash_kills_linked_actor_with_the_same_reason(system):
    a, b = await node(system), await node(system)
    await a.call(Link(b))
    b.cast(ExitWith(ValueError("boom")))
    reason = await asyncio.wait_for(a.join(), 1)
    assert isinstance(reason, ValueError) and reason is b.exit_reason


@pytest.mark.parametrize("reason", [SHUTDOWN, (SHUTDOWN, "bye"), "custom"])
async def test_any_non_normal_exit_travels_along_links(system, reason):
    a, b = await node(system), await node(system)
    await a.call(Link(b))
    await b.stop(reason)
    assert await asyncio.wait_for(a.join(), 1) == reason


async def test_normal_exit_does_not_kill_linked_actor(system):
    a, b = await node(system), await node(system)
    await a.call(Link(b))
    b.cast(ExitWith(NORMAL))
    assert await b.join() == NORMAL
    assert await a.call(Ping(), timeout=1) == "pong"


@pytest.mark.parametrize("reason", [NORMAL, "crashed"])
async def test_trap_exit_turns_the_signal_into_an_exit_message(system, reason):
    seen = []
    a, b = await node(system, seen, trap_exit=True), await node(system)
    await a.call(Link(b))
    await b.stop(reason)
    assert await settled(a, seen) == [Exit(b, reason)] and a.is_alive


async def test_kill_is_untrappable(system):
    seen = []
    a = await node(system, seen, trap_exit=True)
    a.exit(KILL)
    assert await asyncio.wait_for(a.join(), 1) == KILLED
    assert seen == []                                  # no terminate either


async def test_linked_killed_reason_is_trappable(system):
    # Step 1: b is linked to a trapping a and a non-trapping c.
    seen = []
    a, b, c = await node(system, seen, trap_exit=True), await node(system), await node(system)
    await a.call(Link(b))
    await c.call(Link(b))
    # Step 2: b is killed; its links hear 'killed', which is an ordinary reason.
    b.exit(KILL)
    assert await b.join() == KILLED
    assert await settled(a, seen) == [Exit(b, KILLED)]
    assert await asyncio.wait_for(c.join(), 1) == KILLED


async def test_unlink_both_ways(system):
    a, b, c = await node(system), await node(system), await node(system)
    await a.call(Link(b))
    await a.call(Link(c))
    await a.call(Unlink(b))
    await c.call(Unlink(a))                           # unlinking works from either end
    await b.stop("crashed")
    await c.stop("crashed")
    assert await a.call(Ping(), timeout=1) == "pong"


async def test_link_to_dead_actor_is_noproc(system):
    seen = []
    a, dead = await node(system, seen, trap_exit=True), await node(system)
    await dead.stop()
    await a.call(Link(dead))
    assert await settled(a, seen) == [Exit(dead, NOPROC)]


async def test_exit_from_outside(system):
    seen = []
    plain, trapping = await node(system), await node(system, seen, trap_exit=True)
    system.exit(plain, NORMAL)                        # ignored, as erlang:exit(Pid, normal)
    assert await plain.call(Ping(), timeout=1) == "pong"
    system.exit(trapping, "stop please")
    assert await settled(trapping, seen) == [Exit(None, "stop please")]
    system.exit(plain, "stop please")
    assert await asyncio.wait_for(plain.join(), 1) == "stop please"


# -- a parent's exit signal ------------------------------------------------------------
@pytest.mark.parametrize("reason", [NORMAL, SHUTDOWN, "crashed"])
async def test_exit_signal_from_parent_stops_a_trapping_child(system, reason):
    # Step 1: the parent spawn_links a trapping child.
    parent = await node(system)
    child = await parent.call(SpawnChild(trap_exit=True))
    # Step 2: the parent exits; the child runs terminate and exits with the
    # same reason (gen_server on {'EXIT', Parent, Reason}), for 'normal' too.
    await parent.stop(reason)
    assert await asyncio.wait_for(child.join(), 1) == reason


async def test_explicit_exit_from_parent_stops_a_trapping_child(system):
    seen = []
    parent = await node(system, seen, trap_exit=True)
    child = await parent.call(SpawnChild(trap_exit=True))
    child.exit(SHUTDOWN, sender=parent)               # what a supervisor sends
    assert await asyncio.wait_for(child.join(), 1) == SHUTDOWN
    assert await settled(parent, seen) == [Exit(child, SHUTDOWN)]


async def test_exit_from_a_non_parent_link_is_only_a_message(system):
    seen = []
    parent = await node(system)
    child = await parent.call(SpawnChild(trap_exit=True))
    other = await node(system, seen, trap_exit=True)
    await child.call(Link(other))
    await other.stop("crashed")
    assert child.is_alive and await child.call(Ping(), timeout=1) == "pong"


class SlowTerminate(Node):
    """Its terminate records its reason, then waits for the gate."""

    def __init__(self, seen: list, gate: asyncio.Event):
        super().__init__(seen)
        self.gate = gate

    async def terminate(self, reason):
        self.seen.append(("terminate", reason))
        await self.gate.wait()
        self.seen.append("terminate done")


@pytest.mark.parametrize("signal, expected", [("parent", "done"), (KILL, KILLED)])
async def test_exit_signal_during_terminate_only_kill_cuts_it_short(system, signal, expected):
    """OTP: a trapping gen_server in terminate reads no more messages, so
    its parent's exit signal waits and terminate finishes with the first
    reason; only the untrappable kill ends it there."""
    # Step 1: a trapping child of `parent` stops itself and is inside terminate.
    seen, gate = [], asyncio.Event()
    parent = await node(system)
    child = await system.spawn(SlowTerminate, seen, gate, link=parent, trap_exit=True)
    child.cast(ExitWith("done"))
    await wait_for(lambda: seen == [("terminate", "done")])
    # Step 2: the parent crashes (its signal reaches the child), or the child is killed.
    if signal == "parent":
        await parent.stop("crashed")
        await asyncio.sleep(0.05)
        assert child.is_alive
        gate.set()
    else:
        child.exit(KILL)
    assert await asyncio.wait_for(child.join(), 1) == expected
    assert seen[1:] == (["terminate done"] if signal == "parent" else [])


# -- monitors --------------------------------------------------------------------------
async def test_monitor_delivers_down_with_the_reason(system):
    seen = []
    watcher, target = await node(system, seen), await node(system)
    mref = await watcher.call(Monitor(target))
    await target.stop("gone")
    assert await settled(watcher, seen) == [Down(mref, target, "gone")]
    assert mref.watcher is watcher and mref.target is target


async def test_two_monitors_two_downs(system):
    seen = []
    watcher, target = await node(system, seen), await node(system)
    first, second = await watcher.call(Monitor(target)), await watcher.call(Monitor(target))
    assert first is not second
    await target.stop("gone")
    assert await settled(watcher, seen) == [Down(first, target, "gone"), Down(second, target, "gone")]


async def test_monitor_of_a_dead_actor_is_down_noproc(system):
    seen = []
    watcher, dead = await node(system, seen), await node(system)
    await dead.stop()
    mref = await watcher.call(Monitor(dead))
    assert await settled(watcher, seen) == [Down(mref, dead, NOPROC)]


async def test_demonitor_stops_delivery(system):
    seen = []
    watcher, target = await node(system, seen), await node(system)
    mref = await watcher.call(Monitor(target))
    await watcher.call(Demonitor(mref))
    await target.stop("gone")
    watcher.cast("marker")                             # anything sent before it is handled first
    await wait_for(lambda: "marker" in seen)
    assert seen == ["marker"]


async def test_a_watchers_death_removes_its_monitors(system):
    # Step 1: two watchers monitor one target; one of them dies.
    seen = []
    gone, staying, target = await node(system), await node(system, seen), await node(system)
    await gone.call(Monitor(target))
    mref = await staying.call(Monitor(target))
    await gone.stop()
    # Step 2: the target dies; nothing is queued for the dead watcher.
    await target.stop("gone")
    assert gone.mailbox_len == 0
    assert await settled(staying, seen) == [Down(mref, target, "gone")]


async def test_a_fired_monitor_is_forgotten_by_the_watcher(system):
    """OTP: a monitor fires once and is then gone; a long-lived watcher
    keeps nothing of the targets it saw die."""
    seen = []
    watcher = await node(system, seen)
    for _ in range(20):
        target = await node(system)
        await watcher.call(Monitor(target))
        await target.stop("gone")
    assert len(await settled(watcher, seen)) == 20
    assert not watcher._watching, f"{len(watcher._watching)} fired monitors kept"


async def test_monitor_does_not_link(system):
    seen = []
    watcher, target = await node(system, seen), await node(system)
    await watcher.call(Monitor(target))
    await target.stop("crashed")
    assert await watcher.call(Ping(), timeout=1) == "pong"


# -- the registry ------------------------------------------------------------------------
async def test_register_whereis_duplicate_and_release(system):
    # Step 1: a name is registered at spawn and found by whereis.
    first = await node(system, name="router")
    assert system.whereis("router") is first and first.name == "router"
    assert list(system.registry) == ["router"]
    # Step 2: a second spawn under the name fails and leaves nothing behind.
    with pytest.raises(AlreadyRegistered) as info:
        await node(system, name="router")
    assert info.value.holder is first and len(system) == 1
    # Step 3: the name is freed when its holder exits, and can be reused.
    await first.stop()
    assert system.whereis("router") is None and len(system.registry) == 0
    second = await node(system, name="router")
    assert system.whereis("router") is second
