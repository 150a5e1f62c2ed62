"""The transport's half of the key directory: checking and splitting a
published bundle, and joining a fetched one (used by ``translate``).

Crypto stays in ``transport/``: before a ``KEYS_PUBLISH`` reaches the
session, ``publish_command`` parses the bundle strictly
(``KeyBundle.from_bytes``) and checks both of its signatures (``verify``).
A bundle that fails becomes ``RefuseRequest(BAD_BUNDLE)``, answered by the
session in order with the client's other requests; one that passes is
split into its identity, its signed part (the bundle without one-time
prekeys, stored as opaque bytes) and its one-time prekeys. Whether the
identity is the device's registered key is checked in the storage
transaction (``storage.keydir``), against the account as committed.

``fetched_ack`` turns the session's ``KeysFetched`` into the ACK of a
``KEYS_FETCH``: ``{"device": id, "bundle": <the signed part with the one
one-time prekey handed out, if any>}``.
"""

from __future__ import annotations

from typing import Any

from actors.messages import BAD_BUNDLE, FetchKeys, KeysFetched, PublishKeys, RefuseRequest
from transport import wire
from transport.e2e import BadSignature, FormatError, KeyBundle

__all__ = ["publish_command", "fetch_command", "fetched_ack"]


def publish_command(frame: wire.KeysPublish, client: Any) -> Any:
    try:
        bundle = KeyBundle.from_bytes(frame.bundle).verify()
    except (FormatError, BadSignature) as error:
        return RefuseRequest(frame.ref, BAD_BUNDLE, str(error), client)
    if len(bundle.one_time) > wire.MAX_PUBLISH:
        return RefuseRequest(frame.ref, BAD_BUNDLE,
                             f"at most {wire.MAX_PUBLISH} one-time prekeys per publish", client)
    signed = bundle.with_one_time(()).to_bytes()
    return PublishKeys(frame.ref, bundle.identity, signed, bundle.one_time, client)


def fetch_command(frame: wire.KeysFetch, client: Any) -> FetchKeys:
    return FetchKeys(frame.ref, frame.user, client, frame.one_time)


def fetched_ack(event: KeysFetched) -> wire.Ack:
    bundle = KeyBundle.from_bytes(event.signed)
    one_time = (event.one_time,) if event.one_time is not None else ()
    return wire.Ack({"device": event.device, "bundle": bundle.with_one_time(one_time).to_bytes()},
                    ref=event.ref)
