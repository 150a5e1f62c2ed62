"""Restart types x exit reasons, after supervisor_SUITE.erl's
``permanent_normal`` ... ``temporary_abnormal`` matrix.

permanent is always restarted; transient only on an abnormal exit (not
``normal``, ``shutdown`` or ``("shutdown", term)``); temporary never, and a
temporary child leaves ``which_children`` when it exits.

Sync point used throughout: once ``child.join()`` returns, the child's
``Exit`` is already in the supervisor's mailbox, so a ``which_children``
call is answered only after the supervisor has acted on it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from actors import KILL, KILLED, NORMAL, SHUTDOWN, Actor
from supervisor.base import (
    Supervisor, SupervisorError, count_children, restart_child, start_child, which_children,
)
from supervisor.spec import ChildSpec, SupFlags

pytestmark = pytest.mark.timeout(10)


@dataclass(frozen=True)
class ExitWith:
    reason: object


class Child(Actor):
    def handle_exit_with(self, msg):
        if msg.reason == "abnormal":
            raise RuntimeError("abnormal")
        self.stop(msg.reason)


REASONS = {                                            # how to end a child -> join() check
    "normal": NORMAL,
    "shutdown": SHUTDOWN,
    "shutdown_term": (SHUTDOWN, "term"),
    "abnormal": RuntimeError,
    "killed": KILLED,
}

RESTARTED = {                                          # OTP's do_restart/3
    "permanent": set(REASONS),
    "transient": {"abnormal", "killed"},
    "temporary": set(),
}

MATRIX = [(restart, how) for restart in RESTARTED for how in REASONS]


async def end(child, how):
    if how == "killed":
        child.exit(KILL)
    elif how == "abnormal":
        child.cast(ExitWith("abnormal"))
    else:
        child.cast(ExitWith(REASONS[how]))
    reason = await asyncio.wait_for(child.join(), 1)
    expected = REASONS[how]
    assert isinstance(reason, expected) if isinstance(expected, type) else reason == expected


async def one_child_sup(system, restart, intensity=3):
    sup = await system.spawn(
        Supervisor, SupFlags("one_for_one", intensity, 5), [ChildSpec("c", Child, restart=restart)])
    [row] = await which_children(sup)
    return sup, row.ref


@pytest.mark.parametrize("restart, how", MATRIX, ids=[f"{r}_{h}" for r, h in MATRIX])
async def test_restart_type(system, restart, how):
    # Step 1: a one_for_one supervisor with one child of this restart type.
    sup, child = await one_child_sup(system, restart)
    # Step 2: the child exits this way.
    await end(child, how)
    rows = await which_children(sup)
    counts = await count_children(sup)
    # Step 3: restarted, kept without a process, or forgotten.
    if how in RESTARTED[restart]:
        [row] = rows
        assert row.id == "c" and row.ref is not child and row.ref.is_alive
        assert counts == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}
    elif restart == "transient":
        assert [(r.id, r.ref) for r in rows] == [("c", None)]
        assert counts == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}
    else:
        assert rows == [] and counts["specs"] == 0
    assert sup.is_alive


@pytest.mark.parametrize("restart, how, gives_up", [
    ("permanent", "normal", True),
    ("transient", "normal", False),
    ("transient", "abnormal", True),
    ("temporary", "abnormal", False),
])
async def test_only_restarts_count_toward_intensity(system, restart, how, gives_up):
    # with intensity 0, the first restart is one too many
    sup, child = await one_child_sup(system, restart, intensity=0)
    await end(child, how)
    if gives_up:
        assert await asyncio.wait_for(sup.join(), 1) == SHUTDOWN
    else:
        assert (await count_children(sup))["active"] == 0 and sup.is_alive


# -- after supervisor_SUITE's do_not_save_child_specs_for_temporary_children ----------
async def test_permanent_child_spec_saved(system):
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 3, 5), [])
    spec = ChildSpec("p", Child)
    first = await start_child(sup, spec)
    await end(first, "abnormal")
    with pytest.raises(SupervisorError, match="already_started"):
        await start_child(sup, spec)


async def test_transient_child_spec_saved(system):
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 3, 5), [])
    spec = ChildSpec("t", Child, restart="transient")
    first = await start_child(sup, spec)
    await end(first, "normal")
    with pytest.raises(SupervisorError, match="already_present"):
        await start_child(sup, spec)
    again = await restart_child(sup, "t")
    assert again.is_alive and again is not first


async def test_temporary_child_spec_not_saved(system):
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 3, 5), [])
    spec = ChildSpec("tmp", Child, restart="temporary")
    first = await start_child(sup, spec)
    await end(first, "abnormal")
    with pytest.raises(SupervisorError, match="not_found"):
        await restart_child(sup, "tmp")
    assert (await start_child(sup, spec)).is_alive
