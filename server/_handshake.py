"""Who is connecting: path and identity checks before the upgrade (pure)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from urllib.parse import parse_qs

import attrs

from server.protocol import HandshakeRejected, is_valid_id

from ._auth import JwtVerifier, find_token
from ._origins import OriginPolicy

WS_PATH = "/ws"


@attrs.frozen
class Identity:
    user_id: str
    subprotocol: str | None = None
    #: When the credentials stop being valid (seconds since the epoch; None: never).
    #: The connection is closed with 1008 then.
    expires_at: float | None = None


def admit(
    target: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    subprotocols: Sequence[str] = (),
    verifier: JwtVerifier | None = None,
    origins: OriginPolicy | None = None,
) -> Identity:
    """Check a handshake; return who the client is, or raise :class:`HandshakeRejected`.

    404 for any path but ``/ws``; 403 for an ``Origin`` that ``origins`` does
    not allow (no policy: every origin). Without a verifier the user id comes from
    ``?user_id=`` (400 if malformed, ``anon-<uuid4>`` if absent or empty);
    with one, only from a valid token (401 otherwise), and ``?user_id=`` is
    ignored.
    """
    path, _, query = target.partition("?")
    if path != WS_PATH:
        raise HandshakeRejected(404, f"no WebSocket endpoint at {path[:100]!r}; use {WS_PATH}")
    if origins is not None:
        origin = next((v for k, v in headers if k.lower() == b"origin"), None)
        if origin is not None and not origins.allows(origin.decode("latin-1")):
            raise HandshakeRejected(403, "origin not allowed (see --allowed-origin)")
    if verifier is not None:
        token, subprotocol = find_token(headers, subprotocols, query)
        if token is None:
            raise HandshakeRejected(401, "a token is required (Authorization: Bearer, "
                                         "subprotocol jwt.<token>, or ?token=)")  # fmt: skip
        verified = verifier.verify(token)
        return Identity(
            user_id=verified.user_id, subprotocol=subprotocol, expires_at=verified.expires_at
        )
    params = parse_qs(query, keep_blank_values=True)
    user_id = (params.get("user_id") or [""])[0]
    if not user_id:
        return Identity(user_id=f"anon-{uuid.uuid4()}")
    if not is_valid_id(user_id):
        raise HandshakeRejected(400, "user_id must match [A-Za-z0-9_.:-]{1,128}")
    return Identity(user_id=user_id)
