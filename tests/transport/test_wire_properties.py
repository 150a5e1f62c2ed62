"""transport.wire under hypothesis: random valid frames round-trip, any
chunking of a stream decodes to the same frames, and no input whatsoever
makes the decoder raise anything but FrameError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transport import wire
from transport.wire import (
    MAX_BODY, Ack, Bye, Confirm, Error, ErrorCode, Frame, FrameDecoder, FrameError, Hello,
    HelloOk, Login, Message, Ping, Presence, Read, Receipt, ReceiptKind, Received, Register,
    KeyChanged, KeysCount, KeysFetch, KeysPublish, MAX_PUBLISH,
    Send, Side, Subscribe, Typing, TypingEvent, decode_body, decode_client_frame,
    decode_server_frame, encode, encode_raw,
)
from transport.wire import (GroupAdd, GroupAdmin, GroupCreate, GroupEvent, GroupEventKind,
                            GroupInfo, GroupLeave, GroupRemove, GroupRename, GroupSend, GroupState)

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STREAMS = settings(SETTINGS, max_examples=100)

# --- valid field values ------------------------------------------------------
refs = st.integers(0, 2**32 - 1)
users = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)
msg_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
bodies = st.one_of(st.binary(max_size=300),  # and, cheaply, some at the cap
                   st.integers(MAX_BODY - 10, MAX_BODY).map(lambda n: b"\xab" * n))
seqs = st.integers(1, 2**63 - 1)
millis = st.integers(0, 2**63 - 1)
heartbeats = st.floats(1.0, 300.0, allow_nan=False)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                    st.text(max_size=256), st.binary(max_size=400))
blob_hashes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
bundles = st.integers(0, MAX_PUBLISH).flatmap(      # any bytes of a valid bundle length
    lambda n: st.binary(min_size=231 + 36 * n, max_size=231 + 36 * n))
ack_values = st.one_of(scalars, st.dictionaries(
    st.from_regex(r"[A-Za-z0-9_]{1,64}", fullmatch=True), scalars, max_size=16))


group_keys = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
group_ids = st.builds(lambda u, k: f"{u}/{k}", users, group_keys)
group_names = st.text(min_size=1, max_size=100)
group_users = st.lists(users, max_size=20).map(tuple)


def with_ref(cls, *fields):
    return st.builds(cls, *fields, ref=refs)


def pushed(cls, *fields):
    return st.builds(cls, *fields)


client_frames = st.one_of(
    with_ref(Hello, st.integers(0, 2**32 - 1), heartbeats, st.text(max_size=64)),
    with_ref(Register, users),
    with_ref(Confirm, users, st.from_regex(r"[0-9]{4,10}", fullmatch=True),
             st.binary(min_size=32, max_size=32)),
    with_ref(Login, users, st.integers(1, 2**63 - 1), st.binary(min_size=64, max_size=64)),
    with_ref(Send, msg_ids, users, bodies),
    with_ref(Send, msg_ids, users, bodies, st.lists(blob_hashes, max_size=16).map(tuple)),
    with_ref(KeysPublish, bundles),
    with_ref(KeysFetch, users),
    with_ref(KeysCount),
    with_ref(Received, st.lists(seqs, min_size=1, max_size=50).map(tuple)),
    with_ref(Read, users, st.lists(msg_ids, min_size=1, max_size=20).map(tuple)),
    with_ref(Subscribe, st.lists(users, min_size=1, max_size=20).map(tuple)),
    with_ref(Typing, users, st.booleans()),
    with_ref(Ping),
    with_ref(Bye),
    with_ref(Read, users, st.lists(msg_ids, min_size=1, max_size=20).map(tuple), group_ids),
    with_ref(GroupCreate, group_keys, group_names, group_users),
    with_ref(GroupAdd, group_ids, group_users),
    with_ref(GroupRemove, group_ids, group_users),
    with_ref(GroupLeave, group_ids),
    with_ref(GroupAdmin, group_ids, users, st.booleans()),
    with_ref(GroupRename, group_ids, group_names),
    with_ref(GroupSend, msg_ids, group_ids, bodies),
    with_ref(GroupInfo, st.one_of(st.none(), group_ids)),
    with_ref(wire.Block, users),
    with_ref(wire.Unblock, users),
    with_ref(wire.Blocked),
)
server_frames = st.one_of(
    with_ref(HelloOk, st.integers(0, 2**32 - 1), heartbeats, st.binary(min_size=32, max_size=32),
             st.integers(1, 2**32 - 1)),
    with_ref(Ack, ack_values),
    with_ref(Error, st.sampled_from(ErrorCode), st.text(max_size=256)),
    pushed(Message, seqs, msg_ids, users, millis, bodies),
    pushed(Receipt, seqs, st.sampled_from(ReceiptKind), msg_ids, users, millis),
    pushed(Presence, users, st.booleans(), st.one_of(st.none(), millis)),
    pushed(TypingEvent, users, st.booleans()),
    pushed(KeyChanged, seqs, users, st.integers(1, 2**63 - 1), millis),
    pushed(Message, seqs, msg_ids, users, millis, bodies, group_ids),
    pushed(Receipt, seqs, st.sampled_from(ReceiptKind), msg_ids, users, millis, group_ids),
    pushed(GroupEvent, seqs, group_ids, st.sampled_from(GroupEventKind), users, group_users,
           group_names, millis, st.integers(0, 2**32 - 1)),
    pushed(GroupState, group_ids, group_names, users, group_users, group_users,
           st.integers(0, 2**32 - 1)),
    pushed(wire.BlockList, group_users),
)


@SETTINGS
@given(client_frames)
def test_client_frames_round_trip(frame):
    assert decode_client_frame(encode(frame)) == frame


@SETTINGS
@given(server_frames)
def test_server_frames_round_trip(frame):
    assert decode_server_frame(encode(frame)) == frame


@STREAMS
@given(st.lists(client_frames, min_size=1, max_size=12), st.data())
def test_any_chunking_decodes_the_same_frames(frames, data):
    stream = b"".join(encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder, out, start = FrameDecoder(Side.CLIENT), [], 0
    for cut in cuts + [len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    assert out == frames
    assert decoder.pending == 0


@STREAMS
@given(st.lists(server_frames, min_size=1, max_size=12), st.data())
def test_any_chunking_decodes_the_same_frames_client_side(frames, data):
    stream = b"".join(encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    decoder, out, start = FrameDecoder(Side.SERVER), [], 0
    for cut in cuts + [len(stream)]:
        out += decoder.feed(stream[start:cut])
        start = cut
    assert out == frames


# --- fuzz: only FrameError ever escapes --------------------------------------

def feed_all(side: Side, chunks: list[bytes]) -> None:
    decoder = FrameDecoder(side, max_frame=4096)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert isinstance(frame, Frame)
    except FrameError as e:
        assert isinstance(e.code, ErrorCode)


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=8), st.sampled_from(Side))
def test_arbitrary_bytes_never_raise_anything_but_frame_error(chunks, side):
    feed_all(side, chunks)


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(Side))
def test_arbitrary_bodies_never_raise_anything_but_frame_error(body, side):
    try:
        assert isinstance(decode_body(body, side), Frame)
    except FrameError:
        pass
    # the same bytes behind a correct header
    feed_all(side, [len(body).to_bytes(4, "big") + body])


# Structurally plausible bodies: an array starting with a real frame type,
# then anything msgpack can carry. These reach the field checks.
msgpack_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
              st.text(max_size=70), st.binary(max_size=70), users, msg_ids),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=12,
)
frame_types = st.one_of(st.integers(0, 80), st.integers(-(2**63), 2**64 - 1))


@SETTINGS
@given(frame_types, st.one_of(refs, msgpack_values), st.lists(msgpack_values, max_size=7),
       st.sampled_from(Side))
def test_plausible_frames_never_raise_anything_but_frame_error(ftype, ref, fields, side):
    data = encode_raw([ftype, ref, *fields])
    decode = decode_client_frame if side is Side.CLIENT else decode_server_frame
    try:
        frame = decode(data)
    except FrameError:
        return
    assert decode(encode(frame)) == frame   # whatever is accepted re-encodes


@SETTINGS
@given(st.one_of(client_frames, server_frames), st.data())
def test_mutated_frames_never_raise_anything_but_frame_error(frame, data):
    raw = bytearray(encode(frame))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    feed_all(Side.CLIENT, [bytes(raw)])
    feed_all(Side.SERVER, [bytes(raw)])
