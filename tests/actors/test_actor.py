"""The light actor: spawn and init, cast/call, dispatch, call errors,
stop/terminate, exit reasons, send_after, dead letters, mailbox_len, fairness.

Names follow erlang/otp's gen_server vocabulary; every wait is bounded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from actors import (
    KILL, KILLED, NORMAL, SHUTDOWN, Actor, ActorError, ActorExited, CallTimeout, NoProc,
    StartError, UnhandledMessage,
)
from actors.process import _BUDGET
from tests.conftest import Probe, wait_for

pytestmark = pytest.mark.timeout(10)


# -- messages -------------------------------------------------------------------
@dataclass(frozen=True)
class Add:
    n: int


@dataclass(frozen=True)
class Get:
    pass


@dataclass(frozen=True)
class Crash:
    pass


@dataclass(frozen=True)
class Hold:
    """Block the actor in an async handler until its gate opens."""


@dataclass(frozen=True)
class StopWith:
    reason: object


@dataclass(frozen=True)
class CallSelf:
    pass


# -- actors ---------------------------------------------------------------------
class Counter(Actor):
    """Adds numbers, logs them in order; can crash, block, stop itself."""

    def __init__(self, log: list | None = None, terminated: list | None = None,
                 gate: asyncio.Event | None = None, entered: asyncio.Event | None = None):
        self.n, self.log = 0, [] if log is None else log
        self.terminated = [] if terminated is None else terminated
        self.gate, self.entered = gate or asyncio.Event(), entered or asyncio.Event()

    def terminate(self, reason):
        self.terminated.append(reason)

    def handle_add(self, msg: Add) -> int:
        self.n += msg.n
        self.log.append(msg.n)
        return self.n

    def handle_get(self, msg: Get) -> int:
        return self.n

    def handle_crash(self, msg: Crash) -> None:
        raise ValueError("boom")

    async def handle_hold(self, msg: Hold) -> str:
        self.entered.set()
        await self.gate.wait()
        return "released"

    def handle_stop_with(self, msg: StopWith) -> str:
        self.stop(msg.reason)
        return "stopping"

    async def handle_call_self(self, msg: CallSelf) -> str:
        try:
            await self.ref.call(Get())
        except ActorError as error:
            return type(error).__name__
        return "no error"


async def blocked(system, log=None, terminated=None, **options):
    """A Counter parked inside its Hold handler; returns (ref, gate)."""
    gate, entered = asyncio.Event(), asyncio.Event()
    ref = await system.spawn(Counter, log, terminated, gate, entered, **options)
    ref.cast(Hold())
    await asyncio.wait_for(entered.wait(), 1)
    return ref, gate


# -- spawn and init -------------------------------------------------------------------
async def test_init_runs_before_spawn_returns(system):
    events = []

    class SlowInit(Actor):
        async def init(self):
            for _ in range(3):
                await asyncio.sleep(0)
            events.append("init done")

    ref = await system.spawn(SlowInit)
    assert events == ["init done"] and ref.is_alive


async def test_messages_sent_during_init_are_handled_after_it(system):
    class SelfStarter(Counter):
        async def init(self):
            self.ref.cast(Add(5))                     # e.g. schedule its first tick
            await asyncio.sleep(0)

    ref = await system.spawn(SelfStarter)
    assert await ref.call(Get(), timeout=1) == 5


class FailsInConstructor(Actor):
    def __init__(self):
        raise KeyError("no")


class FailsInInit(Actor):
    def init(self):
        raise KeyError("no")


class FailsInAsyncInit(Actor):
    async def init(self):
        await asyncio.sleep(0)
        raise KeyError("no")


@pytest.mark.parametrize("cls", [FailsInConstructor, FailsInInit, FailsInAsyncInit])
async def test_init_raising_is_start_error_and_leaves_nothing(system, cls):
    with pytest.raises(StartError) as info:
        await system.spawn(cls, name="failing")
    assert isinstance(info.value.reason, KeyError)
    assert list(system.actors()) == [] and system.whereis("failing") is None


class StopsInInit(Counter):
    def init(self):
        self.stop("bad_config")


class StopsInAsyncInit(Counter):
    async def init(self):
        await asyncio.sleep(0)
        self.stop("bad_config")


@pytest.mark.parametrize("cls", [StopsInInit, StopsInAsyncInit])
async def test_stop_in_init_fails_the_start_without_terminate(system, cls):
    """OTP: init returning {stop, Reason} makes start_link return
    {error, Reason}; terminate is not called and nothing is left."""
    terminated = []
    with pytest.raises(StartError) as info:
        await system.spawn(cls, None, terminated, name="stopping")
    assert info.value.reason == "bad_config" and terminated == []
    assert list(system.actors()) == [] and system.whereis("stopping") is None


# -- cast, call, dispatch -------------------------------------------------------------
async def test_cast_then_call_in_order(system):
    log = []
    ref = await system.spawn(Counter, log)
    for n in (1, 2, 3):
        ref.cast(Add(n))
    assert await ref.call(Get()) == 6
    assert await ref.call(Add(4)) == 10
    assert log == [1, 2, 3, 4]


async def test_async_handler_reply(system):
    ref, gate = await blocked(system)
    reply = asyncio.ensure_future(ref.call(Hold(), timeout=2))
    gate.set()
    assert await reply == "released"


@dataclass(frozen=True)
class Event:
    pass


@dataclass(frozen=True)
class SessionClosed(Event):
    pass


@dataclass(frozen=True)
class HTTPRequest:
    pass


async def test_dispatch_by_type_base_class_fallback_and_handle_other(system):
    class Router(Actor):
        def handle_event(self, msg):
            return "event"

        def handle_http_request(self, msg):
            return "http_request"

        def handle_other(self, msg):
            return f"other:{type(msg).__name__}"

    class Specific(Router):
        def handle_session_closed(self, msg):
            return "session_closed"

    router = await system.spawn(Router)
    assert await router.call(Event()) == "event"
    assert await router.call(SessionClosed()) == "event"           # base-class fallback
    assert await router.call(HTTPRequest()) == "http_request"      # snake_case of acronyms
    assert await router.call(42) == "other:int"
    # the dispatch cache is per class: the subclass's own handler wins
    specific = await system.spawn(Specific)
    assert await specific.call(SessionClosed()) == "session_closed"
    assert await router.call(SessionClosed()) == "event"


async def test_unhandled_message_crashes_the_actor(system):
    cast_to = await system.spawn(Counter)
    cast_to.cast("no handler for str")
    assert isinstance(await cast_to.join(), UnhandledMessage)

    called = await system.spawn(Counter)
    with pytest.raises(ActorExited) as info:
        await called.call(3.5)
    assert isinstance(info.value.reason, UnhandledMessage)
    assert isinstance(await called.join(), UnhandledMessage)


# -- call errors ------------------------------------------------------------------------
async def test_call_timeout_leaves_callee_running(system):
    ref, gate = await blocked(system)
    with pytest.raises(CallTimeout):
        await ref.call(Get(), timeout=0.05)
    gate.set()                                  # the late reply is dropped
    assert await ref.call(Add(1), timeout=1) == 1 and ref.is_alive


async def test_call_dead_actor_is_noproc(system):
    ref = await system.spawn(Counter)
    await ref.stop()
    with pytest.raises(NoProc):
        await ref.call(Get())


async def test_callee_crash_mid_call_is_actor_exited(system):
    ref = await system.spawn(Counter)
    with pytest.raises(ActorExited) as info:
        await ref.call(Crash(), timeout=1)
    assert isinstance(info.value.reason, ValueError)
    assert await ref.join() is info.value.reason


async def test_pending_calls_fail_when_the_actor_dies(system):
    # Step 1: park the actor, then queue three calls behind it.
    ref, gate = await blocked(system)
    calls = [asyncio.ensure_future(ref.call(Add(n), timeout=2)) for n in range(3)]
    await wait_for(lambda: ref.mailbox_len == 3)
    # Step 2: kill it; every queued call fails with its exit reason.
    ref.exit(KILL)
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results] == [ActorExited] * 3
    assert {r.reason for r in results} == {KILLED}


async def test_call_taken_at_budget_yield_fails_when_the_actor_dies(system):
    # Step 1: park the actor and queue messages so that a call is the last
    # message of one scheduling budget (Hold + casts + the call == _BUDGET).
    ref, gate = await blocked(system)
    for n in range(_BUDGET - 2):
        ref.cast(Add(0))
    call = asyncio.ensure_future(ref.call(Add(1), timeout=None))
    await asyncio.sleep(0)
    assert ref.mailbox_len == _BUDGET - 1
    # Step 2: release it; it handles the casts and yields at the budget, with
    # the call taken or about to be taken but not answered.
    gate.set()
    await asyncio.sleep(0)
    assert ref.mailbox_len <= 1 and not call.done()
    # Step 3: an exit signal now must still fail the call, not lose it.
    ref.exit("boom")
    with pytest.raises(ActorExited) as info:
        await asyncio.wait_for(call, 1)
    assert info.value.reason == "boom"


async def test_self_call_raises_actor_error(system):
    ref = await system.spawn(Counter)
    assert await ref.call(CallSelf(), timeout=1) == "ActorError"
    assert ref.is_alive


# -- stop and terminate -------------------------------------------------------------------
async def test_stop_from_inside_runs_terminate(system):
    log, terminated = [], []
    ref = await system.spawn(Counter, log, terminated)
    ref.cast(Add(1))
    stopping = asyncio.ensure_future(ref.call(StopWith("done")))
    await asyncio.sleep(0)
    ref.cast(Add(2))                                  # queued behind the stop: never handled
    assert await stopping == "stopping"               # OTP's {stop, Reason, Reply, State}
    assert await ref.join() == "done"
    assert terminated == ["done"] and log == [1]


async def test_stop_from_outside_runs_terminate(system):
    terminated = []
    ref = await system.spawn(Counter, None, terminated, trap_exit=True)
    assert await ref.stop(SHUTDOWN) == SHUTDOWN           # gen_server:stop ignores trap_exit
    assert terminated == [SHUTDOWN] and not ref.is_alive


async def test_stop_kills_after_timeout_when_terminate_hangs(system):
    class Stubborn(Actor):
        async def terminate(self, reason):
            await asyncio.Event().wait()

    ref = await system.spawn(Stubborn)
    assert await ref.stop(SHUTDOWN, timeout=0.05) == KILLED


async def test_terminate_crash_becomes_the_exit_reason(system):
    class BadTerminate(Actor):
        def terminate(self, reason):
            raise OSError("disk gone")

    ref = await system.spawn(BadTerminate)
    assert isinstance(await ref.stop(), OSError)


class SlowTerminate(Counter):
    """Its terminate logs its reason, then waits for the gate."""

    async def terminate(self, reason):
        self.terminated.append(reason)
        await self.gate.wait()
        self.log.append("terminate done")


@pytest.mark.parametrize("trap_exit", [True, False])
async def test_stop_during_terminate_waits_for_it(system, trap_exit):
    """OTP: gen_server:stop on a server already in terminate does not cut
    terminate short (only kill does): it waits, and the exit reason is the
    one terminate was called with."""
    # Step 1: the actor stops itself and is inside terminate.
    log, terminated, gate = [], [], asyncio.Event()
    ref = await system.spawn(SlowTerminate, log, terminated, gate, trap_exit=trap_exit)
    ref.cast(StopWith("done"))
    await wait_for(lambda: terminated == ["done"])
    # Step 2: a stop from outside waits; terminate goes on.
    stopping = asyncio.ensure_future(ref.stop(SHUTDOWN, timeout=2))
    await asyncio.sleep(0.05)
    assert ref.is_alive and not stopping.done()
    # Step 3: terminate finishes; the first reason stands.
    gate.set()
    assert await asyncio.wait_for(stopping, 1) == "done"
    assert log == ["terminate done"] and terminated == ["done"]


async def test_terminate_not_run_on_kill(system):
    terminated = []
    ref, _ = await blocked(system, terminated=terminated, trap_exit=True)
    ref.exit(KILL)
    assert await ref.join() == KILLED and terminated == []


# -- exit reasons as join() sees them -------------------------------------------------------
async def _make_exit(system, how):
    ref = await system.spawn(Counter)
    if how == "normal":
        ref.cast(StopWith(NORMAL))
    elif how == "shutdown":
        await ref.stop(SHUTDOWN)
    elif how == "shutdown_term":
        await ref.stop((SHUTDOWN, "bye"))
    elif how == "killed":
        ref.exit(KILL)
    else:
        ref.cast(Crash())
    return ref


@pytest.mark.parametrize("how, expected", [
    ("normal", NORMAL), ("shutdown", SHUTDOWN), ("shutdown_term", (SHUTDOWN, "bye")),
    ("killed", KILLED), ("crash", ValueError),
])
async def test_exit_reason_seen_by_join(system, how, expected):
    ref = await _make_exit(system, how)
    reason = await asyncio.wait_for(ref.join(), 1)
    if isinstance(expected, type):
        assert isinstance(reason, expected)
    else:
        assert reason == expected
    assert ref.exit_reason is reason and not ref.is_alive and ref not in list(system.actors())


# -- send_after, dead letters -------------------------------------------------------------
async def test_send_after_delivers_and_cancel_takes_back(system):
    probe = await system.spawn(Probe)
    system.send_after(0.01, probe, "cancelled").cancel()
    system.send_after(0.01, probe, "tick")
    system.send_after(0.02, probe, "marker")
    await wait_for(lambda: "marker" in probe._actor.seen)
    assert probe._actor.seen == ["tick", "marker"]


async def test_dead_letters_count_casts_to_dead_actors(system):
    ref = await system.spawn(Counter)
    await ref.stop()
    before = system.dead_letters
    for n in range(3):
        ref.cast(Add(n))
    system.send_after(0, ref, Add(9))
    await wait_for(lambda: system.dead_letters == before + 4)


# -- mailbox_len, fairness ------------------------------------------------------------------
async def test_mailbox_len_read_without_disturbing_the_actor(system):
    # Step 1: park the actor in an async handler.
    log = []
    ref, gate = await blocked(system, log)
    # Step 2: queue N messages; the length is readable and stays put.
    for n in range(50):
        ref.cast(Add(n))
    assert ref.mailbox_len == 50
    await asyncio.sleep(0)
    assert ref.mailbox_len == 50 and log == []
    # Step 3: release; everything is handled, in order.
    gate.set()
    assert await ref.call(Get(), timeout=2) == sum(range(50))
    assert log == list(range(50)) and ref.mailbox_len == 0


async def test_flood_to_one_actor_does_not_starve_another(system):
    # Step 1: flood one actor with 100k casts.
    flooded = await system.spawn(Counter, mailbox_size=100_001)
    other = await system.spawn(Counter)
    for _ in range(100_000):
        flooded.cast(Add(1))
    # Step 2: the other answers while the flood is still far from drained.
    assert await other.call(Add(7), timeout=1) == 7
    assert 50_000 < flooded.mailbox_len < 100_000
    # Step 3: the flood is handled in full.
    assert await flooded.call(Get(), timeout=8) == 100_000


# -- deferred replies (gen_server:reply/2) ------------------------------------------
class Deferring(Actor):
    """Answers ``Get`` only when ``Add`` arrives, from another handler."""

    def __init__(self):
        self.owed = []

    def handle_get(self, msg):
        self.owed.append(self.defer_reply())
        return "ignored: the reply was deferred"

    def handle_add(self, msg):
        for owed in self.owed:
            owed.reply(msg.n)
        self.owed.clear()

    def handle_crash(self, msg):
        self.defer_reply()               # outside a call: an error, so a crash


async def test_deferred_reply_answers_later_and_the_actor_keeps_serving(system):
    # Step 1: two callers wait; the actor is free meanwhile (a cast is handled).
    ref = await system.spawn(Deferring)
    first = asyncio.ensure_future(ref.call(Get(), timeout=2))
    second = asyncio.ensure_future(ref.call(Get(), timeout=2))
    await wait_for(lambda: len(ref._actor.owed) == 2)
    assert not first.done() and not second.done()
    # Step 2: one cast answers both, with the value it chose.
    ref.cast(Add(7))
    assert await first == 7 and await second == 7


async def test_deferred_reply_never_given_times_out(system):
    ref = await system.spawn(Deferring)
    with pytest.raises(CallTimeout):
        await ref.call(Get(), timeout=0.05)
    assert ref.is_alive
    await wait_for(lambda: not ref._owed)         # the runtime keeps no answered reply


async def test_deferred_call_fails_when_the_callee_dies(system):
    """OTP: gen_server:call monitors the callee, so a call whose reply was
    deferred fails as soon as the callee dies (not at its timeout, nor
    never with timeout=infinity), with the callee's exit reason."""
    ref = await system.spawn(Deferring)
    pending = asyncio.ensure_future(ref.call(Get(), timeout=None))
    await wait_for(lambda: ref._actor.owed)
    ref.cast(Crash())
    await asyncio.wait_for(ref.join(), 1)
    with pytest.raises(ActorExited) as info:
        await asyncio.wait_for(pending, 1)
    assert isinstance(info.value.reason, RuntimeError)


async def test_defer_reply_outside_a_call_crashes(system):
    ref = await system.spawn(Deferring)
    ref.cast(Crash())
    reason = await asyncio.wait_for(ref.join(), 1)
    assert isinstance(reason, RuntimeError)


class Batcher(Actor):
    """Logs what it handles; ``drained`` logs how much came since the last."""

    def __init__(self, log: list, echo: int = 0):
        self.log, self.seen, self.echo = log, 0, echo

    def handle_add(self, msg: Add) -> None:
        self.seen += 1

    async def handle_hold(self, msg: Hold) -> None:
        self.log.append("async")
        await asyncio.sleep(0)

    def drained(self) -> None:
        self.log.append(self.seen)
        self.seen = 0
        if self.echo:                           # send itself more, once
            self.echo, n = 0, self.echo
            for i in range(n):
                self.ref.cast(Add(i))


async def test_drained_runs_once_per_emptied_mailbox(system):
    # Step 1: five casts queued before the actor runs are one backlog
    log = []
    ref = await system.spawn(Batcher, log)
    for i in range(5):
        ref.cast(Add(i))
    await wait_for(lambda: log and log[-1] == 5)
    assert log == [0, 5]                        # after init's empty mailbox, then the five

    # Step 2: what drained() sends itself is handled, then drained() runs again
    echo_log = []
    echoer = await system.spawn(Batcher, echo_log, 3)
    await wait_for(lambda: len(echo_log) >= 2)
    assert echo_log == [0, 3]
    await asyncio.sleep(0.01)
    assert echo_log == [0, 3]                   # nothing more: it waits

    # Step 3: an async handler may wait, so what came before it is drained first
    for msg in (Add(1), Add(2), Hold(), Add(3)):
        ref.cast(msg)
    await wait_for(lambda: log[-1] == 1)
    assert log == [0, 5, 2, "async", 1]
    assert ref.is_alive and echoer.is_alive
