"""What the SDK raises.

- ``ServerError(code, message)``: the server answered a request with ERROR.
  ``code`` is a ``wire.ErrorCode``; ``fatal`` says the server closes the
  connection after it; ``redirect`` is WRONG_NODE's (host, port), which the
  client follows itself (``link``), so an app sees WRONG_NODE only when it
  cannot be followed (no address, or too many redirects in a row).
- ``ConnectionLost``: the connection went away while a request was waiting
  for its answer (``Client`` retries what is safe to retry; this reaches the
  app only for requests made before login, and when the client gives up).
- ``RequestTimeout``: no answer within the request timeout (also a
  ``TimeoutError``).
- ``Undelivered``: a ``send`` still waiting for its ACK when the message's
  FAILED receipt came (the recipient's node refused it; see ``events``).
- ``ClientClosed``: the client was closed (``close()``, or the server ended
  the session for good: SESSION_REPLACED, LOGIN_FAILED on re-login).

Bad input from the app (an invalid phone number, an oversized body) raises
``ValueError`` before anything is sent.
"""

from __future__ import annotations

from transport.wire import ErrorCode

__all__ = ["ClientError", "ServerError", "ConnectionLost", "RequestTimeout", "ClientClosed",
           "Undelivered"]


class ClientError(Exception):
    """Base of the SDK's own exceptions."""


class ServerError(ClientError):
    """The server refused a request: ERROR ``code`` with ``message``."""

    def __init__(self, code: ErrorCode, message: str = "", retry_after: int | None = None,
                 redirect: tuple[str, int] | None = None):
        super().__init__(code, message)
        self.code = ErrorCode(code)
        self.message = message
        self.retry_after = retry_after      # RATE_LIMITED: ms until a retry can pass
        self.redirect = redirect            # WRONG_NODE: (host, port) of the user's home node

    @property
    def fatal(self) -> bool:
        """The server closes the connection after this error."""
        return self.code.fatal

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}" if self.message else self.code.name


class ConnectionLost(ClientError, ConnectionError):
    """The connection closed before the request was answered."""


class RequestTimeout(ClientError, TimeoutError):
    """The server did not answer in time."""


class Undelivered(ClientError):
    """The server accepted message ``id`` to ``to``, then the recipient's node
    refused it (a FAILED receipt: their inbox is full, or no such user
    there). It left the outbox and is never resent."""

    def __init__(self, id: str, to: str):
        super().__init__(f"message {id} was not delivered to {to}: their node refused it")
        self.id, self.to = id, to


class ClientClosed(ClientError):
    """The client is closed; ``reason`` is why (an exception or None)."""

    def __init__(self, reason: BaseException | None = None):
        super().__init__(f"client closed: {reason}" if reason else "client closed")
        self.reason = reason
