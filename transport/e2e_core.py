"""Building blocks of the end-to-end encryption library (``transport.e2e``).

Purpose: the few primitives every other ``e2e_*`` module is written in, so
that each of them reads as protocol, not plumbing:

- errors: ``E2EError`` and its subclasses (what callers catch);
- X25519 key pairs and Diffie-Hellman (libsodium via ``nacl.bindings``);
- HKDF-SHA256 (RFC 5869) and the HMAC chain step, from ``hmac``/``hashlib``;
- XChaCha20-Poly1305 AEAD with a random 24-byte nonce (``seal``/``unseal``);
- ``Reader``, a strict cursor over ``struct``-packed bytes that raises
  ``FormatError`` naming the object and offset of anything malformed.

Imports: ``nacl`` and the standard library only.
"""

from __future__ import annotations

import hmac
import struct

from nacl import bindings as _sodium
from nacl.exceptions import CryptoError as _NaclCryptoError
from nacl.exceptions import RuntimeError as _NaclRuntimeError

__all__ = [
    "E2EError", "FormatError", "BadSignature", "DecryptError", "UnknownSession", "NoSenderKey",
    "SenderKeyBehind",
    "KEY", "NONCE", "TAG", "SIG", "random_bytes", "x25519_private", "x25519_public", "dh",
    "hkdf", "hmac256", "chain_step", "seal", "unseal", "aead_encrypt", "aead_decrypt",
    "Reader", "pack_str", "pack_bytes",
]

KEY = 32                    # every symmetric key, X25519 key and Ed25519 public key
NONCE = 24                  # XChaCha20-Poly1305 nonce
TAG = 16                    # Poly1305 tag
SIG = 64                    # Ed25519 signature


class E2EError(Exception):
    """Base of every error raised by ``transport.e2e``."""


class FormatError(E2EError, ValueError):
    """Bytes that do not decode: wrong version, truncated, trailing bytes,
    a field out of range. The message says which object and where."""


class BadSignature(E2EError):
    """A signature that does not verify (a key bundle, a group message)."""


class DecryptError(E2EError):
    """A ciphertext that cannot be decrypted: tampered, replayed, not for
    this recipient, or beyond the skipped-message bound. State is unchanged."""


class UnknownSession(DecryptError):
    """A 1:1 message for a session this object does not hold."""


class NoSenderKey(DecryptError):
    """A group message from a sender (or sender key) this member has not received.
    The key may still be on its way: a receiver can wait for it (``client.group_hold``)."""


class SenderKeyBehind(NoSenderKey):
    """A group message, signed by the sender key held, from further ahead in
    its chain than a receiver may skip: a newer copy of that key (a later
    iteration, resent by its sender) would open it."""


def random_bytes(n: int) -> bytes:
    return _sodium.randombytes(n)


# -- X25519 ---------------------------------------------------------------------------------------

def x25519_private() -> bytes:
    """32 random bytes: an X25519 private key (libsodium clamps when it uses it)."""
    return _sodium.randombytes(KEY)


def x25519_public(private: bytes) -> bytes:
    return _sodium.crypto_scalarmult_base(private)


def dh(private: bytes, public: bytes) -> bytes:
    """X25519(private, public). A low-order ``public`` (all-zero output) raises
    DecryptError: libsodium refuses it, and so do we."""
    try:
        return _sodium.crypto_scalarmult(private, public)
    except (_NaclRuntimeError, _NaclCryptoError, TypeError, ValueError):
        raise DecryptError("invalid X25519 public key") from None


# -- KDFs -----------------------------------------------------------------------------------------

def hmac256(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256, RFC 5869 (extract then expand)."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        out += block
        counter += 1
    return out[:length]


def chain_step(chain_key: bytes) -> tuple[bytes, bytes]:
    """Signal's symmetric-key ratchet: (message key, next chain key)."""
    return hmac.digest(chain_key, b"\x01", "sha256"), hmac.digest(chain_key, b"\x02", "sha256")


# -- AEAD -----------------------------------------------------------------------------------------

def seal(key: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """nonce (24 random bytes) + XChaCha20-Poly1305(plaintext, ad)."""
    nonce = _sodium.randombytes(NONCE)
    return nonce + _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def unseal(key: bytes, sealed: bytes, ad: bytes) -> bytes:
    """The inverse of ``seal``; DecryptError if anything was altered."""
    if len(sealed) < NONCE + TAG:
        raise DecryptError("ciphertext too short")
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(sealed[NONCE:], ad, sealed[:NONCE], key)
    except (_NaclCryptoError, _NaclRuntimeError, TypeError, ValueError):
        raise DecryptError("authentication failed") from None


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, nonce, key)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, ad, nonce, key)
    except (_NaclCryptoError, _NaclRuntimeError, TypeError, ValueError):
        raise DecryptError("authentication failed") from None


# -- struct helpers -------------------------------------------------------------------------------

_U8, _U16, _U32, _U64 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I"), struct.Struct(">Q")


def pack_bytes(data: bytes, width: int = 2) -> bytes:
    """``data`` prefixed by its length (big-endian, ``width`` = 2 or 4 bytes)."""
    if len(data) >= 1 << (8 * width):
        raise ValueError(f"field too long: {len(data)} bytes")
    return len(data).to_bytes(width, "big") + data


def pack_str(text: str, width: int = 2) -> bytes:
    return pack_bytes(text.encode("utf-8"), width)


class Reader:
    """A strict cursor over ``data``: every read checks the length, ``end()``
    checks that nothing is left. Errors are ``FormatError("<what>: ...")``."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise FormatError(f"{what}: expected bytes, got {type(data).__name__}")
        self.data, self.pos, self.what = bytes(data), 0, what

    def fail(self, message: str) -> FormatError:
        return FormatError(f"{self.what}: {message} (at byte {self.pos} of {len(self.data)})")

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"truncated, {n} more bytes expected")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return _U8.unpack(self.take(1))[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise self.fail(f"flag must be 0 or 1, got {value}")
        return bool(value)

    def blob(self, width: int = 2, limit: int | None = None) -> bytes:
        n = int.from_bytes(self.take(width), "big")
        if limit is not None and n > limit:
            raise self.fail(f"field of {n} bytes exceeds the limit of {limit}")
        return self.take(n)

    def text(self, width: int = 2, limit: int | None = None) -> str:
        raw = self.blob(width, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text field is not valid UTF-8") from None

    def version(self, expected: int) -> None:
        got = self.u8()
        if got != expected:
            raise self.fail(f"unsupported version {got} (this code reads version {expected})")

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")
