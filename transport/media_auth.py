"""How an HTTP request proves it comes from a registered device.

Media requests carry the same device credential as the TCP session: the
device signs, with its Ed25519 key, the bytes ``media_challenge`` builds
from the method, the path, the user, the device id and the time; the server
checks the signature against the stored verify key and refuses a time more
than ``MAX_SKEW_MS`` away from its own (so a captured request cannot be
replayed later). Pure functions, shared by the server and the client SDK.

Between the nodes of a cluster, a node that fetches a blob from the node it
was uploaded to (transport/media_fetch.py) sends ``Authorization: Node
<secret>`` instead (``node_headers``): the secret is the cluster's, drawn
by the cluster directory and handed to every worker (docs/cluster.md).
The server compares it in constant time and allows it GET and HEAD only.
"""

from __future__ import annotations

import base64
import time
from typing import Mapping

__all__ = ["USER", "DEVICE", "TIME", "SIGNATURE", "MAX_SKEW_MS", "media_challenge",
           "signed_headers", "read_headers", "AuthError", "node_headers", "node_secret_of"]

USER, DEVICE, TIME, SIGNATURE = ("X-Switchboard-User", "X-Switchboard-Device",
                                 "X-Switchboard-Time", "X-Switchboard-Signature")
MAX_SKEW_MS = 300_000
_NODE = "Node "
_CONTEXT = b"switchboard-media-v1\x00"


class AuthError(ValueError):
    """Missing or malformed credential headers."""


def media_challenge(method: str, path: str, user: str, device: int, ts_ms: int) -> bytes:
    return b"\x00".join([_CONTEXT + method.upper().encode(), path.encode(), user.encode(),
                         str(device).encode(), str(ts_ms).encode()])


def signed_headers(sign, method: str, path: str, user: str, device: int,
                   ts_ms: int | None = None) -> dict[str, str]:
    """The headers for a request; ``sign`` is ``DeviceKey.sign``."""
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    signature = sign(media_challenge(method, path, user, device, ts_ms))
    return {USER: user, DEVICE: str(device), TIME: str(ts_ms),
            SIGNATURE: base64.b64encode(signature).decode()}


def read_headers(headers: Mapping[str, str]) -> tuple[str, int, int, bytes]:
    """``(user, device, ts_ms, signature)``; ``AuthError`` if malformed."""
    try:
        user, device, ts = headers[USER], int(headers[DEVICE]), int(headers[TIME])
        signature = base64.b64decode(headers[SIGNATURE], validate=True)
    except (KeyError, ValueError) as error:
        raise AuthError(f"missing or malformed credential headers: {error}") from None
    if len(user) > 32 or device < 1 or len(signature) != 64:
        raise AuthError("malformed credential headers")
    return user, device, ts, signature


def node_headers(secret: str) -> dict[str, str]:
    """The headers of a node's request to another node's media HTTP."""
    if not secret:
        raise ValueError("no cluster secret: this node is not in a cluster (yet)")
    return {"Authorization": _NODE + secret}


def node_secret_of(authorization: str) -> str:
    """The secret of an ``Authorization: Node <secret>`` value; AuthError
    for any other value."""
    if not authorization.startswith(_NODE) or len(authorization) <= len(_NODE):
        raise AuthError("the only Authorization scheme is Node <cluster secret>")
    return authorization[len(_NODE):]
