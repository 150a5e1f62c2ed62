"""The Thespian process layer, with real processes: NodeSupervisor starting
worker processes, restarting them (crash, hard exit, SIGKILL), escalating past
its restart intensity, and ``run.py node`` stopping without leftovers and
listening on loopback only.

The workers run small trees defined here (named by ``config["tree"]``, the
OTP ``{M, F, A}`` of a worker); the children are forked from this process, so
this module is already imported there.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.launched import _listeners, _node_up, tagged_pids, launched_node, run_tagged
from supervisor.data_lock import DataDirLock
from supervisor.launcher import reserve_port, stop_node
from supervisor.procs import process_tree
from supervisor.node_supervisor import pid_alive
from supervisor.spec import SupFlags

ROOT = Path(__file__).resolve().parents[2]


# -- trees the workers run -------------------------------------------------------

async def idle_tree(config, stopping):
    await stopping.wait()


async def slow_start_tree(config, stopping, started):
    """Takes 0.3 s to come up, then says so."""
    await asyncio.sleep(0.3)
    started.set()
    await stopping.wait()


async def on_request_tree(config, stopping):
    """Crashes when the test creates ``crash-<pid>`` in the data dir; leaves
    the process with ``os._exit(3)`` on ``exit-<pid>`` (no ActorExitRequest)."""
    data_dir, pid = Path(config["data_dir"]), os.getpid()
    while not stopping.is_set():
        if (data_dir / f"crash-{pid}").exists():
            raise RuntimeError("asked to crash")
        if (data_dir / f"exit-{pid}").exists():
            os._exit(3)
        try:
            await asyncio.wait_for(stopping.wait(), 0.02)
        except asyncio.TimeoutError:
            pass


async def first_crashes_tree(config, stopping):
    """Worker 0 crashes 0.2 s after each start; the others idle."""
    if config["worker_index"] == 0:
        await asyncio.sleep(0.2)
        raise RuntimeError("crash loop")
    await stopping.wait()


def tree(fn) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


# -- NodeSupervisor in this process's ActorSystem --------------------------------------

@pytest.mark.timeout(30)
def test_starts_n_workers_one_after_another(node):
    # Step 1: three workers whose tree takes 0.3 s to report started.
    started = node.start(3, tree(slow_start_tree))
    # Step 2: three distinct, live worker processes, none of them the supervisor.
    assert len(set(started.pids)) == 3
    assert all(pid_alive(pid) for pid in started.pids)
    assert started.supervisor_pid not in started.pids
    # Step 3: each started only after the previous one reported started.
    times = [w.started_at for w in node.report().workers]
    assert all(later - earlier >= 0.25 for earlier, later in zip(times, times[1:])), times


@pytest.mark.timeout(30)
def test_permanent_worker_crash_is_restarted(node):
    # Step 1: two workers; the tree of worker 0 raises.
    old = node.start(2, tree(on_request_tree)).pids
    (node.data_dir / f"crash-{old[0]}").touch()
    # Step 2: worker 0 comes back as a new process; worker 1 is untouched.
    new = node.wait_for_new_pid(0, old[0])
    assert not pid_alive(old[0])
    assert node.pids() == [new, old[1]]
    assert node.report().restarts == 1


@pytest.mark.timeout(30)
def test_worker_process_exit_is_restarted(node):
    # A worker leaving with os._exit: no ActorExitRequest, no Python clean-up.
    old = node.start(1, tree(on_request_tree)).pids[0]
    (node.data_dir / f"exit-{old}").touch()
    new = node.wait_for_new_pid(0, old)
    assert new != old and pid_alive(new)


@pytest.mark.timeout(30)
def test_sigkilled_worker_comes_back_with_new_pid(node):
    old = node.start(2, tree(idle_tree)).pids
    killed_at = time.monotonic()
    os.kill(old[1], signal.SIGKILL)
    new = node.wait_for_new_pid(1, old[1], timeout=10.0)
    elapsed = time.monotonic() - killed_at
    assert new != old[1] and pid_alive(new)
    assert elapsed < 2.0, f"restart after SIGKILL took {elapsed:.2f}s"
    assert node.pids()[0] == old[0]


@pytest.mark.timeout(30)
def test_one_for_one_escalation(node, wait_until):
    # Step 1: intensity 2 in 30 s; worker 0 crashes 0.2 s after every start.
    started = node.start(2, tree(first_crashes_tree),
                         flags=SupFlags("one_for_one", intensity=2, period=30))
    # Step 2: two restarts are allowed, the third exit escalates.
    stopped = node.wait_for_stopped(timeout=15.0)
    assert stopped.reason == "reached_max_restart_intensity"
    # Step 3: every worker was stopped and the supervisor itself exited.
    wait_until(lambda: not any(pid_alive(p) for p in node.seen_pids), timeout=10.0)
    assert not pid_alive(started.supervisor_pid)


@pytest.mark.timeout(30)
def test_workers_exit_when_their_supervisor_is_killed(node, wait_until):
    # Two workers: the supervisor's children are them and the session directory.
    started = node.start(2, tree(idle_tree))
    children = [p for p in process_tree(started.supervisor_pid) if p != started.supervisor_pid]
    assert set(started.pids) < set(children), children
    os.kill(started.supervisor_pid, signal.SIGKILL)
    wait_until(lambda: not any(pid_alive(p) for p in children), timeout=5.0)


@pytest.mark.timeout(30)
def test_stop_does_not_wait_for_a_supervisor_already_gone(node, wait_until):
    # A signal to every process of the node can end the supervisor while the
    # launcher's StopWorkers waits for it: stopped, it takes the message and
    # never answers; then it dies.
    started = node.start(1, tree(idle_tree))
    os.kill(started.supervisor_pid, signal.SIGSTOP)
    killer = threading.Timer(1.0, os.kill, (started.supervisor_pid, signal.SIGKILL))
    killer.start()
    try:
        begun = time.monotonic()
        assert stop_node(node.asys, node.supervisor, 20.0, started.supervisor_pid) is False
        assert time.monotonic() - begun < 4.0       # not the 20 s it would wait for an answer
    finally:
        killer.join()


# -- run.py node as a subprocess --------------------------------------------------------

@pytest.mark.timeout(60)
def test_run_node_binds_loopback_and_leaves_no_process(tmp_path, wait_until):
    with launched_node(tmp_path, workers=2) as (launcher, log_path, tag):
        # Step 1: the node comes up with its two workers, and its data dir.
        workers = set(_node_up(log_path, wait_until))
        assert (tmp_path / "data").is_dir()
        # Step 2: launcher, admin, logger, supervisor, workers all listen on loopback only.
        node_pids = tagged_pids(tag)
        assert workers <= node_pids and launcher.pid in node_pids and len(node_pids) >= 6
        listeners = _listeners(node_pids)
        assert len(listeners) >= 5, listeners
        assert all(addr.startswith("127.0.0.1:") for addr in listeners), listeners
        # Step 3: SIGTERM: a clean exit, and not one of its processes is left.
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0, log_path.read_text()
        wait_until(lambda: not tagged_pids(tag), timeout=5.0)
        assert "killed processes left" not in log_path.read_text()


@pytest.mark.timeout(60)
def test_run_node_exits_nonzero_when_a_worker_keeps_dying(tmp_path, wait_until):
    with launched_node(tmp_path, workers=1) as (launcher, log_path, tag):
        pid = _node_up(log_path, wait_until)[0]
        # Step 1: SIGKILL worker 0 four times: the default intensity is 3 in 30 s.
        for kill in range(4):
            os.kill(pid, signal.SIGKILL)
            if kill < 3:
                pid = wait_until(lambda: _restarted_pid(log_path, pid), timeout=10.0)
        # Step 2: the node supervisor gives up, the launcher says why and exits 1.
        assert launcher.wait(timeout=30) == 1
        log = log_path.read_text()
        assert "reached maximum restart intensity" in log
        assert "node supervisor stopped (reached_max_restart_intensity): exiting" in log
        wait_until(lambda: not tagged_pids(tag), timeout=5.0)


def test_a_reserved_port_is_refused_to_others_and_shared_with_workers():
    held = reserve_port("127.0.0.1")
    port = held.getsockname()[1]
    try:
        # Step 1: a plain bind (a Thespian listener, an ephemeral bind) is refused.
        with socket.socket() as other, pytest.raises(OSError):
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            other.bind(("127.0.0.1", port))
        # Step 2: a worker's listener (SO_REUSEPORT) binds beside it and takes the connections.
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind(("127.0.0.1", port))
            listener.listen(8)
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    listener.accept()[0].close()
        # Step 3: with no worker listening, the reservation takes nothing: refused.
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)
    finally:
        held.close()


@pytest.mark.timeout(60)
def test_run_node_refuses_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with launched_node(tmp_path, 1, "--port", str(port)) as (launcher, log_path, tag):
            assert launcher.wait(timeout=30) == 1
            assert f"port {port} on 127.0.0.1 is in use" in log_path.read_text()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_every_process_signalled_at_once_leaves_none(tmp_path, wait_until, sig):
    # What ``pkill -f "run.py node"`` or a systemd stop does: the signal reaches
    # the launcher, the Admin, the logger, the node supervisor and the workers
    # together, so the supervisor may be gone before the launcher asks it to stop.
    with launched_node(tmp_path, workers=2) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        for pid in tagged_pids(tag):
            os.kill(pid, sig)
        # Mostly within a second; up to the stop timeout (22 s) and the reap (5 s) when
        # the session directory went first and its replacement hangs the supervisor.
        assert launcher.wait(timeout=40) == 0, log_path.read_text()[-3000:]
        wait_until(lambda: not tagged_pids(tag), timeout=10.0)


@pytest.mark.timeout(60)
def test_a_signalled_supervisor_restarts_nothing_and_the_launcher_exits(tmp_path, wait_until):
    with launched_node(tmp_path, workers=2) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        supervisor = int(re.search(r"node supervisor pid (\d+)", log_path.read_text()).group(1))
        # Thespian turns the SIGTERM into an ActorExitRequest: the supervisor
        # ends its workers and gets their ChildActorExited while it exits.
        os.kill(supervisor, signal.SIGTERM)
        assert launcher.wait(timeout=15) == 1
        log = log_path.read_text()
        assert f"node supervisor process {supervisor} is gone: exiting" in log
        assert "restarting it" not in log, log[-3000:]
        wait_until(lambda: not tagged_pids(tag), timeout=10.0)


@pytest.mark.timeout(60)
def test_supervisor_exits_when_launcher_and_admin_die_after_the_stop(tmp_path, wait_until):
    with launched_node(tmp_path, workers=1) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        log = log_path.read_text()
        admin = int(re.search(r"admin [\d.]+:\d+ \(pid (\d+)\)", log).group(1))
        supervisor = int(re.search(r"node supervisor pid (\d+)", log).group(1))
        # Step 1: the Admin cannot shut the system down, the launcher stops the workers.
        os.kill(admin, signal.SIGSTOP)
        launcher.send_signal(signal.SIGTERM)
        wait_until(lambda: "all workers stopped (asked to stop)" in log_path.read_text(),
                   timeout=15.0)
        # Step 2: both die before the Admin's shutdown reaches the supervisor.
        launcher.kill()
        launcher.wait(timeout=10)
        os.kill(admin, signal.SIGKILL)
        # Step 3: nobody is left to end the supervisor: it sees its owner gone, and exits.
        wait_until(lambda: not pid_alive(supervisor), timeout=10.0)
        assert "is gone after the stop: exiting" in log_path.read_text()


@pytest.mark.timeout(90)
def test_one_node_per_data_dir(tmp_path, wait_until):
    second = [sys.executable, "run.py", "node", "--data-dir", str(tmp_path / "data"),
              "--admin-port", "0", "--port", "0", "--http-port", "0", "--media-port", "0"]
    with launched_node(tmp_path, workers=1) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        # Step 1: a second node on the same directory (other ports) is refused at once.
        done, left = run_tagged(second, timeout=30)
        assert done.returncode == 1, done.stderr[-2000:]
        assert f"is in use by another node (launcher pid {launcher.pid})" in done.stderr
        assert "node up" not in done.stderr and not left
        # Step 2: the first is untouched; stopped, it frees the directory.
        assert launcher.poll() is None
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
    with launched_node(tmp_path, workers=1) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)      # the same directory, a node again
        # Step 3: however the launcher dies, the lock goes with it (its forks never held it).
        launcher.kill()
        launcher.wait(timeout=10)
        with DataDirLock(tmp_path / "data"):
            pass
        wait_until(lambda: not tagged_pids(tag), timeout=10.0)


@pytest.mark.timeout(60)
def test_killed_launcher_takes_its_node_down(tmp_path, wait_until):
    with launched_node(tmp_path, workers=1) as (launcher, log_path, tag):
        _node_up(log_path, wait_until)
        launcher.kill()
        launcher.wait(timeout=10)
        # The node supervisor notices its owner is gone and shuts the node down.
        wait_until(lambda: not tagged_pids(tag), timeout=10.0)
        assert "owner process" in log_path.read_text()


def _restarted_pid(log_path: Path, old: int) -> int | None:
    pids = re.findall(r"node_supervisor\[\d+\]: worker 0 started \(pid (\d+)\)",
                      log_path.read_text())
    return int(pids[-1]) if pids and int(pids[-1]) != old else None
