"""``python -m server --workers N``: hold the port, serve the admin port, run the workers."""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial

import trio

from server._admin import serve_admin
from server._listeners import reserve_port
from server._settings import Settings

from ._admin import PageTarget, supervisor_responder
from ._policy import RestartPolicy
from ._supervisor import Supervisor, worker_command


async def serve_workers(
    settings: Settings,
    options: Sequence[str],
    environ: Mapping[str, str],
    *,
    on_listening: Callable[[Supervisor], None],
) -> Supervisor:
    """Run ``settings.workers`` workers on one port until SIGINT/SIGTERM, or until they keep dying.

    Holds the port first (:class:`ConfigurationError` if something listens on
    it), binds the public admin listener, starts the workers (each
    ``python -m server OPTIONS`` on the port, ``environ`` plus its index) and
    calls ``on_listening`` once all of them listen. A first SIGINT or SIGTERM
    drains the workers, a second stops them at once. Returns the supervisor
    when every worker has exited; its ``failure`` says whether it gave up.
    """
    reservation = await reserve_port(settings.host, settings.port)
    try:
        supervisor = Supervisor(
            settings=settings,
            host=reservation.host,
            port=reservation.port,
            command=partial(worker_command, options, environ, reservation.port),
            # A single event that kills every worker once (the OOM killer, say)
            # is not "they keep dying", however many workers there are.
            policy=RestartPolicy(max_deaths=max(5, settings.workers + 1)),
        )
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                if settings.admin_port is not None:
                    page = PageTarget(settings, supervisor.port, supervisor.url)
                    supervisor.admin_port = await nursery.start(
                        partial(serve_admin, page, respond=supervisor_responder(supervisor))
                    )
                nursery.start_soon(_forward_signals, signals, supervisor)
                nursery.start_soon(_announce, supervisor, on_listening)
                await supervisor.run()
                nursery.cancel_scope.cancel()
    finally:
        reservation.close()
    return supervisor


async def _forward_signals(signals: AsyncIterator[int], supervisor: Supervisor) -> None:
    async for signum in signals:
        supervisor.begin_drain(signum)


async def _announce(supervisor: Supervisor, on_listening: Callable[[Supervisor], None]) -> None:
    await supervisor.wait_all_ready()
    on_listening(supervisor)
