"""The server's hot-path encoders give exactly the bytes of ``encode``:
``wire.encode_ack/encode_message/encode_receipt`` from fields, and
``translate.bytes_for`` from the events sessions push."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.messages import Acked, PresenceChanged, Rejected
from storage.records import InboxItem, Message, Receipt
from transport import wire
from transport.translate import bytes_for, frame_for

from tests.transport.test_wire_properties import (SETTINGS, ack_values, bodies, millis, msg_ids,
                                                  refs, seqs, users)


@SETTINGS
@given(refs, ack_values)
def test_encode_ack_is_encode(ref, value):
    assert wire.encode_ack(ref, value) == wire.encode(wire.Ack(value, ref=ref))


@SETTINGS
@given(seqs, msg_ids, users, millis, bodies)
def test_encode_message_is_encode(seq, mid, sender, ts, body):
    assert (wire.encode_message(seq, mid, sender, ts, body)
            == wire.encode(wire.Message(seq, mid, sender, ts, body)))


@SETTINGS
@given(seqs, st.sampled_from(list(wire.ReceiptKind)), msg_ids, users, millis)
def test_encode_receipt_is_encode(seq, kind, mid, by, ts):
    assert (wire.encode_receipt(seq, kind, mid, by, ts)
            == wire.encode(wire.Receipt(seq, kind, mid, by, ts)))


@SETTINGS
@given(st.one_of(
    st.builds(Acked, refs, st.one_of(st.none(), millis)),
    st.builds(Rejected, refs, st.sampled_from(["internal", "unknown_user", "offline_full"]),
              st.text(max_size=300)),
    st.builds(InboxItem, seqs, st.just("message"), st.builds(Message, msg_ids, users, millis, bodies)),
    st.builds(InboxItem, seqs, st.just("receipt"),
              st.builds(Receipt, st.sampled_from(["delivered", "read"]), msg_ids, users, millis)),
    st.builds(PresenceChanged, users, st.booleans(), st.one_of(st.none(), millis)),
))
def test_bytes_for_is_encode_of_frame_for(event):
    assert bytes_for(event) == wire.encode(frame_for(event))


def test_fast_encoders_keep_the_frame_cap():
    with pytest.raises(wire.FrameError) as caught:
        wire.encode_message(1, "m", "+15550000001", 0, b"x" * 100, max_frame=64)
    assert caught.value.code == wire.ErrorCode.TOO_LARGE
    with pytest.raises(wire.FrameError):
        wire.encode_ack(7, "y" * 200, max_frame=64)


# -- the load generator's side (bench/relay.py) -------------------------------------
@SETTINGS
@given(refs, msg_ids, users, bodies)
def test_encode_send_is_encode(ref, mid, to, body):
    assert wire.encode_send(ref, mid, to, body) == wire.encode(wire.Send(mid, to, body, ref=ref))


@SETTINGS
@given(refs, st.lists(seqs, min_size=1, max_size=50))
def test_encode_received_is_encode(ref, items):
    assert wire.encode_received(ref, items) == wire.encode(wire.Received(tuple(items), ref=ref))


@SETTINGS
@given(seqs, msg_ids, users, millis, bodies, refs)
def test_a_raw_decoder_gives_each_body_array_in_field_order(seq, mid, sender, ts, body, ref):
    stream = wire.encode_message(seq, mid, sender, ts, body) + wire.encode_ack(ref, 7)
    decoder = wire.FrameDecoder(wire.Side.SERVER)
    full = decoder.feed(stream[:5])             # raw from any point of the stream on
    decoder.raw = True
    raw = decoder.feed(stream[5:])
    assert full == [] and raw == [(67, 0, seq, mid, sender, ts, body), (65, ref, 7)]
    message = wire.decode_server_frame(wire.encode_message(seq, mid, sender, ts, body))
    assert raw[0][2:] == (message.seq, message.id, message.sender, message.ts, message.body)


def test_a_raw_decoder_still_refuses_what_is_not_msgpack():
    decoder = wire.FrameDecoder(wire.Side.SERVER, raw=True)
    with pytest.raises(wire.FrameError):
        decoder.feed(b"\x00\x00\x00\x01\xc1")   # 0xc1: never used in msgpack
