"""The local name registry (OTP's ``register/2`` and ``whereis/1``).

Names are unique per ``System``; a name is released when its actor exits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

from actors.exits import ActorError

if TYPE_CHECKING:
    from actors.process import ActorRef

__all__ = ["Registry", "AlreadyRegistered"]


class AlreadyRegistered(ActorError):
    """The name is taken by a live actor (OTP: ``{already_started, Pid}``)."""

    def __init__(self, name: Any, holder: "ActorRef"):
        super().__init__(f"{name!r} is already registered to {holder!r}")
        self.holder = holder


class Registry:
    __slots__ = ("_names",)

    def __init__(self) -> None:
        self._names: dict[Any, ActorRef] = {}

    def register(self, name: Any, ref: "ActorRef") -> None:
        holder = self._names.get(name)
        if holder is not None and holder.is_alive:
            raise AlreadyRegistered(name, holder)
        if not ref.is_alive:
            raise ActorError(f"cannot register {name!r}: {ref!r} is not alive")
        if ref.name is not None and ref.name != name:
            raise ActorError(f"{ref!r} is already registered as {ref.name!r}")
        self._names[name] = ref
        ref.name = name

    def unregister(self, name: Any) -> None:
        ref = self._names.pop(name, None)
        if ref is not None:
            ref.name = None

    def whereis(self, name: Any) -> "ActorRef | None":
        ref = self._names.get(name)
        return ref if ref is not None and ref.is_alive else None

    def forget(self, ref: "ActorRef") -> None:
        """Called when ``ref`` exits."""
        if ref.name is not None and self._names.get(ref.name) is ref:
            del self._names[ref.name]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)
