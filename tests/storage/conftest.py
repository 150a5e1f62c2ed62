"""Fixtures for the storage suite: one ``backend`` fixture parametrized over
the in-memory and LMDB stores (ejabberd runs one SUITE per db backend the
same way); the helpers live in storage_testkit.py."""

from __future__ import annotations

import pytest

from storage_testkit import OTHER, RECEIVER, SENDER, Harness


@pytest.fixture(params=["memory", "lmdb"])
async def backend(request, tmp_path):
    harness = Harness(request.param, tmp_path)
    yield harness
    harness.close()


@pytest.fixture
async def users(backend):
    """The backend with SENDER, RECEIVER and OTHER registered."""
    await backend.register(SENDER, RECEIVER, OTHER)
    return backend
