"""Media across the nodes of a real cluster: SDK clients with no explicit
``media_url`` use the port their node's HELLO_OK names (and the node a
WRONG_NODE sent them to); a file alice (homed on A) sends bob (homed on B)
is fetched by B from A when the message arrives, and bob downloads it from
B. A node credential with a wrong secret is refused; a user's still works."""

from __future__ import annotations

import asyncio
import os
import re

import aiohttp
import pytest

from client import FileMessage
from tests.cluster.cluster_nodes import cluster
from tests.cluster.test_node_sdk import sdk_user
from transport import media_auth

pytestmark = pytest.mark.timeout(150)

ALICE, BOB = "+15553100001", "+15553100002"


def media_port(node) -> int:
    return int(re.findall(r"media: http://[^:]+:(\d+)/media", node.log())[-1])


async def next_file(client, timeout: float = 15.0) -> FileMessage:
    async def find():
        async for event in client.events():
            if isinstance(event, FileMessage):
                return event
    return await asyncio.wait_for(find(), timeout)


async def test_a_file_sent_to_a_user_homed_elsewhere_is_downloaded_from_its_home(tmp_path):
    with cluster(tmp_path, ("A", "B")) as c:
        # Step 1: alice on A; bob registered on B but connecting to A (sent home to B).
        alice = await sdk_user(c, "A", "A", ALICE, tmp_path)
        bob = await sdk_user(c, "B", "A", BOB, tmp_path)
        a_media, b_media = media_port(c["A"]), media_port(c["B"])
        assert a_media != b_media
        assert alice.media.base_url == f"http://127.0.0.1:{a_media}"
        assert bob.media.base_url == f"http://127.0.0.1:{b_media}"   # followed the redirect
        # Step 2: alice sends a file (uploaded to A); bob gets the message on B.
        data = os.urandom(600_000)
        path = tmp_path / "photo.jpg"
        path.write_bytes(data)
        await alice.send_file(BOB, str(path), caption="from A")
        received = await next_file(bob)
        assert received.sender == ALICE and received.file.caption == "from A"
        # Step 3: bob downloads it from his own home, B: same bytes.
        out = tmp_path / "bob.jpg"
        await bob.download(received, str(out))
        assert out.read_bytes() == data
        sha = received.file.key.sha256.hex()
        b_blob = tmp_path / "B" / "data" / "blobs" / sha[:2] / sha[2:4] / sha
        assert b_blob.exists()                      # B holds its own copy
        # Step 4: the node credential with a wrong secret is refused; bob's
        # device credential still works on B as before.
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{b_media}/media/{sha}"
            async with http.get(url, headers=media_auth.node_headers("not-the-secret")) as wrong:
                assert wrong.status == 401
        assert await bob.media.exists(sha)
        await alice.close()
        await bob.close()
