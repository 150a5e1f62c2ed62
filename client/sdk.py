"""``Client``: the Switchboard SDK, an asyncio client of the wire protocol.

    async with Client.connect("127.0.0.1", 5222) as client:
        await client.login(user, device_id, device_key)
        sent = await client.send("+15550002", b"hello")      # one tick
        async for event in client.events():                  # Message, Receipt, ...
            ...

Purpose: everything between an app and the server. Requests get a ``ref``
and are answered by ACK (the value) or ERROR (``ServerError``) within
``request_timeout``; bad input raises ValueError before anything is sent.
Three parts do the work, and this class wires them together:

- ``link.Link`` (the base class): connect, HELLO, LOGIN, heartbeats, and
  reconnect with backoff, logging in again with the stored credentials.
- ``sending.Sender``: the outbox. Every message is recorded before it is
  sent and resent, same id, in order, after every login until ACKed.
- ``receiving.Receiver``: pushed frames become events; inbox items are
  deduplicated and acknowledged with batched RECEIVED once the app has them.
- ``encryption.Encryption`` (on unless ``e2e=False``): keys published after
  login, every 1:1 body encrypted before it enters the outbox (so a resend
  is the same bytes) and decrypted before it becomes an event; ``media``:
  files encrypted on the client and moved over the media HTTP API
  (``send_file``, ``download``). docs/e2e.md has the design, docs/client.md
  the choices (text bodies, undecryptable messages acknowledged).

After a reconnect the client also subscribes again to everyone it had
subscribed to. It does not reconnect after ``close()``, nor when the server
ends the session for good (see ``link``); then ``closed_reason`` says why
and ``events()`` ends after ``Disconnected(reconnecting=False)``.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
from typing import Any, AsyncIterator, Callable, Iterable

from transport import wire
from transport.crypto import DeviceKey
from transport.e2e import Envelope, Media, Text
from client import events as ev
from client.e2e_store import E2EStore
from client.encryption import Encryption
from client.group_e2e import SenderKeyCodec
from client.media import MediaClient
from client.backoff import Backoff
from client.connection import Connection
from client.errors import ServerError
from client.blocking import Blocking
from client.groups import GroupInbox, Groups
from client.ids import app_id, new_message_id
from client.link import Link, checked
from client.outbox import Outbox
from client.receiving import Receiver
from client.sealing import Sealing
from client.sending import Sender

__all__ = ["Client", "new_message_id", "checked"]

log = logging.getLogger("switchboard.client")

CLIENT_NAME = "switchboard-sdk/0.1"
MEDIA_PORT = 5280


class _Connecting:
    """``Client.connect(...)``: awaitable, and an async context manager."""

    def __init__(self, client: "Client"):
        self.client = client

    def __await__(self):
        return self._start().__await__()

    async def _start(self) -> "Client":
        try:
            await self.client._establish()
        except BaseException as error:
            self.client._finish(error)
            raise
        return self.client

    async def __aenter__(self) -> "Client":
        return await self._start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.close()


class Client(Groups, Blocking, Link):
    """One user's connection to a Switchboard server. See the module docstring.

    Options: ``heartbeat`` (seconds asked for in HELLO), ``request_timeout``,
    ``connect_timeout``, ``reconnect`` (False: a drop closes the client),
    ``backoff``, ``outbox_path`` (a JSON-lines file; None: in memory),
    ``max_in_flight`` (un-acked SENDs at a time), ``ack_delay`` (RECEIVED
    batching window), ``client_name`` (HELLO's client string), ``e2e``
    (end-to-end encryption, on by default), ``e2e_dir`` (where keys, trust
    and sessions are kept, 0600; None: in memory, for this object's life),
    ``media_url`` (the media HTTP root; default: the port the node's HELLO_OK
    names, else 5280, on the host this client is connected to)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5222, *, heartbeat: float = 30.0,
                 request_timeout: float = 10.0, connect_timeout: float = 5.0,
                 reconnect: bool = True, backoff: Backoff = Backoff(),
                 outbox_path: str | None = None, max_in_flight: int = 256,
                 ack_delay: float = 0.005, client_name: str = CLIENT_NAME,
                 e2e: bool = True, e2e_dir: str | None = None, media_url: str | None = None):
        super().__init__(host, port, wire.Hello(wire.PROTOCOL_VERSION, heartbeat, client_name),
                         request_timeout=request_timeout, connect_timeout=connect_timeout,
                         reconnect=reconnect, backoff=backoff)
        self._subscriptions: dict[str, None] = {}
        self._online_before = False             # logged in once already (then: key top-ups)
        self._e2e = Encryption(E2EStore(e2e_dir), self._call, self._emit) if e2e else None
        self._receiver = Receiver(self._on_receipt, ack_delay=ack_delay,
                                  opener=self._open if e2e else None,
                                  on_key_changed=self._e2e.key_changed if e2e else None,
                                  on_confirmed=self._e2e.store.forget_opened if e2e else None)
        self._media_url = media_url             # None: the media port HELLO_OK names, on home
        self.media = MediaClient(media_url or _media_root(host, MEDIA_PORT), self._media_credentials)
        self._sender = Sender(Outbox(outbox_path), self._receiver.emit, max_in_flight=max_in_flight)
        self._groups = self._receiver.groups = GroupInbox(self._receiver, self._sender.receipt)
        if e2e:                                 # group bodies: sender keys (client/group_e2e.py)
            self._groups.codec = SenderKeyCodec(self)
            self._e2e.on_device_changed = self._device_changed
            self._sealing = Sealing(self)       # 1:1 bodies, sealed again for a new device

    @classmethod
    def connect(cls, host: str = "127.0.0.1", port: int = 5222, **options: Any) -> _Connecting:
        """Connect and say HELLO: ``await Client.connect(...)`` or
        ``async with Client.connect(...) as client``. Raises OSError if the
        server cannot be reached (no automatic retry for the first connection)."""
        return _Connecting(cls(host, port, **options))

    async def __aenter__(self) -> "Client":
        if self._conn is None:
            await _Connecting(self)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- what the app can read ----------------------------------------------------------------
    def status(self, id: str) -> ev.Status | None:
        """Where message ``id`` sent by this client is (None if unknown)."""
        return self._sender.status.get(id)

    def presence(self, user: str) -> ev.Presence | None:
        """The last PRESENCE seen for a subscribed ``user``."""
        return self._receiver.presence.get(user)

    @property
    def outbox(self) -> list[tuple[str, str, bytes]]:
        """Messages not yet acknowledged, in send order: (id, to, body)."""
        return [(e.id, e.to, e.body) for e in self._sender.outbox]

    def events(self) -> AsyncIterator[ev.Event]:
        """Events in arrival order until the client closes (one consumer).
        An inbox item counts as received (RECEIVED is sent) when yielded."""
        return self._receiver.events()

    # -- registration and login ----------------------------------------------------------
    async def register(self, phone: str) -> None:
        """REGISTER: the server sends a one-time code to ``phone`` out of band."""
        await self._before_login(checked(wire.Register(phone)))

    async def confirm(self, phone: str, code: str, device_key: DeviceKey) -> int:
        """CONFIRM the code and install ``device_key``; returns the device id."""
        ack = await self._before_login(checked(wire.Confirm(phone, code, device_key.public)))
        if not isinstance(ack.value, int):
            raise ServerError(wire.ErrorCode.INTERNAL, f"CONFIRM acked without a device id: {ack.value!r}")
        return ack.value

    async def login(self, user: str, device_id: int, device_key: DeviceKey) -> dict:
        """LOGIN; on success the credentials are kept for reconnects, the
        outbox is (re)sent and pushed items start to arrive. Returns the ACK's
        map (``last_seen``: this user's previous last seen, ms or None).
        With end-to-end encryption on, returns once this device's keys are
        published (made on first use)."""
        if self._e2e is not None:
            self._e2e.prepare(user, device_key)
        info = await self._login(user, device_id, device_key)
        if self._e2e is not None:
            await self._e2e.after_login()
        return info

    # -- messages ---------------------------------------------------------------------------
    async def send(self, to: str, body: bytes, id: str | None = None) -> ev.Sent:
        """Send ``body`` to ``to``; returns at the server's ACK (one tick).
        The message is in the outbox first: if the connection is down it
        goes out after the reconnect, and this call waits until then
        (cancelling the wait does not unsend it). Raises ValueError for bad
        input, ServerError if the server refuses it for good."""
        self._check_open()
        id = app_id(id)
        if self._e2e is not None:
            return await self._send_sealed(to, Text(_text(body)), (), id)
        frame = checked(wire.Send(id, to, body))
        try:
            wire.encode(frame, max_frame=self.max_frame)
        except wire.FrameError as error:
            raise ValueError(f"message too large: {error.message}") from None
        if to == self.user:
            raise ValueError("cannot send a message to yourself")
        return await self._sender.add(frame.id, frame.to, frame.body)

    async def _send_sealed(self, to: str, envelope: Envelope, media: tuple[str, ...],
                           id: str | None, sealed: Callable[[], None] | None = None) -> ev.Sent:
        """Encrypt for ``to``'s device and queue (``client.sealing``)."""
        return await self._sealing.send(to, envelope, media, id, sealed)

    async def send_file(self, to: str, path: str, *, mime: str | None = None,
                        caption: str = "", id: str | None = None) -> ev.Sent:
        """Encrypt the file at ``path`` with a fresh key, upload the
        ciphertext (unless the server has it: see ``client.media``), then
        send ``to`` an encrypted message holding its key, hash, size, type
        and name. Needs end-to-end encryption."""
        if self._e2e is None:
            raise RuntimeError("send_file needs end-to-end encryption (e2e=True)")
        self._check_open()
        id = app_id(id)
        key, _ = await self.media.put_file(path)
        mime = mime or mimetypes.guess_type(path)[0] or "application/octet-stream"
        envelope = Media(key, mime, os.path.basename(path), caption)
        return await self._send_sealed(to, envelope, (key.sha256.hex(),), id)

    async def download(self, file: ev.MediaInfo | ev.FileMessage, dest: str, *,
                       overwrite: bool = True) -> str:
        """Fetch a received file into ``dest`` (resuming a partial download),
        checking its hash and every chunk; returns ``dest``. ``overwrite``
        False: FileExistsError rather than replace an existing ``dest``.
        The file's name comes from the sender: never use it as a path as is."""
        info = file.file if isinstance(file, ev.FileMessage) else file
        return await self.media.get_file(info, dest, overwrite)

    async def safety_number(self, user: str) -> str:
        """The 60-digit safety number of this device and ``user``'s, to compare
        out of band (fetches ``user``'s keys if none are known yet)."""
        if self._e2e is None:
            raise RuntimeError("safety numbers need end-to-end encryption (e2e=True)")
        return await self._e2e.safety_number(user)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until the outbox is empty; False if ``timeout`` ran out first."""
        try:
            await asyncio.wait_for(self._sender.emptied.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def mark_read(self, peer: str, ids: Iterable[str]) -> None:
        """READ: tell ``peer`` their messages ``ids`` were read (blue ticks)."""
        ids = tuple(ids)
        frames = [checked(wire.Read(peer, ids[i:i + 512])) for i in range(0, len(ids), 512)]
        for frame in frames:
            self._receiver.flush()      # RECEIVED (delivered) goes out before READ
            await self._call(frame)

    async def subscribe(self, users: Iterable[str]) -> None:
        """SUBSCRIBE to presence: a Presence event now and at every change.
        Kept across reconnects."""
        users = tuple(dict.fromkeys(users))
        for i in range(0, len(users), 256):
            checked(wire.Subscribe(users[i:i + 256]))
        self._subscriptions.update(dict.fromkeys(users))
        await self._subscribe(users)

    async def typing(self, to: str, typing: bool = True) -> None:
        """TYPING: show (or stop showing) a typing indicator to ``to``."""
        await self._call(checked(wire.Typing(to, typing)))

    async def ping(self) -> int:
        """PING; returns the server time (ms)."""
        return await self._call(wire.Ping())

    async def _subscribe(self, users: tuple[str, ...]) -> None:
        for i in range(0, len(users), 256):
            await self._call(wire.Subscribe(users[i:i + 256]))

    # -- Link's hooks ----------------------------------------------------------------------------
    def _on_push(self, frame: wire.Frame) -> None:
        if not self._block_page(frame):         # a BLOCK_LIST: client/blocking.py
            self._receiver.on_push(frame)

    def _went_online(self, conn: Connection) -> None:
        """Logged in on ``conn``: outbox first, then acks and subscriptions
        (and, after a reconnect, a top-up of the published keys)."""
        self._sender.online(conn)
        self._receiver.online(conn)
        if self._subscriptions:
            self._spawn(self._subscribe(tuple(self._subscriptions)))
        if self._e2e is not None and self._online_before:
            self._spawn(self._e2e.after_login())
        self._online_before = True

    def _open(self, frame: wire.Message) -> Any:
        """A new MESSAGE -> its event, decrypted; never its text if it fails."""
        if getattr(frame, "group", None) is not None:   # group bodies: not end-to-end here
            return ev.Message(frame.seq, frame.id, frame.sender, frame.ts, frame.body)
        try:
            return self._open_envelope(frame)
        except Exception as error:      # noqa: BLE001 - one bad item must not kill the link
            log.warning("message %s from %s rejected: %r", frame.id, frame.sender, error)
            return ev.Undecryptable(frame.seq, frame.id, frame.sender, frame.ts,
                                    str(error) or type(error).__name__)

    def _open_envelope(self, frame: wire.Message) -> Any:
        """``_open``'s work; any exception makes the item undecryptable
        (acknowledged, an event), never an error out of the receive path."""
        envelope = self._e2e.open_item(frame.seq, frame.sender, frame.id, frame.body)
        if isinstance(envelope, Text):
            return ev.Message(frame.seq, frame.id, frame.sender, frame.ts, envelope.text.encode())
        if isinstance(envelope, Media):
            return ev.FileMessage(frame.seq, frame.id, frame.sender, frame.ts, ev.MediaInfo(
                envelope.key, envelope.mime, envelope.name, envelope.caption))
        if isinstance(self.group_codec, SenderKeyCodec) and self.group_codec.on_envelope(
                frame.sender, envelope):        # a sender key, or a request for ours
            return None                         # no event: the SDK's own business
        return ev.Undecryptable(frame.seq, frame.id, frame.sender, frame.ts,
                                f"unsupported envelope {type(envelope).__name__}")

    def _device_changed(self, user: str) -> None:
        """``user`` has a new device: own sender keys it held are replaced."""
        if isinstance(self.group_codec, SenderKeyCodec):
            self.group_codec.device_changed(user)

    def _greeted(self, ok: wire.HelloOk) -> None:
        """Media goes to the node this client is connected to (a redirect or
        a reconnect may have moved it), at the port its HELLO_OK names."""
        if self._media_url is None:
            self.media.base_url = _media_root(self.host, ok.media or MEDIA_PORT)

    def _media_credentials(self) -> tuple[str, int, Any]:
        if self._key is None:
            raise RuntimeError("log in before using media")
        return self.user, self.device_id, self._key.sign

    async def close(self, timeout: float = 2.0) -> None:
        await super().close(timeout)
        await self.media.close()

    def _went_offline(self) -> None:
        self._sender.offline()
        self._receiver.offline()

    def _emit(self, event: Any) -> None:
        self._receiver.emit(event)

    async def _settle(self, timeout: float) -> None:
        await self._receiver.settle(timeout)

    def _over(self, reason: BaseException | None) -> None:
        self._sender.close(reason)
        self._receiver.close()

    def _on_receipt(self, id: str, status: ev.Status) -> None:
        self._sender.receipt(id, status)


def _text(body: bytes | str) -> str:
    """An end-to-end encrypted message is text: a str, or bytes of UTF-8."""
    if isinstance(body, str):
        return body
    if not isinstance(body, (bytes, bytearray)):
        raise ValueError(f"invalid body: expected bytes or str, got {type(body).__name__}")
    try:
        return bytes(body).decode()
    except UnicodeDecodeError:
        raise ValueError("invalid body: an encrypted message must be UTF-8 text") from None


def _media_root(host: str, port: int) -> str:
    """``http://host:port``; an IPv6 address goes in brackets (RFC 3986)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
