"""The Double Ratchet (Signal's specification, with header fields in the clear).

Purpose: the per-message part of a 1:1 session. ``Ratchet`` holds the root
key, the sending and receiving chains, the DH ratchet key pairs and the
skipped message keys; ``Session`` (``e2e_session``) sets it up from X3DH.

- Root KDF: ``HKDF-SHA256(salt=root key, ikm=DH output, info)`` -> new root
  key + chain key, at every DH ratchet step (each turn of the conversation).
- Chain KDF: ``HMAC-SHA256(ck, 0x01)`` = message key, ``HMAC-SHA256(ck, 0x02)``
  = next chain key; a message key encrypts exactly one message and is
  deleted once used.
- AEAD: XChaCha20-Poly1305 under the message key with a random nonce (so a
  state restored from an old copy cannot repeat a keystream), associated
  data = both identities + everything in the message before the nonce.

Decryption works on local variables and commits to ``self`` only after
the AEAD check passes: a tampered, replayed or foreign message leaves the
state exactly as it was. Skipped keys (out-of-order delivery) are kept up
to ``MAX_SKIP`` per chain gap and ``MAX_STORED_SKIPPED`` in all, oldest
dropped first.
"""

from __future__ import annotations

import struct

from transport.e2e_core import (
    KEY, DecryptError, E2EError, Reader, chain_step, dh, hkdf, seal, unseal, x25519_private, x25519_public,
)

__all__ = ["Ratchet", "HEADER", "MAX_SKIP", "MAX_STORED_SKIPPED", "NORMAL", "PREKEY", "VERSION"]

VERSION = 1
NORMAL, PREKEY = 1, 2                      # message types (second byte)
MAX_SKIP = 1000                            # message keys one header may make us skip
MAX_STORED_SKIPPED = 2000                  # skipped keys kept in all
ROOT_INFO = b"switchboard-ratchet-root-v1"
# u8 version | u8 type | session id 8 | ratchet public 32 | u32 previous chain length | u32 n
HEADER = struct.Struct(">BB8s32sII")
_SKIPPED = struct.Struct(">32sI32s")
_STATE_VERSION = 1
_HAS_DHR, _HAS_CKS, _HAS_CKR = 1, 2, 4


def _root_step(root_key: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = hkdf(dh_out, root_key, ROOT_INFO, 2 * KEY)
    return out[:KEY], out[KEY:]


class Ratchet:
    """Double Ratchet state of one side of one session."""

    __slots__ = ("session_id", "root", "dhs", "dhs_pub", "dhr", "cks", "ckr", "ns", "nr", "pn", "skipped")

    def __init__(self, session_id: bytes, root: bytes, dhs: bytes, dhr: bytes | None = None,
                 cks: bytes | None = None, ckr: bytes | None = None, ns: int = 0, nr: int = 0,
                 pn: int = 0, skipped: dict[tuple[bytes, int], bytes] | None = None):
        self.session_id, self.root, self.dhs, self.dhs_pub = session_id, root, dhs, x25519_public(dhs)
        self.dhr, self.cks, self.ckr = dhr, cks, ckr
        self.ns, self.nr, self.pn = ns, nr, pn
        self.skipped = {} if skipped is None else skipped

    @classmethod
    def initiator(cls, session_id: bytes, shared: bytes, their_ratchet: bytes) -> "Ratchet":
        """Alice: her first ratchet key against Bob's signed prekey."""
        dhs = x25519_private()
        root, cks = _root_step(shared, dh(dhs, their_ratchet))
        return cls(session_id, root, dhs, dhr=their_ratchet, cks=cks)

    @classmethod
    def responder(cls, session_id: bytes, shared: bytes, signed_prekey_private: bytes) -> "Ratchet":
        """Bob: his signed prekey is his first ratchet key; his chains start
        with the DH step that the first message's header triggers."""
        return cls(session_id, shared, signed_prekey_private)

    # -- encrypt -----------------------------------------------------------------------------------
    def encrypt(self, plaintext: bytes, ad: bytes, prefix: bytes = b"") -> bytes:
        """``prefix`` (the X3DH header of a first message) goes in front and
        into the associated data."""
        if self.cks is None:
            raise E2EError("this session cannot send before it has received")  # not reachable via Session
        mk, self.cks = chain_step(self.cks)
        header = HEADER.pack(VERSION, NORMAL, self.session_id, self.dhs_pub, self.pn, self.ns)
        self.ns += 1
        return prefix + header + seal(mk, plaintext, ad + prefix + header)

    # -- decrypt -----------------------------------------------------------------------------------
    def decrypt(self, inner: bytes, ad: bytes, prefix: bytes = b"") -> bytes:
        """``inner``: header + sealed body, after any X3DH ``prefix``."""
        if len(inner) < HEADER.size:
            raise DecryptError("message too short")
        version, kind, session_id, their_dh, pn, n = HEADER.unpack_from(inner)
        if version != VERSION or kind != NORMAL:
            raise DecryptError(f"unsupported message version {version} or type {kind}")
        if session_id != self.session_id:
            raise DecryptError("message of another session")
        header, body = inner[:HEADER.size], inner[HEADER.size:]
        ad = ad + prefix + header

        mk = self.skipped.get((their_dh, n))
        if mk is not None:
            plaintext = unseal(mk, body, ad)
            del self.skipped[(their_dh, n)]
            return plaintext

        # Work on locals; commit only after the AEAD check.
        root, dhs, dhs_pub, dhr, cks, ckr = self.root, self.dhs, self.dhs_pub, self.dhr, self.cks, self.ckr
        ns, nr, spn = self.ns, self.nr, self.pn
        found: dict[tuple[bytes, int], bytes] = {}
        if their_dh != dhr:
            if ckr is not None:
                ckr, nr = _skip(found, dhr, ckr, nr, pn)
            spn, ns, nr, dhr = ns, 0, 0, their_dh
            root, ckr = _root_step(root, dh(dhs, dhr))
            dhs = x25519_private()
            dhs_pub = x25519_public(dhs)
            root, cks = _root_step(root, dh(dhs, dhr))
        elif n < nr:
            raise DecryptError("replayed or already decrypted message")
        ckr, nr = _skip(found, dhr, ckr, nr, n)
        mk, ckr = chain_step(ckr)
        plaintext = unseal(mk, body, ad)

        self.root, self.dhs, self.dhs_pub, self.dhr, self.cks, self.ckr = root, dhs, dhs_pub, dhr, cks, ckr
        self.ns, self.nr, self.pn = ns, nr + 1, spn
        if found:
            self.skipped.update(found)
            while len(self.skipped) > MAX_STORED_SKIPPED:
                del self.skipped[next(iter(self.skipped))]
        return plaintext

    # -- persistence -------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        flags = (_HAS_DHR if self.dhr else 0) | (_HAS_CKS if self.cks else 0) | (_HAS_CKR if self.ckr else 0)
        return b"".join([
            struct.pack(">BB8s32s32s", _STATE_VERSION, flags, self.session_id, self.root, self.dhs),
            self.dhr or b"", self.cks or b"", self.ckr or b"",
            struct.pack(">IIII", self.ns, self.nr, self.pn, len(self.skipped)),
            *(_SKIPPED.pack(k, n, mk) for (k, n), mk in self.skipped.items())])

    @classmethod
    def read(cls, r: Reader) -> "Ratchet":
        r.version(_STATE_VERSION)
        flags = r.u8()
        if flags & ~(_HAS_DHR | _HAS_CKS | _HAS_CKR):
            raise r.fail(f"unknown ratchet flags {flags:#x}")
        session_id, root, dhs = r.take(8), r.take(KEY), r.take(KEY)
        dhr = r.take(KEY) if flags & _HAS_DHR else None
        cks = r.take(KEY) if flags & _HAS_CKS else None
        ckr = r.take(KEY) if flags & _HAS_CKR else None
        ns, nr, pn, count = r.u32(), r.u32(), r.u32(), r.u32()
        if count > MAX_STORED_SKIPPED:
            raise r.fail(f"{count} skipped keys, at most {MAX_STORED_SKIPPED}")
        skipped = {}
        for _ in range(count):
            k, n, mk = _SKIPPED.unpack(r.take(_SKIPPED.size))
            skipped[(k, n)] = mk
        return cls(session_id, root, dhs, dhr, cks, ckr, ns, nr, pn, skipped)


def _skip(found: dict, dhr: bytes | None, ckr: bytes, nr: int, until: int) -> tuple[bytes, int]:
    """Derive and keep the message keys nr..until-1 of the receiving chain."""
    if until - nr > MAX_SKIP:
        raise DecryptError(f"message would skip {until - nr} keys (at most {MAX_SKIP})")
    while nr < until:
        mk, ckr = chain_step(ckr)
        found[(dhr, nr)] = mk
        nr += 1
    return ckr, nr
