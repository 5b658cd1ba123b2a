"""How a server is put together from its settings: agents, tools, provider, auth.

This is where the built-in line-up (:mod:`agents.builtin`) is chosen: the
agent framework never imports it.

Each ``build_*`` function raises :class:`ConfigurationError` for settings that
cannot work, so ``python -m server`` can check them all before it listens.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from agents import (
    AgentClassRegistry,
    AgentRuntime,
    FaultPlan,
    ModelProvider,
    OfflineProvider,
    ToolRegistry,
)
from agents.builtin import default_registry, default_tools
from agents.providers import OpenAIConfig, open_openai_provider
from server.protocol import ConfigurationError

from ._auth import JwtVerifier
from ._metrics import Metrics
from ._plugins import load_plugins
from ._settings import Settings

log = logging.getLogger("trio_agent_server.server")


def build_runtime(
    settings: Settings,
    registry: AgentClassRegistry | None,
    metrics: Metrics | None = None,
    *,
    provider: ModelProvider | None = None,
    tools: ToolRegistry | None = None,
) -> AgentRuntime:
    """The agent runtime a server with ``settings`` uses.

    Loads ``--plugin`` modules into the registries and validates ``--fault``
    against the agents; raises :class:`ConfigurationError` on any problem.
    """
    registry = registry if registry is not None else default_registry()
    tools = tools if tools is not None else default_tools()
    load_plugins(settings.plugins, registry, tools)
    return AgentRuntime(
        registry,
        tools=tools,
        provider=provider if provider is not None else OfflineProvider(),
        faults=FaultPlan(settings.faults, seed=settings.fault_seed),
        agent_timeout=settings.agent_timeout,
        run_timeout=settings.run_timeout,
        observer=metrics if metrics is not None else Metrics(),
    )


def build_provider_config(settings: Settings) -> OpenAIConfig | None:
    """The OpenAI-compatible provider's configuration (None for ``--model-provider offline``).

    Raises :class:`ConfigurationError` for options that cannot work, such as
    ``openai`` without an API key for a base URL that is not a loopback address.
    """
    if settings.model_provider == "offline":
        return None
    if settings.model_provider != "openai":
        raise ConfigurationError(
            f"--model-provider must be offline or openai, not {settings.model_provider!r}"
        )
    return OpenAIConfig(
        base_url=settings.model_base_url,
        model=settings.model,
        api_key=settings.model_api_key,
        connect_timeout=settings.model_connect_timeout,
        read_timeout=settings.model_read_timeout,
        retries=settings.model_retries,
    )


@asynccontextmanager
async def open_model_provider(settings: Settings) -> AsyncIterator[ModelProvider]:
    """The provider a server with ``settings`` gives its agents, open for the server's life.

    The openai provider's HTTP client (its connection pool) belongs to this
    block: it is closed when the block ends, however it ends.
    """
    config = build_provider_config(settings)
    if config is None:
        log.info("model provider: offline")
        yield OfflineProvider()
        return
    log.info("model provider: openai, model %s at %s", config.model, config.base_url)
    async with open_openai_provider(config) as provider:
        yield provider


def build_verifier(settings: Settings) -> JwtVerifier | None:
    """The token verifier for ``--auth jwt`` (None for ``--auth none``)."""
    if settings.auth == "none":
        return None
    if settings.auth != "jwt":
        raise ConfigurationError(f"--auth must be none or jwt, not {settings.auth!r}")
    return JwtVerifier.from_options(
        settings.jwt_secret,
        settings.jwt_public_key,
        leeway=settings.jwt_leeway,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
