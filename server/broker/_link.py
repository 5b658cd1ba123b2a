"""The link to Redis: every call bounded in time, failures turned into ours.

:class:`Link` wraps one coredis client. Every call goes through
:meth:`Link.call`, which

- fails at once with :class:`BrokerUnavailableError` while the link is
  unhealthy (a blocked Redis must not make every caller wait its timeout);
- bounds the call with a trio deadline, so nothing hangs whatever the
  network does;
- turns driver exceptions (coredis, socket, anyio) into
  :class:`BrokerUnavailableError`, and a timeout or lost connection into an
  unhealthy link. The link drops its pooled connections then: a connection
  that stopped answering is not trusted again.

:meth:`Link.serve_health` pings every ``interval`` seconds (faster while
unhealthy) and turns the link healthy again after a ping succeeds; nothing
needs reopening.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import coredis
import coredis.exceptions
import trio

from server.protocol import BrokerUnavailableError

log = logging.getLogger("server.broker")

T = TypeVar("T")

#: Exceptions that mean "Redis did not answer": the link turns unhealthy.
_LINK_FAILURES: tuple[type[BaseException], ...] = (
    coredis.exceptions.ConnectionError,
    TimeoutError,
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
)


class Link:
    """One coredis client behind a health gate and deadlines."""

    def __init__(self, client: coredis.Redis[bytes], *, timeout: float) -> None:
        self.client = client
        self.timeout = timeout
        self._healthy = True
        self._reason = ""
        self._failures = 0
        self._recovered = trio.Event()
        self._recovered.set()
        self._unhealthy = trio.Event()

    @property
    def healthy(self) -> bool:
        """False from a failed call or ping until the next successful ping."""
        return self._healthy

    @property
    def failures(self) -> int:
        """How many times the link turned unhealthy."""
        return self._failures

    async def call(
        self,
        what: str,
        make: Callable[[], Awaitable[T]],
        *,
        limit: float | None = None,
        gated: bool = True,
    ) -> T:
        """Await ``make()`` within ``limit`` seconds (default: the link's timeout).

        Raises :class:`BrokerUnavailableError` at once while unhealthy
        (unless ``gated`` is False: the health ping), or when the call fails.
        """
        if gated and not self._healthy:
            raise BrokerUnavailableError(f"broker unavailable ({self._reason}); {what} refused")
        if limit is None:
            limit = self.timeout
        try:
            with trio.fail_after(limit):
                return await make()
        except trio.TooSlowError:
            self.mark_unhealthy(f"{what} got no answer within {limit:g} s")
            raise BrokerUnavailableError(
                f"broker did not answer {what} within {limit:g} s"
            ) from None
        except _LINK_FAILURES as exc:
            self.mark_unhealthy(f"{what}: {exc}")
            raise BrokerUnavailableError(f"broker unreachable during {what}: {exc}") from exc
        except coredis.exceptions.RedisError as exc:
            # Redis answered, with an error: the link is fine, the call is not.
            raise BrokerUnavailableError(f"broker refused {what}: {exc}") from exc

    def mark_unhealthy(self, reason: str) -> None:
        if not self._healthy:
            return
        self._healthy = False
        self._reason = reason
        self._failures += 1
        self._recovered = trio.Event()
        self._unhealthy.set()
        log.warning("broker unhealthy: %s", reason)
        # Connections that stopped answering are dropped, not reused: new
        # ones are made once Redis answers pings again.
        self.client.connection_pool.disconnect()

    async def wait_unhealthy(self) -> None:
        """Return once the link is unhealthy (at once if it is)."""
        await self._unhealthy.wait()

    async def wait_healthy(self) -> None:
        """Return once the link is healthy (at once if it is)."""
        await self._recovered.wait()

    async def serve_health(self, interval: float, on_recovery: Callable[[], None]) -> None:
        """Ping every ``interval`` s (every ``interval / 4`` while unhealthy); run forever."""
        while True:
            try:
                await self.call("PING", self._ping, gated=False)
            except BrokerUnavailableError:
                pass
            else:
                if not self._healthy:
                    self._healthy = True
                    self._reason = ""
                    self._unhealthy = trio.Event()
                    self._recovered.set()
                    log.warning("broker healthy again")
                    on_recovery()
            if self._healthy:
                with trio.move_on_after(interval):
                    # A failed call elsewhere wakes the loop: recovery is
                    # then probed at the faster pace at once.
                    await self._unhealthy.wait()
            else:
                await trio.sleep(interval / 4)

    async def _ping(self) -> Any:
        return await self.client.ping()
