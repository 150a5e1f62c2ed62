"""Bounded mailboxes: ``overflow="reject"`` and ``overflow="crash"``, runtime
messages bypassing the bound, and class attribute vs spawn option.

Every actor here is first parked in an async handler, so the test alone
decides how full its mailbox is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from actors import Actor, Down, Exit, MailboxFull, MailboxOverflow
from supervisor.base import Supervisor, which_children
from supervisor.spec import SupFlags, worker
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class Item:
    n: int


@dataclass(frozen=True)
class Hold:
    pass


@dataclass(frozen=True)
class Drain:
    """Reply with everything handled so far."""


@dataclass(frozen=True)
class Watch:
    target: object


class Parkable(Actor):
    """Logs what it handles; ``Hold`` parks it until ``gate`` is set."""

    def __init__(self, gate: asyncio.Event, entered: asyncio.Event, terminated: list | None = None):
        self.gate, self.entered, self.log = gate, entered, []
        self.terminated = [] if terminated is None else terminated

    def terminate(self, reason):
        self.terminated.append(reason)

    async def handle_hold(self, msg):
        self.entered.set()
        await self.gate.wait()

    def handle_watch(self, msg):
        return self.monitor(msg.target)

    def handle_drain(self, msg):
        return list(self.log)

    def handle_other(self, msg):
        self.log.append(msg)


class Small(Parkable):
    mailbox_size = 2
    overflow = "crash"


async def parked(system, cls=Parkable, terminated=None, **options):
    """Spawn ``cls`` and park it; return (ref, gate)."""
    gate, entered = asyncio.Event(), asyncio.Event()
    ref = await system.spawn(cls, gate, entered, terminated, **options)
    ref.cast(Hold())
    await asyncio.wait_for(entered.wait(), 1)
    return ref, gate


async def test_reject_raises_at_size_plus_one_and_loses_nothing(system):
    # Step 1: fill a parked actor's mailbox to exactly mailbox_size.
    ref, gate = await parked(system, mailbox_size=5)
    for n in range(5):
        ref.cast(Item(n))
    # Step 2: message 6 is refused, to casts and calls alike; the actor lives.
    with pytest.raises(MailboxFull):
        ref.cast(Item(5))
    with pytest.raises(MailboxFull):
        await ref.call(Drain(), timeout=1)
    assert ref.is_alive and ref.mailbox_len == 5
    # Step 3: released, it handles the first five, in order; there is room again.
    gate.set()
    await wait_for(lambda: ref.mailbox_len == 0)
    assert await ref.call(Drain(), timeout=1) == [Item(n) for n in range(5)]
    ref.cast(Item(6))
    assert (await ref.call(Drain(), timeout=1))[-1] == Item(6)


async def test_crash_overflow_exits_with_mailbox_overflow(system):
    terminated = []
    ref, gate = await parked(system, terminated=terminated, mailbox_size=3, overflow="crash")
    for n in range(3):
        ref.cast(Item(n))
    # the overflowing send is not silently dropped: the sender hears of it too
    with pytest.raises(MailboxFull):
        ref.cast(Item(3))
    reason = await asyncio.wait_for(ref.join(), 1)
    assert isinstance(reason, MailboxOverflow)
    assert terminated == [reason]


async def test_crash_overflow_child_is_restarted_by_its_supervisor(system):
    # Step 1: a supervisor with one crash-on-overflow child.
    gate, entered = asyncio.Event(), asyncio.Event()
    spec = worker(Parkable, gate, entered, None, id="bounded", mailbox_size=2, overflow="crash")
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 3, 5), [spec])
    [row] = await which_children(sup)
    # Step 2: park it and overflow it.
    row.ref.cast(Hold())
    await asyncio.wait_for(entered.wait(), 1)
    row.ref.cast(Item(0))
    row.ref.cast(Item(1))
    with pytest.raises(MailboxFull):
        row.ref.cast(Item(2))
    assert isinstance(await asyncio.wait_for(row.ref.join(), 1), MailboxOverflow)
    # Step 3: the supervisor has put a fresh one in its place.
    [new] = await which_children(sup)
    assert new.id == "bounded" and new.ref is not row.ref and new.ref.is_alive


async def test_runtime_messages_bypass_the_bound(system):
    # Step 1: a trapping, crash-on-overflow actor that links and monitors others.
    ref, gate = await parked(system, mailbox_size=2, overflow="crash", trap_exit=True)
    gate.set()
    linked = await system.spawn(Parkable, asyncio.Event(), asyncio.Event(), None, link=ref)
    watched = await system.spawn(Parkable, asyncio.Event(), asyncio.Event(), None)
    mref = await ref.call(Watch(watched), timeout=1)
    # Step 2: park it again and fill the mailbox.
    gate.clear()
    ref.cast(Hold())
    await wait_for(lambda: ref.mailbox_len == 0)
    ref.cast(Item(0))
    ref.cast(Item(1))
    # Step 3: an Exit and a Down still get in; the actor does not crash.
    await linked.stop("gone")
    await watched.stop("away")
    assert ref.mailbox_len == 4 and ref.is_alive
    # Step 4: released, it handles all four.
    gate.set()
    await wait_for(lambda: ref.mailbox_len == 0)
    assert await ref.call(Drain(), timeout=1) == [
        Item(0), Item(1), Exit(linked, "gone"), Down(mref, watched, "away")]


async def test_class_attribute_vs_spawn_option(system):
    # the class says: 2 messages, then crash
    by_class, _ = await parked(system, Small)
    by_class.cast(Item(0))
    by_class.cast(Item(1))
    with pytest.raises(MailboxFull):
        by_class.cast(Item(2))
    assert isinstance(await asyncio.wait_for(by_class.join(), 1), MailboxOverflow)
    # spawn options override both attributes: 4 messages, then reject
    by_option, gate = await parked(system, Small, mailbox_size=4, overflow="reject")
    for n in range(4):
        by_option.cast(Item(n))
    with pytest.raises(MailboxFull):
        by_option.cast(Item(4))
    assert by_option.is_alive
    gate.set()
    await wait_for(lambda: by_option.mailbox_len == 0)
    assert await by_option.call(Drain(), timeout=1) == [Item(n) for n in range(4)]


@pytest.mark.parametrize("options", [{"overflow": "drop"}, {"mailbox_size": 0}])
async def test_bad_mailbox_options_are_refused(system, options):
    with pytest.raises(ValueError):
        await system.spawn(Parkable, asyncio.Event(), asyncio.Event(), None, **options)
    assert len(system) == 0


async def test_what_the_actor_asked_for_gets_into_a_full_mailbox(system):
    # Step 1: a parked actor's mailbox is full: a cast is refused.
    ref, gate = await parked(system, mailbox_size=2)
    ref.cast(Item(0))
    ref.cast(Item(1))
    with pytest.raises(MailboxFull):
        ref.cast(Item(2))
    # Step 2: a completion it asked for (notify) and its own timer
    # (send_after) still get in, behind what was there, and are handled.
    ref.notify(Item(3))
    system.send_after(0.01, ref, Item(4))
    await asyncio.sleep(0.05)
    assert ref.mailbox_len == 4 and ref.is_alive
    gate.set()
    await wait_for(lambda: ref.mailbox_len == 0)
    assert await ref.call(Drain(), timeout=1) == [Item(n) for n in (0, 1, 3, 4)]
    # Step 3: to a dead actor it is a dead letter, like a cast.
    await ref.stop()
    before = system.dead_letters
    ref.notify(Item(5))
    assert system.dead_letters == before + 1
