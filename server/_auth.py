"""JWT authentication of handshakes (``--auth jwt``), with PyJWT."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from server.protocol import ConfigurationError, HandshakeRejected, is_valid_id

#: The subprotocol the server selects when the token came as ``jwt.<token>``.
JWT_SUBPROTOCOL = "jwt-auth"
_TOKEN_PREFIX = "jwt."
MIN_SECRET_BYTES = 32
#: Seconds of clock difference between the token's issuer and us that ``exp``,
#: ``nbf`` and ``iat`` tolerate by default.
DEFAULT_LEEWAY = 5.0


@attrs.frozen
class VerifiedToken:
    """What a valid token says: who, and until when (seconds since the epoch, leeway included)."""

    user_id: str
    expires_at: float


@attrs.frozen
class JwtVerifier:
    """Checks a token's signature, algorithm, ``exp``, ``nbf``, ``iat`` and ``sub``, and
    ``aud`` and ``iss`` when configured; one per server.

    A token with an ``aud`` claim is accepted when no audience is configured:
    a server that names no audience does not ask which service the token was
    meant for (configure ``audience`` to ask).
    """

    key: str = attrs.field(repr=False)
    algorithm: str
    leeway: float = DEFAULT_LEEWAY
    audience: str | None = None
    issuer: str | None = None

    @classmethod
    def from_options(
        cls,
        secret: str | None,
        public_key_file: str | None,
        *,
        leeway: float = DEFAULT_LEEWAY,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> JwtVerifier:
        """HS256 with ``secret``, or RS256 with the PEM public key in ``public_key_file``."""
        if leeway < 0:
            raise ConfigurationError("--jwt-leeway must be 0 or more")
        if (secret is None) == (public_key_file is None):
            raise ConfigurationError(
                "--auth jwt needs exactly one of --jwt-secret or --jwt-public-key"
            )
        if secret is not None:
            if len(secret.encode()) < MIN_SECRET_BYTES:
                # RFC 7518 3.2: an HS256 key must be at least 256 bits.
                raise ConfigurationError(
                    f"--jwt-secret must be at least {MIN_SECRET_BYTES} bytes for HS256"
                )
            return cls(secret, "HS256", leeway, audience, issuer)
        assert public_key_file is not None
        try:
            data = Path(public_key_file).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"--jwt-public-key {public_key_file}: {exc}") from None
        try:
            key = load_pem_public_key(data)
        except ValueError as exc:
            raise ConfigurationError(
                f"--jwt-public-key {public_key_file}: not a PEM public key ({exc})"
            ) from None
        if not isinstance(key, RSAPublicKey):
            raise ConfigurationError(f"--jwt-public-key {public_key_file}: not an RSA key")
        return cls(data.decode("ascii"), "RS256", leeway, audience, issuer)

    def verify(self, token: str) -> VerifiedToken:
        """Who the token is for and until when; raises :class:`HandshakeRejected` (401)
        on any problem. The reason never quotes the token."""
        required = ["exp", "sub"]
        if self.audience is not None:
            required.append("aud")
        if self.issuer is not None:
            required.append("iss")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                leeway=self.leeway,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise HandshakeRejected(401, "token expired") from None
        except jwt.PyJWTError as exc:
            raise HandshakeRejected(401, f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not is_valid_id(subject):
            raise HandshakeRejected(401, "token sub is not a valid user id")
        assert isinstance(subject, str)
        return VerifiedToken(user_id=subject, expires_at=float(claims["exp"]) + self.leeway)

    def user_id(self, token: str) -> str:
        """The token's ``sub`` (see :meth:`verify`)."""
        return self.verify(token).user_id


def find_token(
    headers: Sequence[tuple[bytes, bytes]], subprotocols: Sequence[str], query: str
) -> tuple[str | None, str | None]:
    """(token, subprotocol to select) from, in order: bearer header, subprotocol, query."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip(), None
    for proposed in subprotocols:
        if proposed.startswith(_TOKEN_PREFIX) and len(proposed) > len(_TOKEN_PREFIX):
            selected = JWT_SUBPROTOCOL if JWT_SUBPROTOCOL in subprotocols else None
            return proposed[len(_TOKEN_PREFIX) :], selected
    tokens = parse_qs(query, keep_blank_values=True).get("token")
    if tokens and tokens[0]:
        return tokens[0], None
    return None, None
