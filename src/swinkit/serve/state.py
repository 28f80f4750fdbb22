"""The running endpoint's state, created in the app's lifespan: service, batcher, fetcher, scorer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from swinkit.serve.batching import Batcher
from swinkit.serve.fetch import AddressPolicy, Fetcher, Resolver, system_resolver
from swinkit.serve.metrics import ServeMetrics
from swinkit.serve.scoring import Scorer
from swinkit.serve.service import ClassificationService, ScoringService
from swinkit.serve.settings import ServeSettings

log = logging.getLogger(__name__)


def load_service(settings: ServeSettings) -> ScoringService:
    """The service for ``settings.model`` (raises ValueError / FileNotFoundError for a bad source)."""
    return ClassificationService.load(settings.model, device=settings.device)


def make_fetcher(settings: ServeSettings, resolver: Resolver = system_resolver) -> Fetcher | None:
    """The URL fetcher the settings call for, or None when URLs are not allowed."""
    if not settings.allow_urls:
        return None
    return Fetcher(
        AddressPolicy(settings.url_allowed_networks),
        resolver=resolver,
        timeout_s=settings.url_timeout_s,
        max_bytes=settings.url_max_bytes,
        max_redirects=settings.url_max_redirects,
    )


class ServeState:
    """Everything a running endpoint holds; ``ready`` once the model is loaded and warmed up."""

    def __init__(
        self, settings: ServeSettings, service: ScoringService, metrics: ServeMetrics, fetcher: Fetcher | None
    ) -> None:
        self.settings = settings
        self.service = service
        self.metrics = metrics
        self.batcher = Batcher(
            service.infer,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            on_batch=lambda size: metrics.batch_size.observe(size),
        )
        self.fetcher = fetcher
        self.scorer = Scorer(settings, service, self.batcher, fetcher)
        self.ready = False

    @classmethod
    async def start(
        cls,
        settings: ServeSettings,
        metrics: ServeMetrics,
        *,
        service: ScoringService | None = None,
        resolver: Resolver = system_resolver,
    ) -> ServeState:
        """Load the model (unless given), start the batcher and warm the model up."""
        if service is None:
            service = await asyncio.to_thread(load_service, settings)
        state = cls(settings, service, metrics, make_fetcher(settings, resolver))
        state.batcher.start()
        if settings.warmup:
            await state.batcher.submit([service.example()])
        state.ready = True
        log.info("serving %s (%s, %d labels)", settings.model, service.task, len(service.labels))
        return state

    async def stop(self) -> None:
        """Stop taking work, finish what is queued, close the downloads."""
        self.ready = False
        await self.batcher.close()
        if self.fetcher is not None:
            await self.fetcher.aclose()

    def info(self) -> dict[str, Any]:
        return {
            "model": self.settings.model,
            "task": self.service.task,
            "labels": list(self.service.labels),
            **self.service.info(),
            "max_batch_size": self.settings.max_batch_size,
            "max_images_per_request": self.settings.max_images_per_request,
            "allow_urls": self.settings.allow_urls,
        }
