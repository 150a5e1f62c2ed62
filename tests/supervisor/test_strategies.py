"""Restart strategies, escalation, intensity, shutdown and the dynamic API of
the light ``Supervisor``, named after erlang/otp's supervisor_SUITE.erl.

Children are ``Rec`` actors that write ``("start", name)`` when their init is
done and ``("stop", name)`` in terminate to a shared ``Book``, which also
holds each name's current ``ActorRef``. The clock is the fake one from
``tests/conftest.py``: restarts happen at one instant unless a test moves it.

Sync point: after ``await child.join()`` the child's ``Exit`` is already in
the supervisor's mailbox, so the next call to the supervisor is answered only
after it has finished acting on the exit.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from actors import KILLED, SHUTDOWN, Actor, StartError, System
from supervisor import tree
from supervisor.base import (
    Supervisor, SupervisorError, count_children, delete_child, restart_child, start_child,
    terminate_child, which_children,
)
from supervisor.spec import STRATEGIES, ChildSpec, SupFlags, worker
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(15)


@dataclass
class Ctl:
    """Per-child behaviour, shared by all its incarnations."""
    fail_starts: int = 0              # the next N starts raise in init
    init_delay: float = 0.0
    release: asyncio.Event | None = None   # terminate waits for it
    attempts: int = 0


@dataclass
class Book:
    events: list = field(default_factory=list)
    refs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Crash:
    pass


class Rec(Actor):
    def __init__(self, book: Book, name: str, ctl: Ctl | None = None):
        self.book, self.name, self.ctl = book, name, ctl or Ctl()

    async def init(self):
        self.ctl.attempts += 1
        if self.ctl.fail_starts:
            self.ctl.fail_starts -= 1
            raise RuntimeError(f"{self.name} cannot start")
        await asyncio.sleep(self.ctl.init_delay)
        self.book.events.append(("start", self.name))
        self.book.refs[self.name] = self.ref

    async def terminate(self, reason):
        self.book.events.append(("stop", self.name))
        if self.ctl.release is not None:
            await self.ctl.release.wait()
            self.book.events.append(("stopped", self.name))

    def handle_crash(self, msg):
        raise RuntimeError(f"{self.name} crashed")


def start(*names):
    return [("start", n) for n in names]


def stop(*names):
    return [("stop", n) for n in names]


def specs(book, *names, ctls=None, **kw):
    return [ChildSpec(n, Rec, (book, n, (ctls or {}).get(n)), **kw) for n in names]


async def supervise(system, strategy, children, intensity=3, period=5):
    return await system.spawn(Supervisor, SupFlags(strategy, intensity, period), children)


async def crash(book, name, sup=None):
    """Crash ``name``; with ``sup``, also wait until ``sup`` has acted on it."""
    ref = book.refs[name]
    ref.cast(Crash())
    await asyncio.wait_for(ref.join(), 1)
    if sup is not None:
        await which_children(sup)
    return ref


# -- the strategies ----------------------------------------------------------------
@pytest.mark.parametrize("strategy, name, expected", [
    ("one_for_one", "b", stop("b") + start("b")),
    ("one_for_all", "b", stop("b", "d", "c", "a") + start("a", "b", "c", "d")),
    ("rest_for_one", "b", stop("b", "d", "c") + start("b", "c", "d")),
])
async def test_strategy(system, strategy, name, expected):
    # Step 1: four children a..d; b crashes.
    book = Book()
    sup = await supervise(system, strategy, specs(book, "a", "b", "c", "d"))
    before = dict(book.refs)
    book.events.clear()
    await crash(book, name, sup)
    # Step 2: exactly the strategy's siblings went down (in reverse) and came back (in order).
    assert book.events == expected
    restarted = {n for kind, n in expected if kind == "start"}
    for n, ref in book.refs.items():
        assert (ref is not before[n]) == (n in restarted) and ref.is_alive


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_temporary_bystander(system, strategy):
    # a temporary child taken down by a sibling's restart is not restarted
    book = Book()
    sup = await supervise(system, strategy, specs(book, "a") + specs(book, "t", restart="temporary"))
    book.events.clear()
    await crash(book, "a", sup)
    assert [r.id for r in await which_children(sup)] == ["a"]
    assert book.events == stop("a", "t") + start("a")


@pytest.mark.parametrize("strategy, expected", [
    # one_for_all: the restarted a is taken down again and all restart together
    ("one_for_all", stop("a", "b") + start("a") + stop("a") + start("a", "b")),
    # rest_for_one: only b (and what follows it) is tried again
    ("rest_for_one", stop("a", "b") + start("a", "b")),
])
async def test_other_child_fails_restart(system, strategy, expected):
    book, ctl = Book(), Ctl()
    sup = await supervise(system, strategy, specs(book, "a", "b", ctls={"b": ctl}))
    book.events.clear()
    ctl.fail_starts = 1
    await crash(book, "a")
    await wait_for(lambda: book.events[-1:] == start("b"))
    assert book.events == expected and sup.is_alive


# -- simple_one_for_one ------------------------------------------------------------------
async def test_simple_one_for_one(system):
    # Step 1: the template gets the extra args of each start_child.
    book = Book()
    sup = await supervise(system, "simple_one_for_one", [ChildSpec("w", Rec, (book,))])
    x, y = await start_child(sup, ("x",)), await start_child(sup, ("y",))
    assert book.events == start("x", "y") and book.refs == {"x": x, "y": y}
    assert [(r.id, r.ref) for r in await which_children(sup)] == [(None, x), (None, y)]
    # Step 2: a crashed child is restarted with the same args.
    await crash(book, "x", sup)
    rows = await which_children(sup)
    assert {r.ref for r in rows} == {y, book.refs["x"]} and book.refs["x"] is not x
    # Step 3: terminate_child takes a ref and forgets the child.
    await terminate_child(sup, y)
    assert await y.join() == SHUTDOWN and [r.ref for r in await which_children(sup)] == [book.refs["x"]]
    assert await count_children(sup) == {"specs": 1, "active": 1, "supervisors": 0, "workers": 1}
    for call in (terminate_child(sup, y), restart_child(sup, "w"), delete_child(sup, "w")):
        with pytest.raises(SupervisorError):
            await call


async def test_simple_one_for_one_shutdown(system):
    book = Book()
    sup = await supervise(system, "simple_one_for_one", [ChildSpec("w", Rec, (book,))])
    children = [await start_child(sup, (n,)) for n in "xyz"]
    assert await sup.stop(SHUTDOWN) == SHUTDOWN
    assert [c.exit_reason for c in children] == [SHUTDOWN] * 3
    assert sorted(book.events[3:]) == stop("x", "y", "z")      # concurrently: any order


# -- escalation and intensity ---------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES, ids=[f"{s}_escalation" for s in STRATEGIES])
async def test_escalation(system, strategy):
    # Step 1: a parent supervises S (intensity 1), which supervises a, b, c.
    book, dynamic = Book(), strategy == "simple_one_for_one"
    children = [ChildSpec("w", Rec, (book,))] if dynamic else specs(book, "a", "b", "c")
    sub = ChildSpec("S", Supervisor, (SupFlags(strategy, 1, 5), children), type="supervisor")
    parent = await supervise(system, "one_for_one", [sub], intensity=1)
    [row] = await which_children(parent)
    for n in "abc" if dynamic else ():
        await start_child(row.ref, (n,))
    # Step 2: two crashes at one instant: the second restart is one too many.
    await crash(book, "a", row.ref)
    book.events.clear()
    await crash(book, "a")
    assert await asyncio.wait_for(row.ref.join(), 1) == SHUTDOWN
    # Step 3: S shut its other children down in reverse start order
    # (simple_one_for_one: concurrently) before exiting.
    assert book.events[0] == ("stop", "a")
    if dynamic:
        assert sorted(book.events[1:3]) == stop("b", "c")
    else:
        assert book.events[1:3] == stop("c", "b")
    # Step 4: the parent counted it and restarted S (without its dynamic children).
    [new] = await which_children(parent)
    assert new.ref is not row.ref and new.ref.is_alive
    assert book.events[3:] == ([] if dynamic else start("a", "b", "c"))


async def test_restarts_allowed_again_once_the_period_has_passed(system, clock):
    book = Book()
    sup = await supervise(system, "one_for_one", specs(book, "a"), intensity=2, period=10)
    for _ in range(2):
        await crash(book, "a", sup)
    clock.advance(10.5)                     # both restarts fall out of the window
    for _ in range(2):
        await crash(book, "a", sup)
    assert (await which_children(sup))[0].ref.is_alive
    clock.advance(5)                        # the last two are still inside it
    await crash(book, "a")
    assert await asyncio.wait_for(sup.join(), 1) == SHUTDOWN


async def test_nested_supervisors_escalate_until_the_top_gives_up(system):
    # top (intensity 1) -> mid (intensity 0) -> w: every crash of w takes mid down
    book = Book()
    mid = ChildSpec("mid", Supervisor, (SupFlags("one_for_one", 0, 5), specs(book, "w")),
                    type="supervisor")
    top = await supervise(system, "one_for_one", [mid], intensity=1)
    [first] = await which_children(top)
    await crash(book, "w")                  # mid gives up; top restarts it (1 of 1)
    assert await asyncio.wait_for(first.ref.join(), 1) == SHUTDOWN
    [row] = await which_children(top)
    assert row.ref is not first.ref and row.ref.is_alive
    assert book.events == start("w") + stop("w") + start("w")
    await crash(book, "w")                  # mid gives up again; so does top
    assert await asyncio.wait_for(top.join(), 1) == SHUTDOWN
    assert len(system) == 0


async def test_failing_restart_is_retried_and_counted(system):
    # Step 1: a's first restart fails; the retry (TryAgainRestart) succeeds.
    book, ctl = Book(), Ctl()
    sup = await supervise(system, "one_for_one", specs(book, "a", ctls={"a": ctl}), intensity=3)
    ctl.fail_starts = 1
    first = await crash(book, "a")
    await wait_for(lambda: book.refs["a"] is not first)
    assert ctl.attempts == 3 and sup.is_alive
    # Step 2: that used two of the three restarts: one more is fine, two are not.
    await crash(book, "a", sup)
    await crash(book, "a")
    assert await asyncio.wait_for(sup.join(), 1) == SHUTDOWN


async def test_restart_that_never_succeeds_gives_up(system):
    book, ctl = Book(), Ctl()
    sup = await supervise(system, "one_for_one", specs(book, "a", ctls={"a": ctl}), intensity=3)
    ctl.fail_starts = 100
    await crash(book, "a")
    assert await asyncio.wait_for(sup.join(), 2) == SHUTDOWN
    assert ctl.attempts == 1 + 3                         # the first start + 3 retries


# -- start and shutdown ---------------------------------------------------------------------
async def test_children_start_in_order_and_stop_in_reverse(system):
    # a's init takes a while; b must still not start before a reports started
    book = Book()
    sup = await supervise(system, "one_for_one",
                          specs(book, "a", "b", "c", ctls={"a": Ctl(init_delay=0.02)}))
    assert book.events == start("a", "b", "c")
    assert await sup.stop(SHUTDOWN) == SHUTDOWN
    assert book.events[3:] == stop("c", "b", "a")


async def test_child_failing_to_start_fails_the_supervisor(system):
    book = Book()
    with pytest.raises(StartError) as info:
        await supervise(system, "one_for_one", specs(book, "a", "b", "c", ctls={"b": Ctl(fail_starts=1)}))
    assert isinstance(info.value.reason.reason, RuntimeError)
    assert book.events == start("a") + stop("a") and len(system) == 0


@pytest.mark.parametrize("shutdown", [0.05, "brutal_kill"])
async def test_shutdown_kills(system, shutdown):
    # a numeric shutdown kills a child whose terminate hangs; brutal_kill skips terminate
    book = Book()
    hang = Ctl(release=asyncio.Event())
    children = specs(book, "a") + specs(book, "h", ctls={"h": hang}, shutdown=shutdown)
    sup = await supervise(system, "one_for_one", children)
    assert await sup.stop(SHUTDOWN) == SHUTDOWN
    assert book.refs["h"].exit_reason == KILLED and book.refs["a"].exit_reason == SHUTDOWN
    assert book.events[2:] == (stop("h", "a") if shutdown == 0.05 else stop("a"))


async def test_shutdown_infinity_waits(system):
    # Step 1: h's terminate blocks until released; its shutdown is infinity.
    book = Book()
    hang = Ctl(release=asyncio.Event())
    sup = await supervise(system, "one_for_one", specs(book, "h", ctls={"h": hang}, shutdown="infinity"))
    stopping = asyncio.ensure_future(sup.stop(SHUTDOWN, timeout=None))
    await wait_for(lambda: ("stop", "h") in book.events)
    # Step 2: nothing kills it while it cleans up.
    await asyncio.sleep(0.1)
    assert book.refs["h"].is_alive and not stopping.done()
    # Step 3: released, it finishes terminate and exits 'shutdown'.
    hang.release.set()
    assert await asyncio.wait_for(stopping, 1) == SHUTDOWN
    assert book.refs["h"].exit_reason == SHUTDOWN and book.events[-1] == ("stopped", "h")


# -- the dynamic API (supervisor_SUITE's child_adm) --------------------------------------
async def test_child_adm(system):
    # Step 1: start_child adds a worker and a supervisor to an empty supervisor.
    book = Book()
    sup = await supervise(system, "one_for_one", [])
    [spec_a] = specs(book, "a")
    a = await start_child(sup, spec_a)
    s = await start_child(sup, ChildSpec("s", Supervisor, (SupFlags(), []), type="supervisor"))
    assert [(r.id, r.ref, r.type) for r in await which_children(sup)] == [
        ("a", a, "worker"), ("s", s, "supervisor")]
    assert await count_children(sup) == {"specs": 2, "active": 2, "supervisors": 1, "workers": 1}
    # Step 2: a running child cannot be started, restarted or deleted.
    for call, error in [(start_child(sup, spec_a), "already_started"),
                        (restart_child(sup, "a"), "running"), (delete_child(sup, "a"), "running")]:
        with pytest.raises(SupervisorError, match=error):
            await call
    # Step 3: terminate_child keeps the spec: already_present, then restart_child.
    await terminate_child(sup, "a")
    assert a.exit_reason == SHUTDOWN and book.events[-1] == ("stop", "a")
    assert [(r.id, r.ref) for r in await which_children(sup)] == [("a", None), ("s", s)]
    assert (await count_children(sup))["active"] == 1
    with pytest.raises(SupervisorError, match="already_present"):
        await start_child(sup, spec_a)
    assert (await restart_child(sup, "a")).is_alive
    # Step 4: delete_child forgets it; unknown ids are not_found; it can be added again.
    await terminate_child(sup, "a")
    await delete_child(sup, "a")
    for call in (terminate_child(sup, "a"), restart_child(sup, "a"), delete_child(sup, "a")):
        with pytest.raises(SupervisorError, match="not_found"):
            await call
    await start_child(sup, spec_a)
    assert [r.id for r in await which_children(sup)] == ["s", "a"]


async def test_dynamic_api_bad_requests_get_errors_not_crashes(system):
    # A static supervisor answers a non-ChildSpec with an error and keeps running;
    # a simple_one_for_one one has no ids to restart or delete.
    book = Book()
    static = await supervise(system, "one_for_one", [ChildSpec("a", Rec, (book, "a"))])
    with pytest.raises(SupervisorError, match="bad child spec"):
        await start_child(static, ("not", "a", "spec"))
    assert static.is_alive and [r.id for r in await which_children(static)] == ["a"]
    dynamic = await supervise(system, "simple_one_for_one", [ChildSpec("w", Rec, (book,))])
    child = await start_child(dynamic, ("d1",))
    for call in (restart_child(dynamic, child), delete_child(dynamic, child)):
        with pytest.raises(SupervisorError, match="simple_one_for_one"):
            await call
    assert dynamic.is_alive and child.is_alive


# -- supervisor/tree.py ---------------------------------------------------------------------
class CrashLoop(Actor):
    def init(self):
        self.ref.cast(Crash())

    def handle_crash(self, msg):
        raise RuntimeError("crash loop")


def _config(tmp_path):
    return {"data_dir": str(tmp_path), "storage": "memory", "port": 0, "media_port": 0, "http_port": 0}


async def test_run_worker_tree_starts_and_stops_cleanly(monkeypatch, tmp_path):
    # Step 1: run the real tree, keeping a handle on its System.
    systems = []

    class Recording(System):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            systems.append(self)

    monkeypatch.setattr(tree, "System", Recording)
    stopping = asyncio.Event()
    running = asyncio.ensure_future(tree.run_worker_tree(_config(tmp_path), stopping))
    root = await wait_for(lambda: systems and systems[0].whereis("root"))
    # Step 2: every root child is up.
    rows = await which_children(root)
    assert [r.id for r in rows] == [c.id for c in tree.ROOT_CHILDREN]
    assert all(r.ref.is_alive for r in rows)
    # Step 3: stopping shuts it all down and returns normally.
    stopping.set()
    assert await asyncio.wait_for(running, 5) is None
    assert root.exit_reason == SHUTDOWN and len(systems[0]) == 0


async def test_run_worker_tree_raises_root_exited_when_the_root_gives_up(monkeypatch, tmp_path):
    monkeypatch.setattr(tree, "ROOT_CHILDREN", [worker(CrashLoop)])
    with pytest.raises(tree.RootExited):
        await asyncio.wait_for(tree.run_worker_tree(_config(tmp_path), asyncio.Event()), 5)
