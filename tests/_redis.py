"""Helpers for the tests that need the real Redis: the URL, key prefixes, a TCP proxy.

The tests run against the Redis at ``CHAT_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``). Where it cannot be reached they are skipped
with the reason, except when ``CI`` is set: there they fail. Each test uses
its own key prefix and deletes its keys afterwards.

Outages are made with :class:`TcpProxy`, a small TCP relay between the
broker and Redis that can stop relaying (``block``: bytes wait in the
kernel, as on a network that stopped answering) or drop every connection
and refuse new ones (``cut``: as Redis stopped). The shared Redis itself is
never stopped.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import coredis
import pytest
import trio

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def redis_test_url() -> str:
    """The test Redis's URL; skips the test (fails it under CI) if it does not answer."""
    url = os.environ.get("CHAT_TEST_REDIS_URL", DEFAULT_URL)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        answer = f"{exc}".encode()
    if not answer.startswith(b"+PONG"):
        reason = f"Redis at {url} does not answer PING ({answer[:80]!r}); set CHAT_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return url


def new_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@asynccontextmanager
async def open_raw_client(url: str) -> AsyncIterator[coredis.Redis[bytes]]:
    """A plain coredis client, for looking at what the broker wrote."""
    client = coredis.Redis.from_url(url, stream_timeout=5, connect_timeout=5)
    async with client:
        yield client


async def delete_prefix(url: str, prefix: str) -> None:
    with trio.move_on_after(10):
        async with open_raw_client(url) as client:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.delete(keys)


def with_port(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{host}:{port}").geturl()


class TcpProxy:
    """A TCP relay to ``target`` that a test can block, cut and restore."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 6379)
        self._target_url = target_url
        self._flowing = trio.Event()
        self._flowing.set()
        self._down = False
        self._connections: set[trio.CancelScope] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """The target's URL with the proxy's address."""
        return with_port(self._target_url, "127.0.0.1", self.port)

    def block(self) -> None:
        """Stop relaying bytes (connections stay open; nothing answers)."""
        if self._flowing.is_set():
            self._flowing = trio.Event()

    def unblock(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Drop every relayed connection and refuse new ones (as if Redis stopped)."""
        self._down = True
        for scope in list(self._connections):
            scope.cancel()

    def restore(self) -> None:
        self._down = False
        self.unblock()

    async def serve(
        self, *, task_status: trio.TaskStatus[TcpProxy] = trio.TASK_STATUS_IGNORED
    ) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self)
            await trio.serve_listeners(self._relay, listeners, handler_nursery=nursery)

    async def _relay(self, client: trio.SocketStream) -> None:
        if self._down:
            await trio.aclose_forcefully(client)
            return
        with trio.CancelScope() as scope:
            self._connections.add(scope)
            try:
                await self._gate()
                upstream = await trio.open_tcp_stream(*self._target)
                async with client, upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, scope)
                    nursery.start_soon(self._pump, upstream, client, scope)
            finally:
                self._connections.discard(scope)
        await trio.aclose_forcefully(client)

    async def _gate(self) -> None:
        while not self._flowing.is_set():
            await self._flowing.wait()

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while True:
                await self._gate()
                data = await source.receive_some(65536)
                if not data:
                    break
                await self._gate()
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()


async def eventually(check: Callable[[], Awaitable[bool]], *, interval: float = 0.02) -> None:
    """Return once ``check()`` is true, asking every ``interval`` s.

    Only for conditions that change on Redis's clock (a lease running out)
    or in another node's background task: nothing here could signal them.
    The caller bounds the wait with ``trio.fail_after``.
    """
    while True:
        if await check():
            return
        await trio.sleep(interval)
