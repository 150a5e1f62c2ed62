"""``KeyDirectory``: the session's handlers for the end-to-end key directory
(a mixin of ``actors.session.Session``, kept apart so the session module
stays about messaging).

The connection has already checked a published bundle's signatures and
split it (crypto lives in ``transport/``); here the session writes and reads
``storage.keydir`` through group commit, never waiting in a handler: each op
completes as ``KeysStored``, and the request is answered on the connection
it came from, after the commit. The rules (who may publish, which prekey a
fetch hands out, who is told of a key change) are ``storage.keydir``'s.

KEYS_FETCH is rate-limited per user (``keys_fetch_limit`` in the node
config, default 100 per 60 s; RATE_LIMITED past it): each fetch spends one
of the owner's one-time prekeys, so a client fetching in a loop would
drain them and leave first messages with only the signed prekey's forward
secrecy (Signal limits it too). A legitimate client fetches once per new
contact or key change. The table is the worker's, not the session's, so
reconnecting does not reset it (with several workers, each has its own).

Messages: ``PublishKeys``, ``FetchKeys``, ``CountKeys``, ``KeysStored``, and
``RefuseRequest`` (a bundle the transport refused, answered in order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.messages import (
    INTERNAL, INVALID, KEYS_FULL, NO_KEYS, RATE_LIMITED, UNKNOWN_USER, WRONG_IDENTITY, Acked,
    CountKeys,
    FetchKeys, KeysFetched, KeysStored, PublishKeys, RefuseRequest, Rejected,
)
from actors.rate_limit import RateLimiter
from storage import HomeUnknown, InvalidArgument, UnknownUser
from storage.keydir import KeysFull, NoKeys, WrongIdentity

__all__ = ["KeyDirectory"]

log = logging.getLogger("switchboard.keys")

FETCH_LIMIT = (100, 60.0)         # KEYS_FETCH per user: count, period in seconds
_FETCH_LIMITER = "keys_fetch_limiter"   # its table in system.env (per worker)

_REASONS = ((WrongIdentity, WRONG_IDENTITY), (KeysFull, KEYS_FULL), (NoKeys, NO_KEYS),
            (UnknownUser, UNKNOWN_USER), (InvalidArgument, INVALID), (HomeUnknown, INTERNAL))


class KeyDirectory:
    """Mixed into ``Session``: needs ``self.mail``, ``self.user``, ``self.ref``,
    ``self.keys_looked_up`` (a set, or the empty ``NONE`` until first used)."""

    def handle_publish_keys(self, msg: PublishKeys) -> None:
        self._keys_op(msg, self.mail.publish_keys(self.user, msg.identity, msg.signed, msg.one_time))

    def handle_fetch_keys(self, msg: FetchKeys) -> None:
        limiter = _fetch_limiter(self.system)
        if not limiter.allow(self.user):
            wait = limiter.retry_after(self.user)
            self._answer(msg, Rejected(msg.ref, RATE_LIMITED,
                                       f"too many key fetches; retry in {wait:.0f} s", wait))
            return
        federation = self.system.env.get("federation")
        if (federation is not None and msg.user not in federation.homes
                and msg not in self.keys_looked_up
                and self.mail.get_account(msg.user) is None):
            self._look_up_keys(federation, msg)    # a lagging replica: ask where it lives
            return
        if self.keys_looked_up:
            self.keys_looked_up.discard(msg)
        home = federation.remote(msg.user) if federation is not None else None
        if home is not None:                # the keys live on the user's home node
            fetched = federation.call(home, ("fetch_keys", self.user, msg.user)
                                      + (() if msg.one_time else (False,)))
            mail, user = self.mail, self.user
            fetched.add_done_callback(      # and "tell them when my keys change" lives here
                lambda done: (not done.cancelled() and done.exception() is None
                              and mail.add_key_contact(user, msg.user)))
            self._keys_op(msg, fetched)
        else:
            self._keys_op(msg, self.mail.fetch_keys(self.user, msg.user, msg.one_time))

    def _look_up_keys(self, federation: Any, msg: FetchKeys) -> None:
        """Look ``msg.user`` up in the cluster directory, then fetch again
        (once: an unknown user is then UNKNOWN_USER)."""
        if not self.keys_looked_up:
            self.keys_looked_up = set()
        self.keys_looked_up.add(msg)

        async def look_up() -> None:
            try:
                await federation.home_for(msg.user)
            except Exception as unsure:  # noqa: BLE001 - NodeUnavailable: the client retries
                if self.keys_looked_up:
                    self.keys_looked_up.discard(msg)
                self._answer(msg, Rejected(msg.ref, INTERNAL, str(unsure)))
                return
            self.ref.notify(msg)
        asyncio.ensure_future(look_up())

    def handle_count_keys(self, msg: CountKeys) -> None:
        self._answer(msg, Acked(msg.ref, self.mail.count_keys(self.user)))

    def handle_refuse_request(self, msg: RefuseRequest) -> None:
        self._answer(msg, Rejected(msg.ref, msg.reason, msg.text))

    def _keys_op(self, request: Any, future: Any) -> None:
        cast = self.ref.notify              # a completion we asked for: never refused
        future.add_done_callback(lambda done: cast(KeysStored(request, done)))

    def handle_keys_stored(self, msg: KeysStored) -> None:
        request, error = msg.request, msg.future.exception()
        if error is not None:
            self._answer(request, Rejected(request.ref, _reason(error), str(error)))
        elif type(request) is FetchKeys:
            keys = msg.future.result()
            self._answer(request, KeysFetched(request.ref, keys.device, keys.signed, keys.one_time))
        else:
            self._answer(request, Acked(request.ref, msg.future.result()))


def _fetch_limiter(system: Any) -> RateLimiter:
    """The worker's KEYS_FETCH limiter: one table for all its sessions, so a
    user who reconnects (a new session) does not start from zero."""
    limiter = system.env.get(_FETCH_LIMITER)
    if limiter is None:
        count, period = (system.env.get("config") or {}).get("keys_fetch_limit", FETCH_LIMIT)
        limiter = system.env[_FETCH_LIMITER] = RateLimiter(int(count), float(period),
                                                           clock=system.clock)
    elif len(limiter) > 10_000:
        limiter.sweep()                     # drop users whose window has passed
    return limiter


def refusal_reason(error: BaseException) -> str:
    """The error reason a key directory failure is answered with (also when
    it happened on the user's home node: ``RemoteRefused`` carries it)."""
    reason = getattr(error, "reason", None)      # federation.RemoteRefused
    if isinstance(reason, str):
        return reason
    for cls, reason in _REASONS:
        if isinstance(error, cls):
            return reason
    if type(error).__name__ == "NodeUnavailable":
        return INTERNAL
    log.error("key directory write failed: %r", error, exc_info=error)
    return INTERNAL


_reason = refusal_reason
