"""The generic light ``Supervisor`` actor: OTP's ``supervisor`` behaviour.

It traps exits, starts its children in order (each reports started before the
next starts), and when one exits decides, with ``supervisor.policy``, whether
to restart it and which siblings go with it (``one_for_one``,
``one_for_all``, ``rest_for_one``, ``simple_one_for_one``). Restarts are
counted in a sliding window (``supervisor.restart_window``); past
``intensity`` restarts in ``period`` seconds it shuts its children down in
reverse start order and exits with ``shutdown``, so its own supervisor sees a
child exit: that is escalation.

Give it flags and child specs directly, or subclass it and override
``configure()`` (OTP's ``init/1`` callback).

Messages handled (all by ``call``; helpers below wrap them):
``StartChild``, ``TerminateChild``, ``RestartChild``, ``DeleteChild``,
``WhichChildren``, ``CountChildren``; and the runtime's ``Exit`` and the
supervisor's own ``TryAgainRestart``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from actors import KILL, KILLED, SHUTDOWN, Actor, ActorRef, Exit, StartError
from supervisor.policy import affected, should_restart
from supervisor.restart_window import add_restart
from supervisor.spec import ChildSpec, SupFlags, resolve

__all__ = [
    "Supervisor", "SupervisorError", "ChildInfo", "StartChild", "TerminateChild",
    "RestartChild", "DeleteChild", "WhichChildren", "CountChildren", "TryAgainRestart",
    "start_child", "terminate_child", "restart_child", "delete_child",
    "which_children", "count_children",
]

log = logging.getLogger("switchboard.supervisor")


class SupervisorError(Exception):
    """A dynamic request failed: unknown child, already present, start error."""


@dataclass(frozen=True)
class ChildInfo:
    """One row of ``which_children`` (OTP: ``{Id, Child, Type, Modules}``)."""
    id: Any
    ref: ActorRef | None
    type: str
    start: Any


@dataclass(frozen=True)
class StartChild:
    """A ``ChildSpec``, or for ``simple_one_for_one`` extra args for the template."""
    spec_or_args: Any


@dataclass(frozen=True)
class TerminateChild:
    """A child id, or for ``simple_one_for_one`` the child's ``ActorRef``."""
    id: Any


@dataclass(frozen=True)
class RestartChild:
    id: Any


@dataclass(frozen=True)
class DeleteChild:
    id: Any


@dataclass(frozen=True)
class WhichChildren:
    pass


@dataclass(frozen=True)
class CountChildren:
    pass


@dataclass(frozen=True)
class TryAgainRestart:
    """Sent to itself when restarting ``id`` failed (OTP: try_again_restart)."""
    id: Any


class _Child:
    __slots__ = ("spec", "ref", "args")

    def __init__(self, spec: ChildSpec, args: tuple):
        self.spec, self.ref, self.args = spec, None, args


class Supervisor(Actor):
    trap_exit = True

    def __init__(self, flags: SupFlags | None = None, children: list[ChildSpec] = ()):
        self.flags, self.specs = flags or SupFlags(), list(children)
        self.restarts: tuple[float, ...] = ()
        self.children: dict[Any, _Child] = {}   # start order; dynamic ones keyed by ActorRef
        self.by_ref: dict[ActorRef, Any] = {}
        self.template: ChildSpec | None = None

    def configure(self) -> tuple[SupFlags, list[ChildSpec]]:
        """Override to declare flags and children (OTP's ``init/1``)."""
        return self.flags, self.specs

    @property
    def dynamic(self) -> bool:
        return self.flags.strategy == "simple_one_for_one"

    async def init(self) -> None:
        self.flags, specs = self.configure()
        if self.dynamic:
            if len(specs) != 1:
                raise ValueError("simple_one_for_one needs exactly one child spec")
            self.template = specs[0]
            return
        for spec in specs:
            if spec.id in self.children:
                raise ValueError(f"duplicate child id {spec.id!r}")
            self.children[spec.id] = child = _Child(spec, spec.args)
            try:
                await self._start(spec.id, child)
            except StartError:
                await self._shutdown_all()
                raise

    async def terminate(self, reason: Any) -> None:
        await self._shutdown_all()

    # -- exits and restarts --------------------------------------------------
    async def handle_exit(self, msg: Exit) -> None:
        key = self.by_ref.pop(msg.actor, None)
        if key is None:
            return                                # not (or no longer) our child
        child = self.children[key]
        child.ref = None
        self._report(key, child, msg.reason)
        if not should_restart(child.spec.restart, msg.reason):
            if self.dynamic or child.spec.restart == "temporary":
                del self.children[key]
            return
        counters = self.system.env.get("counters")      # the operator's restart count
        if counters is not None:
            counters.note_restart(self.ref, child.spec.id, msg.reason)
        await self._restart(key)

    async def handle_try_again_restart(self, msg: TryAgainRestart) -> None:
        if msg.id in self.children and self.children[msg.id].ref is None:
            await self._restart(msg.id)

    async def _restart(self, key: Any) -> None:
        within, self.restarts = add_restart(
            self.restarts, self.system.clock(), self.flags.intensity, self.flags.period)
        if not within:
            log.error("%r reached_max_restart_intensity (%d in %ss): shutting down",
                      self.ref, self.flags.intensity, self.flags.period)
            self.stop(SHUTDOWN)
            return
        order = list(self.children)
        group = affected(self.flags.strategy, order, key)
        for other in reversed(group):
            if other != key and self.children[other].ref is not None:
                await self._shutdown(self.children[other])
            if other != key and self.children[other].spec.restart == "temporary":
                del self.children[other]          # OTP: a temporary bystander is not restarted
        for member in group:
            child = self.children.get(member)
            if child is None or child.ref is not None:
                continue
            try:
                await self._start(member, child)
            except StartError as error:
                log.error("%r failed to restart %r: %r", self.ref, member, error.reason)
                self.ref.cast(TryAgainRestart(member))
                return

    async def _start(self, key: Any, child: _Child) -> ActorRef:
        """Start ``child``. Any failure to start it (a ``start`` that does not
        resolve, a taken name, bad options, an ``init`` that fails or stops)
        is a ``StartError``, OTP's ``{error, Reason}``, never a crash here."""
        spec = child.spec
        try:
            ref = await self.system.spawn(resolve(spec.start), *child.args,
                                          link=self.ref, **spec.options)
        except StartError:
            raise
        except Exception as error:
            raise StartError(error) from error
        if self.dynamic:                           # a restarted dynamic child gets a new key
            del self.children[key]
            self.children[ref] = child
            key = ref
        child.ref = ref
        self.by_ref[ref] = key
        return ref

    async def _shutdown(self, child: _Child) -> Any:
        """OTP's shutdown/2. The stop-wait-kill runs shielded: if this
        supervisor is itself stopped meanwhile, it still ends with the child
        dead. The child is forgotten only once dead, so until then
        ``terminate`` still finds it; its ``Exit`` is then ignored."""
        ref = child.ref
        try:
            return await asyncio.shield(_stop_child(self.ref, ref, child.spec.shutdown))
        finally:
            if not ref.is_alive:
                if child.ref is ref:
                    child.ref = None
                self.by_ref.pop(ref, None)

    async def _shutdown_all(self) -> None:
        live = [c for c in self.children.values() if c.ref is not None]
        if self.dynamic:                            # OTP stops these concurrently
            await asyncio.gather(*(self._shutdown(c) for c in live))
            self.children.clear()
        else:
            for child in reversed(live):
                await self._shutdown(child)

    def _report(self, key: Any, child: _Child, reason: Any) -> None:
        if reason in ("normal", "shutdown"):
            log.debug("%r: child %r exited %r", self.ref, key, reason)
        else:
            log.warning("%r: child %r (%s) exited %r", self.ref, key, child.spec.restart, reason)

    # -- the dynamic API ----------------------------------------------------
    async def handle_start_child(self, msg: StartChild) -> Any:
        if self.dynamic:
            spec, args = self.template, (*self.template.args, *msg.spec_or_args)
            key = object()
        elif not isinstance(msg.spec_or_args, ChildSpec):
            return SupervisorError(f"bad child spec: {msg.spec_or_args!r}")
        else:
            spec, args = msg.spec_or_args, msg.spec_or_args.args
            key = spec.id
            if key in self.children:
                state = "already_started" if self.children[key].ref else "already_present"
                return SupervisorError(f"{state}: {key!r}")
        self.children[key] = child = _Child(spec, args)
        try:
            return await self._start(key, child)
        except StartError as error:
            del self.children[key]
            return SupervisorError(f"failed to start {spec.id!r}: {error.reason!r}")

    async def handle_terminate_child(self, msg: TerminateChild) -> Any:
        key = msg.id
        child = self.children.get(key)
        if child is None:
            return SupervisorError(f"not_found: {key!r}")
        if child.ref is not None:
            await self._shutdown(child)
        if self.dynamic or child.spec.restart == "temporary":
            del self.children[key]
        return None

    async def handle_restart_child(self, msg: RestartChild) -> Any:
        if self.dynamic:
            return SupervisorError("simple_one_for_one: children have no ids to restart")
        child = self.children.get(msg.id)
        if child is None:
            return SupervisorError(f"not_found: {msg.id!r}")
        if child.ref is not None:
            return SupervisorError(f"running: {msg.id!r}")
        try:
            return await self._start(msg.id, child)
        except StartError as error:
            return SupervisorError(f"failed to start {msg.id!r}: {error.reason!r}")

    def handle_delete_child(self, msg: DeleteChild) -> Any:
        if self.dynamic:
            return SupervisorError("simple_one_for_one: children have no ids to delete")
        child = self.children.get(msg.id)
        if child is None:
            return SupervisorError(f"not_found: {msg.id!r}")
        if child.ref is not None:
            return SupervisorError(f"running: {msg.id!r}")
        del self.children[msg.id]
        return None

    def handle_which_children(self, msg: WhichChildren) -> list[ChildInfo]:
        return [ChildInfo(None if self.dynamic else key, c.ref, c.spec.type, c.spec.start)
                for key, c in self.children.items()]

    def handle_count_children(self, msg: CountChildren) -> dict[str, int]:
        specs = [c.spec for c in self.children.values()]
        active = [c for c in self.children.values() if c.ref is not None]
        return {
            "specs": 1 if self.dynamic else len(specs),
            "active": len(active),
            "supervisors": sum(c.spec.type == "supervisor" for c in self.children.values()),
            "workers": sum(c.spec.type == "worker" for c in self.children.values()),
        }


async def _stop_child(sup: ActorRef, ref: ActorRef, how: Any) -> Any:
    """``shutdown`` then wait up to ``how`` seconds and ``kill``; or ``kill``
    at once (``brutal_kill``); or wait for good (``infinity``)."""
    if how == "brutal_kill":
        ref.exit(KILL, sender=sup)
        return await ref.join()
    ref.exit(SHUTDOWN, sender=sup)
    try:
        return await asyncio.wait_for(ref.join(), None if how == "infinity" else how)
    except asyncio.TimeoutError:
        log.warning("%r: child %r did not stop within %ss: killed", sup, ref, how)
        ref.exit(KILL, sender=sup)
        return KILLED


async def _ask(sup: ActorRef, msg: Any, timeout: float | None) -> Any:
    result = await sup.call(msg, timeout)
    if isinstance(result, SupervisorError):
        raise result
    return result


async def start_child(sup: ActorRef, spec_or_args: Any, timeout: float | None = 5.0) -> ActorRef:
    """Start a child (a ``ChildSpec``, or extra args for ``simple_one_for_one``)."""
    return await _ask(sup, StartChild(spec_or_args), timeout)


async def terminate_child(sup: ActorRef, id: Any, timeout: float | None = None) -> None:
    await _ask(sup, TerminateChild(id), timeout)


async def restart_child(sup: ActorRef, id: Any, timeout: float | None = 5.0) -> ActorRef:
    return await _ask(sup, RestartChild(id), timeout)


async def delete_child(sup: ActorRef, id: Any, timeout: float | None = 5.0) -> None:
    await _ask(sup, DeleteChild(id), timeout)


async def which_children(sup: ActorRef, timeout: float | None = 5.0) -> list[ChildInfo]:
    return await _ask(sup, WhichChildren(), timeout)


async def count_children(sup: ActorRef, timeout: float | None = 5.0) -> dict[str, int]:
    return await _ask(sup, CountChildren(), timeout)
