"""Run by ``torchrun --nproc-per-node 2`` in test_instance_distributed: DDP steps of the micro Mask R-CNN in
which rank 1's batch has no object (so no positive RoI); writes every rank's weights to ``argv[1]``."""

import contextlib
import datetime
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from swinkit.engine.config import TrainConfig
from swinkit.models.detection.mask_rcnn import create_mask_rcnn
from swinkit.models.detection.structures import ImageMeta
from swinkit.tasks import InstanceSegmentationTask


def _batch(rank: int) -> dict:
    pixels = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(rank))
    boxes, masks = torch.tensor([[8.0, 8.0, 40.0, 36.0]]), torch.zeros(1, 64, 64, dtype=torch.bool)
    masks[0, 8:36, 8:40] = True
    if rank == 1:  # no object: no positive RoI, the mask head sees no RoI
        boxes, masks = boxes[:0], masks[:0]
    meta = ImageMeta((64, 64), (64, 64), (1.0, 1.0))
    labels = torch.zeros(len(boxes), dtype=torch.long)
    return {"pixel_values": pixels, "image_metas": [meta], "gt_boxes": [boxes], "gt_labels": [labels],
            "gt_masks": [masks]}  # fmt: skip


def main(out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = create_mask_rcnn("mask_rcnn_swin_micro", num_classes=2).train()
    net = DistributedDataParallel(model)
    task = InstanceSegmentationTask(TrainConfig(task="instance_segmentation"))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for step in range(3):  # a reduction left unfinished fails the next step's forward
        losses = task.losses(net, _batch(rank), np.random.default_rng([step, rank]), contextlib.nullcontext())
        sum(losses.values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    weights = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(weights) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, weights)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
