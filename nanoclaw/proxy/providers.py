"""Which provider and models answer a group: its provider (or LLM_PROVIDER), its model, then
its fallback chain (or NANOCLAW_FALLBACK_MODELS), each entry a model of that provider or
`provider:model`; and the daemon's SDK clients, one per provider it can reach.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Literal, get_args

from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

ProviderName = Literal["anthropic", "openai", "openai-compatible"]
PROVIDERS: tuple[ProviderName, ...] = get_args(ProviderName)


@dataclass(frozen=True)
class Target:
    provider: ProviderName
    model: str


def provider_of(name: str | None, default: ProviderName) -> ProviderName:
    """A group's provider as stored (None: the setting's; the CLI admits only known ones)."""
    return name if name in PROVIDERS else default


def target_of(entry: str, provider: ProviderName) -> Target:
    """`provider:model` when the prefix names a provider, else a model of `provider` (a model
    name may hold a colon itself, as `llama3:8b`)."""
    head, sep, rest = entry.partition(":")
    if sep and rest and head in PROVIDERS:
        return Target(head, rest)
    return Target(provider, entry)


@dataclass(frozen=True)
class Route:
    """A run's way to the model: its provider and the fallback entries after its model."""

    provider: ProviderName = "anthropic"
    fallbacks: tuple[str, ...] = ()

    def chain(self, model: str) -> tuple[Target, ...]:
        """The request's model first, then each fallback once."""
        first = Target(self.provider, model)
        rest = (target_of(e, self.provider) for e in self.fallbacks)
        return (first, *dict.fromkeys(t for t in rest if t != first))


def group_route(
    provider: str | None,
    fallbacks: tuple[str, ...],
    default_provider: ProviderName,
    default_fallbacks: tuple[str, ...],
) -> Route:
    return Route(provider_of(provider, default_provider), fallbacks or default_fallbacks)


class Upstreams:
    """The daemon's clients: Anthropic's always (as before), an OpenAI one per OpenAI-style
    provider that is configured. `async with` closes them all."""

    def __init__(
        self,
        anthropic: AsyncAnthropic,
        openai: AsyncOpenAI | None = None,
        compatible: AsyncOpenAI | None = None,
    ) -> None:
        self.anthropic = anthropic
        self.openai = openai
        self.compatible = compatible

    @classmethod
    def of(cls, client: AsyncAnthropic | Upstreams) -> Upstreams:
        return client if isinstance(client, Upstreams) else cls(client)

    def chat(self, provider: ProviderName) -> AsyncOpenAI | None:
        return self.openai if provider == "openai" else self.compatible

    async def __aenter__(self) -> Upstreams:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.anthropic.close()
        for client in (self.openai, self.compatible):
            if client is not None:
                await client.close()
