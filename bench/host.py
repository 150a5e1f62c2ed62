"""What the benchmarks read of the host, from ``/proc``: CPU seconds
(utime + stime, all threads) of a process and of the whole machine, the
children of a process, memory (VmRSS, RssAnon, RssFile, Pss) of a process,
the kernel's socket memory, the processes whose environment carries a
tag; and the open-file limit, raised for the benchmarks that hold many
connections."""

from __future__ import annotations

import os

from supervisor.node_protocol import pid_alive

__all__ = ["cpu_seconds", "children", "machine_cpu", "memory_kb", "sockstat", "tagged_pids",
           "raise_nofile"]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from every thread of it)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def machine_cpu() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat), to tell
    how much of the machine other processes took during a measurement."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, RssShmem of a process, and its Pss and
    Pss_Anon (/proc/PID/smaps_rollup), in KiB. RSS counts a page shared by
    several processes (LMDB's map, what a fork shares) in each of them; PSS
    counts 1/n of it in each of the n, so summed over processes it is their
    memory, each page once."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(rest.split()[0])
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Pss", "Pss_Anon"):
                    out[key] = int(rest.split()[0])
    except FileNotFoundError:           # a kernel without smaps_rollup (< 4.14)
        pass
    return out


def sockstat() -> dict[str, int]:
    """From /proc/net/sockstat: sockets in use, TCP sockets allocated, and the
    kernel's TCP buffer memory in bytes (``mem`` is in pages)."""
    out = {}
    with open("/proc/net/sockstat") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "sockets:":
                out["sockets"] = int(parts[2])
            elif parts[0] == "TCP:":
                kv = dict(zip(parts[1::2], parts[2::2]))
                out["tcp_alloc"] = int(kv["alloc"])
                out["tcp_mem_bytes"] = int(kv["mem"]) * _PAGE
    return out


def tagged_pids(tag: bytes) -> set[int]:
    """Every live process but this one whose environment carries ``tag``
    (``NAME=value``; forks and children inherit it). A zombie counts as gone."""
    pids = set()
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if tag in f.read().split(b"\0"):
                    pids.add(int(entry))
        except OSError:
            continue
    pids.discard(os.getpid())
    return {pid for pid in pids if pid_alive(pid)}


def raise_nofile() -> int:
    """Raise the soft open-file limit to the hard one; returns it."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard
