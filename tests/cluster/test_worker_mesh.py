"""Several workers on one node, as one chat service: a real ``run.py node
--workers 2`` subprocess, clients spread over both workers by the kernel
(SO_REUSEPORT), and everything that must cross between them crossing live:
messages, receipts, presence, typing, and the one-session-per-user rule."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request

import pytest

from supervisor.procs import process_tree
from tests.cluster.mesh_node import mesh_node, next_of, spread, worker_status
from tests.e2e.conftest import login, register
from tests.launched import wait_until
from transport import wire

pytestmark = pytest.mark.timeout(120)

USERS = [f"+1555000{i:04d}" for i in range(12)]


async def test_two_workers_chat_as_one_node(tmp_path):
    with mesh_node(tmp_path) as mesh:
        node, log_path = mesh.node, mesh.log_path
        # Step 1: 12 users log in; the kernel spreads their connections over
        # both workers.
        accounts = [await register(node, phone) for phone in USERS]
        clients = [await login(node, a) for a in accounts]
        assert sum(w["connections"] for w in await spread(mesh, clients, accounts)) == len(USERS)
        # ... and each worker's replica of the directory names the other's users
        # (the directory's batched OwnersChanged reached both).
        await asyncio.to_thread(wait_until, lambda: (s := worker_status(log_path.read_text()))
                                and [w["mesh"]["remote_users"] for w in s]
                                == [s[1]["connections"], s[0]["connections"]], 10)
        # Step 2: every user sends to every other one once (132 messages):
        # each is pushed live, wherever the recipient is, and its delivered
        # receipt reaches the sender.
        for i, sender in enumerate(clients):
            for j, phone in enumerate(USERS):
                if i != j:
                    sender.send(wire.Send(f"m{i}-{j}", phone, b"hi", ref=sender.ref()))
        want = len(USERS) - 1
        got = [set() for _ in USERS]
        receipts = [set() for _ in USERS]

        async def read(j: int, client) -> None:   # messages and receipts come interleaved
            while len(got[j]) < want or len(receipts[j]) < want:
                frame = await next_of(client, (wire.Message, wire.Receipt), 10)
                if isinstance(frame, wire.Message):
                    got[j].add(frame.id)
                    client.send(wire.Received((frame.seq,), ref=client.ref()))
                else:
                    receipts[j].add(frame.id)
        await asyncio.gather(*(read(j, client) for j, client in enumerate(clients)))
        for j in range(len(USERS)):
            assert got[j] == {f"m{i}-{j}" for i in range(len(USERS)) if i != j}
            assert receipts[j] == {f"m{j}-{k}" for k in range(len(USERS)) if k != j}
        status = await asyncio.to_thread(worker_status, log_path.read_text())
        assert all(w["mesh"]["received_items"] > 0 for w in status), [w["mesh"] for w in status]
        with urllib.request.urlopen(f"http://127.0.0.1:{status[0]['http_port']}/metrics",
                                    timeout=5) as r:
            metrics = r.read().decode()
        assert re.search(r"^switchboard_mesh_received_items_total [1-9]", metrics, re.M), metrics
        # Step 3: presence and typing cross too: user 0 watches everyone.
        watcher = clients[0]
        watcher.send(wire.Subscribe(tuple(USERS[1:]), ref=watcher.ref()))
        online = set()
        while len(online) < len(USERS) - 1:
            frame = await next_of(watcher, wire.Presence)
            assert frame.online, frame
            online.add(frame.user)
        for k in range(1, len(USERS)):
            clients[k].send(wire.Typing(USERS[0], True, ref=clients[k].ref()))
        typing = set()
        while len(typing) < len(USERS) - 1:
            typing.add((await next_of(watcher, wire.TypingEvent)).sender)
        for client in clients[1:]:
            await client.close()
        offline = set()
        while len(offline) < len(USERS) - 1:
            frame = await next_of(watcher, wire.Presence)
            if not frame.online:
                offline.add(frame.user)
        assert offline == set(USERS[1:])
        # Step 4: one session per user across workers: logging in user 0
        # again, from connections that land on either worker, replaces the
        # previous one every time.
        previous = watcher
        for _ in range(6):
            again = await login(node, accounts[0])
            frame, _ = await previous.recv_until(
                lambda f: isinstance(f, wire.Error) and f.ref == 0, 5)
            assert frame.code == wire.ErrorCode.SESSION_REPLACED
            assert await previous.closed()
            previous = again
        assert isinstance(await previous.answer(previous.send(wire.Ping(ref=previous.ref()))),
                          wire.Ack)
        await previous.close()


async def test_a_killed_worker_leaves_the_mesh_and_its_users_come_back(tmp_path):
    with mesh_node(tmp_path) as mesh:
        node, log_path, pids = mesh.node, mesh.log_path, mesh.workers
        accounts = [await register(node, phone) for phone in USERS[:8]]
        clients = [await login(node, a) for a in accounts]
        await spread(mesh, clients, accounts)
        # Step 1: worker 0 is SIGKILLed. Its clients lose their connections;
        # the others stay connected and are still served.
        os.kill(pids[0], signal.SIGKILL)
        survivors, lost = [], []
        for account, client in zip(accounts, clients):
            try:
                await client.answer(client.send(wire.Ping(ref=client.ref())), timeout=3)
                survivors.append((account, client))
            except (EOFError, ConnectionError, asyncio.TimeoutError):
                lost.append(account)
        assert survivors and lost
        # Step 2: a survivor writes to every user; the lost ones log in again
        # (landing on the survivor or on the restarted worker) and get it.
        sender_account, sender = survivors[0]
        wait_until(lambda: log_path.read_text().count("node/0 joined the mesh: peers") >= 2, 30)
        for account in accounts:
            if account is not sender_account:
                reply = await sender.answer(sender.send(
                    wire.Send(f"after{account.phone[1:]}", account.phone, b"x", ref=sender.ref())))
                assert isinstance(reply, wire.Ack), reply
        for account, client in survivors[1:]:
            assert (await next_of(client, wire.Message)).id == f"after{account.phone[1:]}"
        for account in lost:
            client = await login(node, account)
            assert (await next_of(client, wire.Message)).id == f"after{account.phone[1:]}"
            await client.close()
        for _, client in survivors:
            await client.close()


async def test_a_killed_directory_is_restarted_and_rebuilt_from_the_workers(tmp_path):
    with mesh_node(tmp_path) as mesh:
        node, log_path, workers = mesh.node, mesh.log_path, mesh.workers
        accounts = [await register(node, phone) for phone in USERS[:6]]
        clients = [await login(node, a) for a in accounts]
        # Step 1: SIGKILL the directory: the node supervisor's one child that
        # is not a worker.
        sup = int(re.search(r"node supervisor pid (\d+)", log_path.read_text()).group(1))
        theirs = {p for w in workers for p in process_tree(w)}    # workers, LMDB writers
        directory = [p for p in process_tree(sup) if p != sup and p not in theirs]
        assert len(directory) == 1, directory
        os.kill(directory[0], signal.SIGKILL)
        wait_until(lambda: "starting a new one" in log_path.read_text(), 10)
        wait_until(lambda: log_path.read_text().count("joined the mesh: peers") >= 4, 10)
        # Step 2: the new directory knows who is where: a second login of
        # each user, wherever it lands, replaces the first; and messages
        # still cross workers.
        for i, account in enumerate(accounts[:3]):
            again = await login(node, account)
            frame, _ = await clients[i].recv_until(
                lambda f: isinstance(f, wire.Error) and f.ref == 0, 5)
            assert frame.code == wire.ErrorCode.SESSION_REPLACED
            clients[i] = again
        for i, client in enumerate(clients):
            for j, account in enumerate(accounts):
                if i != j:
                    client.send(wire.Send(f"d{i}x{j}", account.phone, b"x", ref=client.ref()))
        for j, client in enumerate(clients):
            got = set()
            while len(got) < len(clients) - 1:
                try:
                    got.add((await next_of(client, wire.Message)).id)
                except asyncio.TimeoutError:
                    raise AssertionError(f"user {j} got only {sorted(got)}\n"
                                         + log_path.read_text()[-6000:]) from None
            assert got == {f"d{i}x{j}" for i in range(len(clients)) if i != j}
        assert "did not answer" not in log_path.read_text()
        assert "no answer from the session directory" not in log_path.read_text()
        for client in clients:
            await client.close()
