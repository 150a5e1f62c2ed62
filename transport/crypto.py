"""Device credentials (PyNaCl). nacl is imported here and in the end-to-end
library (``transport/e2e_*.py``, used by clients only) and nowhere else.

Device credentials are Ed25519 key pairs: the device keeps the signing key,
the server stores only the 32-byte verify key and checks login signatures
against it, so nothing the server holds lets anyone log in.
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError, ValueError as NaclValueError
from nacl.signing import SigningKey, VerifyKey

__all__ = ["DeviceKey", "verify"]


class DeviceKey:
    """A device's signing key (client side)."""

    def __init__(self, seed: bytes | None = None):
        self._key = SigningKey(seed) if seed is not None else SigningKey.generate()

    @property
    def seed(self) -> bytes:
        """The 32 secret bytes to store on the device."""
        return bytes(self._key)

    @property
    def public(self) -> bytes:
        """The 32-byte verify key the server stores."""
        return bytes(self._key.verify_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte detached signature of ``message``."""
        return self._key.sign(message).signature


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is ``public``'s signature of ``message``."""
    try:
        VerifyKey(public).verify(message, signature)
        return True
    except (BadSignatureError, NaclValueError, TypeError, ValueError):
        return False
