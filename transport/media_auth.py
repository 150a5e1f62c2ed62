"""How an HTTP request proves it comes from a registered device.

Media requests carry the same device credential as the TCP session: the
device signs, with its Ed25519 key, the bytes ``media_challenge`` builds
from the method, the path, the user, the device id, the time, a random
nonce and, for an upload, the SHA-256 of the body (``X-Content-SHA256``);
the server checks the signature against the stored verify key and refuses
a time more than ``MAX_SKEW_MS`` away from its own (so a captured request
cannot be replayed later). Because the hash is signed, a captured upload
cannot carry other bytes: the server hashes what arrives and refuses a body
that does not match before the blob is committed. The nonce of an upload
is taken once per node, in its LMDB (``storage.nonces``, which every worker
process of the node shares and a restarted one still finds), so the same
captured upload is not accepted twice by any worker. Pure functions, shared
by the server and the client SDK.

Version 1 (``switchboard-media-v1``, no nonce, no hash: told apart by the
absence of ``X-Switchboard-Nonce``) signed no part of the body; the server
still takes it for GET and HEAD, which have none, and refuses it for POST.

Between the nodes of a cluster, a node that fetches a blob from the node it
was uploaded to (transport/media_fetch.py) sends ``Authorization: Node
<secret>`` instead (``node_headers``): the secret is the cluster's, drawn
by the cluster directory and handed to every worker (docs/cluster.md).
The server compares it in constant time and allows it GET and HEAD only.
"""

from __future__ import annotations

import base64
import re
import secrets
import time
from dataclasses import dataclass
from typing import Mapping

__all__ = ["USER", "DEVICE", "TIME", "SIGNATURE", "NONCE", "CONTENT", "MAX_SKEW_MS",
           "media_challenge", "media_challenge_v1", "signed_headers", "read_headers", "Credential",
           "AuthError", "node_headers", "node_secret_of"]

USER, DEVICE, TIME, SIGNATURE = ("X-Switchboard-User", "X-Switchboard-Device",
                                 "X-Switchboard-Time", "X-Switchboard-Signature")
NONCE, CONTENT = "X-Switchboard-Nonce", "X-Content-SHA256"
MAX_SKEW_MS = 300_000
_NODE = "Node "
_CONTEXT_V1 = b"switchboard-media-v1\x00"
_CONTEXT = b"switchboard-media-v2\x00"
_NONCE = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class AuthError(ValueError):
    """Missing or malformed credential headers."""


@dataclass(frozen=True)
class Credential:
    """What a request's headers claim. ``nonce`` None: a version 1 credential."""
    user: str
    device: int
    ts_ms: int
    signature: bytes
    nonce: str | None
    content: str                # the body's hex SHA-256 as declared, or "" (no body)

    def challenge(self, method: str, path: str) -> bytes:
        if self.nonce is None:
            return media_challenge_v1(method, path, self.user, self.device, self.ts_ms)
        return media_challenge(method, path, self.user, self.device, self.ts_ms,
                               self.nonce, self.content)


def media_challenge(method: str, path: str, user: str, device: int, ts_ms: int,
                    nonce: str, content: str = "") -> bytes:
    """Version 2: ``content`` is the body's hex SHA-256 ("" for GET/HEAD)."""
    return b"\x00".join([_CONTEXT + method.upper().encode(), path.encode(), user.encode(),
                         str(device).encode(), str(ts_ms).encode(), nonce.encode(),
                         content.encode()])


def media_challenge_v1(method: str, path: str, user: str, device: int, ts_ms: int) -> bytes:
    return b"\x00".join([_CONTEXT_V1 + method.upper().encode(), path.encode(), user.encode(),
                         str(device).encode(), str(ts_ms).encode()])


def signed_headers(sign, method: str, path: str, user: str, device: int,
                   ts_ms: int | None = None, *, content: str = "",
                   nonce: str | None = None) -> dict[str, str]:
    """The headers for a request; ``sign`` is ``DeviceKey.sign``; ``content``
    the hex SHA-256 of the body (an upload must have one: it is sent as
    ``X-Content-SHA256`` and signed)."""
    if content and _SHA256.fullmatch(content) is None:
        raise ValueError("content is a hex SHA-256: 64 lowercase hex digits")
    ts_ms = int(time.time() * 1000) if ts_ms is None else ts_ms
    nonce = secrets.token_hex(16) if nonce is None else nonce
    signature = sign(media_challenge(method, path, user, device, ts_ms, nonce, content))
    headers = {USER: user, DEVICE: str(device), TIME: str(ts_ms), NONCE: nonce,
               SIGNATURE: base64.b64encode(signature).decode()}
    if content:
        headers[CONTENT] = content
    return headers


def read_headers(headers: Mapping[str, str]) -> Credential:
    """The credential the headers carry; ``AuthError`` if malformed."""
    try:
        user, device, ts = headers[USER], int(headers[DEVICE]), int(headers[TIME])
        signature = base64.b64decode(headers[SIGNATURE], validate=True)
    except (KeyError, ValueError) as error:
        raise AuthError(f"missing or malformed credential headers: {error}") from None
    if len(user) > 32 or device < 1 or len(signature) != 64:
        raise AuthError("malformed credential headers")
    nonce, content = headers.get(NONCE), headers.get(CONTENT, "")
    if nonce is not None and _NONCE.fullmatch(nonce) is None:
        raise AuthError(f"{NONCE} must be 32 lowercase hex digits")
    return Credential(user, device, ts, signature, nonce, content)


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
