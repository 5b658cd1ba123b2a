"""How late the event loop runs: one task that ticks and measures its own delay.

Anything that holds trio's thread (a long pure computation in an agent, a
blocking call by mistake) delays every task, and nothing else shows it: a
stalled loop answers no scrape while it is stalled. The tick sleeps until a
due time and, once it runs again, observes how far past that time it woke;
the histogram (``chat_event_loop_lag_seconds``) keeps the stall after the fact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import trio

#: Seconds between ticks.
LAG_TICK_INTERVAL: Final = 0.25


async def serve_lag_ticks(
    observe: Callable[[float], None], *, interval: float = LAG_TICK_INTERVAL
) -> None:
    """Every ``interval`` seconds, ``observe`` how late (seconds) the tick ran; until cancelled.

    The next tick is due ``interval`` after this one actually ran, so a stall
    is observed once (as one large delay), not as a burst of late ticks.
    """
    while True:
        due = trio.current_time() + interval
        await trio.sleep_until(due)
        observe(max(0.0, trio.current_time() - due))
