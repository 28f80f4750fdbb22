"""The dynamic batcher with several inference workers: batches overlap, each submission gets its own
results in its own order, whatever order the batches finish in."""

import asyncio
import threading
import time

import pytest

from swinkit.serve.batching import Batcher


class _Recorder:
    """An ``infer`` that doubles items, sleeps longer for smaller first items, and records concurrency."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.sizes: list[int] = []

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.sizes.append(len(items))
        time.sleep(0.15 if items[0] < 4 else 0.02)  # the first batch finishes last
        with self.lock:
            self.running -= 1
        return [2 * x for x in items]


def _serve(workers: int, requests: list[list[int]]) -> tuple[list[list[int]], _Recorder]:
    infer = _Recorder()

    async def go() -> list[list[int]]:
        batcher = Batcher(infer, max_batch_size=4, max_delay_s=0.01, workers=workers)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(requests[0]))
        await asyncio.sleep(0.05)  # the first batch is running before the others arrive
        rest = [batcher.submit(items) for items in requests[1:]]
        results = await asyncio.gather(first, *rest)
        await batcher.close()
        return list(results)

    return asyncio.run(go()), infer


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_responses_stay_identical_and_ordered_with_several_workers(workers):
    requests = [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9, 10, 11, 12], [13]]
    results, infer = _serve(workers, requests)
    assert results == [[2 * x for x in items] for items in requests]
    assert infer.most == min(workers, len(infer.sizes))
    assert max(infer.sizes) <= 4


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be positive"):
        Batcher(lambda items: items, workers=0)
