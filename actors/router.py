"""Where a message for a user goes (cf. ejabberd_router).

The answer is the user's live session: on another worker when the cluster's
replica of the session directory (``actors/cluster.py``) says so (it carries
the message there in a batch; a session of the user that still lingers here
after the user moved must not swallow it), else on this worker, found in the
session table. With no live session anywhere the message is not lost: everything
that must survive is already committed to the user's inbox in LMDB, and the
session reads it there when the user logs in. Ephemeral things (typing,
presence) to an absent user are simply not sent. A session whose mailbox
overflowed is crashing (its overflow policy is ``crash``) and will re-read
its inbox when restarted, so a nudge it could not take is not a loss.
"""

from __future__ import annotations

from typing import Any

from actors.exits import MailboxFull
from actors.messages import InboxAppended
from actors.session_registry import session_of

__all__ = ["route", "route_local", "nudge"]


def route(system: Any, user: str, msg: Any) -> bool:
    """Cast ``msg`` to ``user``'s session, on this worker or (through the
    cluster's batches) on the worker holding it; True if there was one."""
    cluster = system.env.get("cluster")
    if cluster is not None and cluster.route(user, msg):
        return True             # held by another worker (a session here may be lingering)
    return route_local(system, user, msg)


def route_local(system: Any, user: str, msg: Any) -> bool:
    """Cast ``msg`` to ``user``'s session on this worker; True if there was one."""
    session = session_of(system, user)
    if session is None:
        return False
    try:
        session.cast(msg)
    except MailboxFull:       # the session is crashing on overflow; it re-reads LMDB
        return False
    return True


def nudge(system: Any, appended: dict[str, list]) -> None:
    """Tell each user's session of the inbox items just appended for it
    (``appended``: user -> its items, contiguous seqs in order)."""
    for user, items in appended.items():
        route(system, user, InboxAppended(items[-1].seq, tuple(items)))
