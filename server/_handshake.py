"""Who is connecting: path and identity checks before the upgrade (pure)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs

import attrs

from ._errors import HandshakeRejected
from ._protocol import is_valid_id

WS_PATH = "/ws"


@attrs.frozen
class Identity:
    user_id: str
    subprotocol: str | None = None


def admit(target: str) -> Identity:
    """Check the request target of a handshake; return who the client is.

    Raises :class:`HandshakeRejected` (404 for any path but ``/ws``, 400 for
    a malformed ``user_id``).
    """
    path, _, query = target.partition("?")
    if path != WS_PATH:
        raise HandshakeRejected(404, f"no WebSocket endpoint at {path[:100]!r}; use {WS_PATH}")
    params = parse_qs(query, keep_blank_values=True)
    user_id = (params.get("user_id") or [""])[0]
    if not user_id:
        return Identity(user_id=f"anon-{uuid.uuid4()}")
    if not is_valid_id(user_id):
        raise HandshakeRejected(400, "user_id must match [A-Za-z0-9_.:-]{1,128}")
    return Identity(user_id=user_id)
