"""Fixtures for the storage suite: one ``backend`` fixture parametrized over
the in-memory store and LMDB with its writer in a thread and in a process
of its own (ejabberd runs one SUITE per db backend the same way); the
helpers live in storage_testkit.py."""

from __future__ import annotations

import pytest

from storage_testkit import OTHER, RECEIVER, SENDER, backend_fixture

backend = backend_fixture("memory", "lmdb", "lmdb-process")


@pytest.fixture
async def users(backend):
    """The backend with SENDER, RECEIVER and OTHER registered."""
    await backend.register(SENDER, RECEIVER, OTHER)
    return backend
