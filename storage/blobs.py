"""Media blobs: files named by the SHA-256 of their bytes.

``BlobStore(root)`` keeps each blob at ``root/ab/cd/<64 hex>`` where the
name is the hash the *server* computed while the bytes arrived, so the same
file uploaded twice is stored once, and no name a client sends ever reaches
the filesystem: every lookup first checks the name against ``^[0-9a-f]{64}$``
(``InvalidArgument`` otherwise). Uploads are written to ``root/tmp`` and
renamed into place only when complete, so a blob is either whole or absent;
the file and then its directory are fsync'd before ``commit`` returns, so a
blob acknowledged (201) survives a power loss.

Blocking file I/O: call it from the media server's own thread, never from
the chat loop.

``collect(keep, older_than, wanted)`` deletes blobs not in ``keep`` that
were last modified before ``older_than`` (seconds since the epoch): the
garbage collector for blobs no message refers to any more. Every worker of
a node runs one on the same directory, so a blob listed may be gone when
looked at: it is skipped.

Deciding and deleting are not one step, so a blob is never unlinked where
it is found. The collector first *condemns* it: renames it to
``tmp/gc-<name>.<random>``, atomically, so from then on HEAD, an upload and
a GET find it absent (an upload stores the bytes anew). Only then does it
*settle* it, looking again: it deletes the condemned file if it is still
untouched since ``older_than`` and ``wanted(name)`` (a fresh read of the
references) is false, and links it back otherwise. ``touch`` (HEAD, and an
upload of bytes already stored) reports whether it reached the blob: when
it did, it did so before the rename, so the second look sees it; when it
did not, the caller answers as if the blob were absent. So a HEAD that
said 200, or an upload that said "already stored", always leaves the blob
in place. A ``gc-`` file left by a crash between the two steps is settled
by the next collection, the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

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

    def touch(self, name: str) -> bool:
        """Mark a blob as recently wanted (the collector's grace starts again);
        False if it is not stored (or being collected): treat it as absent."""
        try:
            os.utime(self.path_for(name))
        except FileNotFoundError:
            return False
        return True

    def writer(self) -> BlobWriter:
        return BlobWriter(self.tmp)

    def commit(self, writer: BlobWriter) -> Blob:
        """Make the upload a blob under the hash of what was written."""
        writer.file.flush()
        os.fsync(writer.file.fileno())
        writer.file.close()
        name = writer.hash.hexdigest()
        target = self.path_for(name)
        if self.touch(name):                   # recently wanted: not garbage yet
            writer.abort()
            return Blob(name, writer.size, created=False)
        # new (or condemned or collected meanwhile): this one is it
        made = [p for p in (target.parent.parent, target.parent) if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(writer.path, target)
        for directory in {target.parent, *(p.parent for p in made)}:
            _fsync_dir(directory)              # the name, and any new directory, durable too
        return Blob(name, writer.size, created=True)

    def names(self) -> Iterator[str]:
        for path in self.root.glob("??/??/*"):
            if is_blob_name(path.name):
                yield path.name

    def collect(self, keep: set[str], older_than: float,
                wanted: Callable[[str], bool] = lambda name: False) -> list[str]:
        """Delete unreferenced blobs last touched before ``older_than``;
        ``wanted(name)``: whether a reference came since ``keep`` was read."""
        removed = []
        for doomed in list(self.tmp.glob("gc-*")):   # left by a crash: settle them now
            self.settle(doomed, older_than, wanted)
        for name in list(self.names()):
            if name in keep or _mtime(self.path_for(name)) >= older_than:
                continue
            doomed = self.condemn(name)
            if doomed is not None and self.settle(doomed, older_than, wanted):
                removed.append(name)
        for path in self.tmp.glob("up-*"):          # uploads abandoned by a crash
            if _mtime(path) < older_than:
                path.unlink(missing_ok=True)
        return removed

    def condemn(self, name: str) -> Path | None:
        """Take blob ``name`` out of sight (HEAD, uploads and GETs find it
        absent from now on); its new path, or None if it is gone already."""
        doomed = self.tmp / f"gc-{name}.{secrets.token_hex(6)}"
        try:
            os.rename(self.path_for(name), doomed)
        except FileNotFoundError:
            return None
        return doomed

    def settle(self, doomed: Path, older_than: float,
               wanted: Callable[[str], bool]) -> bool:
        """Delete a condemned blob if it is still garbage (True), else put it
        back: it was touched before it was condemned, or is referenced now."""
        name = doomed.name[3:3 + 64]
        if not is_blob_name(name):
            return False
        try:
            garbage = _mtime(doomed) < older_than and not wanted(name)
        except BaseException:               # cannot tell (the store failed): keep it
            self._put_back(doomed, name)
            raise
        if garbage:
            doomed.unlink(missing_ok=True)
            return True
        self._put_back(doomed, name)
        return False

    def _put_back(self, doomed: Path, name: str) -> None:
        target = self.path_for(name)
        try:
            os.link(doomed, target)
        except FileExistsError:             # stored anew meanwhile: the same bytes
            pass
        except FileNotFoundError:           # another worker's collector settled it
            return
        else:
            _fsync_dir(target.parent)
        doomed.unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    """When ``path`` was last touched; +inf if it is gone (another worker's
    collector, or an upload that ended, took it since the listing)."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
