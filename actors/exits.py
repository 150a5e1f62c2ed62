"""Exit reasons, in OTP's vocabulary.

An actor exits with one of:

- ``NORMAL`` (``"normal"``): it finished; links ignore it unless trapping.
- ``SHUTDOWN`` (``"shutdown"``) or ``("shutdown", term)``: its supervisor (or
  owner) asked it to stop.
- ``KILLED`` (``"killed"``): it was sent the untrappable ``KILL`` signal and
  died without running ``terminate``.
- ``"noproc"``: reported by a monitor set on an actor that was already gone.
- any other object, usually the exception that crashed it.

Errors raised to callers live here too.
"""

from __future__ import annotations

__all__ = [
    "NORMAL", "SHUTDOWN", "KILL", "KILLED", "NOPROC",
    "is_normal_exit", "ActorError", "NoProc", "CallTimeout", "ActorExited",
    "MailboxFull", "MailboxOverflow", "StartError", "UnhandledMessage",
]

NORMAL = "normal"
SHUTDOWN = "shutdown"
KILL = "kill"          # the signal
KILLED = "killed"      # the reason an actor dies with after KILL
NOPROC = "noproc"


def is_normal_exit(reason: object) -> bool:
    """True for the reasons a transient child and a link treat as normal."""
    return (
        reason == NORMAL
        or reason == SHUTDOWN
        or (isinstance(reason, tuple) and len(reason) == 2 and reason[0] == SHUTDOWN)
    )


class ActorError(Exception):
    """Base of the errors the runtime raises to callers."""


class NoProc(ActorError):
    """The target actor is not alive (OTP: ``noproc``)."""


class CallTimeout(ActorError):
    """A call got no reply within its timeout (OTP: ``timeout``)."""


class ActorExited(ActorError):
    """The callee exited before replying; ``reason`` is its exit reason."""

    def __init__(self, reason: object):
        super().__init__(f"actor exited: {reason!r}")
        self.reason = reason


class MailboxFull(ActorError):
    """A send was rejected: the target's bounded mailbox is full."""


class MailboxOverflow(ActorError):
    """Exit reason of an actor whose overflow policy is ``crash``."""


class StartError(ActorError):
    """An actor's ``__init__`` or ``init`` raised; ``reason`` is the error."""

    def __init__(self, reason: object):
        super().__init__(f"failed to start: {reason!r}")
        self.reason = reason


class UnhandledMessage(ActorError):
    """An actor got a message it has no handler for (a crash, as in OTP)."""
