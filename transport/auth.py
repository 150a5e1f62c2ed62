"""``Authentication``: a ``Connection``'s steps before login (a mixin of
``transport.tcp.Connection``, kept apart so that module stays about the
socket): REGISTER, CONFIRM and LOGIN run one after another in arrival order
(``chain``), each judged in the state its turn finds (one queued behind a
successful LOGIN is OUT_OF_ORDER), through the registrar actor; a login
is answered with ``{"last_seen": ...}`` and claims the user in the
node's session directory (one session per user across the workers), and in
a cluster a user is sent to its home node first (``sent_home``: WRONG_NODE
with the home's address, docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.exits import ActorError
from actors.federation import NodeUnavailable
from actors.registration import (
    REGISTRAR_NAME, BeginLogin, ConfirmCode, LoginPassed, Refused, RequestCode,
)
from actors.session_registry import REGISTRY_NAME, OpenSession
from transport import wire
from transport.crypto import verify
from transport.flow import retry_ms

__all__ = ["Authentication", "CLAIM_TIMEOUT"]

log = logging.getLogger("switchboard.tcp")

E = wire.ErrorCode
CLAIM_TIMEOUT = 5.0                     # seconds to wait for the session directory
READY_TIMEOUT = 5.0                     # seconds a login waits for the first cluster view


class Authentication:
    """Mixed into ``Connection``: needs ``system``, ``config``, ``state``,
    ``user``, ``nonce``, ``closed``, ``auth_chain``, ``auth_failures``,
    ``in_flight``, ``window_freed``, ``send``, ``fail``, ``close_after_flush``."""

    __slots__ = ()                      # Connection's slots hold the state

    def chain(self, frame: wire.Frame) -> None:
        """Run pre-login requests one after another, in arrival order (each
        counts in the window until it is answered). The state is checked
        when a step runs, not when its frame arrived: a step queued behind a
        LOGIN that succeeded (the client pipelined them) is OUT_OF_ORDER,
        fatal, and does nothing else, so a connection never logs in twice."""
        previous = self.auth_chain
        self.in_flight += 1

        async def run() -> None:
            try:
                if previous is not None:
                    await asyncio.gather(previous, return_exceptions=True)
                if self.closed:
                    return
                if self.state != "hello":
                    self.fail(frame.ref, E.OUT_OF_ORDER, f"{type(frame).__name__} after login")
                    return
                await self.authenticate(frame)
            finally:
                if self.auth_chain is chained:  # the last link: keep no finished task
                    self.auth_chain = None
                self.window_freed()
        self.auth_chain = chained = asyncio.ensure_future(run())

    async def authenticate(self, frame: wire.Frame) -> None:
        registrar = self.system.whereis(REGISTRAR_NAME)
        if registrar is None:
            self.fail(frame.ref, E.SHUTTING_DOWN, "registration is not running")
            return
        federation = self.system.env.get("federation")
        if federation is not None and await self.sent_home(federation, frame):
            return
        try:
            if isinstance(frame, wire.Register):
                self.answer(frame.ref, await registrar.call(RequestCode(frame.phone)))
            elif isinstance(frame, wire.Confirm):
                result = await registrar.call(ConfirmCode(frame.phone, frame.code, frame.device_key))
                if federation is not None and not isinstance(result, Refused):
                    await federation.settle_home(frame.phone)
                self.answer(frame.ref, result)
            else:
                await self.login(registrar, frame)
        except ActorError as error:
            log.warning("registration request failed: %r", error)
            self.send(wire.Error(E.INTERNAL, "try again", ref=frame.ref))

    async def sent_home(self, federation: Any, frame: wire.Frame) -> bool:
        """In a cluster, a user registers and logs in on its home node
        (docs/cluster.md): elsewhere the answer is WRONG_NODE with the home's
        address. True if this connection was sent away."""
        phone = frame.user if isinstance(frame, wire.Login) else frame.phone
        if not federation.ready.is_set():       # no cluster view yet: every home unknown
            try:
                await asyncio.wait_for(federation.ready.wait(), READY_TIMEOUT)
            except asyncio.TimeoutError:
                self.fail(frame.ref, E.INTERNAL, "this node is still joining its cluster; "
                          "try again")
                return True
        try:
            home = await federation.home_for(phone, sure=isinstance(frame, wire.Login))
        except NodeUnavailable as unsure:
            self.fail(frame.ref, E.INTERNAL, str(unsure))
            return True
        if home is None:
            return False
        address = federation.client_of(home)
        if address is None:                     # the view lags the directory: rare, brief
            self.fail(frame.ref, E.INTERNAL, f"{phone}'s home node {home} is unknown here; "
                      "try again")
            return True
        log.info("%s is homed on node %s: redirected to %s:%d", phone, home, *address)
        self.send(wire.wrong_node(frame.ref, *address))
        self.close_after_flush()
        return True

    async def login(self, registrar: Any, frame: wire.Login) -> None:
        key = await registrar.call(BeginLogin(frame.user, frame.device))
        if isinstance(key, Refused):
            self.answer(frame.ref, key)
            return
        challenge = wire.login_challenge(self.nonce, frame.user, frame.device)
        if not verify(key.verify_key, challenge, frame.signature):
            self.answer(frame.ref, Refused("login_failed", "bad signature"))  # counted already
            return
        registrar.cast(LoginPassed(frame.user, key.attempt))
        if self.closed:
            return
        cluster = self.system.env.get("cluster")
        if cluster is not None:                 # one session per user across the workers
            try:
                await asyncio.wait_for(cluster.claim(frame.user), CLAIM_TIMEOUT)
            except asyncio.TimeoutError:
                log.warning("no answer from the session directory for %s in %.0f s; "
                            "logging in anyway", frame.user, CLAIM_TIMEOUT)
            if self.closed:
                return
        mail = self.system.env.get("mailbox")
        last_seen = mail.get_last_seen(frame.user) if mail is not None else None
        self.state, self.user = "logged_in", frame.user
        self.send(wire.Ack({"last_seen": last_seen}, ref=frame.ref))  # before the session's pushes
        registry = self.system.whereis(REGISTRY_NAME)
        try:
            session = await registry.call(OpenSession(frame.user, self))
        except Exception as error:
            log.error("could not open a session for %s: %r", frame.user, error)
            session = None
        if session is None:                 # e.g. the sessions supervisor restarting
            self.fail(0, E.INTERNAL, "could not open a session; reconnect")
            self.close_after_flush()        # logged in with no session: nothing would answer

    def answer(self, ref: int, result: Any) -> None:
        if isinstance(result, Refused):
            wait = result.retry_after
            self.send(wire.Error(E[result.reason.upper()], result.text,
                                 retry_ms(wait) if wait is not None else None, ref=ref))
            if result.reason in ("bad_code", "login_failed", "rate_limited"):
                self.auth_failures += 1
                if self.auth_failures >= self.config.max_auth_failures:
                    self.fail(0, E.RATE_LIMITED, "too many failed attempts on this connection")
                    self.close_after_flush()
        else:
            self.send(wire.Ack(result, ref=ref))

    # -- the session side (ClientPort) ---------------------------------------------------------
