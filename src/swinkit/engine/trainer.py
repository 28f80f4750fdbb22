"""The training loop of any task: recipe, per-epoch validation, best and early stopping, exact resumption, DDP.

Exactness: the data order is a pure function of (seed, epoch) and each sample's augmentation of (seed,
epoch, index); the global torch generator (stochastic depth, dropout) and the generator handed to the task's
batch augmentation (Mixup/CutMix) are reseeded from (seed, epoch, step, rank) before every optimizer step. A checkpoint therefore needs only the
weights, optimizer, schedule, EMA and the position (epoch, step) to continue bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from swinkit.checkpoint_io import load_state_file, save_safetensors
from swinkit.engine.checkpoint import (
    BEST,
    checkpoint_dir,
    load_training_state,
    save_training_state,
    set_rng_state,
)
from swinkit.engine.config import TrainConfig, flatten, save_yaml
from swinkit.engine.distributed import all_reduce_sum, barrier, init_distributed, shutdown
from swinkit.engine.ema import ModelEma
from swinkit.engine.evaluation import run_evaluation
from swinkit.engine.optim import build_optimizer, freeze_stages
from swinkit.engine.schedule import build_schedule, run_length
from swinkit.tasks import get_task
from swinkit.tasks.base import batch_length, to_device

log = logging.getLogger(__name__)


# Settings a resumed run may change without changing its result.
NEUTRAL_SETTINGS = {
    "run.progress",
    "run.checkpoint_every",
    "run.eval_batch_size",
    "data.num_workers",
    "run.device",
}


@dataclass
class Progress:
    """Where a run is: saved in every checkpoint."""

    epoch: int = 0  # the epoch being trained (0-based)
    step: int = 0  # optimizer steps done in this epoch
    global_step: int = 0
    loss_sum: float = 0.0  # training loss summed over this epoch's samples so far (this rank)
    loss_sums: dict[str, float] = field(default_factory=dict)  # the same per named loss
    seen: int = 0  # samples of this epoch so far (this rank)
    best: float | None = None  # best validation value of the primary metric
    best_epoch: int | None = None
    best_step: int | None = None  # the global step of the best validation
    bad_epochs: int = 0  # epochs since the best
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def sum_losses(losses: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training objective: the sum of a task's named losses (one loss is returned as it is)."""
    if not losses:
        raise ValueError("the task returned no losses for a training batch")
    values = list(losses.values())
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


def step_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (seed, epoch, step, rank)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


class Trainer:
    """``Trainer(config).fit()`` trains, validates each epoch and writes the run folder; returns final metrics.

    The run's task (``config.task``) provides the data, model, losses, evaluation and report; the trainer
    sums the task's named losses and knows no task. ``reporter`` receives the class-count summaries and one line per epoch (default: the logger).
    """

    def __init__(
        self, config: TrainConfig, *, resume: bool = False, reporter: Callable[[str], None] | None = None
    ) -> None:
        config.validate()
        self.config, self.resume = config, resume
        self.run_dir = Path(config.run.output)
        self.reporter = reporter
        self.task = get_task(config.task)(config)

    def fit(self) -> dict[str, Any]:
        owns_group = not (dist.is_available() and dist.is_initialized())
        self.context = init_distributed(self.config.run.device)
        try:
            self._setup()
            while self.progress.epoch < self.epochs and not self.progress.stopped_early:
                self._train_epoch()
                self._end_epoch()
            return self._finish()
        finally:
            if owns_group:
                shutdown(self.context)

    def _say(self, text: str) -> None:
        if self.context.is_main:
            (self.reporter or log.info)(text)

    def _setup(self) -> None:
        cfg, ctx = self.config, self.context
        task = self.task
        self.data = task.load_data()
        self._say(self.data.train.summary("training set"))
        self._say(self.data.val.summary("validation set"))
        self.model = task.distributed_model(task.build_model(self.data).to(ctx.device), ctx)
        if freeze_stages(self.model, cfg.optim.freeze_stages):
            self._say(f"frozen: patch embedding and the first {cfg.optim.freeze_stages} stage(s)")
        self.processor = task.processor(self.model)
        train = task.train_loader(self.data, self.processor, ctx)
        self.loader, self.dataset, self.sampler = train.loader, train.dataset, train.sampler
        eval_batch = cfg.run.eval_batch_size or 2 * cfg.run.batch_size
        self.val_loader = task.eval_loader(self.data.val, self.processor, eval_batch, ctx)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        batches = -(-self.sampler.shard_length() // cfg.run.batch_size)
        self.steps_per_epoch = -(-batches // cfg.optim.accum_steps)
        # an iteration-based run (schedule.iterations) stops mid-epoch at its last step
        self.epochs, self.total_steps, _ = run_length(cfg.schedule, self.steps_per_epoch)
        self.schedule = build_schedule(self.optimizer, cfg, self.steps_per_epoch)
        self.val_interval = self._val_interval()
        self.ema = ModelEma(self.model, cfg.run.ema_decay) if cfg.run.ema else None
        self.progress = self._restore() if self.resume else self._fresh()
        self.net = DistributedDataParallel(self.model) if ctx.distributed else self.model
        self.autocast = (
            torch.autocast(ctx.device.type, dtype=torch.bfloat16)
            if cfg.run.bf16
            else contextlib.nullcontext()
        )

    def _fresh(self) -> Progress:
        if (checkpoint_dir(self.run_dir) / "last.pt").exists():
            raise ValueError(
                f"{self.run_dir} already holds a run: pass --resume to continue it, or another --output"
            )
        if self.context.is_main:
            save_yaml(self.config, self.run_dir / "train_config.yaml")
        return Progress()

    def _restore(self) -> Progress:
        state = load_training_state(self.run_dir)
        # keys the saved config lacks (a checkpoint older than the setting) hold their defaults
        saved = flatten(TrainConfig.from_dict(state["config"]).to_dict())
        now = flatten(self.config.to_dict())
        changed = sorted(k for k in now if saved.get(k) != now[k] and k not in NEUTRAL_SETTINGS)
        if changed:
            log.warning(
                "resuming with changed settings (the run will not match an uninterrupted one): %s", changed
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None:
            if state["ema"] is None:
                raise ValueError("the checkpoint has no EMA weights; resume without run.ema")
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        progress = Progress(**state["progress"])
        self._say(f"resumed {self.run_dir} at epoch {progress.epoch + 1}, step {progress.step}")
        return progress

    def _save_state(self) -> None:
        if not self.context.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "progress": dataclasses.asdict(self.progress),
            "config": self.config.to_dict(),
            **self._description(),
        }
        save_training_state(self.run_dir, state)

    def _description(self) -> dict[str, str]:
        """What makes a checkpoint file load as exactly this model: its config.json and preprocessing."""
        return self.task.description(self.model, self.processor)

    def _train_epoch(self) -> None:
        cfg, p = self.config, self.progress
        self.model.train()
        self.dataset.set_epoch(p.epoch)
        self.sampler.set_epoch(p.epoch, skip=p.step * cfg.optim.accum_steps * cfg.run.batch_size)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.step,
            desc=f"epoch {p.epoch + 1}/{self.epochs}",
            unit="step",
            disable=not (cfg.run.progress and self.context.is_main),
            leave=False,
            mininterval=0.5,
        )
        batches = iter(self.loader)
        start, images = None, 0
        while (
            p.global_step < self.total_steps
            and not p.stopped_early
            and (micro := list(itertools.islice(batches, cfg.optim.accum_steps)))
        ):
            if start is None:  # timed from the first batch's arrival: worker start-up is not throughput
                start = time.perf_counter()
            lr = self.schedule.lr
            loss_sum, count, named = self._step(micro)
            p.step, p.global_step = p.step + 1, p.global_step + 1
            p.loss_sums = {k: p.loss_sums.get(k, 0.0) + named[k] for k in named}
            p.loss_sum, p.seen, images = p.loss_sum + loss_sum, p.seen + count, images + count
            rate = images * self.context.world_size / max(time.perf_counter() - start, 1e-9)
            self.images_per_second = rate
            bar.set_postfix(
                loss=f"{p.loss_sum / p.seen:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}", refresh=False
            )
            bar.update(1)
            start += self._checkpoint_or_validate()  # throughput counts training time only
        bar.close()

    def _checkpoint_or_validate(self) -> float:
        """After a step: a validation when one is due (then a checkpoint), else the periodic mid-epoch
        checkpoint; a checkpoint before a due validation would resume past it. Returns the validation's seconds."""
        cfg, p = self.config, self.progress
        if self.val_interval and (
            p.global_step % self.val_interval == 0 or p.global_step == self.total_steps
        ):
            paused = time.perf_counter()
            self._validate_and_save()
            return time.perf_counter() - paused
        if (
            cfg.run.checkpoint_every
            and p.step % cfg.run.checkpoint_every == 0
            and p.step < self.steps_per_epoch
        ):
            self._save_state()
        return 0.0

    def _step(self, micro: list[Any]) -> tuple[float, int, dict[str, float]]:
        """One optimizer step over the micro-batches; (summed loss, samples, summed loss per name)."""
        cfg, p, ctx = self.config, self.progress, self.context
        torch.manual_seed(step_seed(cfg.run.seed, p.epoch, p.step, ctx.rank))
        rng = np.random.default_rng([cfg.run.seed, p.epoch, p.step, ctx.rank])
        total, count, named = 0.0, 0, {}
        for i, batch in enumerate(micro):
            batch = to_device(batch, ctx.device)
            size = batch_length(batch)
            last = i == len(micro) - 1
            sync = self.net.no_sync() if ctx.distributed and not last else contextlib.nullcontext()
            with sync:
                losses = self.task.losses(self.net, batch, rng, self.autocast)
                loss = sum_losses(losses)
                (loss / len(micro)).backward()
            total += loss.item() * size
            count += size
            for name, value in losses.items():
                named[name] = named.get(name, 0.0) + value.item() * size
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(
                [q for q in self.model.parameters() if q.grad is not None], cfg.optim.clip_grad
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return total, count, named

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _evaluate(self) -> dict[str, Any]:
        self.evaluator = self.task.evaluator(self.context)
        return run_evaluation(
            self.eval_model, self.val_loader, self.task, self.evaluator, self.context, self.config.run.bf16
        )

    def _better(self, value: float) -> bool:
        best = self.progress.best
        return best is None or (value > best if self.task.higher_is_better else value < best)

    def _epoch_entry(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The history row: mean training losses over all ranks, validation loss, lr and scalar metrics."""
        p, names = self.progress, sorted(self.progress.loss_sums)
        sums = all_reduce_sum(
            torch.tensor(
                [p.loss_sum, float(p.seen), *(p.loss_sums[k] for k in names)],
                dtype=torch.float64,
                device=self.context.device,
            ),
            self.context,
        )
        seen = sums[1].clamp(min=1)
        entry = {"epoch": p.epoch + 1, "train_loss": float(sums[0] / seen)}
        entry.update({k: float(sums[2 + i] / seen) for i, k in enumerate(names)})
        if "loss" in metrics:
            entry["val_loss"] = metrics["loss"]
        entry["lr"] = self.schedule.lr_at(max(self.schedule.step_count - 1, 0))
        entry.update({k: v for k, v in metrics.items() if isinstance(v, float) and k != "loss"})
        return entry

    def _val_interval(self) -> int | None:
        """The task's steps between validations (iteration-based runs, as mmengine's ``IterBasedTrainLoop``);
        None: validate at each epoch's end."""
        interval = self.task.val_interval
        if interval is None:
            return None
        if interval < 1:
            raise ValueError(f"the validation interval must be at least 1 iteration, got {interval}")
        if not self.config.schedule.iterations:
            raise ValueError(
                f"a validation interval of {interval} iterations needs an iteration-based run "
                "(schedule.iterations); an epoch-based run validates at each epoch's end"
            )
        return interval

    def _end_epoch(self) -> None:
        p = self.progress
        lines = [] if self.val_interval else self._validate()
        p.epoch, p.step = p.epoch + 1, 0
        self._save_state()
        for line in lines:
            self._say(line)

    def _validate_and_save(self) -> None:
        """A validation within an epoch (every ``val_interval`` steps), then a checkpoint."""
        lines = self._validate()
        self._save_state()
        for line in lines:
            self._say(line)

    def _validate(self) -> list[str]:
        """Evaluate, record the history row, keep the best weights, decide early stopping; the training-loss
        sums restart. Returns the lines to report (said once the state is saved)."""
        cfg, p = self.config, self.progress
        started = time.perf_counter()
        metrics = self._evaluate()
        if self.context.is_main:
            self.task.write_epoch_report(self.run_dir, p.epoch + 1, self.evaluator)
        name = self.task.primary_metric
        entry = self._epoch_entry(metrics)
        if self.val_interval:
            entry["iteration"] = p.global_step
        p.history.append(entry)
        improved = self._better(metrics[name])
        if improved:
            p.best, p.best_epoch, p.best_step, p.bad_epochs = metrics[name], p.epoch + 1, p.global_step, 0
            if self.context.is_main:
                save_safetensors(
                    self.eval_model.state_dict(), checkpoint_dir(self.run_dir) / BEST, self._description()
                )
        else:
            p.bad_epochs += 1
        if cfg.run.patience is not None and p.bad_epochs >= cfg.run.patience:
            p.stopped_early = True
        p.loss_sum, p.loss_sums, p.seen = 0.0, {}, 0
        return self._report_lines(entry, metrics, improved, time.perf_counter() - started)

    def _report_lines(
        self, entry: dict[str, Any], metrics: dict[str, Any], improved: bool, took: float
    ) -> list[str]:
        cfg, p = self.config, self.progress
        rate = getattr(self, "images_per_second", 0.0)
        at = f"iter {entry['iteration']}/{self.total_steps}  " if "iteration" in entry else ""
        val = f"val_loss {entry['val_loss']:.4f}  " if "val_loss" in entry else ""
        lines = [
            f"epoch {entry['epoch']}/{self.epochs}  {at}train_loss {entry['train_loss']:.4f}  "
            f"{val}{self.task.summary_line(metrics)}  lr {entry['lr']:.2e}  "
            f"{rate:.0f} img/s  eval {took:.1f}s" + ("  *best*" if improved else "")
        ]
        if p.stopped_early:
            unit = "validations" if self.val_interval else "epochs"
            lines.append(
                f"early stopping: no better {self.task.primary_metric} for {cfg.run.patience} {unit} "
                f"(best at epoch {p.best_epoch})"
            )
        return lines

    def _finish(self) -> dict[str, Any]:
        """Best weights -> final evaluation, metrics.json, plots and the HF-layout model in the run folder."""
        barrier(self.context)
        best = checkpoint_dir(self.run_dir) / BEST
        if best.is_file():
            self.eval_model.load_state_dict(load_state_file(best))
        metrics = self._evaluate()
        p = self.progress
        report = {
            "primary_metric": self.task.primary_metric,
            **self.task.report_fields(self.model),
            "best_epoch": p.best_epoch,
            **({"best_iteration": p.best_step} if self.val_interval else {}),
            "epochs_run": p.epoch,
            "stopped_early": p.stopped_early,
            "train_size": len(self.data.train),
            **metrics,
        }
        report["history"] = list(p.history)
        if self.context.is_main:
            self.task.write_report(self.run_dir, report, self.evaluator)
            self.task.export(self.eval_model, self.run_dir, self.processor)
            self._say(
                f"final ({'best epoch ' + str(p.best_epoch) if p.best_epoch else 'last'}): "
                f"{self.task.summary_line(metrics)}; model and report in {self.run_dir}"
            )
        barrier(self.context)
        return report
