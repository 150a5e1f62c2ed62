"""transport.wire for a multi-node cluster: the ERROR WRONG_NODE with its
``redirect`` [host, port] (the user's home node), ``wire.wrong_node`` that
builds it, HELLO_OK's optional ``media`` port (a client follows it to the
node it is connected to), and the RECEIPT kind FAILED (the recipient's node refused a
message the sender's node had accepted). Round trips, the bytes on the
wire, and every bad redirect refused as MALFORMED."""

from __future__ import annotations

import pytest

from transport import wire
from transport.wire import (
    Error, ErrorCode, FrameDecoder, FrameError, HelloOk, Receipt, ReceiptKind, Side, decode_server_frame,
    encode, encode_raw, encode_receipt, validate, wrong_node,
)

BOB = "+14155550123"


def test_wrong_node_is_fatal_and_numbered_31():
    assert ErrorCode.WRONG_NODE == 31 and ErrorCode.WRONG_NODE.fatal


def test_wrong_node_round_trips_with_its_redirect():
    frame = wrong_node(4, "10.0.0.2", 5222)
    assert (frame.code, frame.ref, frame.redirect) == (ErrorCode.WRONG_NODE, 4, ("10.0.0.2", 5222))
    assert "10.0.0.2:5222" in frame.message
    data = encode(frame)
    assert data == encode_raw([66, 4, 31, frame.message, None, ["10.0.0.2", 5222]])
    assert decode_server_frame(data) == frame
    assert FrameDecoder(Side.SERVER).feed(data) == [frame]


@pytest.mark.parametrize("host", ["node-2.example.org", "127.0.0.1", "::1", "fd00::7", "h" * 253])
def test_redirect_hosts_accepted(host):
    frame = Error(ErrorCode.WRONG_NODE, "elsewhere", redirect=[host, 65535], ref=1)
    assert frame.redirect == (host, 65535)          # a list given in Python is held as a tuple
    assert decode_server_frame(encode(frame)) == validate(frame)


def test_an_error_without_redirect_is_the_same_bytes_as_before():
    assert encode(Error(ErrorCode.BAD_CODE, "no", ref=3)) == encode_raw([66, 3, 7, "no"])
    limited = Error(ErrorCode.RATE_LIMITED, "slow", 250, ref=3)
    assert encode(limited) == encode_raw([66, 3, 8, "slow", 250])
    assert decode_server_frame(encode_raw([66, 3, 8, "slow", 250])).redirect is None
    assert decode_server_frame(encode_raw([66, 3, 8, "slow", 250, None])) == limited


BAD_REDIRECTS = [
    ("not an array", "10.0.0.2:5222"),
    ("one item", ["10.0.0.2"]),
    ("three items", ["10.0.0.2", 5222, 1]),
    ("a map", {"host": "10.0.0.2", "port": 5222}),
    ("host empty", ["", 5222]),
    ("host too long", ["h" * 254, 5222]),
    ("host with a space", ["10.0.0.2 ", 5222]),
    ("host with a slash", ["evil/path", 5222]),
    ("host bin", [b"10.0.0.2", 5222]),
    ("port 0", ["10.0.0.2", 0]),
    ("port 65536", ["10.0.0.2", 65536]),
    ("port str", ["10.0.0.2", "5222"]),
    ("port bool", ["10.0.0.2", True]),
    ("port float", ["10.0.0.2", 5222.0]),
]


@pytest.mark.parametrize("redirect", [b[1] for b in BAD_REDIRECTS], ids=[b[0] for b in BAD_REDIRECTS])
def test_bad_redirect_is_malformed(redirect):
    data = encode_raw([66, 4, 31, "elsewhere", None, redirect])
    with pytest.raises(FrameError) as caught:
        decode_server_frame(data)
    assert caught.value.code is ErrorCode.MALFORMED and caught.value.ref == 4
    assert "ERROR.redirect" in caught.value.message
    with pytest.raises(FrameError):
        FrameDecoder(Side.SERVER).feed(data)


def test_error_with_a_field_past_redirect_is_malformed():
    with pytest.raises(FrameError, match="expected 2..4 fields"):
        decode_server_frame(encode_raw([66, 4, 31, "x", None, ["h", 1], None]))


@pytest.mark.parametrize("host, port", [("", 5222), ("a b", 5222), ("h", 0), ("h", 70000), (5, 5)])
def test_wrong_node_refuses_an_address_a_client_could_not_decode(host, port):
    with pytest.raises(ValueError, match="redirect"):
        wrong_node(1, host, port)


def test_failed_receipt_round_trips():
    frame = Receipt(9, ReceiptKind.FAILED, "m-1", BOB, 1_700_000_000_000)
    data = encode(frame)
    assert data == encode_raw([68, 0, 9, 3, "m-1", BOB, 1_700_000_000_000])
    assert data == encode_receipt(9, ReceiptKind.FAILED, "m-1", BOB, 1_700_000_000_000)
    assert decode_server_frame(data) == frame and decode_server_frame(data).kind is ReceiptKind.FAILED


def test_storage_failed_receipts_become_kind_failed():
    # the translation table: storage's "failed" receipt -> RECEIPT kind 3, frame and fast path alike
    from storage.records import InboxItem, Receipt as StoredReceipt
    from transport.translate import bytes_for, frame_for
    item = InboxItem(5, "receipt", StoredReceipt("failed", "m-1", BOB, 1_700_000_000_000, None))
    assert frame_for(item) == Receipt(5, ReceiptKind.FAILED, "m-1", BOB, 1_700_000_000_000)
    assert bytes_for(item) == encode(frame_for(item))
    assert wire.ReceiptKind(3) is ReceiptKind.FAILED


NONCE = b"n" * 32


def test_hello_ok_media_round_trips_and_is_left_off_when_nil():
    with_media = HelloOk(wire.PROTOCOL_VERSION, 30.0, NONCE, 65536, 5281, ref=1)
    data = encode(with_media)
    assert data == encode_raw([64, 1, wire.PROTOCOL_VERSION, 30.0, NONCE, 65536, 5281])
    assert decode_server_frame(data) == with_media
    without = HelloOk(wire.PROTOCOL_VERSION, 30.0, NONCE, 65536, ref=1)
    assert encode(without) == encode_raw([64, 1, wire.PROTOCOL_VERSION, 30.0, NONCE, 65536])
    assert decode_server_frame(encode(without)).media is None
    assert decode_server_frame(encode_raw([64, 1, wire.PROTOCOL_VERSION, 30.0, NONCE, 65536,
                                           None])) == without


@pytest.mark.parametrize("media", [0, 65536, -1, "5280", 5280.0, True, [5280]])
def test_hello_ok_bad_media_is_malformed(media):
    data = encode_raw([64, 1, wire.PROTOCOL_VERSION, 30.0, NONCE, 65536, media])
    with pytest.raises(FrameError) as caught:
        decode_server_frame(data)
    assert caught.value.code is ErrorCode.MALFORMED and "HELLO_OK.media" in caught.value.message
    with pytest.raises(FrameError, match="HELLO_OK.media"):
        validate(HelloOk(wire.PROTOCOL_VERSION, 30.0, NONCE, 65536, media, ref=1))
