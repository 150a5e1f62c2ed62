"""Media encryption: a fresh random key per file, chunked AEAD (STREAM).

Purpose: what the client does to a file before ``POST /media`` and after
``GET /media/<sha256>``. The server stores and names the ciphertext only;
the ``MediaKey`` (key, SHA-256 of the ciphertext, size) travels inside the
end-to-end encrypted message (``Envelope`` kind MEDIA).

Format (version 1)::

    u8 version | u32 chunk size | chunk 0 | chunk 1 | ... | chunk n-1
    chunk i = XChaCha20-Poly1305(key, nonce = 15 zero bytes | u64 i | u8 final, ad = the 5-byte header)

Every chunk but the last holds exactly ``chunk size`` bytes of plaintext
(64 KiB by default), the last one 0..chunk size (an empty file is one empty
final chunk). The chunk's index and the final flag are in the nonce, so
reordering, dropping, duplicating or appending chunks fails authentication,
and a stream that ends without a final chunk is detected as truncated. The
key is used for one file only, so the counter nonce never repeats. Each
chunk can be decrypted on its own, which suits HTTP Range requests.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from transport.e2e_core import (
    KEY, TAG, DecryptError, Reader, aead_decrypt, aead_encrypt, random_bytes,
)

__all__ = ["MediaKey", "MediaEncryptor", "MediaDecryptor", "encrypt_media", "decrypt_media",
           "CHUNK_SIZE", "encrypted_size"]

_VERSION = 1
_KEY_VERSION = 1
CHUNK_SIZE = 64 * 1024
MIN_CHUNK, MAX_CHUNK = 1024, 16 * 1024 * 1024
_HEADER = struct.Struct(">BI")
_NONCE = struct.Struct(">15xQ?")
_KEY = struct.Struct(">B32s32sQ")


@dataclass(frozen=True)
class MediaKey:
    """How to fetch and decrypt one blob: ``key``, ``sha256`` (of the
    ciphertext: the server's name for the blob, ``.hex()`` in URLs) and
    ``size`` (of the plaintext). ``to_bytes()`` is 73 bytes."""

    key: bytes
    sha256: bytes
    size: int

    def to_bytes(self) -> bytes:
        return _KEY.pack(_KEY_VERSION, self.key, self.sha256, self.size)

    @classmethod
    def from_bytes(cls, data: bytes) -> "MediaKey":
        r = Reader(data, "media key")
        r.version(_KEY_VERSION)
        key, digest, size = r.take(KEY), r.take(32), r.u64()
        r.end()
        return cls(key, digest, size)

    def __repr__(self) -> str:                    # never print the key
        return f"MediaKey(sha256={self.sha256.hex()[:16]}…, size={self.size})"


def _chunks(size: int, chunk: int) -> int:
    return max(1, -(-size // chunk))


def encrypted_size(size: int, chunk: int = CHUNK_SIZE) -> int:
    """Ciphertext bytes for ``size`` plaintext bytes."""
    return _HEADER.size + size + TAG * _chunks(size, chunk)


class MediaEncryptor:
    """Streaming encryption: ``update(data) -> bytes`` as data arrives (it
    returns whole chunks and keeps the rest), then ``finish() -> (bytes,
    MediaKey)``. The concatenation of everything returned is the blob."""

    def __init__(self, chunk_size: int = CHUNK_SIZE):
        if not MIN_CHUNK <= chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk size must be {MIN_CHUNK}..{MAX_CHUNK}")
        self.chunk_size, self._key = chunk_size, random_bytes(KEY)
        self._header = _HEADER.pack(_VERSION, chunk_size)
        self._buf, self._index, self._size = bytearray(), 0, 0
        self._hash = hashlib.sha256(self._header)
        self._started, self._done = False, False

    def _seal(self, data, final: bool) -> bytes:
        out = aead_encrypt(self._key, _NONCE.pack(self._index, final), bytes(data), self._header)
        self._index += 1
        self._hash.update(out)
        return out

    def update(self, data: bytes) -> bytes:
        return b"".join(self._feed(data))

    def finish(self) -> tuple[bytes, MediaKey]:
        pieces, key = self._finish()
        return b"".join(pieces), key

    def _feed(self, data) -> list[bytes]:
        if self._done:
            raise ValueError("finish() was called")
        self._size += len(data)
        out = [] if self._started else [self._header]
        self._started = True
        src = _append(self._buf, data)
        with memoryview(src) as view:
            pos, n = 0, self.chunk_size
            while len(src) - pos > n:             # keep the last chunk back: it may be the final one
                out.append(self._seal(view[pos:pos + n], False))
                pos += n
            self._buf = _rest(view, pos)
        return out

    def _finish(self) -> tuple[list[bytes], MediaKey]:
        out = self._feed(b"")
        self._done = True
        out.append(self._seal(self._buf, True))
        self._buf = bytearray()
        return out, MediaKey(self._key, self._hash.digest(), self._size)


class MediaDecryptor:
    """Streaming decryption against a ``MediaKey``: ``update(data) -> bytes``
    (plaintext of every chunk authenticated so far), then ``finish() ->
    bytes``, which authenticates the final chunk and the SHA-256. Only a
    file whose ``finish()`` returned is whole: discard it on DecryptError."""

    def __init__(self, key: MediaKey):
        self.key = key
        self._buf, self._header, self._index, self._out = bytearray(), b"", 0, 0
        self._hash = hashlib.sha256()
        self._last = 0
        self._done = False

    def _open(self, sealed, final: bool) -> bytes:
        out = aead_decrypt(self.key.key, _NONCE.pack(self._index, final), bytes(sealed), self._header)
        self._index += 1
        self._out += len(out)
        return out

    def update(self, data: bytes) -> bytes:
        return b"".join(self._feed(data))

    def finish(self) -> bytes:
        return b"".join(self._finish())

    def _feed(self, data) -> list[bytes]:
        if self._done:
            raise ValueError("finish() was called")
        self._hash.update(data)
        if not self._header:
            if len(self._buf) + len(data) < _HEADER.size:
                self._buf += data
                return []
            head = bytes(self._buf) + bytes(data[:_HEADER.size - len(self._buf)])
            data = memoryview(data)[_HEADER.size - len(self._buf):]
            self._buf = bytearray()
            version, chunk = _HEADER.unpack(head)
            if version != _VERSION or not MIN_CHUNK <= chunk <= MAX_CHUNK:
                raise DecryptError(f"media: unknown version {version} or chunk size {chunk}")
            self._header, self._chunk = head, chunk
            self._last = _chunks(self.key.size, chunk) - 1
        src = _append(self._buf, data)
        out, pos, n = [], 0, self._chunk + TAG
        with memoryview(src) as view:
            while len(src) - pos > n:
                if self._index >= self._last:
                    raise DecryptError("media: more chunks than its size allows")
                out.append(self._open(view[pos:pos + n], False))
                pos += n
            self._buf = _rest(view, pos)
        return out

    def _finish(self) -> list[bytes]:
        out = self._feed(b"")
        self._done = True
        if not self._header:
            raise DecryptError("media: truncated header")
        if self._index != self._last:
            raise DecryptError("media: truncated (chunks missing)")
        out.append(self._open(self._buf, True))
        if self._out != self.key.size:
            raise DecryptError(f"media: {self._out} bytes, expected {self.key.size}")
        if not hmac.compare_digest(self._hash.digest(), self.key.sha256):
            raise DecryptError("media: ciphertext does not match its SHA-256")
        return out


def _append(buf: bytearray, data: bytes):
    """What to cut chunks from: ``data`` itself when nothing is buffered (no copy)."""
    if not buf:
        return data
    buf += data
    return buf


def _rest(view: memoryview, pos: int) -> bytearray:
    """The unprocessed tail (less than two chunks), as the new buffer."""
    return bytearray(view[pos:])


def encrypt_media(data: bytes, chunk_size: int = CHUNK_SIZE) -> tuple[bytes, MediaKey]:
    """Encrypt a whole file in memory with a fresh key: (ciphertext, MediaKey)."""
    enc = MediaEncryptor(chunk_size)
    pieces = enc._feed(data)
    tail, key = enc._finish()
    return b"".join(pieces + tail), key


def decrypt_media(ciphertext: bytes, key: MediaKey) -> bytes:
    """The plaintext; DecryptError if the blob was altered, truncated or extended."""
    dec = MediaDecryptor(key)
    pieces = dec._feed(ciphertext)
    return b"".join(pieces + dec._finish())
