"""The fine-tuning loop: recipe, per-epoch validation, best and early stopping, exact resumption, DDP.

Exactness: the data order is a pure function of (seed, epoch) and each sample's augmentation of (seed,
epoch, index); the global torch generator (stochastic depth, dropout) and the Mixup/CutMix generator are
reseeded from (seed, epoch, step, rank) before every optimizer step. A checkpoint therefore needs only the
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
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from swinkit.checkpoint_io import load_state_file, save_safetensors
from swinkit.engine import build
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
from swinkit.engine.evaluation import Outputs, evaluate_outputs, predict, write_report
from swinkit.engine.metrics import primary_metric, summary_line
from swinkit.engine.optim import build_optimizer, freeze_stages
from swinkit.engine.schedule import WarmupCosine
from swinkit.loading import description_metadata, save_pretrained

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
    seen: int = 0  # samples of this epoch so far (this rank)
    best: float | None = None  # best validation value of the primary metric
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the best
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


def step_seed(*parts: int) -> int:
    """A 63-bit seed mixing ``parts`` (seed, epoch, step, rank)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def train_loss(logits: torch.Tensor, soft_targets: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """Soft-target cross-entropy (multi-class) or binary cross-entropy (multi-label), batch mean."""
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, soft_targets)
    return torch.sum(-soft_targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


class Trainer:
    """``Trainer(config).fit()`` trains, validates each epoch and writes the run folder; returns final metrics.

    ``reporter`` receives the class-count summaries and one line per epoch (default: the logger).
    """

    def __init__(
        self, config: TrainConfig, *, resume: bool = False, reporter: Callable[[str], None] | None = None
    ) -> None:
        config.validate()
        self.config, self.resume = config, resume
        self.run_dir = Path(config.run.output)
        self.reporter = reporter

    def fit(self) -> dict[str, Any]:
        owns_group = not (dist.is_available() and dist.is_initialized())
        self.context = init_distributed(self.config.run.device)
        try:
            self._setup()
            while self.progress.epoch < self.config.schedule.epochs and not self.progress.stopped_early:
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
        self.data = build.load_run_data(cfg)
        self._say(self.data.train.summary("training set"))
        self._say(self.data.val.summary("validation set"))
        self.multi_label, self.labels = self.data.multi_label, self.data.labels
        self.model = build.build_model(cfg, self.labels, self.multi_label).to(ctx.device)
        if freeze_stages(self.model, cfg.optim.freeze_stages):
            self._say(f"frozen: patch embedding and the first {cfg.optim.freeze_stages} stage(s)")
        self.processor = build.eval_processor(cfg, self.model)
        transform = build.train_transform(cfg, self.model.config.image_size, self.processor)
        self.loader, self.dataset, self.sampler = build.train_loader(cfg, self.data.train, transform, ctx)
        eval_batch = cfg.run.eval_batch_size or 2 * cfg.run.batch_size
        self.val_loader = build.eval_loader(
            self.data.val, self.processor, eval_batch, cfg.data.num_workers, ctx
        )
        self.mix = build.mixer(cfg, len(self.labels), self.multi_label)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        batches = -(-self.sampler.shard_length() // cfg.run.batch_size)
        self.steps_per_epoch = -(-batches // cfg.optim.accum_steps)
        self.schedule = WarmupCosine(
            self.optimizer,
            base_lr=cfg.optim.lr,
            total_steps=self.steps_per_epoch * cfg.schedule.epochs,
            warmup_steps=round(cfg.schedule.warmup_epochs * self.steps_per_epoch),
            warmup_lr=cfg.schedule.warmup_lr,
            min_lr=cfg.schedule.min_lr,
        )
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
        saved, now = flatten(state["config"]), flatten(self.config.to_dict())
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
        return description_metadata(self.model.config, self.processor.to_preprocessor_config())

    def _train_epoch(self) -> None:
        cfg, p = self.config, self.progress
        self.model.train()
        self.dataset.set_epoch(p.epoch)
        self.sampler.set_epoch(p.epoch, skip=p.step * cfg.optim.accum_steps * cfg.run.batch_size)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=p.step,
            desc=f"epoch {p.epoch + 1}/{cfg.schedule.epochs}",
            unit="step",
            disable=not (cfg.run.progress and self.context.is_main),
            leave=False,
            mininterval=0.5,
        )
        batches = iter(self.loader)
        start, images = None, 0
        while micro := list(itertools.islice(batches, cfg.optim.accum_steps)):
            if start is None:  # timed from the first batch's arrival: worker start-up is not throughput
                start = time.perf_counter()
            lr = self.schedule.lr
            loss_sum, count = self._step(micro)
            p.step, p.global_step = p.step + 1, p.global_step + 1
            p.loss_sum, p.seen, images = p.loss_sum + loss_sum, p.seen + count, images + count
            rate = images * self.context.world_size / max(time.perf_counter() - start, 1e-9)
            bar.set_postfix(
                loss=f"{p.loss_sum / p.seen:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}", refresh=False
            )
            bar.update(1)
            if (
                cfg.run.checkpoint_every
                and p.step % cfg.run.checkpoint_every == 0
                and p.step < self.steps_per_epoch
            ):
                self._save_state()
        bar.close()
        elapsed = time.perf_counter() - start if start is not None else 0.0
        self.images_per_second = images * self.context.world_size / max(elapsed, 1e-9)

    def _step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, int]:
        """One optimizer step over the micro-batches; (summed loss, samples)."""
        cfg, p, ctx = self.config, self.progress, self.context
        torch.manual_seed(step_seed(cfg.run.seed, p.epoch, p.step, ctx.rank))
        rng = np.random.default_rng([cfg.run.seed, p.epoch, p.step, ctx.rank])
        total, count = 0.0, 0
        for i, (pixels, targets) in enumerate(micro):
            pixels, targets = pixels.to(ctx.device), targets.to(ctx.device)
            pixels, soft = self.mix(pixels, targets, rng)
            last = i == len(micro) - 1
            sync = self.net.no_sync() if ctx.distributed and not last else contextlib.nullcontext()
            with sync:
                with self.autocast:
                    logits = self.net(pixels)
                loss = train_loss(logits.float(), soft, self.multi_label)
                (loss / len(micro)).backward()
            total += loss.item() * pixels.shape[0]
            count += pixels.shape[0]
        if cfg.optim.clip_grad:
            torch.nn.utils.clip_grad_norm_(
                [q for q in self.model.parameters() if q.grad is not None], cfg.optim.clip_grad
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return total, count

    @property
    def eval_model(self) -> torch.nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def _end_epoch(self) -> None:
        cfg, p = self.config, self.progress
        started = time.perf_counter()
        sums = all_reduce_sum(
            torch.tensor([p.loss_sum, float(p.seen)], dtype=torch.float64, device=self.context.device),
            self.context,
        )
        outputs = predict(self.eval_model, self.val_loader, self.multi_label, self.context, cfg.run.bf16)
        metrics = evaluate_outputs(outputs, self.labels, self.multi_label, cfg.run.threshold)
        name = primary_metric(self.multi_label)
        entry = {
            "epoch": p.epoch + 1,
            "train_loss": float(sums[0] / sums[1].clamp(min=1)),
            "val_loss": outputs.loss,
            "lr": self.schedule.lr_at(max(self.schedule.step_count - 1, 0)),
            **{k: v for k, v in metrics.items() if isinstance(v, float) and k != "loss"},
        }
        p.history.append(entry)
        improved = p.best is None or metrics[name] > p.best
        if improved:
            p.best, p.best_epoch, p.bad_epochs = metrics[name], p.epoch + 1, 0
            if self.context.is_main:
                save_safetensors(
                    self.eval_model.state_dict(), checkpoint_dir(self.run_dir) / BEST, self._description()
                )
        else:
            p.bad_epochs += 1
        if cfg.run.patience is not None and p.bad_epochs >= cfg.run.patience:
            p.stopped_early = True
        p.epoch, p.step, p.loss_sum, p.seen = p.epoch + 1, 0, 0.0, 0
        self._save_state()
        rate = getattr(self, "images_per_second", 0.0)
        line = (
            f"epoch {entry['epoch']}/{cfg.schedule.epochs}  train_loss {entry['train_loss']:.4f}  "
            f"val_loss {entry['val_loss']:.4f}  {summary_line(metrics, self.multi_label)}  lr {entry['lr']:.2e}  "
            f"{rate:.0f} img/s  eval {time.perf_counter() - started:.1f}s" + ("  *best*" if improved else "")
        )
        self._say(line)
        if p.stopped_early:
            self._say(
                f"early stopping: no better {name} for {cfg.run.patience} epochs (best at epoch {p.best_epoch})"
            )

    def _finish(self) -> dict[str, Any]:
        """Best weights -> final evaluation, metrics.json, plots and the HF-layout model in the run folder."""
        barrier(self.context)
        best = checkpoint_dir(self.run_dir) / BEST
        if best.is_file():
            self.eval_model.load_state_dict(load_state_file(best))
        outputs: Outputs = predict(
            self.eval_model, self.val_loader, self.multi_label, self.context, self.config.run.bf16
        )
        metrics = evaluate_outputs(outputs, self.labels, self.multi_label, self.config.run.threshold)
        p = self.progress
        report = {
            "primary_metric": primary_metric(self.multi_label),
            "problem_type": self.model.config.problem_type,
            "best_epoch": p.best_epoch,
            "epochs_run": len(p.history),
            "stopped_early": p.stopped_early,
            "train_size": len(self.data.train),
            **metrics,
        }
        report["history"] = list(p.history)
        if self.context.is_main:
            write_report(self.run_dir, report, outputs, self.labels, self.multi_label)
            save_pretrained(
                self.eval_model, self.run_dir, preprocessing=self.processor.to_preprocessor_config()
            )
            self._say(
                f"final ({'best epoch ' + str(p.best_epoch) if p.best_epoch else 'last'}): "
                f"{summary_line(metrics, self.multi_label)}; model and report in {self.run_dir}"
            )
        barrier(self.context)
        return report
