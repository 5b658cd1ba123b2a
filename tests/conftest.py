"""Shared fixtures. Every test runs under trio (``trio_mode``) and pytest-timeout."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import pytest
import trio

from server import ChatServer
from server.testing import start_test_server

# Servers the tests start as processes keep their history in memory unless a
# test says otherwise: nothing is written into the working tree.
os.environ.setdefault("CHAT_STORE", "memory:")


@pytest.fixture
async def server(nursery: trio.Nursery) -> ChatServer:
    """A server with the default agents on free loopback ports (admin on)."""
    return await start_test_server(nursery)


@pytest.fixture
def collect_garbage() -> Iterator[None]:
    """Run a full collection after the test (weak-reference tests call it too)."""
    yield
    gc.collect()
