"""Dynamic batching: items submitted by concurrent requests run through the model together.

A single asyncio task collects queued items into a batch: it takes the first waiting item, then waits at
most ``max_delay_s`` for more, up to ``max_batch_size``, and runs ``infer`` on the batch in a worker
thread, off the event loop. Up to ``workers`` batches run at once, each in its own thread (for a backend
that runs calls in parallel, e.g. OpenVINO's infer requests on several streams); while they run, the next
batch queues up. Each item's result goes to its own submission, so responses keep their order whatever
order the batches finish in. At most ``max_queue_size`` items
wait; a submission that would exceed it is refused at once with ``QueueFullError`` (the endpoint's 503).
``close()`` refuses new work and finishes everything already queued.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The queue cannot take these items now; try again later."""


class BatcherClosedError(RuntimeError):
    """The batcher is shutting down and takes no new items."""


@dataclass
class _Job(Generic[T]):
    item: T
    future: asyncio.Future[Any]


class Batcher(Generic[T, R]):
    """Runs ``infer(items) -> results`` (one result per item, same order) on dynamically formed batches."""

    def __init__(
        self,
        infer: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 16,
        max_delay_s: float = 0.01,
        max_queue_size: int = 256,
        on_batch: Callable[[int], None] | None = None,
        workers: int = 1,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_delay_s < 0 or workers < 1:
            raise ValueError(
                "max_batch_size, max_queue_size and workers must be positive, max_delay_s not negative"
            )
        self._infer = infer
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_size = max_queue_size
        self._on_batch = on_batch
        self._jobs: deque[_Job[T]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self.workers = workers
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="swinkit-infer")
        self._worker: asyncio.Task[None] | None = None
        self._slots: asyncio.Semaphore | None = None  # one per batch that may run at once
        self._running: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Items waiting for a batch (the queue depth)."""
        return len(self._jobs)

    def start(self) -> None:
        """Start the collecting task on the running event loop."""
        if self._worker is None:
            self._wakeup = asyncio.Event()
            self._slots = asyncio.Semaphore(self.workers)
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="swinkit-batcher")

    async def submit(self, items: Sequence[T]) -> list[R]:
        """The results of ``items``, once their batches have run; all or none of them are queued."""
        if self._closing or self._worker is None or self._wakeup is None:
            raise BatcherClosedError("the model is not taking work (starting or shutting down)")
        if len(self._jobs) + len(items) > self.max_queue_size:
            raise QueueFullError(
                f"{len(self._jobs)} images are already waiting (limit {self.max_queue_size})"
            )
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._jobs.extend(_Job(item, future) for item, future in zip(items, futures))
        self._wakeup.set()
        return list(await asyncio.gather(*futures))

    async def close(self) -> None:
        """Refuse new items, run every queued one, then stop the worker thread."""
        self._closing = True
        if self._worker is not None and self._wakeup is not None:
            self._wakeup.set()
            await self._worker
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    async def _run(self) -> None:
        assert self._slots is not None
        while await self._wait_for_batch():
            await self._slots.acquire()  # the batch is taken once a worker is free, so it can grow meanwhile
            size = min(len(self._jobs), self.max_batch_size)
            task = asyncio.get_running_loop().create_task(
                self._execute([self._jobs.popleft() for _ in range(size)])
            )
            self._running.add(task)
            task.add_done_callback(self._finished)
        await asyncio.gather(*self._running)

    def _finished(self, task: asyncio.Task[None]) -> None:
        assert self._slots is not None
        self._running.discard(task)
        self._slots.release()

    async def _wait_for_batch(self) -> bool:
        """Wait until a batch is due: full, or ``max_delay_s`` after its first item; False once closed and empty."""
        assert self._wakeup is not None
        while not self._jobs:
            if self._closing:
                return False
            self._wakeup.clear()
            await self._wakeup.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay_s
        while len(self._jobs) < self.max_batch_size and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._wakeup.clear()
            try:
                await asyncio.wait_for(
                    self._wakeup.wait(), remaining
                )  # only a signal: the jobs stay in the deque
            except TimeoutError:
                break
        return True

    async def _execute(self, batch: list[_Job[T]]) -> None:
        live = [job for job in batch if not job.future.done()]  # drop those whose request went away
        if not live:
            return
        if self._on_batch is not None:
            self._on_batch(len(live))
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self._infer, [job.item for job in live])
            if len(results) != len(live):
                raise RuntimeError(f"infer returned {len(results)} results for {len(live)} items")
        except Exception as e:
            log.exception("inference failed on a batch of %d", len(live))
            for job in live:
                if not job.future.done():
                    job.future.set_exception(e)
            return
        for job, result in zip(live, results):
            if not job.future.done():
                job.future.set_result(result)
