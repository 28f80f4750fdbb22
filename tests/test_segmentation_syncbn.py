"""SyncBN in the segmentation heads under torchrun (mmseg's ``norm_cfg=dict(type='SyncBN')``).

torch's ``nn.SyncBatchNorm`` runs on CUDA/XPU/HPU only: on CPU its forward raises "SyncBatchNorm expected
input tensor to be on GPU or XPU or privateuseone" once a process group exists. So a CPU run keeps plain
BatchNorm (each process its own statistics) and says so; the 2-process statistics check below runs where
SyncBN can, and is skipped here with that error.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from test_tasks import MeanColourTask
from torch import nn

from swinkit.engine.config import TrainConfig, apply_overrides, apply_recipe
from swinkit.engine.distributed import DistContext
from swinkit.engine.trainer import Trainer
from swinkit.models.segmentation import create_upernet
from swinkit.models.segmentation.upernet import sync_head_norms
from swinkit.tasks import register, unregister
from swinkit.tasks.semantic_segmentation import SemanticSegmentationTask


def _norms(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _perturbed_micro() -> nn.Module:
    torch.manual_seed(0)
    model = create_upernet("upernet_swin_micro", num_classes=3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return model


def test_sync_head_norms_converts_every_head_batchnorm_and_keeps_the_weights():
    model = _perturbed_micro().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(pixels).logits
    converted = sync_head_norms(model)
    heads = _norms(converted.decode_head) + _norms(converted.auxiliary_head)
    assert len(heads) > 5 and set(heads) == {nn.SyncBatchNorm}
    assert _norms(converted.backbone) == []  # Swin has LayerNorm only
    after = converted.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(converted.eval()(pixels).logits, expected)  # eval: the running statistics


def _task() -> SemanticSegmentationTask:
    config = TrainConfig()
    apply_recipe(config, "mmseg")
    return SemanticSegmentationTask(apply_overrides(config, {"task": "semantic_segmentation", "data.train": "x",
                                                             "run.output": "x", "run.batch_size": 2}))  # fmt: skip


def test_the_task_syncs_the_heads_only_for_a_distributed_run_on_a_syncbn_device(caplog):
    task = _task()
    single = task.distributed_model(_perturbed_micro(), DistContext())
    assert set(_norms(single)) == {nn.BatchNorm2d}
    gpu = DistContext(rank=0, world_size=2, device=torch.device("cuda"))
    assert set(_norms(task.distributed_model(_perturbed_micro(), gpu))) == {nn.SyncBatchNorm}
    with caplog.at_level(logging.WARNING):
        cpu = task.distributed_model(_perturbed_micro(), DistContext(rank=1, world_size=2))
    assert set(_norms(cpu)) == {nn.BatchNorm2d}
    assert "SyncBN needs CUDA (torch's SyncBatchNorm refuses cpu tensors)" in caplog.text


class ReplacedForDistribution(MeanColourTask):
    name = "mean_colour_replaced"
    seen: list = []

    def distributed_model(self, model, context):
        self.seen.append(context)
        return nn.Sequential(model, nn.Identity())


def test_the_trainer_trains_the_model_the_tasks_distribution_hook_returns(tmp_path):
    register(ReplacedForDistribution)
    try:
        config = apply_overrides(TrainConfig(), {
            "task": ReplacedForDistribution.name, "data.train": str(tmp_path), "run.output": str(tmp_path / "run"),
            "model.preset": "(the task's own)", "run.batch_size": 8, "run.progress": False, "schedule.epochs": 1,
            "schedule.warmup_epochs": 0.0,
        })  # fmt: skip
        trainer = Trainer(config)
        trainer.fit()
    finally:
        unregister(ReplacedForDistribution.name)
    assert ReplacedForDistribution.seen == [trainer.context]
    assert isinstance(trainer.model, nn.Sequential) and isinstance(trainer.model[1], nn.Identity)


RANK = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from torch import nn
    rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    norm = nn.SyncBatchNorm(4)
    batch = torch.randn(4, 4, 5, 5) * 3 + 1
    try:
        norm(batch[2 * rank : 2 * rank + 2]).sum().backward()
    except ValueError as e:
        open(out, "w").write("unsupported: " + str(e))
    else:
        torch.save((norm.running_mean, norm.running_var), out)
    dist.destroy_process_group()
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="torch's SyncBatchNorm runs on GPU only: on CPU its two ranks could only skip",
)
def test_two_gloo_processes_share_statistics_as_one_on_the_whole_batch(tmp_path):
    port, outs = _free_port(), [tmp_path / f"rank{r}" for r in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", RANK, str(r), str(port), str(outs[r])]) for r in range(2)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    text = outs[0].read_bytes()
    if text.startswith(b"unsupported: "):
        pytest.skip(f"torch's SyncBatchNorm does not run on CPU under gloo: {text[13:].decode()}")
    torch.manual_seed(0)
    reference = nn.BatchNorm2d(4)
    reference(torch.randn(4, 4, 5, 5) * 3 + 1)
    for out in outs:
        mean, var = torch.load(out)
        torch.testing.assert_close(mean, reference.running_mean)
        torch.testing.assert_close(var, reference.running_var)
