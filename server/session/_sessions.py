"""Sessions waiting to be taken over: resume tokens of lingering connections.

With ``--resume-grace`` a connection whose socket went away without a normal
close lingers; its resume token is *parked* here for the grace, and a new
handshake with ``?resume=<token>`` by the same user finds it. Only lingering
sessions are parked, so a token cannot reach a connection that is still
connected; a token is spent by the take-over (the session sends a new one).
One registry per server, like its directory of runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._connection import Connection


class SessionRegistry:
    """Lingering connections by resume token."""

    __slots__ = ("_parked",)

    def __init__(self) -> None:
        self._parked: dict[str, Connection] = {}

    def park(self, token: str, connection: Connection) -> None:
        self._parked[token] = connection

    def unpark(self, token: str) -> None:
        self._parked.pop(token, None)

    def find(self, token: str) -> Connection | None:
        return self._parked.get(token)

    def __len__(self) -> int:
        return len(self._parked)
