"""The outbox: messages written by the app and not yet acknowledged.

A message enters the outbox before its SEND is written and leaves it only
when the server ACKs it (or refuses it for good). Entries keep the order
they were added in (``pos``), and that is the order they are sent and
resent in, so a conversation stays in order across reconnects. Resending
is safe because the server deduplicates SENDs by (sender, id).

Persistence (optional, ``path``): a JSON-lines journal in the client's
profile directory, one line per change::

    {"add": "<id>", "to": "+1555...", "body": "<base64>", "at": <ms>[, "media": [<sha256>...]]
     [, "device": <the recipient's device the body is sealed for>]}
    {"set": "<id>", "body": "<base64>", "device": <n>}     (sealed again: same place)
    {"del": "<id>"}

An ``add`` (and a ``set``: ``replace()``, a body sealed again for the
recipient's new device, which keeps its place in the order) is flushed and
fsync'd before it returns, so a message the app was told is queued
survives a crash; a ``del`` is only flushed (losing one means a harmless
resend). Opening replays the journal, ignores a torn
last line, and rewrites the file compacted; it is compacted again whenever
deletions outnumber live entries by ``COMPACT_AFTER``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Iterator

__all__ = ["Outbox", "OutboxEntry"]

log = logging.getLogger("switchboard.client.outbox")

COMPACT_AFTER = 1000


@dataclass(slots=True)
class OutboxEntry:
    id: str
    to: str
    body: bytes
    at: int = 0         # ms, local clock, when the app wrote it
    pos: int = 0        # position in send order (set by the outbox)
    retries: int = 0    # INTERNAL / RATE_LIMITED answers so far
    media: tuple[str, ...] = ()   # blob hashes the body refers to (SEND.media)
    device: int | None = None     # the recipient's device the body is sealed for (SEND.device)
    reseals: int = 0    # times sealed again after STALE_DEVICE (memory only)


class Outbox:
    """Ordered ``id -> OutboxEntry``, in memory or journaled to ``path``."""

    def __init__(self, path: str | None = None, *, fsync: bool = True):
        self.path, self.fsync = path, fsync
        self._entries: dict[str, OutboxEntry] = {}
        self._next_pos = 0
        self._deleted = 0
        self._file = None
        if path is not None:
            self._load(path)
            self._rewrite()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, id: str) -> bool:
        return id in self._entries

    def __iter__(self) -> Iterator[OutboxEntry]:
        return iter(list(self._entries.values()))

    def get(self, id: str) -> OutboxEntry | None:
        return self._entries.get(id)

    def add(self, id: str, to: str, body: bytes, at: int | None = None,
            media: tuple[str, ...] = (), device: int | None = None) -> OutboxEntry:
        entry = OutboxEntry(id, to, body, int(time.time() * 1000) if at is None else at,
                            media=tuple(media), device=device)
        self._insert(entry)
        self._write(_record(entry), sync=self.fsync)
        return entry

    def replace(self, id: str, body: bytes, device: int | None) -> OutboxEntry | None:
        """A new body for queued message ``id`` (sealed again for ``device``),
        in the same place in the order."""
        entry = self._entries.get(id)
        if entry is not None:
            entry.body, entry.device = body, device
            self._write({"set": id, "body": base64.b64encode(body).decode(), "device": device},
                        sync=self.fsync)
        return entry

    def remove(self, id: str) -> OutboxEntry | None:
        entry = self._entries.pop(id, None)
        if entry is not None and self._file is not None:
            self._write({"del": id}, sync=False)
            self._deleted += 1
            if self._deleted > COMPACT_AFTER + len(self._entries):
                self._rewrite()
        return entry

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # -- the journal ----------------------------------------------------------------
    def _insert(self, entry: OutboxEntry) -> None:
        entry.pos = self._next_pos
        self._next_pos += 1
        self._entries[entry.id] = entry

    def _load(self, path: str) -> None:
        try:
            f = open(path, encoding="utf-8")
        except FileNotFoundError:
            return
        with f:
            for n, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    if "add" in record:
                        self._entries.pop(record["add"], None)
                        self._insert(OutboxEntry(record["add"], record["to"],
                                                 base64.b64decode(record["body"]), int(record["at"]),
                                                 media=tuple(record.get("media", ())),
                                                 device=_device(record.get("device"))))
                    elif "set" in record:
                        entry = self._entries.get(record["set"])
                        if entry is not None:
                            entry.body = base64.b64decode(record["body"])
                            entry.device = _device(record["device"])
                    else:
                        self._entries.pop(record["del"], None)
                except (ValueError, KeyError, TypeError):
                    log.warning("%s:%d: skipping a damaged outbox line", path, n)

    def _rewrite(self) -> None:
        """Write the live entries to a fresh file and swap it in atomically."""
        self.close()
        tmp = f"{self.path}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            for e in self._entries.values():
                f.write(json.dumps(_record(e)) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._deleted = 0
        self._file = open(self.path, "a", encoding="utf-8")

    def _write(self, record: dict, *, sync: bool) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())


def _record(e: OutboxEntry) -> dict:
    record = {"add": e.id, "to": e.to, "body": base64.b64encode(e.body).decode(), "at": e.at}
    if e.media:
        record["media"] = list(e.media)
    if e.device is not None:
        record["device"] = e.device
    return record


def _device(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"bad device {value!r}")
    return value
