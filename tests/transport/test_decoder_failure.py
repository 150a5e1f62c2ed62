"""A failed ``FrameDecoder`` keeps its failure without the raised error's
traceback: that traceback holds the caller's frame, and so the caller, which
holds the decoder (a reference cycle that only a full collection frees; see
tests/reliability/test_bad_connections_freed.py for the server's side)."""

from __future__ import annotations

import gc
import struct
import weakref

import pytest

from transport import wire


class Reader:
    """What a connection is to its decoder: the owner that feeds it."""

    def __init__(self) -> None:
        self.decoder = wire.FrameDecoder(wire.Side.CLIENT)
        self.codes: list[wire.ErrorCode] = []

    def feed(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except wire.FrameError as error:
            self.codes.append(error.code)


BAD = {
    "not msgpack": struct.pack(">I", 3) + b"\xc1\xc1\xc1",
    "too large": struct.pack(">I", wire.MAX_FRAME + 1),
    "unknown type": wire.encode_raw([200, 1]),
    "wrong fields": wire.encode_raw([int(wire.FrameType.SEND), 1, "x"]),
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_a_failed_decoder_does_not_keep_its_owner_alive(data):
    gc.disable()
    try:
        reader = Reader()
        reader.feed(data)
        reader.feed(b"more")                    # fails again, with the same error
        assert len(reader.codes) == 2 and reader.codes[0] == reader.codes[1]
        gone = weakref.ref(reader)
        del reader
        assert gone() is None                   # freed by reference counting alone
    finally:
        gc.enable()


def test_a_failed_decoder_raises_its_first_error_again():
    decoder = wire.FrameDecoder(wire.Side.CLIENT)
    with pytest.raises(wire.FrameError) as first:
        decoder.feed(wire.encode_raw([200, 7]))
    with pytest.raises(wire.FrameError) as again:
        decoder.feed(wire.encode(wire.Ping(ref=1)))
    assert (again.value.code, again.value.message, again.value.ref) == \
        (first.value.code, first.value.message, first.value.ref) == \
        (wire.ErrorCode.UNKNOWN_TYPE, first.value.message, 7)
