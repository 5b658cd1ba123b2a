"""Several listening sockets share one port so accepting keeps up under load."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from _procs import server_env

from server import ConfigurationError
from server._listeners import BurstListener, open_listeners
from server.testing import open_chat_client, start_test_server

ROOT = Path(__file__).resolve().parent.parent


async def test_listeners_share_one_free_port() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=4)
    try:
        ports = {listener.socket.getsockname()[1] for listener in listeners}
        assert len(listeners) == 4
        assert len(ports) == 1
        assert ports != {0}
    finally:
        for listener in listeners:
            await listener.aclose()


def reuses_port(listener: BurstListener) -> bool:
    return bool(listener.socket.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
async def test_a_single_acceptor_is_a_plain_listener() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=1)
    try:
        assert len(listeners) == 1
        assert not reuses_port(listeners[0])
        # So nobody can join its port, not even a socket that asks to share it.
        port = listeners[0].socket.getsockname()[1]
        with socket.socket() as joiner:
            joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError, match="in use"):
                joiner.bind(("127.0.0.1", port))
    finally:
        await listeners[0].aclose()


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")
async def test_several_acceptors_share_their_port_with_reuseport() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=3)
    try:
        assert [reuses_port(listener) for listener in listeners] == [True] * 3
    finally:
        for listener in listeners:
            await listener.aclose()


async def test_a_burst_of_200_clients_is_all_served(nursery: trio.Nursery) -> None:
    server = await start_test_server(nursery, max_connections_per_user=0)
    done = 0

    async def client(i: int) -> None:
        nonlocal done
        async with open_chat_client(server, user_id=f"burst{i}") as c:
            await c.send({"type": "ping"})
            await c.receive_frame("pong")
        done += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for i in range(200):
                clients.start_soon(client, i)
    assert done == 200
    await server.wait_idle()
    assert server.statistics().connections_total == 200


async def test_a_listener_takes_every_waiting_connection_when_it_wakes() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=2)
    listener = listeners[0]
    try:
        assert isinstance(listener, BurstListener)
        for other in listeners[1:]:
            await other.aclose()  # all new connections go to the first one
        port = listener.socket.getsockname()[1]
        clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(10)]
        first = await listener.accept()
        # The other nine came with the first wake-up: handed out from memory,
        # without waiting for another scheduler pass each.
        assert len(listener._ready) == 9
        streams = [first] + [await listener.accept() for _ in range(9)]
        for client in clients:
            await client.send_all(b"x")
        assert sorted([await s.receive_some(1) for s in streams]) == [b"x"] * 10
        for stream in [*streams, *clients]:
            await stream.aclose()
    finally:
        await listener.aclose()


async def test_closing_a_listener_closes_connections_it_had_not_handed_out() -> None:
    listeners = await open_listeners("127.0.0.1", 0, count=2)
    for other in listeners[1:]:
        await other.aclose()
    listener = listeners[0]
    assert isinstance(listener, BurstListener)
    port = listener.socket.getsockname()[1]
    clients = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
    first = await listener.accept()
    assert len(listener._ready) == 2
    await listener.aclose()
    assert not listener._ready
    for client in clients[1:]:  # their server side is gone: the peer sees EOF
        with trio.fail_after(5):
            assert await client.receive_some(1) == b""
    for stream in [first, *clients]:
        await stream.aclose()


# -- a port that is taken ------------------------------------------------------------


async def test_a_port_another_reuseport_group_listens_on_is_a_start_up_error() -> None:
    # SO_REUSEPORT would let a second server of the same user join the port
    # and take a share of its connections.
    first = await open_listeners("127.0.0.1", 0, count=4)
    port = first[0].socket.getsockname()[1]
    try:
        with pytest.raises(ConfigurationError, match=f"port {port} on 127.0.0.1 is already in use"):
            await open_listeners("127.0.0.1", port, count=4)
    finally:
        for listener in first:
            await listener.aclose()
    # Once it has gone the port is free again (TIME_WAIT or not).
    again = await open_listeners("127.0.0.1", port, count=4)
    for listener in again:
        await listener.aclose()


async def test_a_port_a_plain_listener_holds_is_a_start_up_error() -> None:
    (plain,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = plain.socket.getsockname()[1]
    async with plain:
        with pytest.raises(ConfigurationError, match="already in use"):
            await open_listeners("127.0.0.1", port, count=4)


async def test_workers_of_one_server_may_share_the_port_when_not_exclusive() -> None:
    first = await open_listeners("127.0.0.1", 0, count=2)
    port = first[0].socket.getsockname()[1]
    second = await open_listeners("127.0.0.1", port, count=2, exclusive=False)
    try:
        assert {listener.socket.getsockname()[1] for listener in second} == {port}
    finally:
        for listener in [*first, *second]:
            await listener.aclose()


async def test_a_second_server_on_the_same_port_exits_2_with_a_clear_message(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery)
    assert server.admin_port is not None
    env = server_env()
    for args, message in (
        (["--port", str(server.port), "--admin-port", "0"], f"port {server.port} on 127.0.0.1"),
        (["--port", "0", "--admin-port", str(server.admin_port)], "admin port"),
    ):
        with trio.fail_after(20):
            result = await trio.run_process(
                [sys.executable, "-m", "server", *args],
                stdin=subprocess.DEVNULL,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=ROOT,
                env=env,
            )
        stderr = result.stderr.decode()
        assert result.returncode == 2, stderr
        assert f"error: {message}" in stderr
        assert "is already in use" in stderr
        assert "Traceback" not in stderr
    # The first server never shared its port: it still serves.
    async with open_chat_client(server, user_id="still-mine") as client:
        await client.send({"type": "ping"})
        await client.receive_frame("pong")
