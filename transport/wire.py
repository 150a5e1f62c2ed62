"""Switchboard's wire protocol: the only module in the project that imports
msgpack (cf. aiohttp ``_websocket/models.py``). docs/protocol.md is the spec.

Purpose: turn frames into bytes and back, and refuse anything that is not a
well-formed frame. On the wire a frame is a 4-byte big-endian length ``N``
then ``N`` bytes of msgpack: an array ``[type, ref, field1, field2, ...]``
with the fields in dataclass order. ``ref`` is the client's number for the
frame, echoed in the ACK or ERROR that answers it; server-pushed frames
carry ref 0.

Frames (one frozen dataclass each; ``ref`` is keyword-only, default 0):

    client -> server  Hello Register Confirm Login Send Received Read
                      Subscribe Typing Ping Bye KeysPublish KeysFetch KeysCount
                      Block Unblock Blocked
                      GroupCreate GroupAdd GroupRemove GroupLeave GroupAdmin
                      GroupRename GroupSend GroupInfo
    server -> client  HelloOk Ack Error Message Receipt Presence TypingEvent
                      KeyChanged GroupEvent GroupState BlockList

Entry points:

- ``encode(frame) -> bytes``: header + body, ready for ``transport.write``;
  ``encode_ack``, ``encode_message``, ``encode_receipt``: the same bytes for
  the frames a server sends most, from their fields (no frame object).
- ``decode_client_frame(data)`` / ``decode_server_frame(data)``: one whole
  frame (header + body) sent by a client (what a server accepts) / by a
  server (what a client accepts). ``decode_body(body, sender)`` skips the
  header.
- ``FrameDecoder(sender).feed(chunk) -> list[Frame]``: incremental, for
  ``data_received``.
- ``validate(frame)``: the decoder's checks on a frame built in Python.
- ``login_challenge(nonce, user, device)``: the bytes a LOGIN signs.
- ``wrong_node(ref, host, port)``: the ERROR that sends a client to the
  user's home node (a cluster's nodes answer REGISTER/CONFIRM/LOGIN so).

Decoding raises only ``FrameError``; its ``code`` is MALFORMED, TOO_LARGE or
UNKNOWN_TYPE, and its ``ref`` is the offending frame's ref when readable.
"""

from __future__ import annotations

import re
import struct
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum, IntEnum
from operator import attrgetter
from types import MappingProxyType
from typing import Annotated, Any, Callable, ClassVar, Mapping, get_type_hints

import msgpack

__all__ = [
    "PROTOCOL_VERSION", "MAX_FRAME", "MAX_BODY", "HEADER_SIZE", "HEARTBEAT_MIN",
    "HEARTBEAT_MAX", "SILENT_INTERVALS", "FrameType", "ErrorCode", "FATAL",
    "ReceiptKind", "Side", "FrameError", "Frame", "Hello", "Register", "Confirm",
    "Login", "Send", "Received", "Read", "Subscribe", "Typing", "Ping", "Bye",
    "HelloOk", "Ack", "Error", "Message", "Receipt", "Presence", "TypingEvent",
    "KeysPublish", "KeysFetch", "KeysCount", "KeyChanged", "MAX_PUBLISH", "MAX_MEDIA_REFS",
    "GroupCreate", "GroupAdd", "GroupRemove", "GroupLeave", "GroupAdmin", "GroupRename",
    "GroupSend", "GroupInfo", "GroupEvent", "GroupState", "GroupEventKind", "MAX_GROUP",
    "Block", "Unblock", "Blocked", "BlockList", "MAX_BLOCK_LIST",
    "CLIENT_FRAMES", "SERVER_FRAMES", "encode", "encode_raw", "encode_ack", "encode_message",
    "encode_receipt", "encode_send", "encode_received", "decode_body",
    "decode_client_frame", "decode_server_frame", "FrameDecoder", "validate",
    "login_challenge", "wrong_node",
]

PROTOCOL_VERSION = 1
HEADER_SIZE = 4
MAX_FRAME = 64 * 1024          # default cap on N, the body length in the header
MAX_BODY = 60 * 1024           # cap on a message body (SEND.body, MESSAGE.body)
MAX_PUBLISH = 200              # one-time prekeys in one KEYS_PUBLISH
MAX_MEDIA_REFS = 16            # blob hashes one SEND may refer to
_BUNDLE_MIN, _BUNDLE_PREKEY = 231, 36   # e2e KeyBundle: fixed part, per one-time prekey
HEARTBEAT_MIN, HEARTBEAT_MAX = 1.0, 300.0   # what HELLO may ask for, in seconds
SILENT_INTERVALS = 3           # a connection silent this many heartbeats is closed

_U32 = 2**32 - 1
_I63 = 2**63 - 1               # ids, seqs and timestamps fit a signed 64-bit int
_LOGIN_CONTEXT = b"switchboard-login-v1\x00"


class FrameType(IntEnum):
    # client -> server
    HELLO = 1
    REGISTER = 2
    CONFIRM = 3
    LOGIN = 4
    SEND = 5
    RECEIVED = 6
    READ = 7
    SUBSCRIBE = 8
    TYPING = 9
    PING = 10
    BYE = 11
    GROUP_CREATE = 12
    GROUP_ADD = 13
    GROUP_REMOVE = 14
    GROUP_LEAVE = 15
    GROUP_ADMIN = 16
    GROUP_RENAME = 17
    GROUP_SEND = 18
    GROUP_INFO = 19
    KEYS_PUBLISH = 24
    KEYS_FETCH = 25
    KEYS_COUNT = 26
    BLOCK = 27
    UNBLOCK = 28
    BLOCKED = 29
    # server -> client
    HELLO_OK = 64
    ACK = 65
    ERROR = 66
    MESSAGE = 67
    RECEIPT = 68
    PRESENCE = 69
    TYPING_EVENT = 70
    GROUP_EVENT = 71
    GROUP_STATE = 72
    KEY_CHANGED = 76
    BLOCK_LIST = 77


class ErrorCode(IntEnum):
    MALFORMED = 1
    TOO_LARGE = 2
    UNKNOWN_TYPE = 3
    UNSUPPORTED_VERSION = 4
    OUT_OF_ORDER = 5
    UNAUTHENTICATED = 6
    BAD_CODE = 7
    RATE_LIMITED = 8
    LOGIN_FAILED = 9
    UNKNOWN_USER = 10
    OFFLINE_FULL = 11
    SESSION_REPLACED = 12
    HEARTBEAT_TIMEOUT = 13
    INTERNAL = 14
    INVALID = 15
    SHUTTING_DOWN = 16
    UNKNOWN_GROUP = 17
    NOT_MEMBER = 18
    NOT_ADMIN = 19
    GROUP_FULL = 20
    BAD_BUNDLE = 24
    WRONG_IDENTITY = 25
    NO_KEYS = 26
    KEYS_FULL = 27
    STALE_DEVICE = 28       # SEND sealed for a device the recipient has replaced: seal it again
    SLOW_CONSUMER = 30      # the client stopped reading: its queued output passed the limit
    WRONG_NODE = 31         # not this user's home node: ``redirect`` says where to go

    @property
    def fatal(self) -> bool:
        """The server closes the connection after sending this error."""
        return self in FATAL


FATAL: frozenset[ErrorCode] = frozenset({
    ErrorCode.MALFORMED, ErrorCode.TOO_LARGE, ErrorCode.UNKNOWN_TYPE,
    ErrorCode.UNSUPPORTED_VERSION, ErrorCode.OUT_OF_ORDER,
    ErrorCode.SESSION_REPLACED, ErrorCode.HEARTBEAT_TIMEOUT, ErrorCode.SHUTTING_DOWN,
    ErrorCode.SLOW_CONSUMER, ErrorCode.WRONG_NODE,
})


class ReceiptKind(IntEnum):
    DELIVERED = 1   # two ticks
    READ = 2        # read (blue) ticks
    FAILED = 3      # the recipient's node refused it (inbox full, no such user): never delivered


class GroupEventKind(IntEnum):
    """What a GROUP_EVENT announces (docs/protocol.md, "Groups")."""
    CREATED = 1
    ADDED = 2
    REMOVED = 3
    LEFT = 4
    PROMOTED = 5
    DEMOTED = 6
    RENAMED = 7
    MISSED = 8      # this member's inbox was full: ``count`` group messages missed it


class Side(str, Enum):
    """Who sent the frames being decoded."""
    CLIENT = "client"
    SERVER = "server"


class FrameError(Exception):
    """A frame that cannot be accepted. ``ref`` is the bad frame's ref if it
    could be read (else 0); ``frames`` holds the good frames that
    ``FrameDecoder.feed`` decoded from the same call before the bad one."""

    def __init__(self, code: ErrorCode, message: str, ref: int = 0) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.ref = ref
        self.frames: list[Frame] = []

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


# --- field checks --------------------------------------------------------
# Each check takes a decoded value and returns it (normalised) or raises
# _Bad. Frame fields name their check through typing.Annotated, so a frame
# class reads as its own specification.

class _Bad(Exception):
    pass


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v):
        if type(v) is not int or not lo <= v <= hi:
            raise _Bad(f"expected an int in {lo}..{hi}, got {_show(v)}")
        return v
    return check


def _float(lo: float, hi: float) -> Callable[[Any], float]:
    def check(v):
        if (type(v) is float or type(v) is int) and lo <= v <= hi:
            return float(v)
        raise _Bad(f"expected a number in {lo}..{hi}, got {_show(v)}")
    return check


def _text(hi: int) -> Callable[[Any], str]:
    def check(v):
        if type(v) is not str or len(v) > hi:
            raise _Bad(f"expected a str of at most {hi} chars, got {_show(v)}")
        return v
    return check


def _match(pattern: str, what: str) -> Callable[[Any], str]:
    fullmatch = re.compile(pattern).fullmatch

    def check(v):
        if type(v) is not str or fullmatch(v) is None:
            raise _Bad(f"expected {what}, got {_show(v)}")
        return v
    return check


def _blob(lo: int, hi: int) -> Callable[[Any], bytes]:
    def check(v):
        if type(v) is not bytes or not lo <= len(v) <= hi:
            size = f"{lo} bytes" if lo == hi else f"{lo}..{hi} bytes"
            raise _Bad(f"expected {size}, got {_show(v)}")
        return v
    return check


def _flag(v: Any) -> bool:
    if type(v) is not bool:
        raise _Bad(f"expected a bool, got {_show(v)}")
    return v


def _enum(cls: type[IntEnum]) -> Callable[[Any], IntEnum]:
    members = {m.value: m for m in cls}

    def check(v):
        m = members.get(v) if type(v) is int or type(v) is cls else None
        if m is None:
            raise _Bad(f"expected a {cls.__name__}, got {_show(v)}")
        return m
    return check


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v):
        return None if v is None else inner(v)
    return check


def _list(item: Callable[[Any], Any], lo: int, hi: int) -> Callable[[Any], tuple]:
    def check(v):
        if (type(v) is not tuple and type(v) is not list) or not lo <= len(v) <= hi:
            raise _Bad(f"expected an array of {lo}..{hi} items, got {_show(v)}")
        return tuple([item(x) for x in v])
    return check


_ACK_TEXT = 256
_ACK_MAP_ITEMS = 16
_ack_key = _match(r"[A-Za-z0-9_]{1,64}", "a map key of 1..64 [A-Za-z0-9_]")


def _ack_scalar(v: Any) -> Any:
    if v is None or type(v) is bool or type(v) is int:
        return v
    if type(v) is str and len(v) <= _ACK_TEXT:
        return v
    if type(v) is bytes and len(v) <= MAX_BODY:     # e.g. KEYS_FETCH's key bundle
        return v
    raise _Bad(f"expected nil, bool, int, str<={_ACK_TEXT} or bin<={MAX_BODY}, got {_show(v)}")


def _ack_value(v: Any) -> Any:
    if type(v) is not dict:
        return _ack_scalar(v)
    if len(v) > _ACK_MAP_ITEMS:
        raise _Bad(f"expected a map of at most {_ACK_MAP_ITEMS} entries, got {len(v)}")
    return {_ack_key(k): _ack_scalar(x) for k, x in v.items()}


def _show(v: Any) -> str:
    """A short description of a bad value (never the whole of a big one)."""
    if v is None or type(v) in (bool, int, float):
        return repr(v)
    if type(v) in (str, bytes, tuple, list, dict):
        return f"{type(v).__name__} of length {len(v)}"
    return type(v).__name__


# Field types: what Python sees (first argument) and what the wire allows.
U32 = Annotated[int, _int(0, _U32)]
Version = Annotated[int, _int(0, _U32)]
Heartbeat = Annotated[float, _float(HEARTBEAT_MIN, HEARTBEAT_MAX)]
ClientName = Annotated[str, _text(64)]
UserId = Annotated[str, _match(r"\+[1-9][0-9]{7,14}", "an E.164 number")]
Code = Annotated[str, _match(r"[0-9]{4,10}", "a code of 4..10 digits")]
VerifyKey = Annotated[bytes, _blob(32, 32)]
Signature = Annotated[bytes, _blob(64, 64)]
Nonce = Annotated[bytes, _blob(32, 32)]
DeviceId = Annotated[int, _int(1, _I63)]
MaybeDevice = Annotated[int | None, _optional(DeviceId.__metadata__[0])]
MsgId = Annotated[str, _match(r"[A-Za-z0-9_-]{1,64}", "a message id of 1..64 [A-Za-z0-9_-]")]
Body = Annotated[bytes, _blob(0, MAX_BODY)]
Seq = Annotated[int, _int(1, _I63)]
Millis = Annotated[int, _int(0, _I63)]
Flag = Annotated[bool, _flag]
Seqs = Annotated[tuple[int, ...], _list(Seq.__metadata__[0], 1, 1024)]
MsgIds = Annotated[tuple[str, ...], _list(MsgId.__metadata__[0], 1, 1024)]
UserIds = Annotated[tuple[str, ...], _list(UserId.__metadata__[0], 1, 256)]
AckValue = Annotated[Any, _ack_value]
ErrCode = Annotated[ErrorCode, _enum(ErrorCode)]
Kind = Annotated[ReceiptKind, _enum(ReceiptKind)]
ErrorText = Annotated[str, _text(256)]
MaybeMillis = Annotated[int | None, _optional(Millis.__metadata__[0])]
_host = _match(r"[A-Za-z0-9._:-]{1,253}", "a host name or IP address of 1..253 chars")
_port = _int(1, 65535)


def _address(v: Any) -> tuple[str, int]:
    if (type(v) is not tuple and type(v) is not list) or len(v) != 2:
        raise _Bad(f"expected an array [host, port], got {_show(v)}")
    return (_host(v[0]), _port(v[1]))


Redirect = Annotated[tuple[str, int] | None, _optional(_address)]
MaybePort = Annotated[int | None, _optional(_port)]
MAX_GROUP = 1536               # members a GROUP_STATE can list (the server's group_cap is <= this):
                               # 1,536 members, all admins, with 16-char ids fit MAX_FRAME
_group_id = _match(r"\+[1-9][0-9]{7,14}/[A-Za-z0-9_-]{1,32}", "a group id (creator/key)")
GroupId = Annotated[str, _group_id]
MaybeGroup = Annotated[str | None, _optional(_group_id)]
GroupKey = Annotated[str, _match(r"[A-Za-z0-9_-]{1,32}", "a group key of 1..32 [A-Za-z0-9_-]")]
GroupName = Annotated[str, _match(r"(?s).{1,100}", "a group name of 1..100 chars")]
GroupUsers = Annotated[tuple[str, ...], _list(UserId.__metadata__[0], 0, 256)]
Members = Annotated[tuple[str, ...], _list(UserId.__metadata__[0], 0, MAX_GROUP)]
EventKind = Annotated[GroupEventKind, _enum(GroupEventKind)]
Count = Annotated[int, _int(0, _U32)]
Bundle = Annotated[bytes, _blob(_BUNDLE_MIN, _BUNDLE_MIN + _BUNDLE_PREKEY * MAX_PUBLISH)]
BlobHash = Annotated[str, _match(r"[0-9a-f]{64}", "a SHA-256 of 64 lowercase hex digits")]
MediaRefs = Annotated[tuple[str, ...], _list(BlobHash.__metadata__[0], 0, MAX_MEDIA_REFS)]
MAX_BLOCK_LIST = 1024          # user ids one BLOCK_LIST carries (a longer list takes several)
BlockedUsers = Annotated[tuple[str, ...], _list(UserId.__metadata__[0], 0, MAX_BLOCK_LIST)]


# --- frames --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Frame:
    """Base of all frames. ``TYPE`` is the FrameType; ``ref`` the client's
    frame number (0..2**32-1), echoed in ACK/ERROR, 0 in pushed frames."""
    TYPE: ClassVar[FrameType]
    ref: U32 = field(default=0, kw_only=True)


class _Spec:
    """What the codec knows about one frame class."""
    __slots__ = ("cls", "name", "names", "checks", "required", "pushed", "values", "build",
                 "trim")

    def __init__(self, cls: type, ftype: FrameType, pushed: bool, trim: tuple = ()) -> None:
        hints = get_type_hints(cls, include_extras=True)
        payload = [f for f in fields(cls) if f.name != "ref"]
        self.cls, self.name, self.pushed = cls, ftype.name, pushed
        self.names = tuple(f.name for f in payload)            # wire order
        self.checks = tuple(hints[n].__metadata__[0] for n in self.names)
        self.required = sum(f.default is MISSING for f in payload)
        # frame -> (ref, *payload), for encode
        self.values = attrgetter("ref", *self.names) if self.names else (lambda f: (f.ref,))
        # (type, ref, *payload) -> frame, for decode
        self.build: Callable[[tuple, int], Frame] = _make_builder(self, payload)
        # trailing optional fields left off the wire while they hold their
        # default (so a SEND without media refs is the same bytes as before)
        self.trim = tuple((f.name, f.default) for f in reversed(payload) if f.name in trim)


def _make_builder(spec: _Spec, payload: list) -> Callable[[tuple, int], Frame]:
    """Generate the decoder of one frame class, as dataclasses generates
    ``__init__``: a flat function that checks each field and fills the slots
    directly (2-3x faster than a loop over the checks plus ``cls(...)``).
    Frames built this way skip ``__post_init__``; their lists are tuples."""
    n, req = len(payload), spec.required
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": spec.cls, "_Bad": _Bad,
                          "_set_ref": spec.cls.ref.__set__, "_fail": _field_error,
                          "_spec": spec}
    count = f"n != {n + 2}" if req == n else f"not {req + 2} <= n <= {n + 2}"
    lines = ["def build(items, ref):",
             "    n = len(items)",
             f"    if {count}: _fail(_spec, items, ref)"]
    if spec.pushed:
        lines.append("    if ref: _fail(_spec, items, ref)")
    lines += ["    self = _new(_cls)", "    _set_ref(self, ref)", "    try:"]
    for i, f in enumerate(payload):
        ns[f"_c{i}"], ns[f"_s{i}"], ns[f"_d{i}"] = spec.checks[i], getattr(spec.cls, f.name).__set__, f.default
        value = f"_c{i}(items[{i + 2}])" + (f" if n > {i + 2} else _d{i}" if i >= req else "")
        lines.append(f"        _s{i}(self, {value})")
    lines += ["        pass", "    except _Bad:", "        _fail(_spec, items, ref)", "    return self"]
    exec("\n".join(lines), ns)
    return ns["build"]


def _field_error(spec: _Spec, items: tuple, ref: int) -> None:
    """Raise the FrameError that explains why ``items`` is not a ``spec`` frame."""
    n, checks = len(items) - 2, spec.checks
    if not spec.required <= n <= len(checks):
        want = f"{len(checks)}" if spec.required == len(checks) else f"{spec.required}..{len(checks)}"
        raise FrameError(ErrorCode.MALFORMED, f"{spec.name}: expected {want} fields, got {n}", ref)
    if ref and spec.pushed:
        raise FrameError(ErrorCode.MALFORMED, f"{spec.name}: a pushed frame has ref 0", ref)
    for name, check, v in zip(spec.names, checks, items[2:]):
        try:
            check(v)
        except _Bad as e:
            raise FrameError(ErrorCode.MALFORMED, f"{spec.name}.{name}: {e}", ref) from None
    raise AssertionError("unreachable: a field check failed, then passed")  # pragma: no cover


_SPECS: dict[FrameType, _Spec] = {}
_BY_CLASS: dict[type, _Spec] = {}


def _frame(ftype: FrameType, *, pushed: bool = False, trim: tuple = ()):
    """Register a frame class: its Annotated field types become its checks;
    ``trim`` names trailing optional fields omitted on the wire when default."""
    def register(cls):
        cls.TYPE = ftype
        _SPECS[ftype] = _BY_CLASS[cls] = _Spec(cls, ftype, pushed, trim)
        return cls
    return register


def _as_tuple(frame: Frame, name: str) -> None:
    # Lists are accepted when building a frame; frames hold tuples.
    value = getattr(frame, name)
    if type(value) is not tuple:
        object.__setattr__(frame, name, tuple(value))


@_frame(FrameType.HELLO)
@dataclass(frozen=True, slots=True)
class Hello(Frame):
    version: Version
    heartbeat: Heartbeat    # requested, seconds
    client: ClientName      # e.g. "switchboard-sdk/0.1"


@_frame(FrameType.REGISTER)
@dataclass(frozen=True, slots=True)
class Register(Frame):
    phone: UserId


@_frame(FrameType.CONFIRM)
@dataclass(frozen=True, slots=True)
class Confirm(Frame):
    phone: UserId
    code: Code
    device_key: VerifyKey   # Ed25519 verify key of the new device


@_frame(FrameType.LOGIN)
@dataclass(frozen=True, slots=True)
class Login(Frame):
    user: UserId
    device: DeviceId
    signature: Signature    # Ed25519 over login_challenge(nonce, user, device)


@_frame(FrameType.SEND, trim=("media", "device"))
@dataclass(frozen=True, slots=True)
class Send(Frame):
    id: MsgId               # client-chosen; a retry with the same id is a no-op
    to: UserId
    body: Body
    media: MediaRefs = ()   # optional: hex SHA-256 of the blobs the (encrypted) body
                            # refers to, so the server can count references (blob GC)
    device: MaybeDevice = None  # optional: the recipient's device the body is sealed for;
                                # not the current one: STALE_DEVICE, nothing stored

    def __post_init__(self) -> None:
        _as_tuple(self, "media")


@_frame(FrameType.RECEIVED)
@dataclass(frozen=True, slots=True)
class Received(Frame):
    seqs: Seqs              # inbox items (MESSAGE, RECEIPT) the client now holds

    def __post_init__(self) -> None:
        _as_tuple(self, "seqs")


@_frame(FrameType.READ, trim=("group",))
@dataclass(frozen=True, slots=True)
class Read(Frame):
    peer: UserId            # the sender of the messages read
    ids: MsgIds
    group: MaybeGroup = None    # optional: they were messages of this group

    def __post_init__(self) -> None:
        _as_tuple(self, "ids")


@_frame(FrameType.SUBSCRIBE)
@dataclass(frozen=True, slots=True)
class Subscribe(Frame):
    users: UserIds

    def __post_init__(self) -> None:
        _as_tuple(self, "users")


@_frame(FrameType.TYPING)
@dataclass(frozen=True, slots=True)
class Typing(Frame):
    to: UserId
    typing: Flag


@_frame(FrameType.PING)
@dataclass(frozen=True, slots=True)
class Ping(Frame):
    pass


@_frame(FrameType.BYE)
@dataclass(frozen=True, slots=True)
class Bye(Frame):
    pass


@_frame(FrameType.KEYS_PUBLISH)
@dataclass(frozen=True, slots=True)
class KeysPublish(Frame):
    bundle: Bundle          # an e2e KeyBundle: replaces the signed part, adds its one-time prekeys


@_frame(FrameType.KEYS_FETCH, trim=("one_time",))
@dataclass(frozen=True, slots=True)
class KeysFetch(Frame):
    user: UserId            # ACK {"device": int, "bundle": bin} with at most one one-time prekey
    one_time: Flag = True   # optional: false, none is handed out (which device is current?)


@_frame(FrameType.KEYS_COUNT)
@dataclass(frozen=True, slots=True)
class KeysCount(Frame):
    pass                    # ACK: one-time prekeys left (int), or nil when no bundle is published


@_frame(FrameType.HELLO_OK, trim=("media",))
@dataclass(frozen=True, slots=True)
class HelloOk(Frame):
    version: Version
    heartbeat: Heartbeat    # negotiated, seconds
    nonce: Nonce            # login challenge nonce, fresh per connection
    max_frame: Annotated[int, _int(1, _U32)]
    media: MaybePort = None  # this node's media HTTP port (same host); omitted if nil


@_frame(FrameType.ACK)
@dataclass(frozen=True, slots=True)
class Ack(Frame):
    value: AckValue = None  # nil | bool | int | str<=256 | map of <=16 scalars


@_frame(FrameType.ERROR, trim=("retry_after", "redirect"))
@dataclass(frozen=True, slots=True)
class Error(Frame):
    code: ErrCode
    message: ErrorText
    retry_after: MaybeMillis = None     # RATE_LIMITED: ms until a retry can pass; omitted if nil
    redirect: Redirect = None           # WRONG_NODE: [host, port] of the user's home; omitted if nil

    def __post_init__(self) -> None:
        if self.redirect is not None:
            _as_tuple(self, "redirect")


def wrong_node(ref: int, host: str, port: int) -> Error:
    """The ERROR WRONG_NODE (fatal: close after sending it) that answers a
    REGISTER, CONFIRM or LOGIN (``ref``) reaching a node that is not the
    user's home: the client connects to ``host``:``port`` and repeats the
    step there. ValueError if the address would not pass the decoder."""
    frame = Error(ErrorCode.WRONG_NODE, f"not this user's node: go to {host}:{port}"[:256],
                  redirect=(host, port), ref=ref)
    try:
        return validate(frame)
    except FrameError as error:
        raise ValueError(f"wrong_node: {error.message}") from None


@_frame(FrameType.MESSAGE, pushed=True, trim=("group",))
@dataclass(frozen=True, slots=True)
class Message(Frame):
    seq: Seq                # the recipient's inbox sequence number
    id: MsgId
    sender: UserId
    ts: Millis              # server time of the durable commit
    body: Body
    group: MaybeGroup = None    # a group message: the group it was sent to


@_frame(FrameType.RECEIPT, pushed=True, trim=("group",))
@dataclass(frozen=True, slots=True)
class Receipt(Frame):
    seq: Seq
    kind: Kind
    id: MsgId               # the message this receipt is about
    by: UserId              # who received / read it
    ts: Millis
    group: MaybeGroup = None    # the message went to this group (one receipt per member)


@_frame(FrameType.PRESENCE, pushed=True)
@dataclass(frozen=True, slots=True)
class Presence(Frame):
    user: UserId
    online: Flag
    last_seen: MaybeMillis = None


@_frame(FrameType.TYPING_EVENT, pushed=True)
@dataclass(frozen=True, slots=True)
class TypingEvent(Frame):
    sender: UserId
    typing: Flag


@_frame(FrameType.KEY_CHANGED, pushed=True)
@dataclass(frozen=True, slots=True)
class KeyChanged(Frame):
    seq: Seq                # an inbox item: acknowledge it with RECEIVED
    user: UserId            # who registered a new device (new identity key)
    device: DeviceId        # the new device id
    ts: Millis


# -- groups (docs/protocol.md, "Groups") -------------------------------------

@_frame(FrameType.GROUP_CREATE)
@dataclass(frozen=True, slots=True)
class GroupCreate(Frame):
    key: GroupKey           # client-chosen; the group's id is "<creator>/<key>"
    name: GroupName
    members: GroupUsers     # besides the creator, who is the first admin

    def __post_init__(self) -> None:
        _as_tuple(self, "members")


@_frame(FrameType.GROUP_ADD)
@dataclass(frozen=True, slots=True)
class GroupAdd(Frame):
    group: GroupId
    users: GroupUsers

    def __post_init__(self) -> None:
        _as_tuple(self, "users")


@_frame(FrameType.GROUP_REMOVE)
@dataclass(frozen=True, slots=True)
class GroupRemove(Frame):
    group: GroupId
    users: GroupUsers

    def __post_init__(self) -> None:
        _as_tuple(self, "users")


@_frame(FrameType.GROUP_LEAVE)
@dataclass(frozen=True, slots=True)
class GroupLeave(Frame):
    group: GroupId


@_frame(FrameType.GROUP_ADMIN)
@dataclass(frozen=True, slots=True)
class GroupAdmin(Frame):
    group: GroupId
    user: UserId
    admin: Flag             # true: promote, false: demote


@_frame(FrameType.GROUP_RENAME)
@dataclass(frozen=True, slots=True)
class GroupRename(Frame):
    group: GroupId
    name: GroupName


@_frame(FrameType.GROUP_SEND)
@dataclass(frozen=True, slots=True)
class GroupSend(Frame):
    id: MsgId               # client-chosen, shares SEND's ids: a retry is a no-op
    group: GroupId
    body: Body


@_frame(FrameType.GROUP_INFO)
@dataclass(frozen=True, slots=True)
class GroupInfo(Frame):
    group: MaybeGroup = None    # nil: every group the user is in


@_frame(FrameType.GROUP_EVENT, pushed=True)
@dataclass(frozen=True, slots=True)
class GroupEvent(Frame):
    seq: Seq                # an inbox item: acknowledged with RECEIVED
    group: GroupId
    event: EventKind
    by: UserId              # who did it (MISSED: the sender of the last missed message)
    users: GroupUsers       # whom it was done to
    name: GroupName         # the group's name after the change
    ts: Millis
    count: Count = 0        # MISSED: how many messages

    def __post_init__(self) -> None:
        _as_tuple(self, "users")


@_frame(FrameType.GROUP_STATE, pushed=True)
@dataclass(frozen=True, slots=True)
class GroupState(Frame):
    group: GroupId
    name: GroupName
    created_by: UserId
    admins: Members
    members: Members        # in join order, oldest first
    version: Count          # counts committed changes

    def __post_init__(self) -> None:
        _as_tuple(self, "admins")
        _as_tuple(self, "members")


# -- blocking (docs/protocol.md, "Blocking") ---------------------------------

@_frame(FrameType.BLOCK)
@dataclass(frozen=True, slots=True)
class Block(Frame):
    user: UserId            # ACK nil: their 1:1 messages, presence and typing stop reaching us


@_frame(FrameType.UNBLOCK)
@dataclass(frozen=True, slots=True)
class Unblock(Frame):
    user: UserId            # ACK nil (also when not blocked)


@_frame(FrameType.BLOCKED)
@dataclass(frozen=True, slots=True)
class Blocked(Frame):
    pass                    # BLOCK_LIST frames, then ACK the number of users blocked


@_frame(FrameType.BLOCK_LIST, pushed=True)
@dataclass(frozen=True, slots=True)
class BlockList(Frame):
    users: BlockedUsers     # a page of the block list, in byte order of the ids

    def __post_init__(self) -> None:
        _as_tuple(self, "users")


CLIENT_FRAMES: Mapping[FrameType, type[Frame]] = MappingProxyType(
    {t: s.cls for t, s in _SPECS.items() if t < 64})
SERVER_FRAMES: Mapping[FrameType, type[Frame]] = MappingProxyType(
    {t: s.cls for t, s in _SPECS.items() if t >= 64})
_ACCEPT = {
    Side.CLIENT: {int(t): _SPECS[t] for t in CLIENT_FRAMES},
    Side.SERVER: {int(t): _SPECS[t] for t in SERVER_FRAMES},
}


# --- encode --------------------------------------------------------------
# One Packer for the module: pack() runs in C without calling back into
# Python (no ``default`` hook), so the GIL makes it safe to share.
_pack = msgpack.Packer(use_bin_type=True, datetime=False).pack
_header = struct.Struct(">I")
_pack_header = _header.pack
_unpack_header = _header.unpack_from


def _spec_of(frame: Frame) -> _Spec:
    try:
        return _BY_CLASS[type(frame)]
    except KeyError:
        raise TypeError(f"not a wire frame: {type(frame).__name__}") from None


def encode(frame: Frame, *, max_frame: int = MAX_FRAME) -> bytes:
    """Header + msgpack body of ``frame``. Fields are not checked here (call
    ``validate`` for frames built from untrusted input); a body longer than
    ``max_frame`` raises FrameError(TOO_LARGE)."""
    spec = _spec_of(frame)
    values = spec.values(frame)
    if spec.trim:
        values = _trimmed(spec, frame, values)
    body = _pack((spec.cls.TYPE, *values))
    if len(body) > max_frame:
        raise FrameError(ErrorCode.TOO_LARGE,
                         f"{spec.name} frame of {len(body)} bytes > {max_frame}", frame.ref)
    return _pack_header(len(body)) + body


def _trimmed(spec: _Spec, frame: Frame, values: tuple) -> tuple:
    n = len(values)
    for name, default in spec.trim:
        if getattr(frame, name) != default:
            break
        n -= 1
    return values[:n]


# The server's hot path: the frames it sends most, packed straight from their
# fields without building the frame object. Same bytes as ``encode``.
def _framed(body: bytes, name: str, ref: int, max_frame: int) -> bytes:
    if len(body) > max_frame:
        raise FrameError(ErrorCode.TOO_LARGE, f"{name} frame of {len(body)} bytes > {max_frame}", ref)
    return _pack_header(len(body)) + body


def encode_ack(ref: int, value: Any = None, *, max_frame: int = MAX_FRAME) -> bytes:
    """``encode(Ack(value, ref=ref))``."""
    return _framed(_pack((65, ref, value)), "ACK", ref, max_frame)


def encode_message(seq: int, id: str, sender: str, ts: int, body: bytes,
                   group: str | None = None, *, max_frame: int = MAX_FRAME) -> bytes:
    """``encode(Message(seq, id, sender, ts, body, group))``."""
    items = ((67, 0, seq, id, sender, ts, body) if group is None
             else (67, 0, seq, id, sender, ts, body, group))
    return _framed(_pack(items), "MESSAGE", 0, max_frame)


def encode_receipt(seq: int, kind: int, id: str, by: str, ts: int,
                   group: str | None = None, *, max_frame: int = MAX_FRAME) -> bytes:
    """``encode(Receipt(seq, kind, id, by, ts, group))``."""
    items = ((68, 0, seq, int(kind), id, by, ts) if group is None
             else (68, 0, seq, int(kind), id, by, ts, group))
    return _framed(_pack(items), "RECEIPT", 0, max_frame)


# The load generator's hot path (bench/): the frames a client sends most.
def encode_send(ref: int, id: str, to: str, body: bytes) -> bytes:
    """``encode(Send(id, to, body, ref=ref))``."""
    return _framed(_pack((5, ref, id, to, body)), "SEND", ref, MAX_FRAME)


def encode_received(ref: int, seqs: tuple[int, ...] | list[int]) -> bytes:
    """``encode(Received(tuple(seqs), ref=ref))``."""
    return _framed(_pack((6, ref, seqs)), "RECEIVED", ref, MAX_FRAME)


def _unpack_raw(body: bytearray) -> tuple:
    try:
        return msgpack.unpackb(body, raw=False, use_list=False)
    except Exception as e:
        raise FrameError(ErrorCode.MALFORMED, f"bad msgpack body ({type(e).__name__})") from None


def encode_raw(obj: Any) -> bytes:
    """Frame any msgpack-able object, unchecked: for tests and protocol tools."""
    body = _pack(obj)
    return _pack_header(len(body)) + body


def validate(frame: Frame) -> Frame:
    """Run the decoder's field checks on a frame built in Python; returns the
    frame or raises FrameError(MALFORMED)."""
    spec, ref = _spec_of(frame), frame.ref
    if type(ref) is not int or not 0 <= ref <= _U32:
        raise FrameError(ErrorCode.MALFORMED, f"ref: expected an int in 0..{_U32}, got {_show(ref)}")
    spec.build((spec.cls.TYPE, *spec.values(frame)), ref)
    return frame


# --- decode --------------------------------------------------------------

def _reject_ext(code: int, data: bytes) -> Any:
    raise ValueError("ext types are not allowed")


def _decode(body: bytes | bytearray | memoryview, accept: dict[int, _Spec]) -> Frame:
    n = len(body)
    try:  # every limit bounded by the body's own length; no ext types at all
        items = msgpack.unpackb(
            body, raw=False, use_list=False, strict_map_key=True, timestamp=0,
            max_str_len=n, max_bin_len=n, max_array_len=n, max_map_len=n // 2,
            max_ext_len=0, ext_hook=_reject_ext)
    except Exception as e:
        raise FrameError(ErrorCode.MALFORMED, f"bad msgpack body ({type(e).__name__})") from None
    if type(items) is not tuple or len(items) < 2:
        raise FrameError(ErrorCode.MALFORMED, "a frame body must be an array [type, ref, ...]")
    ftype, ref = items[0], items[1]
    if type(ref) is not int or not 0 <= ref <= _U32:
        raise FrameError(ErrorCode.MALFORMED, f"ref: expected an int in 0..{_U32}, got {_show(ref)}")
    if type(ftype) is not int:
        raise FrameError(ErrorCode.MALFORMED, f"type: expected an int, got {_show(ftype)}", ref)
    spec = accept.get(ftype)
    if spec is None:
        why = (f"a {'client' if ftype < 64 else 'server'} frame ({_SPECS[ftype].name})"
               if ftype in _SPECS.keys() else "unknown")
        raise FrameError(ErrorCode.UNKNOWN_TYPE, f"frame type {ftype} is {why}", ref)
    return spec.build(items, ref)


def decode_body(body: bytes | bytearray | memoryview, sender: Side = Side.CLIENT) -> Frame:
    """Decode one msgpack body (no header) of a frame sent by ``sender``."""
    return _decode(body, _ACCEPT[Side(sender)])


def _decode_whole(data: bytes, sender: Side, max_frame: int) -> Frame:
    if len(data) < HEADER_SIZE:
        raise FrameError(ErrorCode.MALFORMED, "shorter than a frame header")
    (n,) = _unpack_header(data, 0)
    if n > max_frame:
        raise FrameError(ErrorCode.TOO_LARGE, f"frame of {n} bytes > {max_frame}")
    if len(data) != HEADER_SIZE + n:
        raise FrameError(ErrorCode.MALFORMED,
                         f"header says {n} bytes, {len(data) - HEADER_SIZE} follow")
    return _decode(memoryview(data)[HEADER_SIZE:], _ACCEPT[sender])


def decode_client_frame(data: bytes, *, max_frame: int = MAX_FRAME) -> Frame:
    """One whole frame (header + body) from a client: what a server accepts."""
    return _decode_whole(data, Side.CLIENT, max_frame)


def decode_server_frame(data: bytes, *, max_frame: int = MAX_FRAME) -> Frame:
    """One whole frame (header + body) from a server: what a client accepts."""
    return _decode_whole(data, Side.SERVER, max_frame)


class FrameDecoder:
    """Incremental decoder for one connection's byte stream.

    ``feed(chunk)`` returns every frame completed by the chunk (possibly
    none: a partial frame waits for more bytes). The cap is checked on the
    header, before any of the body is buffered. The first bad frame raises
    FrameError; the decoder then stays failed and raises it again (a new
    FrameError with the same code, message and ref, and no frames).

    ``raw`` (settable at any point of the stream): ``feed`` returns each
    frame's body as the msgpack array it is, ``(type, ref, *fields)`` in the
    order of the frame class's fields, unchecked. For a load generator that
    trusts the server it measures, as a C one would; never for a server.
    """

    __slots__ = ("_buf", "_accept", "_max_frame", "_error", "raw")

    def __init__(self, sender: Side = Side.CLIENT, *, max_frame: int = MAX_FRAME,
                 raw: bool = False) -> None:
        self._buf = bytearray()
        self._accept = _ACCEPT[Side(sender)]
        self._max_frame = max_frame
        self._error: tuple[ErrorCode, str, int] | None = None   # the failure, once failed
        self.raw = raw

    @property
    def pending(self) -> int:
        """Bytes buffered towards an incomplete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        if self._error is not None:
            raise FrameError(*self._error)
        buf = self._buf
        buf += data
        end, pos, frames = len(buf), 0, []
        max_frame, accept = self._max_frame, self._accept
        try:
            while end - pos >= HEADER_SIZE:
                (n,) = _unpack_header(buf, pos)
                if n > max_frame:
                    raise FrameError(ErrorCode.TOO_LARGE, f"frame of {n} bytes > {max_frame}")
                stop = pos + HEADER_SIZE + n
                if stop > end:
                    break
                if self.raw:
                    frames.append(_unpack_raw(buf[pos + HEADER_SIZE:stop]))
                else:
                    frames.append(_decode(buf[pos + HEADER_SIZE:stop], accept))
                pos = stop
        except FrameError as err:
            err.frames = frames
            # Kept as values, not as ``err``: once raised, its traceback holds
            # the caller's frame, and so the caller (which holds this decoder):
            # a reference cycle per bad stream, freed only by a full collection.
            self._error = (err.code, err.message, err.ref)
            del buf[:]
            raise
        if pos:
            del buf[:pos]   # CPython moves the start pointer: no copy of the rest
        return frames


# --- login ---------------------------------------------------------------

def login_challenge(nonce: bytes, user: str, device: int) -> bytes:
    """The bytes a LOGIN signature covers: b"switchboard-login-v1\\x00" +
    nonce (32 bytes, from HELLO_OK) + user (UTF-8) + b"\\x00" + device as an
    8-byte big-endian unsigned int."""
    if type(nonce) is not bytes or len(nonce) != 32:
        raise ValueError("nonce must be 32 bytes")
    if not isinstance(device, int) or not 1 <= device <= _I63:
        raise ValueError(f"device must be an int in 1..{_I63}")
    return _LOGIN_CONTEXT + nonce + user.encode() + b"\x00" + device.to_bytes(8, "big")

