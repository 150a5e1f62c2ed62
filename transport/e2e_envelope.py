"""What goes inside an encrypted body: the plaintext ``Envelope``.

Purpose: one strict, versioned, ``struct``-based format for everything a
client encrypts, so the receiving SDK knows what it decrypted. Modelled on
``transport.wire``: an IntEnum of kinds, one frozen dataclass per kind, one
``encode()``/``decode()`` pair.

Format (version 1)::

    u8 version | u8 kind | the kind's fields, in order | zero padding

Fields: ``str`` is u16 length + UTF-8 (u32 for TEXT's text), ``bytes`` is
u16 length + bytes, ``MediaKey`` its 73 bytes. The whole is zero-padded to
a multiple of ``PAD`` (64) bytes, so ciphertext lengths reveal the size of
a text only to the nearest 64 bytes. ``decode`` raises ``FormatError`` on
anything else: unknown version or kind, a short or over-long field, bad
UTF-8, a field over its limit, padding that is not zeros or not to the
multiple.

| kind | class | fields |
| --- | --- | --- |
| 1 TEXT | ``Text`` | text |
| 2 MEDIA | ``Media`` | key (MediaKey), mime, name, caption |
| 3 SENDER_KEY | ``SenderKeyMessage`` | distribution (``GroupCipher`` distribution message) |
| 4 SENDER_KEY_REQUEST | ``SenderKeyRequest`` | group (please send me your sender key) |
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import ClassVar

from transport.e2e_core import FormatError, Reader
from transport.e2e_group import SenderKey
from transport.e2e_media import MediaKey

__all__ = ["Envelope", "Kind", "Text", "Media", "SenderKeyMessage", "SenderKeyRequest", "PAD"]

VERSION = 1
PAD = 64
MAX_TEXT = 60_000          # bytes of UTF-8; a SEND body is at most 61,440 bytes (transport.wire.MAX_BODY)


class Kind(IntEnum):
    TEXT = 1
    MEDIA = 2
    SENDER_KEY = 3
    SENDER_KEY_REQUEST = 4


# field codecs: (pack, read) with a limit in bytes
def _str(limit: int, width: int = 2):
    def pack(value):
        if not isinstance(value, str):
            raise TypeError(f"expected str, got {type(value).__name__}")
        raw = value.encode("utf-8")
        if len(raw) > limit:
            raise ValueError(f"text of {len(raw)} bytes, at most {limit}")
        return len(raw).to_bytes(width, "big") + raw
    return pack, lambda r: r.text(width, limit)


def _bytes(limit: int):
    def pack(value):
        if not isinstance(value, (bytes, bytearray)):
            raise TypeError(f"expected bytes, got {type(value).__name__}")
        if len(value) > limit:
            raise ValueError(f"field of {len(value)} bytes, at most {limit}")
        return struct.pack(">H", len(value)) + bytes(value)
    return pack, lambda r: r.blob(2, limit)


def _media_key():
    def pack(value):
        if not isinstance(value, MediaKey):
            raise TypeError(f"expected MediaKey, got {type(value).__name__}")
        return value.to_bytes()
    return pack, lambda r: MediaKey.from_bytes(r.take(73))


_CLASSES: dict[Kind, type] = {}


def _kind(kind: Kind, **codecs):
    def register(cls):
        cls.KIND = kind
        cls._codecs = tuple(codecs[f.name] for f in fields(cls))
        _CLASSES[kind] = cls
        return cls
    return register


@dataclass(frozen=True)
class Envelope:
    """Base of every envelope kind; ``Envelope.decode(data)`` returns the subclass."""

    KIND: ClassVar[Kind]
    _codecs: ClassVar[tuple]

    def encode(self) -> bytes:
        """The padded plaintext; ValueError/TypeError for a field out of range."""
        body = bytes((VERSION, self.KIND)) + b"".join(
            pack(getattr(self, f.name)) for (pack, _), f in zip(self._codecs, fields(self)))
        return body + bytes(-len(body) % PAD)

    @staticmethod
    def decode(data: bytes) -> "Envelope":
        r = Reader(data, "envelope")
        r.version(VERSION)
        raw_kind = r.u8()
        try:
            cls = _CLASSES[Kind(raw_kind)]
        except ValueError:
            raise r.fail(f"unknown kind {raw_kind}") from None
        values = [read(r) for _, read in cls._codecs]
        padding = r.rest()
        if padding.count(0) != len(padding) or len(data) % PAD or len(padding) >= PAD:
            raise FormatError(f"envelope: bad padding ({len(padding)} bytes after the fields, "
                              f"total {len(data)}, expected zeros to a multiple of {PAD})")
        return cls(*values)


@_kind(Kind.TEXT, text=_str(MAX_TEXT, 4))
@dataclass(frozen=True)
class Text(Envelope):
    text: str


@_kind(Kind.MEDIA, key=_media_key(), mime=_str(255), name=_str(1024), caption=_str(4096))
@dataclass(frozen=True)
class Media(Envelope):
    key: MediaKey
    mime: str
    name: str = ""
    caption: str = ""


@_kind(Kind.SENDER_KEY, distribution=_bytes(2048))
@dataclass(frozen=True)
class SenderKeyMessage(Envelope):
    """A group sender key, sent over the 1:1 session (``GroupCipher.process``)."""
    distribution: bytes

    @property
    def group(self) -> str:
        return SenderKey.from_distribution(self.distribution).group


@_kind(Kind.SENDER_KEY_REQUEST, group=_str(1024))
@dataclass(frozen=True)
class SenderKeyRequest(Envelope):
    """'I have no sender key of yours for ``group``': answer with SenderKeyMessage
    if the requester is a current member."""
    group: str
