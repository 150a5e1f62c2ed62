"""``SessionRegistry``: user id -> live session actor and its client (cf.
ejabberd_sm, and the seeds' PID table).

Two tables, kept exact across connect, disconnect, crash and restart:

- sessions: the ``System`` name registry under ``("session", user)``. A
  session registers itself in ``init`` and the runtime drops the name when it
  exits, so a crashed session is never routed to and its restart is found.
- clients: user -> the connection (``ClientPort``) currently logged in. The
  registry is its only writer; sessions read it (in ``init``, to re-attach
  after a restart) through ``clients_of(system)``, the way an Erlang process
  reads a protected ETS table.

Only one client per user: opening a session for a user who already has a
client replaces it (the old connection is closed with ``session_replaced``).
With several workers, the node's session directory decides across them: the
connection claims the user there (``Cluster.claim``, in its own task, so
logins do not queue behind each other) before it opens the session; a worker
that loses a user to another gets ``EvictUsers`` and closes its connection
the same way; a user whose client leaves is released.

Messages: ``OpenSession`` (call: returns the session ref), ``CloseSession``,
``EvictUsers``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from actors.actor import Actor
from actors.last_seen import log_failed_write
from actors.messages import Attach, Detach, SESSION_REPLACED
from actors.process import ActorRef
from supervisor.base import SupervisorError, start_child

__all__ = ["SessionRegistry", "OpenSession", "CloseSession", "EvictUsers", "session_of",
           "clients_of", "REGISTRY_NAME", "SESSIONS_SUP_NAME"]

log = logging.getLogger("switchboard.sessions")

REGISTRY_NAME = "session_registry"
SESSIONS_SUP_NAME = "sessions"
_CLIENTS_ENV = "clients"


@dataclass(frozen=True)
class OpenSession:
    """``client`` logged in as ``user``: find or start its session, attach."""
    user: str
    client: Any


@dataclass(frozen=True)
class CloseSession:
    """``client`` of ``user`` disconnected."""
    user: str
    client: Any


@dataclass(frozen=True)
class EvictUsers:
    """``users`` logged in on another worker: close their connections here."""
    users: tuple[str, ...]


def session_of(system, user: str) -> ActorRef | None:
    """The live session actor of ``user`` on this worker, if any."""
    return system.whereis(("session", user))


def clients_of(system) -> dict[str, Any]:
    """The read-only view of user -> logged-in client."""
    return system.env.setdefault(_CLIENTS_ENV, {})


class SessionRegistry(Actor):
    def init(self) -> None:
        self.clients = clients_of(self.system)
        self.clients.clear()                 # a restarted registry starts from no one

    async def handle_open_session(self, msg: OpenSession) -> ActorRef | None:
        """The session now attached to ``msg.client``; None if none could be
        started: the connection then closes, and its ``CloseSession`` drops
        the client (and its claim). The registry does not crash over it,
        which would restart every session and connection on the worker."""
        old = self.clients.get(msg.user)
        if old is not None and old is not msg.client:
            old.close(SESSION_REPLACED, "this account logged in on another connection")
        self.clients[msg.user] = msg.client
        try:
            session = await self._find_or_start(msg.user)
        except RuntimeError as error:
            log.error("%s", error)
            return None
        session.cast(Attach(msg.client))
        return session

    def handle_close_session(self, msg: CloseSession) -> None:
        if self.clients.get(msg.user) is msg.client:
            self._drop(msg.user, msg.client)
            cluster = self.system.env.get("cluster")
            if cluster is not None:
                cluster.release(msg.user)

    def handle_evict_users(self, msg: EvictUsers) -> None:
        for user in msg.users:
            client = self.clients.get(user)
            if client is not None:
                self._drop(user, client)
                client.close(SESSION_REPLACED, "this account logged in on another connection")

    def _drop(self, user: str, client: Any) -> None:
        del self.clients[user]
        session = session_of(self.system, user)
        if session is not None:
            session.cast(Detach(client))
        else:                   # crashed, not (yet) restarted: no session will say it
            self._gone(user)

    def _gone(self, user: str) -> None:
        """``user`` left with no session to report it: last seen is now, its
        presence offline, its watches dropped (as ``Session`` does)."""
        from actors.presence import PRESENCE_NAME, Unwatch, UserOffline    # presence -> router -> here
        seen = int(time.time() * 1000)
        mail = self.system.env.get("mailbox")
        if mail is not None:
            mail.set_last_seen(user, seen).add_done_callback(log_failed_write)
        hub = self.system.whereis(PRESENCE_NAME)
        if hub is not None:
            hub.cast(UserOffline(user, seen))
            hub.cast(Unwatch(user))

    async def _find_or_start(self, user: str) -> ActorRef:
        error = None
        for _ in range(3):        # a supervisor restart may register it between our steps
            session = session_of(self.system, user)
            if session is not None:
                return session
            sup = self.system.whereis(SESSIONS_SUP_NAME)
            if sup is None:
                raise RuntimeError("the sessions supervisor is not running")
            try:
                return await start_child(sup, (user,))
            except SupervisorError as failed:
                error = failed
        raise RuntimeError(f"could not open a session for {user}: {error}")

    def terminate(self, reason: Any) -> None:
        self.clients.clear()
