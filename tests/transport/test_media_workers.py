"""An upload's nonce is taken once per node, not per worker process: a real
``run.py node`` with two workers sharing the media port (SO_REUSEPORT). A
captured upload replayed against the other worker is refused 401
"replayed", and so it is against the accepting worker after it was
SIGKILLed and restarted (the nonce is in the node's LMDB: storage/nonces.py).

Which worker serves a request is not left to the kernel's hash: the test
opens a connection, reads with ``ss`` which worker process accepted it,
and sends the request only over a connection of the worker it wants."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import time

import pytest

from tests.e2e.conftest import Node, register
from tests.launched import FileCodes, _node_up, client_port, launched_node, wait_until
from transport import media_auth

pytestmark = pytest.mark.timeout(120)

ALICE = "+15550000071"
ATTEMPTS = 2_000            # connections tried to reach one worker (each ~1/2 likely once
REACH_FOR = 30.0            # it listens), for at most this many seconds


def media_port(log_path) -> int:
    return int(wait_until(lambda: re.search(r"media: http://[\d.]+:(\d+)/media",
                                            log_path.read_text()), 10).group(1))


def accepted_by(port: int, client_port: int, timeout: float = 3.0) -> int | None:
    """The pid that accepted the connection from local port ``client_port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["ss", "-tnpH", "state", "established",
                              f"( sport = :{port} and dport = :{client_port} )"],
                             capture_output=True, text=True, timeout=10).stdout
        pids = re.findall(r"pid=(\d+)", out)
        if pids:
            return int(pids[0])
        time.sleep(0.01)
    return None


def post_via(worker: int, port: int, headers: dict, body: bytes) -> tuple[int, str]:
    """POST /media over a connection that ``worker`` accepted (a restarted
    worker may take a moment to listen: the others accept until then)."""
    deadline = time.monotonic() + REACH_FOR
    for _ in range(ATTEMPTS):
        if time.monotonic() > deadline:
            break
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.connect()
            if accepted_by(port, conn.sock.getsockname()[1]) != worker:
                continue
            conn.request("POST", "/media", body=body, headers=headers)
            reply = conn.getresponse()
            return reply.status, reply.read().decode()
        finally:
            conn.close()
    raise AssertionError(f"worker {worker} accepted none of the connections of {REACH_FOR} s")


def restarted(log_path, slot: int, old: int) -> int | None:
    pids = re.findall(rf"worker {slot} started \(pid (\d+)\)", log_path.read_text())
    return int(pids[-1]) if pids and int(pids[-1]) != old else None


async def test_a_captured_upload_is_refused_by_every_worker_and_after_a_restart(tmp_path):
    with launched_node(tmp_path, 2) as (launcher, log_path, tag):
        # Step 1: a node with two workers; alice registers.
        first, second = _node_up(log_path, wait_until)
        port = media_port(log_path)
        data = str(tmp_path / "data")
        account = await register(Node("127.0.0.1", client_port(log_path), FileCodes(data),
                                      None, data), ALICE)
        body = os.urandom(4096)
        digest = hashlib.sha256(body).hexdigest()
        captured = media_auth.signed_headers(account.key.sign, "POST", "/media", ALICE,
                                             account.device, content=digest)
        # Step 2: the upload is accepted by the first worker.
        assert post_via(first, port, captured, body)[0] == 201
        # Step 3: the same request replayed against the second worker: refused.
        status, text = post_via(second, port, captured, body)
        assert status == 401 and "replayed" in text, (status, text)
        # Step 4: the accepting worker is SIGKILLed; its supervisor starts a new one,
        # which has never seen the request in its memory, and refuses it too.
        slot = int(re.search(rf"worker (\d+) started \(pid {first}\)", log_path.read_text())[1])
        os.kill(first, signal.SIGKILL)
        again = wait_until(lambda: restarted(log_path, slot, first), timeout=20.0)
        status, text = post_via(again, port, captured, body)
        assert status == 401 and "replayed" in text, (status, text)
        # Step 5: the new worker takes uploads (a fresh nonce): the refusal was the nonce's.
        fresh = media_auth.signed_headers(account.key.sign, "POST", "/media", ALICE,
                                          account.device, content=digest)
        assert post_via(again, port, fresh, body)[0] == 200        # stored already
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
