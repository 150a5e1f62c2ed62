"""The terminal client's profile: one directory per phone number.

    ~/.switchboard/+15550001/
        device.json     {"phone": ..., "device_id": ..., "seed": "<hex>"}  (mode 0600)
        outbox.jsonl    messages not yet acknowledged (client.outbox)

The seed is the device's Ed25519 signing key: whoever has it can log in as
this device, so the directory is private to its owner (0700, files 0600).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from transport.crypto import DeviceKey

__all__ = ["Profile", "default_dir"]


def default_dir(phone: str) -> str:
    return os.path.join(os.path.expanduser("~"), ".switchboard", phone)


@dataclass(frozen=True)
class Profile:
    phone: str
    device_id: int
    seed: bytes

    @property
    def key(self) -> DeviceKey:
        return DeviceKey(self.seed)

    @staticmethod
    def outbox_path(directory: str) -> str:
        return os.path.join(directory, "outbox.jsonl")

    @classmethod
    def load(cls, directory: str) -> "Profile | None":
        """The profile in ``directory``, or None if there is none (or it is unreadable)."""
        try:
            with open(os.path.join(directory, "device.json"), encoding="utf-8") as f:
                data = json.load(f)
            return cls(str(data["phone"]), int(data["device_id"]), bytes.fromhex(data["seed"]))
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return None

    def save(self, directory: str) -> None:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, "device.json")
        tmp = f"{path}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump({"phone": self.phone, "device_id": self.device_id, "seed": self.seed.hex()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
