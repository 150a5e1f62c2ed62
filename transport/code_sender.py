"""Code senders: how a one-time registration code reaches its phone's owner.

Pluggable, like an SMS gateway: anything with ``send(phone, code)``.

- ``FileCodeSender`` (the default): logs the code and writes it to
  ``<data_dir>/codes/<phone>.txt``, so a person trying a node on one machine
  can read it (``run.py client`` does).
- ``MemoryCodeSender``: keeps the codes in a dict; tests read them from it.
"""

from __future__ import annotations

import logging
import os
import re

__all__ = ["FileCodeSender", "MemoryCodeSender", "read_code_file"]

log = logging.getLogger("switchboard.codes")

_PHONE = re.compile(r"^\+[1-9][0-9]{7,14}$")


def _checked(phone: str) -> str:
    if not _PHONE.match(phone):            # the only thing that becomes a file name
        raise ValueError(f"not an E.164 phone number: {phone!r}")
    return phone


class FileCodeSender:
    def __init__(self, data_dir: str):
        self.directory = os.path.join(data_dir, "codes")
        os.makedirs(self.directory, mode=0o700, exist_ok=True)

    def path_for(self, phone: str) -> str:
        return os.path.join(self.directory, f"{_checked(phone)}.txt")

    def send(self, phone: str, code: str) -> None:
        path = self.path_for(phone)
        tmp = f"{path}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(code + "\n")
        os.replace(tmp, path)
        log.info("registration code for %s: %s (also in %s)", phone, code, path)


def read_code_file(data_dir: str, phone: str) -> str | None:
    """The last code a ``FileCodeSender`` wrote for ``phone``, if any."""
    try:
        with open(os.path.join(data_dir, "codes", f"{_checked(phone)}.txt")) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


class MemoryCodeSender:
    def __init__(self) -> None:
        self.codes: dict[str, str] = {}

    def send(self, phone: str, code: str) -> None:
        self.codes[_checked(phone)] = code
