"""Files over the node's media HTTP API (used by ``Client.send_file`` and
``Client.download``; docs/protocol.md, "Media over HTTP").

Every request is signed with the device key (``transport.media_auth``), the
same credential as the TCP login; an upload's signature covers the SHA-256
of its body too. The server only ever holds ciphertext:

- ``put_file(path)``: encrypts the file with a fresh key (``MediaEncryptor``,
  streamed to a temporary file, so a big file is never all in memory),
  asks ``HEAD /media/<sha256>`` whether the server has that ciphertext
  already and uploads it (``POST /media``, streamed, ``X-Content-SHA256`` signed)
  only if not. Returns the ``MediaKey`` and whether bytes were uploaded.
  A file this client already sent (same SHA-256 of its plaintext, kept for
  the last ``SENT_KEPT`` files) reuses its ``MediaKey``, so its blob too:
  the HEAD finds it and nothing is uploaded (WhatsApp does the same for
  forwards). The server learns only that two messages share a blob, which
  the media refs of their SENDs tell it anyway; the key still travels only
  inside encrypted messages.
- ``get_file(info, dest)``: downloads the blob to ``dest + ".part"``,
  resuming from what is there with a ``Range`` request, then decrypts it
  to ``dest`` (written aside and renamed), which checks every chunk, the
  size and the SHA-256: a tampered or truncated blob raises ``DecryptError``
  and leaves no ``dest``.

The encryption and decryption run on a thread so the client's event loop
keeps serving its connection.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections import OrderedDict
from typing import Any, Callable

import aiohttp

from transport import media_auth
from transport.e2e import MediaDecryptor, MediaEncryptor, MediaKey
from client.events import MediaInfo

__all__ = ["MediaClient", "MediaError", "encrypt_file", "decrypt_file", "file_sha256"]

READ = 1 << 20                  # bytes per read when encrypting, decrypting, downloading
SENT_KEPT = 1000                # files remembered for reuse of their MediaKey


class MediaError(Exception):
    """The media server refused a request (``status``) or could not be reached."""

    def __init__(self, status: int, text: str):
        super().__init__(f"media server: {status} {text}")
        self.status = status


def encrypt_file(src: str, dst: str) -> MediaKey:
    """Encrypt ``src`` into ``dst`` with a fresh key (blocking)."""
    encryptor = MediaEncryptor()
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while chunk := fin.read(READ):
            fout.write(encryptor.update(chunk))
        tail, key = encryptor.finish()
        fout.write(tail)
    return key


def file_sha256(path: str) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(READ):
            digest.update(chunk)
    return digest.digest()


def decrypt_file(src: str, dst: str, key: MediaKey, overwrite: bool = True) -> None:
    """Decrypt ``src`` into ``dst`` (atomically; nothing at ``dst`` on error).
    ``overwrite`` False: FileExistsError if ``dst`` exists, even if it
    appeared while decrypting (the file is linked into place, not renamed)."""
    decryptor = MediaDecryptor(key)
    tmp = f"{dst}.tmp"
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(READ):
                fout.write(decryptor.update(chunk))
            fout.write(decryptor.finish())
        if overwrite:
            os.replace(tmp, dst)
        else:
            os.link(tmp, dst)                   # FileExistsError: dst is never replaced
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class MediaClient:
    """``base_url``: the node's media root (``http://host:5280``);
    ``credentials()``: ``(user, device_id, sign)`` of the logged-in device."""

    def __init__(self, base_url: str, credentials: Callable[[], tuple[str, int, Any]]):
        self.base_url, self.credentials = base_url.rstrip("/"), credentials
        self._http: aiohttp.ClientSession | None = None
        self._sent: OrderedDict[bytes, MediaKey] = OrderedDict()   # plaintext sha256 -> key
        self.uploaded = self.skipped = 0        # put_file outcomes, for apps and tests

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self._http

    def _headers(self, method: str, path: str, content: str = "") -> dict[str, str]:
        user, device, sign = self.credentials()
        return media_auth.signed_headers(sign, method, path, user, device, content=content)

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    # -- blobs as they are ---------------------------------------------------------------
    async def exists(self, sha256: str) -> bool:
        path = f"/media/{sha256}"
        async with self._session().head(self.base_url + path,
                                        headers=self._headers("HEAD", path)) as response:
            if response.status not in (200, 404):
                raise MediaError(response.status, await response.text())
            return response.status == 200

    async def upload(self, path: str, sha256: str | None = None) -> dict:
        """POST the file at ``path`` as it is; the server's ``{"sha256", "size"}``.
        ``sha256``: the file's hex SHA-256 if known (else it is computed): the
        credential signs it, so the request carries these bytes only."""
        if sha256 is None:
            sha256 = (await asyncio.get_running_loop().run_in_executor(
                None, file_sha256, path)).hex()
        headers = self._headers("POST", "/media", content=sha256)
        headers["Content-Length"] = str(os.path.getsize(path))
        with open(path, "rb") as body:
            async with self._session().post(self.base_url + "/media", data=body,
                                            headers=headers) as response:
                if response.status not in (200, 201):
                    raise MediaError(response.status, await response.text())
                return await response.json()

    async def download(self, sha256: str, dest: str) -> int:
        """GET blob ``sha256`` into ``dest``, resuming a partial ``dest``
        with a Range request; returns the bytes now in ``dest``."""
        offset = os.path.getsize(dest) if os.path.exists(dest) else 0
        path = f"/media/{sha256}"
        headers = self._headers("GET", path)
        if offset:
            headers["Range"] = f"bytes={offset}-"
        async with self._session().get(self.base_url + path, headers=headers) as response:
            if response.status == 416:          # nothing after offset: already whole
                return offset
            if response.status not in (200, 206):
                raise MediaError(response.status, await response.text())
            mode = "ab" if response.status == 206 else "wb"
            with open(dest, mode) as out:
                async for chunk in response.content.iter_chunked(READ):
                    out.write(chunk)
        return os.path.getsize(dest)

    # -- encrypted files -------------------------------------------------------------------
    async def put_file(self, path: str) -> tuple[MediaKey, bool]:
        """Encrypt and upload unless already there: ``(MediaKey, uploaded)``."""
        loop = asyncio.get_running_loop()
        digest = await loop.run_in_executor(None, file_sha256, path)
        known = self._sent.get(digest)
        if known is not None and await self.exists(known.sha256.hex()):
            self.skipped += 1
            return known, False
        fd, tmp = tempfile.mkstemp(prefix="switchboard-up-")
        os.close(fd)
        try:
            key = await loop.run_in_executor(None, encrypt_file, path, tmp)
            uploaded = not await self.exists(key.sha256.hex())
            if uploaded:
                await self.upload(tmp, key.sha256.hex())
        finally:
            os.unlink(tmp)
        self.uploaded += uploaded
        self.skipped += not uploaded
        self._sent[digest] = key
        if len(self._sent) > SENT_KEPT:
            self._sent.popitem(last=False)
        return key, uploaded

    async def get_file(self, info: MediaInfo, dest: str, overwrite: bool = True) -> str:
        if not overwrite and os.path.lexists(dest):
            raise FileExistsError(f"{dest} exists")
        part = f"{dest}.part"
        await self.download(info.sha256, part)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, decrypt_file, part, dest, info.key, overwrite)
        finally:
            os.unlink(part)                     # whole and decrypted, or not worth resuming
        return dest
