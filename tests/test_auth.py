"""``--auth jwt`` end to end over loopback: HS256 and RS256 tokens on every transport.

A token may come as ``Authorization: Bearer <token>``, as the subprotocol
``jwt.<token>`` (the server then selects ``jwt-auth`` if the client offered it),
or as ``?token=<token>``. Anything wrong with it is an HTTP 401 before the
upgrade, and nothing is counted. Every connection here goes through
:func:`handshake`, which owns and closes its TCP stream: trio-websocket's own
client leaks the socket when the server rejects the handshake.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import jwt
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from trio_websocket import ConnectionRejected, wrap_client_stream

from agents import FaultSpec
from server import ChatServer, ConfigurationError, HandshakeRejected, Settings
from server._assembly import build_verifier
from server._auth import JwtVerifier
from server._cli import settings_from_args
from server.testing import ChatClient, RunTranscript, open_chat_client, start_test_server

WAIT = 10.0
SECRET = "hs256-test-secret-long-enough-for-hs512-too-" + "0123456789abcdef" * 2
OTHER_SECRET = "another-hs256-secret-long-enough-for-hs512--" + "fedcba9876543210" * 2
SUB = "alice.B_9:x-1"
REQUEST = "Our p99 latency is 900 ms, what should we do?"
TRANSPORTS = ["header", "subprotocol", "query"]
IDLE = (0, 0, 0, 0)


# -- keys and tokens --------------------------------------------------------------


@attrs.frozen
class Keys:
    """Two RSA key pairs: the server trusts ``public_pem``; ``other`` is a stranger."""

    private: rsa.RSAPrivateKey
    other: rsa.RSAPrivateKey
    public_pem: str


@pytest.fixture(scope="module")
def keys() -> Keys:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return Keys(private=private, other=other, public_pem=public_pem)


def claims(sub: Any = SUB, *, expires_in: float = 300) -> dict[str, Any]:
    return {"sub": sub, "exp": int(time.time() + expires_in)}


def hs(payload: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=algorithm)


def rs(payload: dict[str, Any], key: rsa.RSAPrivateKey) -> str:
    return jwt.encode(payload, key, algorithm="RS256")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def unsigned(payload: dict[str, Any]) -> str:
    """An ``alg: none`` token: header, payload and an empty signature."""
    return f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."


def hand_signed_hs256(payload: dict[str, Any], key: bytes) -> str:
    """An HS256 token signed by hand (PyJWT refuses a PEM key as an HMAC secret)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def tampered(token: str, payload: dict[str, Any]) -> str:
    """``token`` with its payload swapped and its signature kept."""
    header, _, rest = token.partition(".")
    _, _, signature = rest.partition(".")
    return f"{header}.{segment(payload)}.{signature}"


TokenMaker = Callable[[Keys], str]

#: Why a token is refused (the 401's body), as patterns for re.fullmatch: the text
#: after "invalid token: " is PyJWT's own, and other versions may word it differently.
NO_TOKEN = r"a token is required \(Authorization: Bearer, subprotocol jwt\.<token>, or \?token=\)"
SIGNATURE = r"invalid token: Signature verification failed"
ALGORITHM = r"invalid token: .*\balg\b.*"
BAD_SUB = r"token sub is not a valid user id"
MALFORMED = r"invalid token: .+"
MISSING_ISS = r'invalid token: .*"iss".*'

#: Tokens an HS256 server (secret ``SECRET``) must refuse with 401.
HS256_REJECTED: list[tuple[str, TokenMaker, str]] = [
    ("expired", lambda k: hs(claims(expires_in=-60)), r"token expired"),
    ("wrong-secret", lambda k: hs(claims(), OTHER_SECRET), SIGNATURE),
    ("rs256-token", lambda k: rs(claims(), k.private), ALGORITHM),
    ("hs512-token", lambda k: hs(claims(), algorithm="HS512"), ALGORITHM),
    ("alg-none", lambda k: unsigned(claims()), ALGORITHM),
    ("tampered-sub", lambda k: tampered(hs(claims("bob")), claims("admin")), SIGNATURE),
    ("missing-sub", lambda k: hs({"exp": int(time.time()) + 300}), r'invalid token: .*"sub".*'),
    ("sub-not-a-string", lambda k: hs(claims(42)), r"invalid token: .*[Ss]ubject.*"),
    ("sub-list", lambda k: hs(claims(["alice"])), r"invalid token: .*[Ss]ubject.*"),
    ("sub-with-space", lambda k: hs(claims("bad id")), BAD_SUB),
    ("sub-with-slash", lambda k: hs(claims("a/b")), BAD_SUB),
    ("sub-empty", lambda k: hs(claims("")), BAD_SUB),
    ("sub-too-long", lambda k: hs(claims("x" * 129)), BAD_SUB),
    ("missing-exp", lambda k: hs({"sub": SUB}), r'invalid token: .*"exp".*'),
    (
        "exp-not-a-number",
        lambda k: hs({"sub": SUB, "exp": "tomorrow"}),
        r"invalid token: .*\(exp\).*",
    ),
    ("malformed-abc", lambda k: "abc", MALFORMED),
    ("malformed-a.b.c", lambda k: "a.b.c", MALFORMED),
    ("empty", lambda k: "", NO_TOKEN),
]

#: Tokens an RS256 server (trusting ``Keys.public_pem``) must refuse with 401.
RS256_REJECTED: list[tuple[str, TokenMaker, str]] = [
    ("expired", lambda k: rs(claims(expires_in=-60), k.private), r"token expired"),
    ("another-rsa-key", lambda k: rs(claims(), k.other), SIGNATURE),
    ("hs256-token", lambda k: hs(claims()), ALGORITHM),
    (
        "hs256-signed-with-the-public-pem",
        lambda k: hand_signed_hs256(claims(), k.public_pem.encode()),
        ALGORITHM,
    ),
    ("alg-none", lambda k: unsigned(claims()), ALGORITHM),
    ("tampered-sub", lambda k: tampered(rs(claims("bob"), k.private), claims("admin")), SIGNATURE),
    (
        "missing-sub",
        lambda k: rs({"exp": int(time.time()) + 300}, k.private),
        r'invalid token: .*"sub".*',
    ),
    ("sub-with-space", lambda k: rs(claims("bad id"), k.private), BAD_SUB),
    ("missing-exp", lambda k: rs({"sub": SUB}, k.private), r'invalid token: .*"exp".*'),
    ("malformed-a.b.c", lambda k: "a.b.c", MALFORMED),
]


# -- servers and handshakes -------------------------------------------------------


async def start_hs256(nursery: trio.Nursery) -> ChatServer:
    return await start_test_server(nursery, auth="jwt", jwt_secret=SECRET, admin_port=None)


def write_pem(directory: Path, keys: Keys) -> Path:
    path = directory / "jwt-public.pem"
    path.write_text(keys.public_pem)
    return path


async def start_rs256(nursery: trio.Nursery, directory: Path, keys: Keys) -> ChatServer:
    return await start_test_server(
        nursery, auth="jwt", jwt_public_key=str(write_pem(directory, keys)), admin_port=None
    )


@attrs.frozen
class Offer:
    """What a client sends in its handshake request."""

    target: str = "/ws"
    subprotocols: Sequence[str] = ()
    headers: Sequence[tuple[bytes, bytes]] = ()


def offer(via: str, token: str, *, query: str = "") -> Offer:
    """Carry ``token`` by ``via``; ``query`` (``k=v&...``) goes in the URL too."""
    if via == "header":
        return Offer(
            target=f"/ws?{query}" if query else "/ws",
            headers=[(b"authorization", f"Bearer {token}".strip().encode())],
        )
    if via == "subprotocol":
        return Offer(
            target=f"/ws?{query}" if query else "/ws",
            subprotocols=["jwt-auth", f"jwt.{token}"],
        )
    assert via == "query"
    return Offer(target=f"/ws?{query}&token={token}" if query else f"/ws?token={token}")


@attrs.frozen
class Outcome:
    """How a handshake ended: 101 with what the server said first, or an HTTP status."""

    status: int
    subprotocol: str | None = None
    user_id: str | None = None
    #: The body of a rejection: the reason the server gave.
    reason: str | None = attrs.field(default=None, eq=False)


Session = Callable[[ChatClient], Awaitable[None]]


async def handshake(server: ChatServer, request: Offer, session: Session | None = None) -> Outcome:
    """Handshake on a TCP stream of our own; if accepted, run ``session`` then close.

    The stream is always closed here, accepted or rejected.
    """
    outcomes: list[Outcome] = []
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(server.host, server.port)
        try:
            try:
                async with trio.open_nursery() as nursery:
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        server.host,
                        request.target,
                        subprotocols=list(request.subprotocols) or None,
                        extra_headers=list(request.headers) or None,
                    )
                    established = json.loads(await ws.get_message())
                    assert established["type"] == "system_message", established
                    assert established["data"]["event"] == "connection_established"
                    client = ChatClient(ws, established, receive_timeout=WAIT)
                    if session is not None:
                        await session(client)
                    outcomes.append(Outcome(101, ws.subprotocol, client.user_id))
                    await ws.aclose()
                    nursery.cancel_scope.cancel()
            except* ConnectionRejected as group:
                for exc in group.exceptions:
                    assert isinstance(exc, ConnectionRejected)
                    body = (exc.body or b"").decode()
                    outcomes.append(Outcome(exc.status_code, reason=body))
        finally:
            await trio.aclose_forcefully(stream)
    (outcome,) = outcomes
    return outcome


async def assert_idle(server: ChatServer, *, connections_total: int) -> None:
    """No connection open, every gauge 0, and exactly ``connections_total`` ever accepted."""
    with trio.fail_after(WAIT):
        await server.wait_idle()
    stats = server.statistics()
    assert stats.gauges == IDLE
    assert stats.connections_total == connections_total


async def assert_rejected(server: ChatServer, request: Offer, reason: str) -> None:
    """401 before the upgrade, for the reason the pattern ``reason`` matches; nothing counted."""
    before = server.statistics().connections_total
    outcome = await handshake(server, request)
    assert outcome == Outcome(401)
    assert outcome.reason is not None
    assert re.fullmatch(reason, outcome.reason), outcome.reason
    stats = server.statistics()
    assert stats.connections_total == before
    assert stats.gauges == IDLE


async def ping_user_id(client: ChatClient) -> None:
    await client.send({"type": "ping", "message_id": "who"})
    pong = await client.receive_frame("pong")
    assert pong["data"]["user_id"] == client.user_id


# -- accepted tokens --------------------------------------------------------------


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_valid_hs256_token_sets_the_user_id_and_ignores_query_user_id(
    nursery: trio.Nursery, via: str
) -> None:
    server = await start_hs256(nursery)
    runs: list[RunTranscript] = []

    async def session(client: ChatClient) -> None:
        assert client.established["data"]["user_id"] == SUB
        runs.append(await client.run(REQUEST))

    outcome = await handshake(server, offer(via, hs(claims()), query="user_id=mallory"), session)
    assert outcome == Outcome(101, "jwt-auth" if via == "subprotocol" else None, SUB)
    (run,) = runs
    assert run.status == "completed"
    assert {event["user_id"] for event in run.events} == {SUB}
    await assert_idle(server, connections_total=1)


@pytest.mark.parametrize("via", TRANSPORTS)
async def test_valid_rs256_token_is_accepted_with_the_public_key_file(
    nursery: trio.Nursery, tmp_path: Path, keys: Keys, via: str
) -> None:
    server = await start_rs256(nursery, tmp_path, keys)
    token = rs(claims("rs.user-1"), keys.private)
    outcome = await handshake(server, offer(via, token, query="user_id=mallory"), ping_user_id)
    assert outcome == Outcome(101, "jwt-auth" if via == "subprotocol" else None, "rs.user-1")
    await assert_idle(server, connections_total=1)


async def test_hand_signed_hs256_token_is_accepted_so_hand_made_tokens_are_well_formed(
    nursery: trio.Nursery,
) -> None:
    # Control for the hand-built tokens below: only their algorithm or key is wrong.
    server = await start_hs256(nursery)
    token = hand_signed_hs256(claims(), SECRET.encode())
    assert await handshake(server, offer("query", token)) == Outcome(101, None, SUB)
    await assert_idle(server, connections_total=1)


@pytest.mark.parametrize(
    ("subprotocols", "selected"),
    [
        (["jwt-auth", "jwt.TOKEN"], "jwt-auth"),
        (["jwt.TOKEN", "jwt-auth"], "jwt-auth"),
        (["jwt.TOKEN"], None),  # wsproto forbids selecting a subprotocol nobody offered
        (["chat.v1", "jwt.TOKEN"], None),
    ],
)
async def test_subprotocol_token_selects_jwt_auth_only_if_the_client_offered_it(
    nursery: trio.Nursery, subprotocols: list[str], selected: str | None
) -> None:
    server = await start_hs256(nursery)
    token = hs(claims())
    request = Offer(subprotocols=[p.replace("TOKEN", token) for p in subprotocols])
    assert await handshake(server, request, ping_user_id) == Outcome(101, selected, SUB)
    await assert_idle(server, connections_total=1)


async def test_authorization_scheme_is_case_insensitive(nursery: trio.Nursery) -> None:
    server = await start_hs256(nursery)
    request = Offer(headers=[(b"Authorization", f"bearer {hs(claims())}".encode())])
    assert await handshake(server, request) == Outcome(101, None, SUB)
    await assert_idle(server, connections_total=1)


# -- precedence -------------------------------------------------------------------


async def test_valid_bearer_header_wins_over_a_bad_query_token(nursery: trio.Nursery) -> None:
    server = await start_hs256(nursery)
    request = offer("header", hs(claims("from-header")), query="token=abc")
    assert await handshake(server, request, ping_user_id) == Outcome(101, None, "from-header")
    await assert_idle(server, connections_total=1)


async def test_bearer_header_wins_over_a_valid_query_token_of_another_user(
    nursery: trio.Nursery,
) -> None:
    server = await start_hs256(nursery)
    request = offer("header", hs(claims("from-header")), query=f"token={hs(claims('from-q'))}")
    assert await handshake(server, request) == Outcome(101, None, "from-header")
    await assert_idle(server, connections_total=1)


async def test_bad_bearer_header_is_not_rescued_by_a_valid_query_token(
    nursery: trio.Nursery,
) -> None:
    # Pins the implemented order: the first token found is the only one checked.
    server = await start_hs256(nursery)
    await assert_rejected(server, offer("header", "abc", query=f"token={hs(claims())}"), MALFORMED)
    await assert_idle(server, connections_total=0)


# -- rejected tokens --------------------------------------------------------------


@pytest.mark.parametrize("via", TRANSPORTS)
@pytest.mark.parametrize(
    ("case", "make", "reason"), HS256_REJECTED, ids=[c for c, _, _ in HS256_REJECTED]
)
async def test_hs256_server_rejects_a_bad_token_with_401_before_upgrade(
    nursery: trio.Nursery, keys: Keys, via: str, case: str, make: TokenMaker, reason: str
) -> None:
    server = await start_hs256(nursery)
    await assert_rejected(server, offer(via, make(keys), query="user_id=u1"), reason)
    await assert_idle(server, connections_total=0)


@pytest.mark.parametrize("via", TRANSPORTS)
@pytest.mark.parametrize(
    ("case", "make", "reason"), RS256_REJECTED, ids=[c for c, _, _ in RS256_REJECTED]
)
async def test_rs256_server_rejects_a_bad_token_with_401_before_upgrade(
    nursery: trio.Nursery,
    tmp_path: Path,
    keys: Keys,
    via: str,
    case: str,
    make: TokenMaker,
    reason: str,
) -> None:
    server = await start_rs256(nursery, tmp_path, keys)
    await assert_rejected(server, offer(via, make(keys)), reason)
    await assert_idle(server, connections_total=0)


@pytest.mark.parametrize(
    "request_",
    [
        Offer(),
        Offer(target="/ws?user_id=u1"),
        Offer(subprotocols=["jwt-auth"]),
        Offer(subprotocols=["jwt-auth", "jwt."]),
        Offer(headers=[(b"authorization", b"Basic dTE6cHc=")]),
        Offer(headers=[(b"authorization", b"Bearer")]),
        Offer(target="/ws?token="),
    ],
    ids=[
        "nothing",
        "query-user-id-only",
        "jwt-auth-without-token",
        "empty-subprotocol-token",
        "basic-auth",
        "bearer-without-token",
        "empty-query-token",
    ],
)
async def test_handshake_without_a_token_is_rejected_with_401(
    nursery: trio.Nursery, request_: Offer
) -> None:
    server = await start_hs256(nursery)
    await assert_rejected(server, request_, NO_TOKEN)
    await assert_idle(server, connections_total=0)


async def test_after_every_rejection_gauges_are_zero_and_a_valid_client_still_works(
    nursery: trio.Nursery, keys: Keys
) -> None:
    server = await start_hs256(nursery)
    for _, make, reason in HS256_REJECTED:
        for via in TRANSPORTS:
            await assert_rejected(server, offer(via, make(keys)), reason)
    await assert_rejected(server, Offer(), NO_TOKEN)
    await assert_idle(server, connections_total=0)

    runs: list[RunTranscript] = []

    async def session(client: ChatClient) -> None:
        runs.append(await client.run(REQUEST))

    assert await handshake(server, offer("subprotocol", hs(claims())), session) == Outcome(
        101, "jwt-auth", SUB
    )
    (run,) = runs
    assert run.status == "completed"
    await assert_idle(server, connections_total=1)


# -- configuration ----------------------------------------------------------------


def test_verifier_from_a_secret_is_hs256() -> None:
    verifier = JwtVerifier.from_options(SECRET, None)
    assert verifier.algorithm == "HS256"
    assert verifier.user_id(hs(claims())) == SUB
    assert SECRET not in repr(verifier)


def test_verifier_from_a_public_key_file_is_rs256(tmp_path: Path, keys: Keys) -> None:
    verifier = JwtVerifier.from_options(None, str(write_pem(tmp_path, keys)))
    assert verifier.algorithm == "RS256"
    assert verifier.user_id(rs(claims(), keys.private)) == SUB


@pytest.mark.parametrize(
    ("secret", "use_key_file"),
    [(SECRET, True), (None, False), ("", False), ("x" * 31, False)],
    ids=["both", "neither", "empty-secret", "secret-under-256-bits"],
)
def test_verifier_needs_exactly_one_non_empty_key_option(
    tmp_path: Path, keys: Keys, secret: str | None, use_key_file: bool
) -> None:
    key_file = str(write_pem(tmp_path, keys)) if use_key_file else None
    with pytest.raises(ConfigurationError):
        JwtVerifier.from_options(secret, key_file)


def test_a_32_byte_secret_is_enough_for_hs256() -> None:
    assert JwtVerifier.from_options("x" * 32, None).algorithm == "HS256"


def _ec_public_pem() -> bytes:
    return (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def _private_pem(keys: Keys) -> bytes:
    return keys.private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _der_public(keys: Keys) -> bytes:
    return keys.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.mark.parametrize(
    "content",
    [
        lambda k: b"not a key at all\n",
        lambda k: _ec_public_pem(),
        lambda k: _private_pem(k),
        lambda k: _der_public(k),
    ],
    ids=["garbage", "ec-public-key", "rsa-private-key", "der-rsa-public-key"],
)
def test_public_key_file_that_is_not_an_rsa_public_pem_is_a_configuration_error(
    tmp_path: Path, keys: Keys, content: Callable[[Keys], bytes]
) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content(keys))
    with pytest.raises(ConfigurationError):
        JwtVerifier.from_options(None, str(path))


@pytest.mark.parametrize("name", ["missing.pem", "."], ids=["missing-file", "directory"])
def test_unreadable_public_key_file_is_a_configuration_error(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigurationError):
        JwtVerifier.from_options(None, str(tmp_path / name))


def test_build_verifier_is_none_without_auth_and_hs256_with_jwt() -> None:
    assert build_verifier(Settings()) is None
    assert build_verifier(Settings(auth="none", jwt_secret=SECRET)) is None
    verifier = build_verifier(Settings(auth="jwt", jwt_secret=SECRET))
    assert verifier is not None
    assert verifier.algorithm == "HS256"


@pytest.mark.parametrize("auth", ["basic", "JWT", "", "jwt "])
def test_build_verifier_rejects_an_unknown_auth_mode(auth: str) -> None:
    with pytest.raises(ConfigurationError, match="none or jwt"):
        build_verifier(Settings(auth=auth, jwt_secret=SECRET))


def test_build_verifier_rejects_jwt_without_a_key() -> None:
    with pytest.raises(ConfigurationError):
        build_verifier(Settings(auth="jwt"))


async def test_server_with_a_bad_auth_configuration_does_not_start(
    nursery: trio.Nursery,
) -> None:
    with pytest.raises(ConfigurationError):
        await start_test_server(nursery, auth="jwt", admin_port=None)


# -- leeway, audience, issuer (issue 10, section 6) -----------------------------------


def verifier(**checks: Any) -> JwtVerifier:
    return JwtVerifier.from_options(SECRET, None, **checks)


def rejection(verifier: JwtVerifier, token: str) -> str:
    with pytest.raises(HandshakeRejected) as rejected:
        verifier.verify(token)
    assert rejected.value.status == 401
    assert token not in rejected.value.reason
    return rejected.value.reason


@pytest.mark.parametrize(
    ("claim", "offset", "leeway", "accepted"),
    [
        ("exp", -3, 5.0, True),  # expired 3 s ago by our clock: skew within the leeway
        ("exp", -3, 0.0, False),
        ("exp", -60, 5.0, False),
        ("nbf", 3, 5.0, True),  # valid from 3 s from now by our clock
        ("nbf", 3, 0.0, False),
        ("nbf", 60, 5.0, False),
        ("iat", 3, 5.0, True),  # issued 3 s in our future
        ("iat", 60, 5.0, False),
    ],
)
def test_leeway_tolerates_clock_skew_on_exp_nbf_and_iat(
    claim: str, offset: int, leeway: float, accepted: bool
) -> None:
    payload = {"sub": SUB, "exp": int(time.time()) + 300, claim: int(time.time()) + offset}
    token = hs(payload)
    if accepted:
        assert verifier(leeway=leeway).verify(token).user_id == SUB
    else:
        rejection(verifier(leeway=leeway), token)


def test_the_default_leeway_is_a_few_seconds() -> None:
    assert 1 <= Settings().jwt_leeway == JwtVerifier.from_options(SECRET, None).leeway <= 30


def test_expires_at_is_the_tokens_exp_plus_the_leeway() -> None:
    exp = int(time.time()) + 120
    assert verifier(leeway=7).verify(hs({"sub": SUB, "exp": exp})).expires_at == exp + 7


@pytest.mark.parametrize("aud", ["chat", ["other", "chat"]])
def test_a_configured_audience_accepts_a_token_naming_it(aud: str | list[str]) -> None:
    token = hs({**claims(), "aud": aud})
    assert verifier(audience="chat").verify(token).user_id == SUB


@pytest.mark.parametrize(
    "payload",
    [{"aud": "other"}, {"aud": ["other", "more"]}, {}],
    ids=["other-audience", "other-audiences", "no-aud"],
)
def test_a_configured_audience_rejects_tokens_for_another_or_for_none(
    payload: dict[str, Any],
) -> None:
    reason = rejection(verifier(audience="chat"), hs({**claims(), **payload}))
    assert "aud" in reason.lower()


@pytest.mark.parametrize("aud", ["chat", ["a", "b"], "anything-at-all"])
def test_without_a_configured_audience_a_token_with_aud_is_not_rejected_for_it(
    aud: str | list[str],
) -> None:
    assert verifier().verify(hs({**claims(), "aud": aud})).user_id == SUB


def test_a_configured_issuer_accepts_only_tokens_it_issued() -> None:
    checked = verifier(issuer="https://issuer.example")
    assert checked.verify(hs({**claims(), "iss": "https://issuer.example"})).user_id == SUB
    assert "iss" in rejection(checked, hs({**claims(), "iss": "https://evil.example"})).lower()
    assert "iss" in rejection(checked, hs(claims())).lower()
    # Unchecked when not configured.
    assert verifier().verify(hs({**claims(), "iss": "https://evil.example"})).user_id == SUB


def test_a_negative_leeway_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="leeway"):
        verifier(leeway=-1)


def test_the_jwt_options_reach_the_verifier() -> None:
    settings = settings_from_args(
        ["--auth", "jwt", "--jwt-leeway", "2.5", "--jwt-audience", "chat"],
        {"CHAT_JWT_SECRET": SECRET, "CHAT_JWT_ISSUER": "https://issuer.example"},
    )
    built = build_verifier(settings)
    assert built is not None
    assert (built.leeway, built.audience, built.issuer) == (2.5, "chat", "https://issuer.example")


async def test_an_audience_and_issuer_are_checked_at_the_handshake(nursery: trio.Nursery) -> None:
    server = await start_test_server(
        nursery,
        auth="jwt",
        jwt_secret=SECRET,
        jwt_audience="chat",
        jwt_issuer="me",
        admin_port=None,
    )
    good = hs({**claims(), "aud": "chat", "iss": "me"})
    assert await handshake(server, offer("header", good)) == Outcome(101, None, SUB)
    await assert_rejected(server, offer("header", hs({**claims(), "aud": "chat"})), MISSING_ISS)
    wrong_audience = hs({**claims(), "aud": "x", "iss": "me"})
    await assert_rejected(
        server, offer("header", wrong_audience), r"invalid token: .*[Aa]udience.*"
    )
    await assert_idle(server, connections_total=1)


# -- expiry closes the connection ------------------------------------------------------


async def test_a_connection_is_closed_with_1008_when_its_token_expires(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(
        nursery,
        auth="jwt",
        jwt_secret=SECRET,
        jwt_leeway=2,
        heartbeat_interval=0,
        admin_port=None,
        faults=(FaultSpec.parse("supervisor:hang:1"),),
    )
    expires_in = 60
    token = hs(claims(expires_in=expires_in))
    async with open_chat_client(
        server, subprotocols=["jwt-auth", f"jwt.{token}"], receive_timeout=2 * expires_in
    ) as client:
        started = trio.current_time()
        run_id = await client.start("this run outlives the token")
        await client.wait_event(run_id, "agent_started")
        code, reason = await client.wait_closed()
        assert (code, reason) == (1008, "token expired")
        # exp is whole seconds; then the 2 s leeway.
        assert expires_in - 1 + 2 <= trio.current_time() - started <= expires_in + 2
    await assert_idle(server, connections_total=1)  # the run went with it
    assert server.statistics().runs_total["cancelled"] == 1


async def test_with_auth_none_a_connection_has_no_expiry(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    server = await start_test_server(nursery, heartbeat_interval=0, admin_port=None)
    async with open_chat_client(server, user_id="forever") as client:
        await trio.sleep(600)  # ten minutes: longer than any token in these tests
        await client.send({"type": "ping", "message_id": "still"})
        assert (await client.receive_frame("pong"))["message_id"] == "still"


# -- rejected handshakes are logged ---------------------------------------------------


async def test_a_rejected_handshake_is_logged_at_info_with_its_reason_and_never_the_token(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = await start_hs256(nursery)
    expired = hs(claims(expires_in=-600))
    forged = hs(claims(), OTHER_SECRET)
    for via in TRANSPORTS:
        await assert_rejected(server, offer(via, expired), "token expired")
        await assert_rejected(server, offer(via, forged), SIGNATURE)
    rejected = [r for r in caplog.records if r.getMessage().startswith("handshake rejected")]
    assert [r.getMessage() for r in rejected] == [
        "handshake rejected: 401 token expired",
        "handshake rejected: 401 invalid token: Signature verification failed",
    ] * len(TRANSPORTS)
    assert all(r.levelno == logging.INFO for r in rejected)
    assert all(getattr(r, "peer", "").startswith("127.0.0.1:") for r in rejected)
    everything = "\n".join(f"{r.getMessage()} {vars(r)!r}" for r in caplog.records)
    for token in (expired, forged):
        for part in token.split("."):
            assert part not in everything
