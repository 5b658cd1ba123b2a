"""Browser origins and admin host names (issue 10, section 4).

A web page can open a WebSocket to any server, and the browser only reports
the page's origin: the server refuses handshakes from origins it does not
allow (HTTP 403 before the upgrade). The admin listener refuses requests
whose ``Host`` is not one of its names (DNS rebinding): 421.
"""

from __future__ import annotations

import base64
import os

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from server import ChatServer, HandshakeRejected
from server._cli import settings_from_args
from server._handshake import admit
from server._origins import HostNames, OriginPolicy, host_name
from server.testing import start_test_server

WAIT = 10.0
PAGE = OriginPolicy.for_server((), "127.0.0.1", 8766)


# -- host names (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1:8766", "127.0.0.1"),
        ("LOCALHOST:8766", "localhost"),
        ("localhost", "localhost"),
        ("[::1]:8766", "::1"),
        ("[::1]", "::1"),
        ("example.com:80", "example.com"),
        (" example.com ", "example.com"),
        ("::1", "::1"),  # not a valid Host, but not a port either
    ],
)
def test_host_name_drops_the_port_and_brackets(host: str, name: str) -> None:
    assert host_name(host) == name


def test_a_loopback_listener_answers_to_every_loopback_spelling_and_nothing_else() -> None:
    for bind in ("127.0.0.1", "localhost", "::1"):
        names = HostNames.of(bind)
        assert {"127.0.0.1", "localhost", "::1"} <= names.names
        assert "evil.example" not in names
        assert "10.0.0.1" not in names


def test_a_listener_on_one_address_answers_to_that_address_only() -> None:
    names = HostNames.of("192.0.2.7")
    assert "192.0.2.7" in names
    assert "localhost" not in names
    assert "192.0.2.8" not in names


def test_a_wildcard_listener_answers_to_any_ip_literal_but_not_to_foreign_names() -> None:
    names = HostNames.of("0.0.0.0")
    assert "192.0.2.7" in names
    assert "::1" in names
    assert "localhost" in names
    assert "rebound.evil.example" not in names


# -- origins (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "http://127.0.0.1:8766",
        "http://localhost:8766",
        "http://[::1]:8766",
        "HTTP://LocalHost:8766",
    ],
)
def test_the_admin_pages_own_origins_and_no_origin_are_allowed_by_default(
    origin: str | None,
) -> None:
    assert PAGE.allows(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://evil.example:8766",
        "https://127.0.0.1:8766",  # another scheme is another origin
        "http://127.0.0.1:8765",  # another port too
        "http://127.0.0.1",
        "http://localhost.evil.example:8766",
        "http://127.0.0.1:8766/path",
        "http://user@127.0.0.1:8766",
        "null",  # sandboxed frames and file:// pages
        "",
    ],
)
def test_other_origins_are_refused_by_default(origin: str) -> None:
    assert not PAGE.allows(origin)


def test_without_an_admin_listener_only_handshakes_without_origin_are_allowed() -> None:
    policy = OriginPolicy.for_server((), "127.0.0.1", None)
    assert policy.allows(None)
    assert not policy.allows("http://127.0.0.1:8766")


@pytest.mark.parametrize(
    ("pattern", "origin", "allowed"),
    [
        ("*", "http://evil.example", True),
        ("*", "null", True),
        ("http://localhost:*", "http://localhost:3000", True),
        ("http://localhost:*", "http://LOCALHOST:5173", True),
        ("http://localhost:*", "http://localhost.evil.example:3000", False),
        ("http://localhost:*", "https://localhost:3000", False),
        ("https://*.example.com", "https://app.example.com", True),
        ("https://*.example.com", "https://example.com", False),
        ("https://app.example.com", "https://app.example.com", True),
        ("https://app.example.com", "https://app.example.com:8443", False),
        ("https://app.example.com", "https://app-example.com", False),  # "." is no wildcard
        ("https://app.example.com", "https://app.example.community", False),
    ],
)
def test_allowed_origin_patterns_are_case_insensitive_globs_with_star(
    pattern: str, origin: str, allowed: bool
) -> None:
    assert OriginPolicy.for_server((pattern,), "127.0.0.1", 8766).allows(origin) is allowed


@given(st.text(max_size=60))
def test_a_policy_without_patterns_or_page_refuses_every_origin_and_star_allows_every_one(
    origin: str,
) -> None:
    assert not OriginPolicy().allows(origin)
    assert OriginPolicy.allow_all().allows(origin)


@given(
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True),
    st.integers(min_value=1, max_value=65535),
)
def test_the_default_policy_allows_a_named_origin_only_if_it_is_the_pages(
    name: str, port: int
) -> None:
    allowed = PAGE.allows(f"http://{name}:{port}")
    assert allowed is (name == "localhost" and port == 8766)


# -- admit() (pure) ------------------------------------------------------------------------


def test_admit_refuses_a_foreign_origin_with_403_before_looking_at_the_identity() -> None:
    with pytest.raises(HandshakeRejected) as rejected:
        admit(
            "/ws?user_id=bad%20id",  # would be a 400
            headers=[(b"origin", b"http://evil.example")],
            origins=PAGE,
        )
    assert rejected.value.status == 403


def test_admit_accepts_the_pages_origin_and_no_origin() -> None:
    for headers in ([(b"Origin", b"http://localhost:8766")], []):
        assert admit("/ws?user_id=u1", headers=headers, origins=PAGE).user_id == "u1"


def test_admit_without_a_policy_checks_no_origin() -> None:
    assert admit("/ws?user_id=u1", headers=[(b"origin", b"http://evil.example")]).user_id == "u1"


# -- over loopback -------------------------------------------------------------------------


async def http_status(port: int, request: str) -> int:
    """Send ``request`` to 127.0.0.1:``port``; the status of the response."""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            received = b""
            while b"\r\n" not in received:
                chunk = await stream.receive_some(65536)
                assert chunk, f"closed without a status line: {received!r}"
                received += chunk
    return int(received.split(b" ", 2)[1])


async def handshake_status(server: ChatServer, origin: str | None) -> int:
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws?user_id=o1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
    )
    if origin is not None:
        request += f"Origin: {origin}\r\n"
    return await http_status(server.port, request + "\r\n")


async def test_a_handshake_from_a_foreign_origin_gets_403_and_the_pages_origin_gets_in(
    nursery: trio.Nursery,
) -> None:
    server = await start_test_server(nursery, allowed_origins=("http://localhost:*",))
    page = f"http://127.0.0.1:{server.admin_port}"
    assert await handshake_status(server, "http://evil.example") == 403
    assert await handshake_status(server, "null") == 403
    assert await handshake_status(server, page) == 101
    assert await handshake_status(server, None) == 101
    assert await handshake_status(server, "http://localhost:5173") == 101  # the pattern
    with trio.fail_after(WAIT):
        await server.wait_idle()
    assert server.statistics().connections_total == 3  # the refused ones never counted


async def admin_status(server: ChatServer, host: str | None) -> int:
    assert server.admin_port is not None
    if host is None:
        return await http_status(server.admin_port, "GET /healthz HTTP/1.0\r\n\r\n")
    request = f"GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return await http_status(server.admin_port, request)


async def test_the_admin_listener_refuses_a_host_that_is_not_one_of_its_names(
    server: ChatServer,
) -> None:
    port = server.admin_port
    assert await admin_status(server, f"rebound.evil.example:{port}") == 421
    assert await admin_status(server, "10.1.2.3") == 421
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "127.0.0.1"):
        assert await admin_status(server, host) == 200, host
    assert await admin_status(server, None) == 200  # HTTP/1.0 without Host: a program


def test_allowed_origins_come_from_the_repeatable_option_or_the_environment() -> None:
    argv = ["--allowed-origin", "http://localhost:*", "--allowed-origin", "https://app.example"]
    assert settings_from_args(argv, {}).allowed_origins == (
        "http://localhost:*",
        "https://app.example",
    )
    environ = {"CHAT_ALLOWED_ORIGIN": "http://a.example https://b.example"}
    assert settings_from_args([], environ).allowed_origins == (
        "http://a.example",
        "https://b.example",
    )
    assert settings_from_args([], {}).allowed_origins == ()
