"""The ``Actor`` base class: what an actor author writes against.

An actor is plain state plus one handler per message type, named after the
type in snake_case, as Thespian's ``ActorTypeDispatcher`` does with
``receiveMsg_<Type>``::

    class Counter(Actor):
        def __init__(self, start=0):
            self.n = start

        def handle_increment(self, msg: Increment):   # cast or call
            self.n += msg.by
            return self.n                              # the reply, for a call

Handlers may be plain or ``async`` functions. A handler's return value is the
reply when the message came by ``call`` and is ignored for a ``cast``. A
message whose type (or any base type) has no handler goes to
``handle_other``; without one the actor crashes with ``UnhandledMessage``,
as an Erlang process does on a clause it cannot match.

Lifecycle hooks, all optional: ``init()`` runs inside the actor's task before
the spawner is told it started (OTP's ``init/1``: load state, e.g. from LMDB);
``drained()`` runs each time the actor is about to wait: its mailbox has
been emptied, or an async handler is next (a gen_server's ``timeout 0``:
work held back while a backlog was handled, e.g. one storage op and one
socket write for all the requests of a drain);
``terminate(reason)`` runs when it stops for any reason but ``killed``.
Runtime messages: ``Down`` (``handle_down``) for monitors and ``Exit``
(``handle_exit``) for links when ``trap_exit`` is set.

Class attributes choose spawn options: ``mailbox_size`` (bound),
``overflow`` (``"reject"``: the send raises ``MailboxFull`` and the actor goes
on; ``"crash"``: the actor exits with ``MailboxOverflow`` and the send raises
``MailboxFull`` too, so neither side loses the fact silently), and
``trap_exit``.
"""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any, Callable

from actors.exits import NORMAL, UnhandledMessage

if TYPE_CHECKING:
    from actors.process import ActorRef
    from actors.signals import MonitorRef
    from actors.system import System

__all__ = ["Actor", "Deferred", "handler_for"]

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(name: str) -> str:
    return _CAMEL.sub("_", name).lower()


class Actor:
    """Base class of light actors; see the module docstring."""

    __slots__ = ("ref",)

    mailbox_size: int = 100_000
    overflow: str = "reject"
    trap_exit: bool = False

    ref: "ActorRef"

    # -- lifecycle hooks (override) -------------------------------------
    def init(self) -> Any:
        """Runs in the actor before ``spawn`` returns; may be ``async``."""

    def drained(self) -> None:
        """Runs before the actor waits (see above); not ``async``."""

    def terminate(self, reason: Any) -> Any:
        """Runs when the actor stops (not when killed); may be ``async``."""

    # -- what a handler may do -------------------------------------------
    @property
    def system(self) -> "System":
        return self.ref.system

    def stop(self, reason: Any = NORMAL) -> None:
        """Stop after the current message (OTP: ``{stop, Reason, State}``)."""
        self.ref._stop_reason = reason

    def defer_reply(self) -> "Deferred":
        """Answer the current call later (OTP: ``{noreply, State}`` then
        ``gen_server:reply/2``): the handler's return value is ignored and
        the caller waits for ``deferred.reply(value)``, or gets
        ``ActorExited`` if this actor exits before replying."""
        ref = self.ref
        reply, ref._current = ref._current, None
        if reply is None:
            raise RuntimeError("defer_reply() outside the handling of a call")
        ref._owe(reply)                     # fails with ActorExited if this actor exits first
        return Deferred(reply)

    def link(self, other: "ActorRef") -> None:
        self.ref._link(other)

    def unlink(self, other: "ActorRef") -> None:
        self.ref._unlink(other)

    def monitor(self, other: "ActorRef") -> "MonitorRef":
        return self.ref._monitor(other)

    def demonitor(self, mref: "MonitorRef") -> None:
        self.ref._demonitor(mref)

    async def spawn_link(self, cls: type["Actor"], *args: Any, **options: Any) -> "ActorRef":
        """Start a child linked to this actor (OTP's ``start_link``)."""
        return await self.ref.system.spawn(cls, *args, link=self.ref, **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'ref', None)!r}>"


class Deferred:
    """A reply owed to a caller; see ``Actor.defer_reply``."""

    __slots__ = ("_future",)

    def __init__(self, future: Any):
        self._future = future

    def reply(self, value: Any) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)


def handler_for(actor_cls: type, msg_cls: type) -> tuple[Callable, bool]:
    """The handler ``actor_cls`` uses for ``msg_cls`` and whether it is async.

    Looked up once per (actor class, message class) and cached in the actor
    class's own ``_dispatch`` table, so sending costs one dict lookup.
    """
    table = actor_cls.__dict__.get("_dispatch")
    if table is None:
        table = {}
        setattr(actor_cls, "_dispatch", table)
    entry = table.get(msg_cls)
    if entry is None:
        fn = None
        for base in msg_cls.__mro__:
            fn = getattr(actor_cls, f"handle_{_snake(base.__name__)}", None)
            if fn is not None and base is not object:
                break
            fn = None
        fn = fn or getattr(actor_cls, "handle_other", None) or _unhandled
        entry = table[msg_cls] = (fn, inspect.iscoroutinefunction(fn))
    return entry


def _unhandled(actor: Actor, msg: Any) -> None:
    raise UnhandledMessage(f"{type(actor).__name__} has no handler for {type(msg).__name__}")
