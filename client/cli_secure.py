"""The terminal client's end-to-end commands and output (a mixin of
``client.cli.Chat``): files and safety numbers, and what the SDK reports
about encryption.

    /send-file PATH    send a file to the current peer (encrypted, then uploaded)
    /get HASH [DEST]   save a file received this session (HASH: a prefix); never
                       overwrites: without DEST, the sender's name made safe
                       (no path, no leading dot), "name (1).ext" if taken
    /safety [+N]       the safety number with them, to compare out of band

Output: ``[12:01] +15550002: [file photo.jpg image/jpeg, 3145728 bytes]
caption   (/get 0123abcd4567)``; ``--`` lines for a message that failed to
decrypt (never its text), a contact's new device, and a changed security
code with the new safety number.
"""

from __future__ import annotations

import os
import time

from client import events as ev
from client.errors import ClientError
from client.sdk import new_message_id

__all__ = ["SecureCommands"]


def clock(ms: int | None) -> str:
    return time.strftime("%H:%M", time.localtime((ms or time.time() * 1000) / 1000))


def safe_name(name: str) -> str:
    """The sender's file name as a plain name in the current directory:
    no directory part, no control characters, no leading dots (a sender
    must not be able to drop a dotfile such as ``.bashrc``), 200 bytes at most."""
    name = "".join(c for c in os.path.basename(name.replace("\\", "/")) if c.isprintable())
    return name.strip().lstrip(".").strip().encode()[:200].decode("utf-8", "ignore")


def free_name(directory: str, name: str) -> str:
    """``name`` in ``directory``, or ``name (1).ext``, ``name (2).ext``...:
    the first with neither a file nor a partial download (``.part``) there."""
    stem, ext = os.path.splitext(name)
    candidate, n = name, 0
    while any(os.path.lexists(os.path.join(directory, c)) for c in (candidate, candidate + ".part")):
        n += 1
        candidate = f"{stem} ({n}){ext}"
    return candidate if directory == "." else os.path.join(directory, candidate)


class SecureCommands:
    """Needs the host's ``client``, ``out``, ``spawn`` (a send's id second),
    ``request``, ``peer``, ``mine`` and ``files`` (see ``client.cli.Chat``)."""

    def send_file(self, path: str) -> None:
        if self.peer is None:
            self.out("-- pick someone first: /chat +NUMBER")
        elif not path or not os.path.isfile(path):
            self.out("-- usage: /send-file PATH (an existing file)")
        else:
            id, to, name = new_message_id(), self.peer, os.path.basename(path)
            self.mine[id] = [to, f"[file {name}]", None, ev.Status.QUEUED]
            self.out(f"-- encrypting and uploading {name}…")
            self.spawn(self.request(self.client.send_file(to, path, id=id)), id)

    def get_file(self, prefix: str = "", dest: str = "") -> None:
        found = [info for sha, info in self.files.items() if prefix and sha.startswith(prefix)]
        if len(found) != 1:
            self.out("-- usage: /get HASH [DEST] (the hash of a file received this session)")
            return
        info = found[0]
        dest = dest or free_name(".", safe_name(info.name) or info.sha256[:16])
        if os.path.lexists(dest):
            self.out(f"-- {dest} exists; not overwritten (/get HASH DEST with a new name)")
            return
        self.spawn(self.fetch(info, dest))

    async def fetch(self, info: ev.MediaInfo, dest: str) -> None:
        try:
            await self.client.download(info, dest, overwrite=False)
            self.out(f"-- saved {dest} ({info.size} bytes, checked)")
        except FileExistsError:
            self.out(f"-- {dest} appeared meanwhile; not overwritten")
        except Exception as error:          # noqa: BLE001 - reported, never fatal to the chat
            self.out(f"-- download failed: {error}")

    async def safety(self, peer: str | None) -> None:
        if peer is None:
            self.out("-- usage: /safety +NUMBER (or /chat with them first)")
            return
        try:
            number = await self.client.safety_number(peer)
            self.out(f"-- safety number with {peer}: {number}")
            self.out("-- compare it with theirs (in person, or a call): if it matches, "
                     "nobody is in the middle")
        except (ValueError, ClientError) as error:
            self.out(f"-- {error}")

    def secure_event(self, event) -> bool:
        """Show an end-to-end event; False if ``event`` is not one."""
        kind = type(event)
        if kind is ev.FileMessage:
            self.files[event.file.sha256] = event.file
            self.out(f"[{clock(event.ts)}] {event.sender}: [file {event.file.name} "
                     f"{event.file.mime}, {event.file.size} bytes] {event.file.caption}".rstrip()
                     + f"   (/get {event.file.sha256[:12]})")
        elif kind is ev.Undecryptable:
            self.out(f"-- a message from {event.sender} could not be decrypted "
                     "(tampered with, or sent to an old device); it was discarded")
        elif kind is ev.KeyChanged:
            self.out(f"-- {event.user} registered a new device: their security code "
                     f"changes (/safety {event.user})")
        elif kind is ev.IdentityChanged:
            self.out(f"-- {event.user}'s security code changed; new safety number: "
                     f"{event.safety_number}")
        else:
            return False
        return True
