"""End-to-end encryption for Switchboard clients: the public API.

Purpose: everything a client needs so that the server stores and relays
only opaque bytes and a directory of signed public keys, and never sees a
plaintext body, a media file or a private key. A pure library: no
networking, no wire frames, no clock except where passed in. The full
design (keys, KDF chains, what the server sees, forward secrecy, re-key
rules, safety numbers, measured speed) is docs/e2e.md.

    # device setup: the identity IS the login key (transport.crypto.DeviceKey)
    keys = LocalKeys.generate(device_key, one_time=100)
    publish(keys.bundle().to_bytes())                  # the directory's entry
    save(keys.to_bytes())                              # private, mode 0600

    # 1:1, sender: a verified bundle from the directory (one one-time prekey)
    session = Session.initiate(keys, KeyBundle.from_bytes(fetched))
    body = session.encrypt(Text("hi").encode())
    # 1:1, receiver
    session, plaintext = Session.respond(keys, body)   # first message
    Envelope.decode(session.decrypt(next_body))        # later ones

    # groups: sender keys, re-keyed when someone leaves
    group = GroupCipher("g1"); dist = group.distribution_message()   # to each member, 1:1
    ct = group.encrypt(b"..."); their_group.decrypt("+1555...", ct)

    # media: encrypt, upload the ciphertext, send the MediaKey inside a message
    blob, media_key = encrypt_media(data)

    safety_number(me, my_identity, them, their_identity)  # "12345 67890 ... " (60 digits)

Modules: ``e2e_core`` (primitives, errors, the strict reader), ``e2e_keys``
(bundles, local keys, safety numbers, trust), ``e2e_ratchet`` (Double
Ratchet), ``e2e_session`` (X3DH, sessions), ``e2e_group`` (sender keys),
``e2e_retire`` (the sender keys of a member's replaced device),
``e2e_media`` (chunked file encryption), ``e2e_envelope`` (the plaintext
format). Import from here.

Imports: ``nacl`` (via ``e2e_core``), ``transport.crypto`` (Ed25519 signing
and verifying) and the standard library; nothing else of ours, so both the
client SDK and the server (to check bundles it is asked to publish) can use it.
"""

from transport.e2e_core import (
    BadSignature, DecryptError, E2EError, FormatError, NoSenderKey, SenderKeyBehind, UnknownSession,
)
from transport.e2e_envelope import (
    Envelope, Kind, Media, SenderKeyMessage, SenderKeyRequest, Text,
)
from transport.e2e_group import GroupCipher, SenderKey
from transport.e2e_keys import KeyBundle, KeyChange, LocalKeys, TrustStore, safety_number
from transport.e2e_media import (
    MediaDecryptor, MediaEncryptor, MediaKey, decrypt_media, encrypt_media, encrypted_size,
)
from transport.e2e_ratchet import MAX_SKIP
from transport.e2e_session import MessageInfo, NoSession, Session, SessionRecord, message_info

__all__ = [
    # errors
    "E2EError", "FormatError", "BadSignature", "DecryptError", "UnknownSession", "NoSenderKey",
    "SenderKeyBehind", "NoSession",
    # keys and trust
    "KeyBundle", "LocalKeys", "TrustStore", "KeyChange", "safety_number",
    # 1:1
    "Session", "SessionRecord", "MessageInfo", "message_info", "MAX_SKIP",
    # groups
    "SenderKey", "GroupCipher",
    # media
    "MediaKey", "MediaEncryptor", "MediaDecryptor", "encrypt_media", "decrypt_media", "encrypted_size",
    # plaintext format
    "Envelope", "Kind", "Text", "Media", "SenderKeyMessage", "SenderKeyRequest",
]
