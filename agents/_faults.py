"""Fault injection (``--fault AGENT:KIND:RATE``), for tests and load tests only."""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable, Mapping

import attrs
import trio

from server.protocol import ConfigurationError, InjectedFault

SLOW_FAULT_SECONDS = 1.0


class FaultKind(enum.Enum):
    RAISE = "raise"
    HANG = "hang"
    SLOW = "slow"


@attrs.frozen
class FaultSpec:
    agent: str
    kind: FaultKind
    rate: float

    @classmethod
    def parse(cls, text: str) -> FaultSpec:
        """Parse ``AGENT:KIND:RATE`` (rate in [0, 1])."""
        parts = text.split(":")
        if len(parts) != 3:
            raise ConfigurationError(f"fault {text!r}: expected AGENT:KIND:RATE")
        agent, kind_text, rate_text = parts
        try:
            kind = FaultKind(kind_text)
        except ValueError:
            kinds = ", ".join(k.value for k in FaultKind)
            raise ConfigurationError(f"fault {text!r}: kind must be one of {kinds}") from None
        try:
            rate = float(rate_text)
        except ValueError:
            raise ConfigurationError(f"fault {text!r}: rate must be a number") from None
        if not 0.0 <= rate <= 1.0:
            raise ConfigurationError(f"fault {text!r}: rate must be between 0 and 1")
        return cls(agent=agent, kind=kind, rate=rate)


class FaultPlan:
    """The faults of one server, drawn from one generator (seeded or not).

    Owned by the server that built it; every agent instance draws once per
    matching spec, right after its ``agent_started``.
    """

    def __init__(self, specs: Iterable[FaultSpec] = (), *, seed: int | None = None) -> None:
        by_agent: dict[str, list[FaultSpec]] = {}
        for spec in specs:
            by_agent.setdefault(spec.agent, []).append(spec)
        self._by_agent: Mapping[str, tuple[FaultSpec, ...]] = {
            name: tuple(specs) for name, specs in by_agent.items()
        }
        self._random = random.Random(seed)

    @property
    def agents(self) -> frozenset[str]:
        return frozenset(self._by_agent)

    def __bool__(self) -> bool:
        return bool(self._by_agent)

    def draw(self, agent: str) -> tuple[FaultKind, ...]:
        """The faults that fire for a new instance of ``agent``, in spec order."""
        specs = self._by_agent.get(agent)
        if not specs:
            return ()
        return tuple(s.kind for s in specs if self._random.random() < s.rate)


async def apply_faults(agent: str, kinds: tuple[FaultKind, ...]) -> None:
    """Act out drawn faults: ``slow`` sleeps, ``hang`` waits for cancellation, ``raise`` raises."""
    for kind in kinds:
        if kind is FaultKind.SLOW:
            await trio.sleep(SLOW_FAULT_SECONDS)
        elif kind is FaultKind.HANG:
            await trio.sleep_forever()
        else:
            raise InjectedFault(f"injected fault in {agent}")
