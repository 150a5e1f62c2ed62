"""One light actor: an asyncio task and its bounded mailbox (its links,
monitors and exit signals: ``actors.links``).

``ActorRef`` is both the handle others hold (like an Erlang pid) and the
runtime cell of the actor behind it; its public face is small:

- ``cast(msg)``: send and go on (``gen_server:cast``).
- ``await call(msg, timeout=5.0)``: send and wait for the reply
  (``gen_server:call``); raises ``CallTimeout``, ``NoProc``, ``ActorExited``.
- ``mailbox_len``: queue length, readable at any time without disturbing the
  actor (the queue-length gauge reads it).
- ``await join()``: wait for the exit and get its reason.
- ``await stop(reason)``: stop it and wait (``gen_server:stop``).

The mailbox is a ``deque`` plus one ``Future`` the idle actor waits on: leaner
than ``asyncio.Queue`` (DESIGN.md: ~2.2 KB against ~4.8 KB per actor). It is
bounded; past ``mailbox_size`` a send either raises ``MailboxFull`` to the
sender (``overflow="reject"``) or crashes the actor with ``MailboxOverflow``
(``overflow="crash"``). Nothing is dropped silently. Runtime messages
(``Down``, ``Exit``) bypass the bound, as Erlang's signals do.

Exit signals follow OTP: ``KILL`` is untrappable and skips ``terminate``; any
other reason kills a non-trapping actor (``normal`` is ignored), becomes an
``Exit`` message for a trapping one, except that a signal from the actor's
parent always stops it, as a gen_server does on ``{'EXIT', Parent, R}``.
Once its receive loop has ended (it is in ``terminate``) only ``KILL``
interrupts it: a later ``stop()`` or exit signal waits, and the first exit
reason stands, as a gen_server finishes ``terminate``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, Any

from actors.actor import Actor, handler_for
from actors.exits import (
    KILL, KILLED, NORMAL, ActorError, ActorExited, CallTimeout,
    MailboxFull, MailboxOverflow, NoProc, StartError, is_normal_exit,
)
from actors.links import ALIVE as _ALIVE, Links
from actors.signals import MonitorRef

if TYPE_CHECKING:
    from actors.system import System

__all__ = ["ActorRef"]

log = logging.getLogger("switchboard.actors")

_BUDGET = 200          # messages handled before yielding the loop (Erlang's reductions)


class _Call:
    """A call in the mailbox: the message and the future its caller awaits."""

    __slots__ = ("msg", "reply")

    def __init__(self, msg: Any, reply: asyncio.Future):
        self.msg = msg
        self.reply = reply


def _expire(fut: asyncio.Future, timeout: float) -> None:
    if not fut.done():
        fut.set_exception(CallTimeout(f"no reply within {timeout} s"))


class ActorRef(Links):
    """Handle and runtime cell of one light actor. See the module docstring."""

    __slots__ = (
        "pid", "kind", "name", "system", "_actor", "_queue", "_max_len", "_overflow",
        "_waiter", "_task", "_running", "_current", "_trap_exit", "_parent", "_links",
        "_monitors", "_watching", "_exit_reason", "_pending_exit", "_stop_reason",
        "_exit_waiters", "_owed",
    )

    def __init__(self, system: "System", pid: int, cls: type[Actor], name: Any,
                 mailbox_size: int, overflow: str, trap_exit: bool,
                 parent: "ActorRef | None"):
        if overflow not in ("reject", "crash"):
            raise ValueError(f"overflow must be 'reject' or 'crash', not {overflow!r}")
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be >= 1")
        self.pid = pid
        self.kind = cls.__name__
        self.name = name
        self.system = system
        self._actor: Actor | None = None
        self._queue: deque | None = None        # allocated while non-empty: idle actors stay small
        self._max_len = mailbox_size
        self._overflow = overflow
        self._waiter: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._running = False
        self._current: asyncio.Future | None = None
        self._trap_exit = trap_exit
        self._parent = parent
        self._links: set[ActorRef] | None = None
        self._monitors: dict[MonitorRef, ActorRef | None] | None = None
        self._watching: set[MonitorRef] | None = None
        self._exit_reason: Any = _ALIVE
        self._pending_exit: Any = _ALIVE
        self._stop_reason: Any = None
        self._exit_waiters: list[asyncio.Future] | None = None
        self._owed: set[asyncio.Future] | None = None   # deferred replies not yet given

    # -- the public face -------------------------------------------------
    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name is not None else ""
        return f"<{self.kind}#{self.pid}{label}>"

    @property
    def is_alive(self) -> bool:
        return self._exit_reason is _ALIVE

    @property
    def mailbox_len(self) -> int:
        queue = self._queue
        return 0 if queue is None else len(queue)

    def queued(self) -> tuple:
        """The messages waiting in the mailbox (a copy), e.g. for a
        ``terminate`` that answers the requests it will never handle:
        whatever is queued when an actor exits is dropped."""
        queue = self._queue
        return () if queue is None else tuple(queue)

    @property
    def exit_reason(self) -> Any:
        return self._exit_reason

    def cast(self, msg: Any) -> None:
        """Put ``msg`` in the mailbox. A send to a dead actor is counted in
        ``system.dead_letters`` (Erlang drops it); a full mailbox raises
        ``MailboxFull`` or crashes the actor, per its overflow policy."""
        if self._exit_reason is not _ALIVE:
            self.system.dead_letters += 1
            return
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        elif len(queue) >= self._max_len:
            self._overflowed()
        queue.append(msg)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def notify(self, msg: Any) -> None:
        """Put in the mailbox a message this actor asked for: the completion
        of work it started, or its own timer. Never refused by the bound:
        the actor bounds how much it starts, and a completion it cannot
        receive would leave that work unanswered for good. A dead actor's
        is a dead letter, as for ``cast``."""
        if self._exit_reason is not _ALIVE:
            self.system.dead_letters += 1
            return
        self._deliver(msg)

    async def call(self, msg: Any, timeout: float | None = 5.0) -> Any:
        """Send ``msg`` and wait for the handler's return value."""
        if self._exit_reason is not _ALIVE:
            raise NoProc(f"{self!r} is not alive")
        if self._running and asyncio.current_task() is self._task:
            raise ActorError(f"{self!r} called itself: that would deadlock")
        reply = asyncio.get_running_loop().create_future()
        self.cast(_Call(msg, reply))
        if timeout is None:
            return await reply
        timer = reply.get_loop().call_later(timeout, _expire, reply, timeout)
        try:
            return await reply
        finally:
            timer.cancel()

    async def join(self) -> Any:
        """Wait until the actor has exited; return its exit reason."""
        if self._exit_reason is not _ALIVE:
            return self._exit_reason
        fut = asyncio.get_running_loop().create_future()
        if self._exit_waiters is None:
            self._exit_waiters = []
        self._exit_waiters.append(fut)
        return await fut

    async def stop(self, reason: Any = NORMAL, timeout: float | None = 5.0) -> Any:
        """Ask the actor to stop with ``reason`` (terminate runs), wait for it,
        and kill it if it has not stopped within ``timeout``."""
        if self._exit_reason is not _ALIVE:
            return self._exit_reason
        self._terminate_with(reason)
        try:
            return await asyncio.wait_for(self.join(), timeout)
        except asyncio.TimeoutError:
            self.exit(KILL)
            return self._exit_reason

    def exit(self, reason: Any, sender: "ActorRef | None" = None) -> None:
        """Send an exit signal (``erlang:exit(Pid, Reason)``)."""
        self._exit_signal(sender, reason, linked=False)

    # -- the actor's task -------------------------------------------------
    def _start(self, cls: type[Actor], args: tuple, started: asyncio.Future) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(cls, args, started))

    async def _run(self, cls: type[Actor], args: tuple, started: asyncio.Future) -> None:
        self._running = True
        try:
            if self._pending_exit is not _ALIVE:
                raise asyncio.CancelledError
            actor = cls(*args)
            actor.ref = self
            self._actor = actor
            result = actor.init()
            if asyncio.iscoroutine(result):
                await result
        except BaseException as error:          # init failed: spawn raises StartError
            self._stop_reason = self._pending_reason(error)
        if self._stop_reason is not None:       # init failed or asked to stop (OTP's
            reason = self._stop_reason          # {stop, Reason}): spawn raises StartError,
            if not started.done():              # terminate does not run
                started.set_exception(StartError(reason))
            self._finalize(reason, crashed=False)
            return
        started.set_result(None)
        try:
            await self._receive_loop(actor)
            reason = self._stop_reason
        except BaseException as error:
            reason = self._pending_reason(error)
        if self._pending_exit is _ALIVE:         # terminating: from now on only KILL
            self._pending_exit = reason          # interrupts, and this reason stands
        if reason != KILLED and self._exit_reason is _ALIVE:
            reason = await self._call_terminate(actor, reason)
        self._finalize(reason)

    async def _receive_loop(self, actor: Actor) -> None:
        cls = type(actor)
        loop = asyncio.get_running_loop()
        budget = _BUDGET
        drained = cls.drained if cls.drained is not Actor.drained else None
        queue = self._queue                        # what was sent while init ran
        while self._stop_reason is None:
            if not queue:
                if drained is not None:
                    drained(actor)
                    queue = self._queue
                    if queue:                      # it sent itself something
                        continue
                budget = _BUDGET
                queue = self._queue = None         # give the empty deque back while idle,
                msg = reply = result = None        # and the last message and answer
                waiter = self._waiter = loop.create_future()
                await waiter
                queue = self._queue
                continue
            budget -= 1
            if budget == 0:                  # yield before taking the message: an exit
                budget = _BUDGET             # signal at this await must not lose a call
                await asyncio.sleep(0)
                continue
            msg = queue.popleft()
            if type(msg) is _Call:
                reply = self._current = msg.reply
                fn, is_async = handler_for(cls, type(msg.msg))
                if is_async and drained is not None:
                    drained(actor)                 # the handler may wait: so does the backlog
                try:
                    result = fn(actor, msg.msg)
                    if is_async:
                        result = await result
                except BaseException as error:
                    if not reply.done():
                        reply.set_exception(ActorExited(self._pending_reason(error)))
                    raise
                if self._current is reply and not reply.done():
                    reply.set_result(result)     # else the handler deferred its reply
                self._current = None
            else:
                fn, is_async = handler_for(cls, type(msg))
                if is_async:
                    if drained is not None:
                        drained(actor)
                    await fn(actor, msg)
                else:
                    fn(actor, msg)

    def _pending_reason(self, error: BaseException) -> Any:
        """The exit reason for ``error``: the exit signal that cancelled us, or
        the crash itself."""
        if isinstance(error, asyncio.CancelledError):
            if self._task is not None:
                self._task.uncancel()
            return KILLED if self._pending_exit is _ALIVE else self._pending_exit
        return error

    async def _call_terminate(self, actor: Actor, reason: Any) -> Any:
        try:
            result = actor.terminate(reason)
            if asyncio.iscoroutine(result):
                await result
        except asyncio.CancelledError:
            return self._pending_reason(asyncio.CancelledError())
        except Exception as error:               # OTP: terminate's crash becomes the reason
            log.error("%r crashed in terminate(%r)", self, reason, exc_info=error)
            return error
        return reason

    def _owe(self, reply: asyncio.Future) -> None:
        """Track a deferred reply until it is given: if this actor exits
        first, the caller gets ``ActorExited`` (gen_server:call monitors
        the callee), not a wait until its timeout."""
        if self._owed is None:
            self._owed = set()
        self._owed.add(reply)
        reply.add_done_callback(self._owed.discard)

    def _terminate_with(self, reason: Any) -> None:
        """Stop the task with ``reason``: cancel it at its current await; the
        task then runs ``terminate`` and finalizes. A no-op once an exit
        reason is set (a stop is pending, or the actor is terminating)."""
        if self._pending_exit is not _ALIVE:
            return
        self._pending_exit = reason
        if self._running and self._task is not None:
            self._task.cancel()

    def _kill(self) -> None:
        """Untrappable: the actor is gone at once, without terminate."""
        self._pending_exit = self._stop_reason = KILLED
        task = self._task
        self._finalize(KILLED)
        # A task that has not begun sees _pending_exit at its start and fails
        # its spawn; a running one is cancelled at its current await.
        if self._running and task is not None and task is not asyncio.current_task():
            task.cancel()

    def _overflowed(self) -> None:
        if self._overflow == "reject":
            raise MailboxFull(f"{self!r}: mailbox full ({self._max_len} messages)")
        self._terminate_with(MailboxOverflow(f"{self!r}: more than {self._max_len} queued"))
        raise MailboxFull(f"{self!r}: mailbox overflowed; the actor is crashing")

    def _deliver(self, msg: Any) -> None:
        """Append a runtime message, bypassing the bound."""
        if self._queue is None:
            self._queue = deque()
        self._queue.append(msg)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # -- exit ------------------------------------------------------------------
    def _finalize(self, reason: Any, crashed: bool = True) -> None:
        """Record the exit and tell everyone who asked: callers, links,
        monitors, joiners. Runs exactly once."""
        if self._exit_reason is not _ALIVE:
            return
        self._exit_reason = reason
        self._report(reason, crashed)
        self.system._forget(self)
        failure = ActorExited(reason)
        if self._current is not None and not self._current.done():
            self._current.set_exception(failure)
        for reply in self._owed or ():          # a deferred reply fails like a pending call
            if not reply.done():
                reply.set_exception(failure)
        queue, self._queue = self._queue, None
        while queue:
            msg = queue.popleft()
            if type(msg) is _Call and not msg.reply.done():
                msg.reply.set_exception(failure)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.cancel()
        self._actor = self._waiter = self._current = None
        self._tell_exit(reason)                 # monitors and links (actors.links)
        for fut in self._exit_waiters or ():
            if not fut.done():
                fut.set_result(reason)
        self._exit_waiters = self._owed = None

    def _report(self, reason: Any, crashed: bool) -> None:
        if is_normal_exit(reason) or reason == KILLED:
            log.debug("%r exited: %r", self, reason)
        elif isinstance(reason, BaseException) and crashed:
            log.error("%r crashed: %r", self, reason,
                      exc_info=(type(reason), reason, reason.__traceback__))
        else:
            log.warning("%r exited: %r", self, reason)
