"""Light actors: one asyncio task and one bounded mailbox each, with OTP's
semantics (cast/call, exit reasons, links, monitors, a local registry).

Layering: ``actors`` imports only the standard library and ``storage``
interfaces; it never imports ``transport`` or Thespian. Supervisors are in
``supervisor/``; the internal messages of the messaging server live in
``actors/messages.py``.
"""

from actors.actor import Actor
from actors.exits import (
    KILL, KILLED, NOPROC, NORMAL, SHUTDOWN, ActorError, ActorExited, CallTimeout,
    MailboxFull, MailboxOverflow, NoProc, StartError, UnhandledMessage,
)
from actors.process import ActorRef
from actors.registry import AlreadyRegistered
from actors.signals import Down, Exit, MonitorRef
from actors.system import System

__all__ = [
    "Actor", "ActorRef", "System", "Down", "Exit", "MonitorRef",
    "NORMAL", "SHUTDOWN", "KILL", "KILLED", "NOPROC",
    "ActorError", "ActorExited", "CallTimeout", "MailboxFull", "MailboxOverflow",
    "NoProc", "StartError", "UnhandledMessage", "AlreadyRegistered",
]
