"""The light ``Supervisor``'s guarantees around one child's stop and start,
named after OTP's supervisor(3) rules:

- no child outlives its supervisor: ``shutdown/2`` ends with the child dead
  (``shutdown``, then ``kill`` after the child's shutdown time), even when
  the supervisor is itself stopped while it waits;
- a child that cannot be started is ``{error, Reason}``: ``start_child``
  fails, the supervisor and its other children go on, and no entry is
  left behind; on a restart it counts toward the intensity.

Children and helpers are those of ``test_strategies.py``; every wait is bounded.
"""

from __future__ import annotations

import asyncio

import pytest

from actors import KILLED, NORMAL, SHUTDOWN, Actor
from supervisor.base import Supervisor, SupervisorError, count_children, start_child, which_children
from supervisor.spec import ChildSpec, SupFlags
from tests.conftest import Probe, wait_for
from tests.supervisor.test_strategies import Book, Crash, Ctl, Rec, specs, supervise

pytestmark = pytest.mark.timeout(15)


# -- no child outlives its supervisor -----------------------------------------------------
@pytest.mark.parametrize("strategy, intensity", [
    ("one_for_all", 3),          # the supervisor is shutting b down to restart a and b
    ("one_for_one", 0),          # the supervisor gave up and its terminate shuts b down
], ids=["stopped_during_a_restart", "stopped_during_escalation"])
async def test_supervisor_stopped_while_shutting_a_child_down_still_kills_it(
        system, strategy, intensity):
    """OTP: a supervisor's children never outlive it. While it shuts b down
    (b's terminate hangs; shutdown 0.3 s) its own parent stops it: b is still
    killed once its shutdown time is up, and the supervisor exits after it."""
    # Step 1: a crashes; the supervisor asks b to stop and waits.
    book = Book()
    hang = Ctl(release=asyncio.Event())
    children = specs(book, "a") + specs(book, "b", ctls={"b": hang}, shutdown=0.3)
    sup = await supervise(system, strategy, children, intensity=intensity)
    b = book.refs["b"]
    book.refs["a"].cast(Crash())
    await wait_for(lambda: ("stop", "b") in book.events)
    try:
        # Step 2: the parent stops the supervisor meanwhile; b does not survive it.
        assert await sup.stop(SHUTDOWN, timeout=2) == SHUTDOWN
        assert await asyncio.wait_for(b.join(), 1) == KILLED
        assert len(system) == 0
    finally:
        hang.release.set()


# -- a child that cannot start -------------------------------------------------------------
class StopsInInit(Actor):
    """Starts once; every later start stops in ``init`` (OTP's ``{stop, normal}``)."""

    def __init__(self, ctl: Ctl):
        self.ctl = ctl

    def init(self):
        self.ctl.attempts += 1
        if self.ctl.attempts > 1:
            self.stop(NORMAL)

    def handle_crash(self, msg):
        raise RuntimeError("crash")


UNSTARTABLE = {
    "no_module": lambda book: ChildSpec("x", "no_such_module_xyz.Thing"),
    "no_attribute": lambda book: ChildSpec("x", "tests.supervisor.test_strategies.NoSuchThing"),
    "name_taken": lambda book: ChildSpec("x", Rec, (book, "x"), options={"name": "taken"}),
    "bad_option": lambda book: ChildSpec("x", Rec, (book, "x"), options={"no_such_option": 1}),
    "stop_in_init": lambda book: ChildSpec("x", StopsInInit, (Ctl(attempts=1),)),
}


@pytest.mark.parametrize("case", list(UNSTARTABLE))
async def test_start_child_that_cannot_start_is_an_error_not_a_crash(system, case):
    """OTP: start_child returns {error, Reason} for any child that fails to
    start; the supervisor and its other children go on and the failed spec
    is not kept, so the id can be used again."""
    book = Book()
    await system.spawn(Probe, name="taken")
    sup = await supervise(system, "one_for_one", specs(book, "a"))
    a = book.refs["a"]
    with pytest.raises(SupervisorError, match="failed to start 'x'"):
        await start_child(sup, UNSTARTABLE[case](book))
    assert sup.is_alive and a.is_alive
    assert [r.id for r in await which_children(sup)] == ["a"]
    [good] = specs(book, "x")
    assert (await start_child(sup, good)).is_alive


@pytest.mark.parametrize("options", [{"name": "taken"}, {"no_such_option": 1}])
async def test_simple_one_for_one_start_child_that_cannot_start_leaves_nothing(system, options):
    """OTP: a simple_one_for_one start_child that fails returns {error, Reason}
    and adds no child."""
    book = Book()
    await system.spawn(Probe, name="taken")
    sup = await supervise(system, "simple_one_for_one",
                          [ChildSpec("w", Rec, (book,), options=options)])
    with pytest.raises(SupervisorError):
        await start_child(sup, ("x",))
    assert sup.is_alive and await which_children(sup) == []
    assert (await count_children(sup))["specs"] == 1


async def test_restart_stopping_in_init_is_a_failed_restart(system):
    """OTP: a restart whose init returns {stop, Reason} has failed: it is
    retried, each try counting toward the intensity, until the supervisor
    gives up; it is not a running child that happens to exit, and a
    transient one is not left behind dead."""
    ctl = Ctl()
    child = ChildSpec("a", StopsInInit, (ctl,), restart="transient")
    sup = await system.spawn(Supervisor, SupFlags("one_for_one", 2, 5), [child])
    [row] = await which_children(sup)
    row.ref.cast(Crash())
    assert await asyncio.wait_for(sup.join(), 2) == SHUTDOWN
    assert ctl.attempts == 1 + 2                         # the first start + 2 tries
