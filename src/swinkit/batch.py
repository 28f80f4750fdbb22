"""Batch prediction of any number of images with any task's predictor: streamed, parallel decoding,
resumable JSONL output.

Inputs (``iter_inputs``) are read by ``swinkit.data.records``, the reader train and evaluate use too: a
folder (every image file below it, sorted), a ``.csv`` (a ``path`` column, or an ``image`` column of base64
images as Azure ML batch endpoints take) or a ``.jsonl`` (a path string, or an object with ``path``,
``image_url`` or base64 ``image``); labels are ignored. A record's id is its ``id`` field, else its path, else
``row N`` (N counted from 0 among the data rows); relative paths are relative to the listing file's folder.

Output: one JSON object per line, ``{"image": ID, **result.to_azure()}`` (classification: ``"probs": [...],
"labels": [...]``) or, for an input that cannot be read, ``{"image": ID, "error": "..."}``. Rows are appended and flushed as they are computed, and
fsynced after every batch. A re-run reads the existing output, truncates a torn last line left by a kill, and
skips every id already there: each input ends up in the output exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from swinkit.batch_output import (
    ResumableJsonl,
    StreamJsonl,
    complete_lines,
    id_key,
    merge_shards,
    prepare_output,
    row_id,
    run_settings,
    shard_path,
)
from swinkit.checkpoint_io import writes_through
from swinkit.data.decode import ImageDecodeError, decode_base64_text, decode_image
from swinkit.data.records import ImageRecord, iter_image_files, iter_records, resolve_path
from swinkit.engine.distributed import DistContext, all_reduce_sum, barrier
from swinkit.tasks.base import TaskPredictor

log = logging.getLogger(__name__)

__all__ = [
    "BatchInterrupted",
    "BatchSummary",
    "ResumableJsonl",
    "iter_image_files",
    "iter_inputs",
    "run_batch",
]


def iter_inputs(source: str | os.PathLike) -> Iterator[ImageRecord]:
    """The records of a folder, a ``.jsonl`` or a ``.csv`` input (``swinkit.data.records``), lazily."""
    return iter_records(source, labelled=False)


def count_inputs(source: str | os.PathLike) -> int | None:
    """How many items a folder or JSONL input holds (None for CSV, where counting means parsing it all)."""
    path = Path(source)
    if path.is_dir():
        return sum(1 for _ in iter_image_files(path))
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return sum(1 for line in f if line.strip())
    return None


def load_item(item: ImageRecord) -> Any:
    """Decode one item into an RGB image; ImageDecodeError naming the item when it cannot be read."""
    if item.error is not None:
        raise ImageDecodeError(item.error)
    if item.reference is not None:
        path = resolve_path(item)
        if path is None:
            raise ImageDecodeError(f"{item.id}: no such file")
        return decode_image(path, name=item.id if item.id != path else None)
    text = item.base64
    if not isinstance(text, str):
        raise ImageDecodeError(f"{item.id}: the image field must be base64 text, got {type(text).__name__}")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = decode_base64_text(text)
    except ValueError as e:
        raise ImageDecodeError(f"{item.id}: the image field is {e}") from None
    return decode_image(data, name=item.id)


class ImageStream(IterableDataset):
    """Items of this rank's shard (every ``world_size``-th input) not yet done, decoded and preprocessed.

    ``prepare`` is the predictor's preprocessing. DataLoader worker w takes chunks w, w + workers, ... of ``chunk`` pending items, so that the loader, which
    takes one batch from each worker in turn, yields the items in input order. Yields ``(id, pixels (3, H, W)
    or None, error message or None)``.
    """

    def __init__(
        self,
        source: str | os.PathLike,
        prepare: Callable[[Any], torch.Tensor],
        done: frozenset[int],
        *,
        chunk: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.source, self.prepare, self.done = source, prepare, done
        self.chunk, self.rank, self.world_size = chunk, rank, world_size

    def pending(self) -> Iterator[ImageRecord]:
        """This rank's items not in ``done``, in input order."""
        for index, item in enumerate(iter_inputs(self.source)):
            if index % self.world_size == self.rank and id_key(item.id) not in self.done:
                yield item

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor | None, str | None]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position, item in enumerate(self.pending()):
            if (position // self.chunk) % workers != worker:
                continue
            try:
                yield item.id, self.prepare(load_item(item)), None
            except ImageDecodeError as e:
                yield item.id, None, str(e)


def collate(batch: list[tuple[str, torch.Tensor | None, str | None]]) -> list[tuple[str, Any, str | None]]:
    """Keep the batch as a list: images may fail or differ in size; ``run_batch`` groups them."""
    return batch


def predict_rows(
    predictor: TaskPredictor, batch: Iterable[tuple[str, Any, str | None]]
) -> list[dict[str, Any]]:
    """Output rows for one collated batch, in batch order: each image's result as ``to_azure()`` (the
    predictor's ``infer`` groups equal-size images) or its error."""
    batch = list(batch)
    scored = [pixels for _, pixels, error in batch if error is None]
    results = iter(predictor.infer(scored) if scored else [])
    rows = []
    for item_id, _, error in batch:
        if error is not None:
            rows.append({"image": item_id, "error": error})
        else:
            rows.append({"image": item_id, **next(results).to_azure()})
    return rows


@dataclass
class BatchSummary:
    """What a batch run did."""

    written: int  # rows written by this run
    errors: int  # of which error rows
    skipped: int  # rows already in the output from earlier runs
    first_error: str | None = None  # the message of this run's first error row

    @property
    def all_failed(self) -> bool:
        """This run wrote rows and every one of them is an error."""
        return self.written > 0 and self.errors == self.written


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch run, once what was scored is safely written: ``rows`` are in ``output``."""

    def __init__(self, output: Path, rows: int) -> None:
        super().__init__(f"{rows} rows written to {output}")
        self.output, self.rows = output, rows


def _stop_workers(iterator: Any) -> None:
    """Shut the DataLoader's decoding processes down now (they would otherwise poll for seconds)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _score(
    predictor: TaskPredictor, stream: ImageStream, out: ResumableJsonl, bar: tqdm, workers: int
) -> BatchSummary:
    """Write the rows of every item of ``stream`` to ``out``, fsynced per batch."""
    loader = DataLoader(
        stream,
        batch_size=predictor.batch_size,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=False,
    )
    summary, repeated = BatchSummary(0, 0, out.resumed), 0
    iterator = iter(loader)
    try:
        for batch in iterator:
            for row in predict_rows(predictor, batch):
                if not out.write(row):  # done ids were skipped before decoding: this id came twice
                    repeated += 1
                    continue
                summary.written += 1
                summary.errors += "error" in row
                summary.first_error = summary.first_error or row.get("error")
            out.sync()
            bar.update(len(batch))
            if summary.errors:
                bar.set_postfix(errors=summary.errors)
    except KeyboardInterrupt:
        out.sync()
        raise BatchInterrupted(out.path, out.resumed + summary.written) from None
    finally:
        _stop_workers(iterator)
    if repeated:
        log.warning("%d inputs repeated an id already written in this run; only the first was kept", repeated)
    return summary


def _claim_output(
    predictor: TaskPredictor,
    output: Path,
    model_name: str | None,
    overwrite: bool,
    retry_errors: bool,
    context: DistContext,
) -> None:
    """Rank 0 checks and prepares ``output`` (``prepare_output``); every rank learns whether it refused."""
    refusal = None
    if context.is_main:
        config_hash, fingerprint = predictor.fingerprint()
        settings = run_settings(predictor)
        meta = {"model": model_name or "", "config_hash": config_hash, "fingerprint": fingerprint,
                "settings": settings}  # fmt: skip
        try:
            prepare_output(output, {**meta, "labels": list(predictor.labels)}, overwrite=overwrite,
                           retry_errors=retry_errors)  # fmt: skip
        except ValueError as e:
            refusal = e
    refused = all_reduce_sum(torch.tensor([int(refusal is not None)]), context)
    if refusal is not None:
        raise refusal
    if refused.item():
        raise ValueError(f"rank 0 refused {output} (its message says why)")


def _done_ids(output: Path) -> set[int]:
    return {id_key(row_id(line, output)) for line in complete_lines(output)}


def run_batch(
    predictor: TaskPredictor,
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    num_workers: int = 2,
    progress: bool = True,
    model_name: str | None = None,
    overwrite: bool = False,
    retry_errors: bool = False,
    context: DistContext | None = None,
) -> BatchSummary:
    """Predict every item of ``source`` not yet in ``output``, appending one row per item (see module doc).

    ``model_name`` is recorded in ``OUTPUT.meta.json``; an output another model wrote is refused unless
    ``overwrite`` (start afresh). ``retry_errors`` re-scores the error rows. Under torchrun (``context``
    distributed) each rank scores every world_size-th input into its shard and rank 0 merges the shards.
    Raises ``BatchInterrupted`` on Ctrl-C, after syncing what was written.
    """
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    context = context or DistContext()
    output = Path(output)
    with _open_log(predictor, output, model_name, overwrite, retry_errors, context) as out:
        done = _done_ids(output) if context.distributed else set()
        stream = ImageStream(
            source,
            predictor.prepare,
            frozenset(done | out.done),
            chunk=predictor.batch_size,
            rank=context.rank,
            world_size=context.world_size,
        )
        total = count_inputs(source)
        remaining = None if total is None or context.distributed else max(total - out.resumed, 0)
        with tqdm(total=remaining, unit="img", disable=not progress, desc="predicting", smoothing=0.1) as bar:
            summary = _score(predictor, stream, out, bar, num_workers)
    if context.distributed:
        summary = _merge(output, source, summary, context)
    log.info(
        "%d rows written (%d errors), %d already present", summary.written, summary.errors, summary.skipped
    )
    return summary


@contextlib.contextmanager
def _open_log(
    predictor: TaskPredictor,
    output: Path,
    model_name: str | None,
    overwrite: bool,
    retry_errors: bool,
    context: DistContext,
) -> Iterator[ResumableJsonl]:
    """This rank's output log: the claimed, resumable file (or rank shard), or a stream written through."""
    if writes_through(output):  # '-', a FIFO, a device: rows go out as they come, nothing to resume
        if context.distributed or retry_errors:
            what = "merging rank shards" if context.distributed else "--retry-errors"
            raise ValueError(f"{what} needs an output file to read back; {output} is a stream")
        with StreamJsonl(output) as out:
            yield out
        return
    _claim_output(predictor, output, model_name, overwrite, retry_errors, context)
    target = shard_path(output, context.rank, context.world_size) if context.distributed else output
    with ResumableJsonl(target) as out:
        yield out


def _merge(
    output: Path, source: str | os.PathLike, summary: BatchSummary, context: DistContext
) -> BatchSummary:
    """After every rank is done, rank 0 merges the shards into ``output``; the counts are summed over ranks."""
    counts = all_reduce_sum(torch.tensor([summary.written, summary.errors, summary.skipped]), context)
    barrier(context)
    if context.is_main:
        merge_shards(output, (item.id for item in iter_inputs(source)), context.world_size)
    barrier(context)
    written, errors, skipped = (int(x) for x in counts.tolist())
    return BatchSummary(written, errors, skipped, summary.first_error)
