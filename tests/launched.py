"""``run.py node`` as a real subprocess, for tests that need whole processes
(SIGTERM, SIGKILL of a worker, what listens where). Every process of the node
carries a tag in its environment, so the test finds them all and kills what
is left at the end."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.host import tagged_pids

ROOT = Path(__file__).resolve().parents[1]


def run_tagged(args: list[str], timeout: float) -> tuple[subprocess.CompletedProcess, set[int]]:
    """Run ``args`` in the project directory with a test tag of its own in
    its environment (every process it starts inherits it); returns what it
    printed and the tagged processes still alive when it ended, then
    SIGKILLs those whatever happened."""
    tag = uuid.uuid4().hex
    env = dict(os.environ, SWITCHBOARD_TEST_TAG=tag)
    marker = f"SWITCHBOARD_TEST_TAG={tag}".encode()
    try:
        done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        left = tagged_pids(marker)
    finally:
        for pid in tagged_pids(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return done, left


def _listeners(pids: set[int]) -> list[str]:
    """Local addresses of the TCP listeners held by ``pids`` (ss -ltnp)."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10).stdout
    return [line.split()[3] for line in out.splitlines()
            if {int(p) for p in re.findall(r"pid=(\d+)", line)} & pids]


def wait_until(predicate, timeout: float, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy, for at most
    ``timeout`` seconds; returns that value or raises AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


@contextlib.contextmanager
def launched_node(tmp_path, workers: int, *extra: str):
    """``run.py node`` as a subprocess, its environment tagged so that every
    process of the node can be found; whatever is left is SIGKILLed after."""
    tag = f"SWITCHBOARD_TEST_TAG={uuid.uuid4().hex}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("THESPIAN_BASE_IPADDR", "SWITCHBOARD_THESPIAN_BIND")}
    env["SWITCHBOARD_TEST_TAG"] = tag.split("=")[1]
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log_file:
        launcher = subprocess.Popen(
            [sys.executable, "run.py", "node", "--data-dir", str(tmp_path / "data"),
             "--workers", str(workers), "--admin-port", "0", "--port", "0",
             "--http-port", "0", "--media-port", "0", *extra],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield launcher, log_path, tag.encode()
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=10)
        # A process may fork while we kill the others: sweep until none is left.
        for _ in range(50):
            left = tagged_pids(tag.encode())
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)


def _node_up(log_path: Path, wait_until) -> list[int]:
    try:
        up = wait_until(lambda: re.search(r"node up: .*\(pids ([\d ]+)\)", log_path.read_text()),
                        timeout=30.0, interval=0.05)
    except AssertionError:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-60:])
        raise AssertionError(f"the node did not come up within 30 s; its log ends:\n{tail}") from None
    return [int(p) for p in up.group(1).split()]


def client_port(log_path: Path) -> int:
    """The client port a launched node logged (``node up: clients HOST:PORT``)."""
    return int(re.search(r"node up: clients [\d.]+:(\d+)", log_path.read_text()).group(1))


def admin_port(log_path: Path) -> int:
    """The Thespian admin port a launched node logged (``node up: ..., admin
    HOST:PORT``). Nodes are launched with ``--admin-port 0``: the launcher
    picks a free port and binds it at once, where a port picked here would
    stay free for the whole start of the process, for anything to take."""
    return int(re.search(r"node up: clients [\d.:]+, admin [\d.]+:(\d+)",
                         log_path.read_text()).group(1))


class FileCodes:
    """Codes as a launched node's FileCodeSender left them under its data dir
    (what ``Node.codes`` is for an in-process node)."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir

    def __getitem__(self, phone: str) -> str:
        from transport.code_sender import read_code_file
        return read_code_file(self.data_dir, phone)


def node_of(tmp_path, log_path: Path):
    """A ``tests.nodes.Node`` for the launched node (no in-process system)."""
    from tests.nodes import Node
    data_dir = str(Path(tmp_path) / "data")
    return Node("127.0.0.1", client_port(log_path), FileCodes(data_dir), None, data_dir)


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def port_owner(port: int) -> int | None:
    """The pid listening on TCP ``port`` (a launched node's worker), if any."""
    out = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10).stdout
    pids = re.findall(r"pid=(\d+)", out)
    return int(pids[0]) if pids else None
