"""transport.wire by example: every frame type round-trips, every field rule
rejects a bad value, the size cap bites on the header, and the incremental
decoder waits for whole frames. Properties (hypothesis) are in
test_wire_properties.py."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from transport import wire
from transport.wire import (
    CLIENT_FRAMES, FATAL, MAX_BODY, MAX_FRAME, PROTOCOL_VERSION, SERVER_FRAMES, Ack, Bye,
    Confirm, Error, ErrorCode, FrameDecoder, FrameError, FrameType, Hello, HelloOk, Login,
    Message, Ping, Presence, Read, Receipt, ReceiptKind, Received, Register, Send, Side,
    Subscribe, Typing, TypingEvent, KeyChanged, KeysCount, KeysFetch, KeysPublish, decode_body,
    decode_client_frame, decode_server_frame,
    encode, encode_raw, login_challenge, validate,
)

ALICE = "+4915112345678"
BOB = "+14155550123"

SAMPLES = {
    FrameType.HELLO: Hello(PROTOCOL_VERSION, 30.0, "switchboard-sdk/0.1", ref=1),
    FrameType.REGISTER: Register(ALICE, ref=2),
    FrameType.CONFIRM: Confirm(ALICE, "123456", bytes(range(32)), ref=3),
    FrameType.LOGIN: Login(ALICE, 1, bytes(64), ref=4),
    FrameType.SEND: Send("m-1", BOB, b"hello", ref=5),
    FrameType.RECEIVED: Received((1, 2, 3), ref=6),
    FrameType.READ: Read(BOB, ("m-1", "m_2"), ref=7),
    FrameType.SUBSCRIBE: Subscribe((BOB,), ref=8),
    FrameType.TYPING: Typing(BOB, True, ref=9),
    FrameType.PING: Ping(ref=10),
    FrameType.BYE: Bye(ref=2**32 - 1),
    FrameType.HELLO_OK: HelloOk(PROTOCOL_VERSION, 25.0, b"n" * 32, MAX_FRAME, ref=1),
    FrameType.ACK: Ack({"last_seen": 1_700_000_000_000, "note": "ok", "x": None}, ref=4),
    FrameType.ERROR: Error(ErrorCode.BAD_CODE, "wrong code", ref=3),
    FrameType.MESSAGE: Message(1, "m-1", ALICE, 1_700_000_000_000, b"hello"),
    FrameType.RECEIPT: Receipt(2, ReceiptKind.READ, "m-1", BOB, 1_700_000_000_001),
    FrameType.PRESENCE: Presence(BOB, False, 1_700_000_000_002),
    FrameType.TYPING_EVENT: TypingEvent(ALICE, False),
    FrameType.KEYS_PUBLISH: KeysPublish(b"\x01" + bytes(230) + bytes(36), ref=11),
    FrameType.KEYS_FETCH: KeysFetch(BOB, ref=12),
    FrameType.KEYS_COUNT: KeysCount(ref=13),
    FrameType.KEY_CHANGED: KeyChanged(3, BOB, 2, 1_700_000_000_003),
    FrameType.GROUP_CREATE: wire.GroupCreate("team-1", "Team 1", (BOB,), ref=14),
    FrameType.GROUP_ADD: wire.GroupAdd(f"{ALICE}/team-1", (BOB,), ref=15),
    FrameType.GROUP_REMOVE: wire.GroupRemove(f"{ALICE}/team-1", (BOB,), ref=16),
    FrameType.GROUP_LEAVE: wire.GroupLeave(f"{ALICE}/team-1", ref=17),
    FrameType.GROUP_ADMIN: wire.GroupAdmin(f"{ALICE}/team-1", BOB, False, ref=18),
    FrameType.GROUP_RENAME: wire.GroupRename(f"{ALICE}/team-1", "Team \u00e9", ref=19),
    FrameType.GROUP_SEND: wire.GroupSend("m-9", f"{ALICE}/team-1", b"hi all", ref=20),
    FrameType.GROUP_INFO: wire.GroupInfo(None, ref=21),
    FrameType.GROUP_EVENT: wire.GroupEvent(4, f"{ALICE}/team-1", wire.GroupEventKind.ADDED,
                                           ALICE, (BOB,), "Team 1", 1_700_000_000_004),
    FrameType.GROUP_STATE: wire.GroupState(f"{ALICE}/team-1", "Team 1", ALICE, (ALICE,),
                                           (ALICE, BOB), 2),
    FrameType.BLOCK: wire.Block(BOB, ref=22),
    FrameType.UNBLOCK: wire.Unblock(BOB, ref=23),
    FrameType.BLOCKED: wire.Blocked(ref=24),
    FrameType.BLOCK_LIST: wire.BlockList((ALICE, BOB)),
}


def decode_from(frame_type: int):
    return decode_client_frame if frame_type < 64 else decode_server_frame


def raw(*items) -> bytes:
    return encode_raw(list(items))


# --- catalogue -----------------------------------------------------------

def test_samples_cover_every_frame_type():
    assert set(SAMPLES) == set(FrameType)
    assert set(CLIENT_FRAMES) | set(SERVER_FRAMES) == set(FrameType)
    assert not set(CLIENT_FRAMES) & set(SERVER_FRAMES)
    for t, frame in SAMPLES.items():
        assert type(frame).TYPE is t
        assert (CLIENT_FRAMES if t < 64 else SERVER_FRAMES)[t] is type(frame)


@pytest.mark.parametrize("frame_type", list(FrameType), ids=lambda t: t.name)
def test_round_trip(frame_type):
    frame = SAMPLES[frame_type]
    data = encode(frame)
    assert data[:4] == struct.pack(">I", len(data) - 4)
    assert decode_from(frame_type)(data) == frame
    assert validate(frame) is frame
    assert FrameDecoder(Side.CLIENT if frame_type < 64 else Side.SERVER).feed(data) == [frame]


def test_wire_layout_is_type_ref_then_fields_in_order():
    frame = Send("m-1", BOB, b"hi", ref=7)
    assert encode(frame) == raw(5, 7, "m-1", BOB, b"hi")
    assert [f.name for f in dataclasses.fields(Send)] == ["ref", "id", "to", "body", "media",
                                                          "device"]
    assert encode(Send("m-1", BOB, b"hi", ("ab" * 32,), ref=7)) == raw(5, 7, "m-1", BOB, b"hi", ["ab" * 32])
    # a device without media puts an empty media list before it; each is left off at its default
    assert encode(Send("m-1", BOB, b"hi", device=3, ref=7)) == raw(5, 7, "m-1", BOB, b"hi", [], 3)
    assert decode_client_frame(raw(5, 7, "m-1", BOB, b"hi", [], 3)).device == 3
    assert decode_client_frame(raw(5, 7, "m-1", BOB, b"hi", [], None)) == frame
    assert encode(KeysFetch(BOB, False, ref=7)) == raw(25, 7, BOB, False)
    assert encode(KeysFetch(BOB, True, ref=7)) == raw(25, 7, BOB)


def test_frames_are_frozen_and_hashable():
    frame = SAMPLES[FrameType.SEND]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.ref = 9
    assert hash(frame) == hash(Send("m-1", BOB, b"hello", ref=5))


def test_list_fields_become_tuples():
    assert Received([1, 2]).seqs == (1, 2)
    assert decode_client_frame(encode(Read(BOB, ["a", "b"]))).ids == ("a", "b")


def test_error_codes_and_fatal_set():
    assert [c.value for c in ErrorCode if c <= 16] == list(range(1, 17))
    assert {c.value for c in ErrorCode} >= {24, 25, 26, 27}     # the key directory's
    assert ErrorCode.STALE_DEVICE == 28 and not ErrorCode.STALE_DEVICE.fatal
    assert FATAL == {
        ErrorCode.MALFORMED, ErrorCode.TOO_LARGE, ErrorCode.UNKNOWN_TYPE,
        ErrorCode.UNSUPPORTED_VERSION, ErrorCode.OUT_OF_ORDER, ErrorCode.SESSION_REPLACED,
        ErrorCode.HEARTBEAT_TIMEOUT, ErrorCode.SHUTTING_DOWN, ErrorCode.SLOW_CONSUMER,
        ErrorCode.WRONG_NODE,
    }
    assert ErrorCode.MALFORMED.fatal and not ErrorCode.RATE_LIMITED.fatal


def test_optional_trailing_fields_may_be_omitted():
    assert decode_server_frame(raw(65, 3)) == Ack(ref=3)
    assert decode_server_frame(raw(69, 0, BOB, True)) == Presence(BOB, True)
    assert decode_server_frame(raw(69, 0, BOB, False, None)) == Presence(BOB, False, None)


def test_heartbeat_accepts_an_int_and_gives_a_float():
    frame = decode_client_frame(raw(1, 1, 1, 30, "c"))
    assert frame.heartbeat == 30.0 and type(frame.heartbeat) is float


def test_error_code_decodes_to_the_enum():
    frame = decode_server_frame(raw(66, 3, 7, "no"))
    assert frame.code is ErrorCode.BAD_CODE
    assert decode_server_frame(raw(68, 0, 1, 1, "m", BOB, 0)).kind is ReceiptKind.DELIVERED


# --- validation: one failing example per rule ------------------------------

PHONE_BAD = ["4915112345678", "+0915112345678", "+1234567", "+1234567890123456",
             "+49151a2345678", ALICE + "\n", "+١٢٣٤٥٦٧٨٩", "", 4915112345678, b"+4915112345678"]
ID_BAD = ["", "x" * 65, "m.1", "m 1", "méssage", "m/1", 1, b"m-1", None]

C, S = "client", "server"
M, T, U = ErrorCode.MALFORMED, ErrorCode.TOO_LARGE, ErrorCode.UNKNOWN_TYPE

INVALID = [
    # body shape
    ("map body", C, {"type": 5}, M),
    ("int body", C, 5, M),
    ("str body", C, "hello", M),
    ("empty array", C, [], M),
    ("type only", C, [10], M),
    # ref
    ("ref negative", C, [10, -1], M),
    ("ref too big", C, [10, 2**32], M),
    ("ref bool", C, [10, True], M),
    ("ref str", C, [10, "1"], M),
    ("ref float", C, [10, 1.0], M),
    # type
    ("type str", C, ["PING", 1], M),
    ("type bool", C, [True, 1], M),
    ("type unknown", C, [99, 1], U),
    ("type zero", C, [0, 1], U),
    ("server frame from client", C, [65, 1, None], U),
    ("client frame from server", S, [10, 1], U),
    # field count
    ("PING extra field", C, [10, 1, None], M),
    ("SEND too few", C, [5, 1, "m", BOB], M),
    ("SEND too many", C, [5, 1, "m", BOB, b"x", b"y"], M),
    ("ACK too many", S, [65, 1, None, None], M),
    ("PRESENCE too few", S, [69, 0, BOB], M),
    # HELLO
    ("HELLO version negative", C, [1, 1, -1, 30.0, "c"], M),
    ("HELLO version bool", C, [1, 1, True, 30.0, "c"], M),
    ("HELLO version str", C, [1, 1, "1", 30.0, "c"], M),
    ("HELLO heartbeat low", C, [1, 1, 1, 0.5, "c"], M),
    ("HELLO heartbeat high", C, [1, 1, 1, 300.5, "c"], M),
    ("HELLO heartbeat nan", C, [1, 1, 1, float("nan"), "c"], M),
    ("HELLO heartbeat inf", C, [1, 1, 1, float("inf"), "c"], M),
    ("HELLO heartbeat bool", C, [1, 1, 1, True, "c"], M),
    ("HELLO heartbeat str", C, [1, 1, 1, "30", "c"], M),
    ("HELLO client too long", C, [1, 1, 1, 30.0, "c" * 65], M),
    ("HELLO client bytes", C, [1, 1, 1, 30.0, b"c"], M),
    # REGISTER / CONFIRM
    *[(f"REGISTER phone {p!r}", C, [2, 1, p], M) for p in PHONE_BAD],
    ("CONFIRM code short", C, [3, 1, ALICE, "123", bytes(32)], M),
    ("CONFIRM code long", C, [3, 1, ALICE, "1" * 11, bytes(32)], M),
    ("CONFIRM code letters", C, [3, 1, ALICE, "12a4", bytes(32)], M),
    ("CONFIRM code int", C, [3, 1, ALICE, 1234, bytes(32)], M),
    ("CONFIRM key short", C, [3, 1, ALICE, "1234", bytes(31)], M),
    ("CONFIRM key long", C, [3, 1, ALICE, "1234", bytes(33)], M),
    ("CONFIRM key str", C, [3, 1, ALICE, "1234", "k" * 32], M),
    ("CONFIRM phone bad", C, [3, 1, "+1", "1234", bytes(32)], M),
    # LOGIN
    ("LOGIN user bad", C, [4, 1, "alice", 1, bytes(64)], M),
    ("LOGIN device zero", C, [4, 1, ALICE, 0, bytes(64)], M),
    ("LOGIN device negative", C, [4, 1, ALICE, -1, bytes(64)], M),
    ("LOGIN device 2**63", C, [4, 1, ALICE, 2**63, bytes(64)], M),
    ("LOGIN device bool", C, [4, 1, ALICE, True, bytes(64)], M),
    ("LOGIN signature short", C, [4, 1, ALICE, 1, bytes(63)], M),
    ("LOGIN signature long", C, [4, 1, ALICE, 1, bytes(65)], M),
    # SEND
    *[(f"SEND id {i!r}", C, [5, 1, i, BOB, b"x"], M) for i in ID_BAD],
    *[(f"SEND to {p!r}", C, [5, 1, "m", p, b"x"], M) for p in PHONE_BAD],
    ("SEND body str", C, [5, 1, "m", BOB, "x"], M),
    ("SEND body too big", C, [5, 1, "m", BOB, bytes(MAX_BODY + 1)], M),
    ("SEND device 0", C, [5, 1, "m", BOB, b"x", [], 0], M),
    ("SEND device str", C, [5, 1, "m", BOB, b"x", [], "1"], M),
    ("SEND device bool", C, [5, 1, "m", BOB, b"x", [], True], M),
    ("SEND device without media", C, [5, 1, "m", BOB, b"x", 1], M),
    ("SEND too many after device", C, [5, 1, "m", BOB, b"x", [], 1, 1], M),
    ("KEYS_FETCH one_time int", C, [25, 1, BOB, 0], M),
    # RECEIVED
    ("RECEIVED empty", C, [6, 1, []], M),
    ("RECEIVED too many", C, [6, 1, list(range(1, 1026))], M),
    ("RECEIVED seq zero", C, [6, 1, [1, 0]], M),
    ("RECEIVED seq bool", C, [6, 1, [True]], M),
    ("RECEIVED seq str", C, [6, 1, ["1"]], M),
    ("RECEIVED seq 2**63", C, [6, 1, [2**63]], M),
    ("RECEIVED not a list", C, [6, 1, 5], M),
    ("RECEIVED a map", C, [6, 1, {"1": 1}], M),
    # READ / SUBSCRIBE / TYPING
    ("READ peer bad", C, [7, 1, "bob", ["m"]], M),
    ("READ ids empty", C, [7, 1, BOB, []], M),
    ("READ ids too many", C, [7, 1, BOB, ["m"] * 1025], M),
    ("READ id bad", C, [7, 1, BOB, ["m", "m.2"]], M),
    ("READ ids str", C, [7, 1, BOB, "m"], M),
    ("SUBSCRIBE empty", C, [8, 1, []], M),
    ("SUBSCRIBE too many", C, [8, 1, [BOB] * 257], M),
    ("SUBSCRIBE user bad", C, [8, 1, [BOB, "bob"]], M),
    ("TYPING to bad", C, [9, 1, "bob", True], M),
    ("TYPING flag int", C, [9, 1, BOB, 1], M),
    ("TYPING flag nil", C, [9, 1, BOB, None], M),
    # HELLO_OK
    ("HELLO_OK heartbeat zero", S, [64, 1, 1, 0.0, bytes(32), MAX_FRAME], M),
    ("HELLO_OK nonce short", S, [64, 1, 1, 30.0, bytes(31), MAX_FRAME], M),
    ("HELLO_OK max_frame zero", S, [64, 1, 1, 30.0, bytes(32), 0], M),
    ("HELLO_OK max_frame 2**32", S, [64, 1, 1, 30.0, bytes(32), 2**32], M),
    # ACK
    ("ACK float", S, [65, 1, 1.5], M),
    ("ACK list", S, [65, 1, [1]], M),
    ("ACK bytes too long", S, [65, 1, b"x" * (MAX_BODY + 1)], M),
    ("ACK str too long", S, [65, 1, "x" * 257], M),
    ("ACK map too big", S, [65, 1, {f"k{i}": i for i in range(17)}], M),
    ("ACK map nested", S, [65, 1, {"k": {"a": 1}}], M),
    ("ACK map list value", S, [65, 1, {"k": [1]}], M),
    ("ACK map bytes key", S, [65, 1, {b"k": 1}], M),
    ("ACK map bad key", S, [65, 1, {"a-b": 1}], M),
    ("ACK map empty key", S, [65, 1, {"": 1}], M),
    ("ACK map int key", S, [65, 1, {1: 1}], M),
    # ERROR
    ("ERROR unknown code", S, [66, 1, 999, "x"], M),
    ("ERROR code zero", S, [66, 1, 0, "x"], M),
    ("ERROR code str", S, [66, 1, "MALFORMED", "x"], M),
    ("ERROR message too long", S, [66, 1, 1, "x" * 257], M),
    ("ERROR message nil", S, [66, 1, 1, None], M),
    # pushed frames
    ("MESSAGE ref not 0", S, [67, 1, 1, "m", ALICE, 0, b"x"], M),
    ("MESSAGE seq zero", S, [67, 0, 0, "m", ALICE, 0, b"x"], M),
    ("MESSAGE id bad", S, [67, 0, 1, "m!", ALICE, 0, b"x"], M),
    ("MESSAGE sender bad", S, [67, 0, 1, "m", "alice", 0, b"x"], M),
    ("MESSAGE ts negative", S, [67, 0, 1, "m", ALICE, -1, b"x"], M),
    ("MESSAGE ts float", S, [67, 0, 1, "m", ALICE, 1.0, b"x"], M),
    ("MESSAGE body too big", S, [67, 0, 1, "m", ALICE, 0, bytes(MAX_BODY + 1)], M),
    ("RECEIPT ref not 0", S, [68, 5, 1, 1, "m", BOB, 0], M),
    ("RECEIPT kind 4", S, [68, 0, 1, 4, "m", BOB, 0], M),
    ("RECEIPT kind 0", S, [68, 0, 1, 0, "m", BOB, 0], M),
    ("RECEIPT kind bool", S, [68, 0, 1, True, "m", BOB, 0], M),
    ("RECEIPT by bad", S, [68, 0, 1, 1, "m", "bob", 0], M),
    ("PRESENCE online int", S, [69, 0, BOB, 1, None], M),
    ("PRESENCE last_seen str", S, [69, 0, BOB, True, "yesterday"], M),
    ("PRESENCE last_seen negative", S, [69, 0, BOB, True, -5], M),
    ("TYPING_EVENT ref not 0", S, [70, 1, ALICE, True], M),
    ("TYPING_EVENT typing nil", S, [70, 0, ALICE, None], M),
]


@pytest.mark.parametrize("sender, items, code", [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid_frame_is_rejected(sender, items, code):
    data = encode_raw(items)
    decode = decode_client_frame if sender == C else decode_server_frame
    with pytest.raises(FrameError) as info:
        decode(data)
    assert info.value.code is code
    # the incremental decoder says the same
    with pytest.raises(FrameError) as info:
        FrameDecoder(Side(sender)).feed(data)
    assert info.value.code is code


ACCEPTED_EDGES = [
    (C, [2, 0, "+12345678"]),                                  # shortest E.164
    (C, [2, 0, "+123456789012345"]),                           # longest E.164
    (C, [1, 0, 0, 1.0, ""]),                                   # heartbeat lower bound
    (C, [1, 0, 2**32 - 1, 300.0, "c" * 64]),                   # upper bounds
    (C, [3, 0, ALICE, "1234", bytes(32)]),
    (C, [3, 0, ALICE, "1234567890", bytes(32)]),
    (C, [4, 0, ALICE, 2**63 - 1, bytes(64)]),
    (C, [5, 0, "x" * 64, BOB, bytes(MAX_BODY)]),
    (C, [5, 0, "aZ09_-", BOB, b""]),
    (C, [6, 0, list(range(1, 1025))]),
    (C, [8, 0, [BOB] * 256]),
    (S, [65, 0, -(2**63)]),
    (S, [65, 0, 2**64 - 1]),
    (S, [65, 0, True]),
    (S, [65, 0, "x" * 256]),
    (S, [65, 0, {f"k{i}": "v" * 256 for i in range(16)}]),
    (S, [65, 0, {}]),
]


@pytest.mark.parametrize("sender, items", ACCEPTED_EDGES)
def test_values_at_the_bounds_are_accepted(sender, items):
    frame = (decode_client_frame if sender == C else decode_server_frame)(encode_raw(items))
    assert encode(frame) == encode_raw(items)


@pytest.mark.parametrize("body", [
    b"",                                   # empty body
    b"\x93\x0a\x01",                       # array of 3, only 2 items present
    b"\x92\x0a\x01\xc0",                   # trailing byte after the array
    b"\x93\x02\x01\xa2\xff\xfe",           # invalid UTF-8 in a str
    b"\x93\x41\x01\xd4\x01\x00",           # ext type (fixext 1)
    b"\x93\x41\x01\xd6\xff\x00\x00\x00\x00",  # the msgpack Timestamp ext
    b"\xc1",                               # never-used byte
    b"\x92\x0a\xdd\xff\xff\xff\xff",       # array32 claiming 4G items
    b"\x91" * 5000,                        # deeply nested arrays
], ids=["empty", "short-array", "trailing", "utf8", "ext", "timestamp", "c1", "huge-array",
        "deep"])
def test_bad_msgpack_is_malformed(body):
    for sender in Side:
        with pytest.raises(FrameError) as info:
            decode_body(body, sender)
        assert info.value.code is ErrorCode.MALFORMED


def test_whole_frame_length_must_match_the_header():
    data = encode(Ping(ref=1))
    for bad in (data[:3], data[:-1], data + b"\x00"):
        with pytest.raises(FrameError) as info:
            decode_client_frame(bad)
        assert info.value.code is ErrorCode.MALFORMED


def test_error_carries_the_ref_when_readable():
    with pytest.raises(FrameError) as info:
        decode_client_frame(raw(5, 42, "m", "bob", b""))
    assert info.value.ref == 42
    assert "SEND.to" in str(info.value) and info.value.code is ErrorCode.MALFORMED
    with pytest.raises(FrameError) as info:
        decode_client_frame(raw(67, 43, 1, "m", ALICE, 0, b""))
    assert (info.value.code, info.value.ref) == (ErrorCode.UNKNOWN_TYPE, 43)
    with pytest.raises(FrameError) as info:
        decode_client_frame(raw(5, -1, "m", BOB, b""))
    assert info.value.ref == 0


def test_error_message_does_not_echo_big_values():
    with pytest.raises(FrameError) as info:
        decode_client_frame(raw(5, 1, "m", BOB, "x" * 10_000))
    assert len(str(info.value)) < 200


def test_validate_rejects_bad_python_frames():
    for frame in (Send("bad id", BOB, b""), Register("12345"), Typing(BOB, 1),
                  Received([]), Error(99, "x"), Ping(ref=-1), Message(1, "m", ALICE, 0, b"", ref=3)):
        with pytest.raises(FrameError):
            validate(frame)
    with pytest.raises(TypeError):
        encode(object())


def test_client_cannot_send_any_server_frame():
    for t, frame in SAMPLES.items():
        if t >= 64:
            with pytest.raises(FrameError) as info:
                decode_client_frame(encode(frame))
            assert info.value.code is ErrorCode.UNKNOWN_TYPE
        else:
            with pytest.raises(FrameError) as info:
                decode_server_frame(encode(frame))
            assert info.value.code is ErrorCode.UNKNOWN_TYPE


# --- the size cap ----------------------------------------------------------

def frame_of_body_size(size: int) -> bytes:
    """A valid READ frame whose body is exactly ``size`` bytes."""
    for count in range(max(1, size // 66 - 4), 1025):  # 66 = a 64-char id, packed
        for last in range(1, 65):
            data = encode(Read(BOB, ["i" * 64] * (count - 1) + ["j" * last]), max_frame=2**20)
            if len(data) - 4 == size:
                return data
            if len(data) - 4 > size:
                break
    raise AssertionError(size)


def test_frame_of_exactly_max_frame_is_accepted():
    data = frame_of_body_size(MAX_FRAME)
    assert data[:4] == struct.pack(">I", MAX_FRAME)
    decoder = FrameDecoder(Side.CLIENT)
    assert decoder.feed(data[:4]) == []          # the header alone: no error, waits
    assert decoder.pending == 4
    [frame] = decoder.feed(data[4:])
    assert isinstance(frame, Read) and decoder.pending == 0
    assert decode_client_frame(data) == frame
    assert encode(frame) == data


def test_header_over_max_frame_is_rejected_before_the_body():
    decoder = FrameDecoder(Side.CLIENT)
    with pytest.raises(FrameError) as info:
        decoder.feed(struct.pack(">I", MAX_FRAME + 1))
    assert info.value.code is ErrorCode.TOO_LARGE
    with pytest.raises(FrameError) as info:
        decode_client_frame(struct.pack(">I", MAX_FRAME + 1))
    assert info.value.code is ErrorCode.TOO_LARGE


def test_huge_header_does_not_buffer_the_body():
    decoder = FrameDecoder(Side.CLIENT)
    with pytest.raises(FrameError) as info:
        decoder.feed(b"\xff\xff\xff\xff" + bytes(100))
    assert info.value.code is ErrorCode.TOO_LARGE
    assert decoder.pending == 0


def test_cap_is_per_decoder():
    small = FrameDecoder(Side.CLIENT, max_frame=100)
    with pytest.raises(FrameError) as info:
        small.feed(encode(Send("m", BOB, bytes(200)))[:4])
    assert info.value.code is ErrorCode.TOO_LARGE
    big = FrameDecoder(Side.CLIENT, max_frame=2**20)
    too_big_for_default = encode(Read(BOB, ["i" * 64] * 1024), max_frame=2**20)
    assert len(big.feed(too_big_for_default)) == 1


def test_encode_refuses_a_frame_over_the_cap():
    with pytest.raises(FrameError) as info:
        encode(Read(BOB, ["i" * 64] * 1024))   # 1024 ids of 64 chars: ~67 KB
    assert info.value.code is ErrorCode.TOO_LARGE


# --- FrameDecoder ----------------------------------------------------------

def client_stream() -> tuple[list, bytes]:
    frames = [f for t, f in SAMPLES.items() if t < 64]
    return frames, b"".join(encode(f) for f in frames)


def test_decoder_many_frames_in_one_chunk():
    frames, stream = client_stream()
    assert FrameDecoder(Side.CLIENT).feed(stream) == frames


def test_decoder_byte_by_byte():
    frames, stream = client_stream()
    decoder, out = FrameDecoder(Side.CLIENT), []
    for i in range(len(stream)):
        out += decoder.feed(stream[i:i + 1])
    assert out == frames and decoder.pending == 0


def test_truncated_frame_waits_for_more_bytes():
    data = encode(SAMPLES[FrameType.SEND])
    decoder = FrameDecoder(Side.CLIENT)
    assert decoder.feed(data[:-1]) == []
    assert decoder.pending == len(data) - 1
    assert decoder.feed(b"") == []
    assert decoder.feed(data[-1:]) == [SAMPLES[FrameType.SEND]]
    assert decoder.pending == 0


def test_decoder_accepts_memoryview_and_bytearray():
    data = encode(SAMPLES[FrameType.PING])
    assert FrameDecoder().feed(memoryview(data)) == [SAMPLES[FrameType.PING]]
    assert FrameDecoder().feed(bytearray(data)) == [SAMPLES[FrameType.PING]]


def test_decoder_keeps_good_frames_before_a_bad_one_and_stays_failed():
    good = encode(Ping(ref=1)) + encode(Ping(ref=2))
    decoder = FrameDecoder(Side.CLIENT)
    with pytest.raises(FrameError) as info:
        decoder.feed(good + raw(5, 3, "bad id", BOB, b"") + encode(Ping(ref=4)))
    assert info.value.frames == [Ping(ref=1), Ping(ref=2)]
    assert info.value.ref == 3
    with pytest.raises(FrameError) as again:      # the same error; its good frames were given
        decoder.feed(encode(Ping(ref=5)))
    assert (again.value.code, again.value.message, again.value.ref, again.value.frames) == \
        (info.value.code, info.value.message, 3, [])


def test_server_side_decoder():
    frames = [f for t, f in SAMPLES.items() if t >= 64]
    stream = b"".join(encode(f) for f in frames)
    assert FrameDecoder(Side.SERVER).feed(stream) == frames
    with pytest.raises(FrameError):
        FrameDecoder(Side.SERVER).feed(encode(Ping(ref=1)))


# --- login challenge -------------------------------------------------------

def test_login_challenge_bytes():
    nonce = bytes(range(32))
    assert login_challenge(nonce, ALICE, 1) == (
        b"switchboard-login-v1\x00" + nonce + ALICE.encode() + b"\x00"
        + b"\x00\x00\x00\x00\x00\x00\x00\x01")
    assert login_challenge(nonce, ALICE, 2**63 - 1).endswith(b"\x7f" + b"\xff" * 7)


@pytest.mark.parametrize("nonce, device", [(bytes(31), 1), ("x" * 32, 1), (bytes(32), 0),
                                           (bytes(32), 2**63)])
def test_login_challenge_rejects_bad_input(nonce, device):
    with pytest.raises(ValueError):
        login_challenge(nonce, ALICE, device)


def test_only_the_two_codecs_import_msgpack():
    """STYLE 5: one place for the wire protocol (transport/wire.py), and one
    place for the encoding of stored values (storage/records.py); no other
    module speaks msgpack."""
    import pathlib
    root = pathlib.Path(wire.__file__).resolve().parents[1]
    allowed = {root / "transport" / "wire.py", root / "storage" / "records.py"}
    files = [root / "run.py"] + [p for d in ("transport", "actors", "supervisor", "storage",
                                             "client", "web", "bench")
                                 for p in (root / d).rglob("*.py")]
    offenders = [
        str(p.relative_to(root)) for p in files
        if p.exists() and p.resolve() not in allowed
        and any(line.split("#")[0].strip().startswith(("import msgpack", "from msgpack"))
                for line in p.read_text(encoding="utf-8", errors="replace").splitlines())
    ]
    assert offenders == []


def test_the_largest_group_state_fits_a_frame():
    # every member of a group at the cap listed twice (all admins), longest ids and name
    members = tuple(f"+1{i:014d}" for i in range(wire.MAX_GROUP))
    frame = wire.GroupState("+123456789012345/" + "k" * 32, "n" * 100, "+123456789012345",
                            members, members, 2**32 - 1)
    assert len(encode(frame)) <= MAX_FRAME
    assert decode_server_frame(encode(frame)) == frame


def test_a_block_list_page_is_bounded_and_fits_a_frame():
    """BLOCK_LIST carries at most MAX_BLOCK_LIST ids; a full page of the
    longest ids fits the frame cap; one more id is MALFORMED."""
    longest = [f"+1{i:014d}" for i in range(wire.MAX_BLOCK_LIST + 1)]
    full = wire.BlockList(tuple(longest[:-1]))
    assert decode_server_frame(encode(full)) == full
    with pytest.raises(FrameError) as error:
        decode_server_frame(raw(FrameType.BLOCK_LIST, 0, longest))
    assert error.value.code is ErrorCode.MALFORMED
    with pytest.raises(FrameError):                     # a user id, strictly
        decode_client_frame(raw(FrameType.BLOCK, 1, "bob"))
