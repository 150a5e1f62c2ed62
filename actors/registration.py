"""``Registrar``: phone registration and the rate limits around login (cf.
mod_register).

Registration: ``RequestCode(phone)`` stores a fresh one-time code (hashed)
and hands it to the pluggable code sender (``env["code_sender"]``: the
default writes it to the log and a file under the data directory; tests keep
it in memory). ``ConfirmCode(phone, code, device_key)`` checks the code and
registers the device's Ed25519 verify key; the new device id replaces the old
one, whose credential stops working at once and whose connection is closed;
the old device's published keys are dropped in the same transaction and
every key contact gets a ``key_changed`` inbox item (``storage.keydir``),
which the registrar routes to them like any other inbox nudge.

Login is challenge-response: the connection asks ``BeginLogin`` for the
device's verify key (``LoginKey``), checks the signature itself (crypto lives
in ``transport/``), and reports a good one with ``LoginPassed``.

Rate limits, per phone number (per connection ones are the connection's):
code requests, wrong codes, failed logins. And one for the worker: at most
``code_budget`` codes sent per 10 minutes (``env``; 0 turns it off). Every
code is an SMS someone pays for, and a script asking for codes to ever new
numbers passes every per-phone limit ("SMS pumping"): the budget caps what
such a script costs, at the price of refusing real sign-ups while it runs. A CONFIRM or LOGIN is counted as
a failure when it arrives (reserved) and given back if it passes: they are
judged out of the registrar (the storage writer, the connection), so
counting them only once judged would let as many attempts through as were
in flight at once (30 wrong codes on 30 connections, found by review). A
refused request is answered with ``Refused(reason, text, retry_after)``,
never an exception, so the registrar never crashes on bad input. Writes go
through group commit and are answered after commit, without blocking the
registrar (deferred replies).

Messages (all calls): ``RequestCode``, ``ConfirmCode``, ``BeginLogin``;
cast: ``LoginPassed``.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from actors.actor import Actor, Deferred
from actors.messages import BAD_CODE, INTERNAL, LOGIN_FAILED, RATE_LIMITED, SESSION_REPLACED
from actors.messages import InboxAppended
from actors.rate_limit import RateLimiter
from actors.router import route
from actors.session_registry import clients_of
from storage import BadCode, InboxItem
from storage.accounts import hash_code

__all__ = ["Registrar", "RequestCode", "ConfirmCode", "BeginLogin", "LoginKey", "LoginPassed",
           "Refused", "REGISTRAR_NAME"]

log = logging.getLogger("switchboard.registration")

REGISTRAR_NAME = "registrar"
CODE_BUDGET_PERIOD = 600.0          # seconds: ``code_budget`` codes per this period
_EVERY_PHONE = "*"                  # the budget's key: one window for all phones


@dataclass(frozen=True)
class RequestCode:
    phone: str


@dataclass(frozen=True)
class ConfirmCode:
    phone: str
    code: str
    device_key: bytes


@dataclass(frozen=True)
class BeginLogin:
    user: str
    device: int


@dataclass(frozen=True)
class LoginKey:
    """``BeginLogin``'s answer: the device's verify key, and the attempt
    counted as a failed login until ``LoginPassed`` gives it back."""
    verify_key: bytes
    attempt: float


@dataclass(frozen=True)
class LoginPassed:
    """The signature was good: give the attempt back."""
    user: str
    attempt: float


@dataclass(frozen=True)
class Refused:
    """A request was turned down; ``reason`` is a constant of actors.messages;
    ``retry_after`` (seconds) when a retry can pass, for RATE_LIMITED."""
    reason: str
    text: str
    retry_after: float | None = None


def _now_ms() -> int:
    return int(time.time() * 1000)


class Registrar(Actor):
    def __init__(self, code_ttl: float = 600.0, code_requests: tuple[int, float] = (3, 600.0),
                 bad_codes: tuple[int, float] = (5, 600.0), bad_logins: tuple[int, float] = (10, 300.0)):
        self.code_ttl = code_ttl
        self.limits = (code_requests, bad_codes, bad_logins)

    def init(self) -> None:
        clock = self.system.clock
        (req, bad, logins) = self.limits
        self.code_requests = RateLimiter(*req, clock=clock)
        self.bad_codes = RateLimiter(*bad, clock=clock)
        self.bad_logins = RateLimiter(*logins, clock=clock)
        self.mail = self.system.env["mailbox"]
        self.sender = self.system.env["code_sender"]
        budget = int(self.system.env.get("code_budget", 1_000))
        self.code_budget = RateLimiter(budget, CODE_BUDGET_PERIOD, clock=clock) if budget else None

    # -- registration --------------------------------------------------------------
    def handle_request_code(self, msg: RequestCode) -> Any:
        if self.code_requests.exceeded(msg.phone):
            return self._limited(self.code_requests, msg.phone, "code requests")
        budget = self.code_budget
        if budget is not None and budget.exceeded(_EVERY_PHONE):
            wait = budget.retry_after(_EVERY_PHONE)
            return Refused(RATE_LIMITED, f"this server sends at most {budget.limit} codes per "
                           f"{CODE_BUDGET_PERIOD / 60:.0f} min; retry in {wait:.0f} s", wait)
        self.code_requests.record(msg.phone)
        if budget is not None:
            budget.record(_EVERY_PHONE)
        code = f"{secrets.randbelow(1_000_000):06d}"
        expires = _now_ms() + int(self.code_ttl * 1000)
        future = self.mail.put_code(msg.phone, hash_code(msg.phone, code), expires)
        deferred = self.defer_reply()
        future.add_done_callback(lambda done: self._code_stored(done, msg.phone, code, deferred))
        return None

    def _code_stored(self, future: Any, phone: str, code: str, deferred: Deferred) -> None:
        if future.exception() is not None:
            log.error("storing a code for %s failed: %r", phone, future.exception())
            deferred.reply(Refused(INTERNAL, "could not store the code"))
            return
        try:
            self.sender.send(phone, code)
        except Exception as error:             # a broken sender must not take us down
            log.error("code sender failed for %s: %r", phone, error)
            deferred.reply(Refused(INTERNAL, "could not send the code"))
            return
        deferred.reply(None)

    def handle_confirm_code(self, msg: ConfirmCode) -> Any:
        attempt = self.bad_codes.reserve(msg.phone)     # a wrong code until proven right
        if attempt is None:
            return self._limited(self.bad_codes, msg.phone, "wrong codes")
        future = self.mail.confirm_device(
            msg.phone, hash_code(msg.phone, msg.code), msg.device_key, _now_ms(), detail=True)
        deferred = self.defer_reply()
        cast = self.ref.notify              # a completion we asked for: never refused
        future.add_done_callback(lambda done: cast(_Confirmed(msg, done, deferred, attempt)))
        return None

    def handle__confirmed(self, msg: "_Confirmed") -> None:
        error = msg.future.exception()
        if isinstance(error, BadCode):      # counted when it arrived
            msg.deferred.reply(Refused(BAD_CODE, str(error)))
            return
        self.bad_codes.give_back(msg.request.phone, msg.attempt)
        if error is not None:
            log.error("confirming %s failed: %r", msg.request.phone, error)
            msg.deferred.reply(Refused(INTERNAL, "could not register the device"))
        else:
            confirmed = msg.future.result()
            old = clients_of(self.system).get(msg.request.phone)
            if old is not None:
                old.close(SESSION_REPLACED, "a new device was registered for this number")
            for notice in confirmed.notices:    # key contacts: "their keys changed"
                if not notice.seq:              # queued for the contact's home node
                    continue
                item = InboxItem(notice.seq, "key_changed", notice.notice)
                route(self.system, notice.to, InboxAppended(notice.seq, (item,)))
            log.info("registered %s device %d", msg.request.phone, confirmed.device_id)
            msg.deferred.reply(confirmed.device_id)

    # -- login ------------------------------------------------------------------------
    def handle_begin_login(self, msg: BeginLogin) -> Any:
        attempt = self.bad_logins.reserve(msg.user)     # a failed login until the signature
        if attempt is None:                             # passes (``LoginPassed``)
            return self._limited(self.bad_logins, msg.user, "failed logins")
        account = self.mail.get_account(msg.user)
        if account is None or account.device_id != msg.device:
            return Refused(LOGIN_FAILED, "unknown user or device")
        return LoginKey(account.verify_key, attempt)

    def handle_login_passed(self, msg: LoginPassed) -> None:
        self.bad_logins.give_back(msg.user, msg.attempt)

    def _limited(self, limiter: RateLimiter, key: str, what: str) -> Refused:
        wait = limiter.retry_after(key)
        return Refused(RATE_LIMITED, f"too many {what} for {key}; retry in {wait:.0f} s", wait)


@dataclass(frozen=True)
class _Confirmed:
    request: ConfirmCode
    future: Any
    deferred: Deferred
    attempt: float                  # when it was counted as a wrong code (given back if right)
