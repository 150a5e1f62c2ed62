"""Client: the Switchboard SDK (an asyncio library) and the terminal client.

General layout:

- ``sdk``: ``Client``, the library an app uses: connect, register, login,
  send, the ``events()`` iterator, receipts, presence, automatic reconnect.
- ``link``: its base class, the connection lifecycle: connect, HELLO,
  LOGIN, requests with retries, reconnect with backoff, close.
- ``connection``: one TCP connection: frames in and out, refs matched to
  futures, heartbeat PINGs.
- ``sending`` + ``outbox``: messages not yet acknowledged by the server, in
  send order, optionally in a file, resent after every login.
- ``receiving`` + ``inbox``: pushed frames to events; which inbox items the
  app has and which RECEIVED are due (dedup and batching).
- ``events``, ``errors``, ``backoff``: what the app sees, what it catches,
  and the reconnect delay policy (a pure function); ``ids``: message ids,
  made in time order.
- ``encryption`` + ``e2e_store``: end-to-end encryption (keys published,
  a session per contact, state kept 0600); ``sealing`` + ``sealed``: a 1:1
  body sealed for the recipient's device, and sealed again from its kept
  plaintext when that device was replaced; ``group_e2e``: group bodies with
  sender keys (``group_hold``: a group message held until its sender key
  arrives); ``media``: files encrypted on the client, over HTTP.
- ``profile``, ``cli``: the terminal client behind ``run.py client``.

Imports: the client speaks only the wire protocol, so it imports
``transport.wire``, ``transport.crypto`` (the device key),
``transport.media_auth`` (signed media requests) and ``transport.e2e`` (end-to-end
encryption) and nothing else of ours: never ``actors``, ``storage`` or ``supervisor``. The one
exception is ``cli``, which reads the node's one-time code file with
``transport.code_sender.read_code_file``. This file re-exports the public
API (docs/client.md).
"""

from client.backoff import Backoff
from client.errors import (
    ClientClosed, ClientError, ConnectionLost, RequestTimeout, ServerError, Undelivered,
)
from client.events import (
    Disconnected, FileMessage, IdentityChanged, KeyChanged, MediaInfo, Message, Presence, Receipt,
    Reconnected, SendFailed, Sent, Status, Typing, Undecryptable,
)
from client.sdk import Client, new_message_id

__all__ = [
    "Client", "new_message_id", "Backoff", "Status",
    "Message", "Receipt", "Presence", "Typing", "Sent", "SendFailed", "Disconnected", "Reconnected",
    "FileMessage", "MediaInfo", "Undecryptable", "KeyChanged", "IdentityChanged",
    "ClientError", "ServerError", "ConnectionLost", "RequestTimeout", "ClientClosed", "Undelivered",
]
