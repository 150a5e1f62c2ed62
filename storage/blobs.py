"""Media blobs: files named by the SHA-256 of their bytes.

``BlobStore(root)`` keeps each blob at ``root/ab/cd/<64 hex>`` where the
name is the hash the *server* computed while the bytes arrived, so the same
file uploaded twice is stored once, and no name a client sends ever reaches
the filesystem: every lookup first checks the name against ``^[0-9a-f]{64}$``
(``InvalidArgument`` otherwise). Uploads are written to ``root/tmp`` and
renamed into place only when complete, so a blob is either whole or absent.

Blocking file I/O: call it from the media server's own thread, never from
the chat loop.

``collect(keep, older_than)`` deletes blobs not in ``keep`` that were last
modified before ``older_than`` (seconds since the epoch): the garbage
collector for blobs no message refers to any more.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from storage.errors import InvalidArgument

__all__ = ["BlobStore", "BlobWriter", "Blob", "is_blob_name"]

_NAME = re.compile(r"[0-9a-f]{64}")


def is_blob_name(name: object) -> bool:
    return type(name) is str and _NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Blob:
    sha256: str
    size: int
    created: bool          # False: an identical blob was already stored


class BlobWriter:
    """One upload in progress: ``write`` chunks, then ``BlobStore.commit``
    or ``abort``."""

    def __init__(self, directory: Path):
        fd, name = tempfile.mkstemp(dir=directory, prefix="up-")
        self.file = os.fdopen(fd, "wb")
        self.path = Path(name)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.file.write(chunk)
        self.hash.update(chunk)
        self.size += len(chunk)

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.path.unlink(missing_ok=True)


class BlobStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path_for(self, name: str) -> Path:
        if not is_blob_name(name):
            raise InvalidArgument("a blob name is 64 lowercase hex digits")
        return self.root / name[:2] / name[2:4] / name

    def size(self, name: str) -> int | None:
        """The blob's size, or None if it is not stored."""
        try:
            return self.path_for(name).stat().st_size
        except FileNotFoundError:
            return None

    def touch(self, name: str) -> None:
        """Mark a blob as recently wanted (the collector's grace starts again)."""
        try:
            os.utime(self.path_for(name))
        except FileNotFoundError:
            pass

    def writer(self) -> BlobWriter:
        return BlobWriter(self.tmp)

    def commit(self, writer: BlobWriter) -> Blob:
        """Make the upload a blob under the hash of what was written."""
        writer.file.flush()
        os.fsync(writer.file.fileno())
        writer.file.close()
        name = writer.hash.hexdigest()
        target = self.path_for(name)
        if target.exists():
            writer.abort()
            os.utime(target)                   # recently wanted: not garbage yet
            return Blob(name, writer.size, created=False)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(writer.path, target)
        return Blob(name, writer.size, created=True)

    def names(self) -> Iterator[str]:
        for path in self.root.glob("??/??/*"):
            if is_blob_name(path.name):
                yield path.name

    def collect(self, keep: set[str], older_than: float) -> list[str]:
        """Delete unreferenced blobs last touched before ``older_than``."""
        removed = []
        for name in list(self.names()):
            path = self.path_for(name)
            if name not in keep and path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed.append(name)
        for path in self.tmp.glob("up-*"):          # uploads abandoned by a crash
            if path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
        return removed
