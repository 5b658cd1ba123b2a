"""When to start a new worker after one has died, and when to stop trying (pure)."""

from __future__ import annotations

from collections import deque

import attrs

#: A worker that ran this long before it died had a clean run: its backoff starts again.
STABLE_SECONDS = 30.0


@attrs.frozen
class RestartDecision:
    """What to do about one worker's death."""

    #: Seconds to wait before starting its replacement; None: give up.
    delay: float | None
    #: Deaths (of any worker) within the policy's window, this one included.
    deaths_in_window: int

    @property
    def give_up(self) -> bool:
        return self.delay is None


@attrs.define
class RestartPolicy:
    """Backoff per worker slot, and a limit on deaths over all of them.

    A slot's delay doubles with each death that follows a short run
    (``first_delay``, twice that, ... up to ``max_delay``) and starts again
    after a run of ``stable_after`` seconds. When ``max_deaths`` deaths fall
    within ``window`` seconds, restarting is pointless (a bad plugin, a
    broken machine, something killing them): :meth:`record_death` says give up.
    """

    max_deaths: int = 5
    window: float = 30.0
    first_delay: float = 0.25
    max_delay: float = 16.0
    stable_after: float = STABLE_SECONDS
    _deaths: deque[float] = attrs.field(factory=deque, init=False)
    _streaks: dict[int, int] = attrs.field(factory=dict, init=False)

    def record_death(self, index: int, *, now: float, uptime: float) -> RestartDecision:
        """Worker slot ``index`` died at ``now`` after running ``uptime`` seconds."""
        while self._deaths and self._deaths[0] <= now - self.window:
            self._deaths.popleft()
        self._deaths.append(now)
        streak = self._streaks.get(index, 0) + 1 if uptime < self.stable_after else 1
        self._streaks[index] = streak
        deaths = len(self._deaths)
        if deaths >= self.max_deaths:
            return RestartDecision(None, deaths)
        delay = min(self.max_delay, self.first_delay * 2 ** min(streak - 1, 32))
        return RestartDecision(delay, deaths)

    def deaths_within_window(self, now: float) -> int:
        return sum(1 for t in self._deaths if t > now - self.window)
