"""The running endpoint's state, created in the app's lifespan.

The model loads in the background, so the process answers ``/health`` at once (a hub download can take
minutes) while ``/ready`` and ``/score`` answer 503 until it is loaded and warmed up. If loading fails,
``error`` holds why, ``/health`` turns 503 too and ``on_failure`` is called (``swinkit serve`` exits).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import torch

from swinkit.serve.batching import Batcher
from swinkit.serve.errors import ServeError
from swinkit.serve.fetch import AddressPolicy, Fetcher, Resolver, system_resolver
from swinkit.serve.metrics import ServeMetrics
from swinkit.serve.scoring import Scorer
from swinkit.serve.service import ScoringService, TaskService
from swinkit.serve.settings import ServeSettings

log = logging.getLogger(__name__)

FailureHandler = Callable[[BaseException], None]


def load_service(settings: ServeSettings) -> ScoringService:
    """The service for ``settings.model``, of the task its saved config names (raises ValueError /
    FileNotFoundError for a bad source, or a model of a task without predictions).

    Sets torch's (process-wide) intra-op thread count first when ``settings.torch_threads`` is given.
    """
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    return TaskService.load(
        settings.model,
        device=settings.device,
        top_k=settings.max_detections,
        threshold=settings.score_threshold,
        runtime=settings.runtime,
        precision=settings.precision,
        prepack=settings.torch_prepack,
        openvino_hint=settings.openvino_hint,
        **settings.task_options(),
    )


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
    """Everything a running endpoint holds; ``scorer`` is set once the model is loaded and warmed up."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.service: ScoringService | None = None
        self.batcher: Batcher | None = None
        self.fetcher: Fetcher | None = None
        self.scorer: Scorer | None = None
        self.error: BaseException | None = None
        self.ready = False

    async def load(
        self,
        service: ScoringService | None = None,
        resolver: Resolver = system_resolver,
        on_failure: FailureHandler | None = None,
    ) -> None:
        """Load the model (unless given), start the batcher, warm up; a failure is kept in ``error``."""
        try:
            await self._load(service, resolver)
        except Exception as e:
            self.error = e
            log.error("could not load %s: %s", self.settings.model, e)
            if on_failure is not None:
                on_failure(e)

    async def _load(self, service: ScoringService | None, resolver: Resolver) -> None:
        settings = self.settings
        if service is None:
            service = await asyncio.to_thread(load_service, settings)
        self.service = service
        self.batcher = Batcher(
            service.infer,
            max_batch_size=settings.max_batch_size,
            max_delay_s=settings.max_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            on_batch=self._count_batch,
            workers=settings.inference_workers,
        )
        self.batcher.start()
        if settings.warmup:
            await self.batcher.submit([service.example()])
        self.fetcher = make_fetcher(settings, resolver)
        self.scorer = Scorer(settings, service, self.batcher, self.fetcher)
        self.ready = True
        log.info("serving %s (%s, %d labels)", settings.model, service.task, len(service.labels))

    def _count_batch(self, size: int) -> None:
        if self.ready:  # the warm-up batch is not traffic
            self.metrics.batch_size.observe(size)
            self.metrics.images.inc(size)

    async def stop(self) -> None:
        """Stop taking work, finish what is queued, close the downloads."""
        self.ready = False
        if self.batcher is not None:
            await self.batcher.close()
        if self.fetcher is not None:
            await self.fetcher.aclose()

    def check_alive(self) -> None:
        """503 if the model failed to load."""
        if self.error is not None:
            raise ServeError(503, "model_failed", f"the model could not be loaded: {self.error}")

    def check_ready(self) -> Scorer:
        """The scorer; 503 while the model loads, after it failed, or once shutting down."""
        self.check_alive()
        if not self.ready or self.scorer is None:
            raise ServeError(
                503, "not_ready", "the model is not ready (loading or shutting down)", retry_after=1
            )
        return self.scorer

    def info(self) -> dict[str, Any]:
        self.check_ready()
        assert self.service is not None
        return {
            "model": self.settings.model,
            "task": self.service.task,
            "labels": list(self.service.labels),
            **self.service.info(),
            "max_batch_size": self.settings.max_batch_size,
            "inference_workers": self.settings.inference_workers,
            "max_images_per_request": self.settings.max_images_per_request,
            "allow_urls": self.settings.allow_urls,
        }

    def runtime_labels(self) -> dict[str, str] | None:
        """The runtime and precision the model runs at (``swinkit_model_info``), None before it is loaded."""
        if self.service is None:
            return None
        info = self.service.info()
        return {"runtime": str(info.get("runtime", "torch")), "precision": str(info.get("precision", "fp32"))}

    def gauges(self) -> dict[str, float]:
        """Values of the gauges exported at ``/metrics``."""
        return {
            "queue": 0 if self.batcher is None else self.batcher.pending,
            "active": 0 if self.scorer is None else self.scorer.active,
            "ready": float(self.ready),
        }
