"""Language-model providers the server can be configured with.

The interface (:class:`ModelProvider`) and the offline default live in
``agents``; this package adds the network-backed providers, which need
``httpx`` and a client the server owns for its lifetime::

    async with open_openai_provider(OpenAIConfig(api_key=...)) as provider:
        runtime = default_runtime(provider=provider)  # agents.builtin
"""

from server.protocol import ProviderError as ProviderError

from .._providers import ChatMessage as ChatMessage
from .._providers import ChatResult as ChatResult
from .._providers import ModelProvider as ModelProvider
from .._providers import OfflineProvider as OfflineProvider
from .._providers import ToolCall as ToolCall
from ._openai import OpenAIConfig as OpenAIConfig
from ._openai import OpenAIProvider as OpenAIProvider
from ._openai import is_loopback_url as is_loopback_url
from ._openai import open_openai_provider as open_openai_provider

__all__ = [
    "ChatMessage",
    "ChatResult",
    "ModelProvider",
    "OfflineProvider",
    "OpenAIConfig",
    "OpenAIProvider",
    "ProviderError",
    "ToolCall",
    "is_loopback_url",
    "open_openai_provider",
]
