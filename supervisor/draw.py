"""Draw the supervision tree of ``supervisor/tree.py`` as ASCII, so
docs/design.md shows the tree the code really starts (a test compares them).

    python -m supervisor.draw                       # print it
    python -m supervisor.draw --update docs/design.md   # rewrite the copy there
"""

from __future__ import annotations

from supervisor.base import Supervisor
from supervisor.spec import ChildSpec, SupFlags, resolve


def _flags(flags: SupFlags) -> str:
    return f"{flags.strategy}, intensity {flags.intensity} in {flags.period:g} s"


def _name(start) -> str:
    return start if isinstance(start, str) else f"{start.__module__}.{start.__qualname__}"


def _shutdown(spec: ChildSpec) -> str:
    return spec.shutdown if isinstance(spec.shutdown, str) else f"{spec.shutdown:g} s"


def _children(specs: list[ChildSpec], prefix: str) -> list[str]:
    lines = []
    for i, spec in enumerate(specs):
        last = i == len(specs) - 1
        branch, indent = ("└── ", "    ") if last else ("├── ", "│   ")
        name = _name(spec.start)
        label = name if spec.id == name else f"{spec.id} = {name}"
        label += f" ({spec.type}, {spec.restart}, shutdown {_shutdown(spec)})"
        target = resolve(spec.start)
        if isinstance(target, type) and issubclass(target, Supervisor):
            flags, grandchildren = target(*spec.args).configure()
            lines.append(f"{prefix}{branch}{label}: {_flags(flags)}")
            lines.extend(_children(grandchildren, prefix + indent))
        else:
            lines.append(f"{prefix}{branch}{label}")
    return lines


def render() -> str:
    from supervisor import node_supervisor, tree
    lines = [
        f"NodeSupervisor (Thespian actor): {_flags(node_supervisor.DEFAULT_FLAGS)}",
        "└── worker process x N (WorkerProcess, Thespian actor; asyncio loop beside Thespian's)",
        f"    └── root (supervisor.base.Supervisor): {_flags(tree.ROOT_FLAGS)}",
    ]
    lines.extend(_children(tree.ROOT_CHILDREN, "        "))
    return "\n".join(lines)


BEGIN, END = "<!-- tree:begin -->", "<!-- tree:end -->"


def embedded(text: str) -> str:
    """The tree between the markers of a document."""
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:stop].strip().removeprefix("```").removesuffix("```").strip()


def update(path: str) -> None:
    with open(path) as f:
        text = f.read()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    with open(path, "w") as f:
        f.write(f"{text[:start]}\n```\n{render()}\n```\n{text[stop:]}")


if __name__ == "__main__":
    import sys
    if sys.argv[1:2] == ["--update"]:
        update(sys.argv[2])
    else:
        print(render())
