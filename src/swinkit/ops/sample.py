"""Random sampling of positive and negative boxes for training, as mmdetection's ``RandomSampler``."""

from dataclasses import dataclass

import torch
from torch import Tensor

from swinkit.ops.assign import AssignResult, add_gt_to_assignment

__all__ = ["SamplingResult", "random_sample"]


@dataclass(frozen=True)
class SamplingResult:
    """The sampled boxes of one image, as mmdet's ``SamplingResult``.

    ``priors (n', 4)`` are the candidate boxes (ground truths first when they were added as proposals) and
    ``assign_result`` their assignment; ``pos_inds``/``neg_inds`` index them (sorted); ``pos_gt_inds`` are the
    0-based ground truths of the positives, ``pos_gt_boxes``/``pos_gt_labels`` their boxes and labels and
    ``pos_is_gt`` whether a positive is a ground truth added as a proposal.
    """

    priors: Tensor
    assign_result: AssignResult
    pos_inds: Tensor
    neg_inds: Tensor
    pos_gt_inds: Tensor
    pos_gt_boxes: Tensor
    pos_gt_labels: Tensor
    pos_is_gt: Tensor

    @property
    def pos_priors(self) -> Tensor:
        """The positive boxes ``(p, 4)``."""
        return self.priors[self.pos_inds]

    @property
    def neg_priors(self) -> Tensor:
        """The negative boxes ``(q, 4)``."""
        return self.priors[self.neg_inds]


def _random_choice(gallery: Tensor, num: int, generator: torch.Generator | None) -> Tensor:
    """``num`` distinct elements of ``gallery`` at random, as ``RandomSampler.random_choice`` (``randperm``)."""
    perm = torch.randperm(gallery.numel(), generator=generator)[:num].to(gallery.device)
    return gallery[perm]


def _sample(candidates: Tensor, num_expected: int, generator: torch.Generator | None) -> Tensor:
    """All ``candidates`` when there are at most ``num_expected``, else a random ``num_expected`` of them."""
    if candidates.numel() <= num_expected:
        return candidates
    return _random_choice(candidates, num_expected, generator)


def random_sample(
    assign_result: AssignResult,
    num: int,
    pos_fraction: float,
    neg_pos_ub: int = -1,
    add_gt_as_proposals: bool = True,
    generator: torch.Generator | None = None,
    *,
    priors: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
) -> SamplingResult:
    """Sample at most ``num * pos_fraction`` positives and fill up to ``num`` with negatives, as
    ``BaseSampler.sample`` with ``RandomSampler``.

    ``priors (n, 4)`` are the boxes ``assign_result`` assigns; with ``add_gt_as_proposals`` the ``gt_boxes (k, 4)``
    (labels ``gt_labels (k,)``) are prepended to them as positives of themselves. ``neg_pos_ub >= 0`` caps the
    negatives at ``neg_pos_ub * max(1, positives)``. ``generator`` makes the draws reproducible (``None``: the
    global generator, as mmdet). RPN: ``(256, 0.5, add_gt_as_proposals=False)``; RoI head: ``(512, 0.25)``.
    """
    gt_flags = torch.zeros(priors.size(0), dtype=torch.bool, device=priors.device)
    if add_gt_as_proposals and len(gt_boxes) > 0:
        priors = torch.cat([gt_boxes.to(priors.dtype), priors], dim=0)
        assign_result = add_gt_to_assignment(assign_result, gt_labels)
        gt_flags = torch.cat([torch.ones(len(gt_boxes), dtype=torch.bool, device=priors.device), gt_flags])
    positives = (assign_result.gt_inds > 0).nonzero().view(-1)
    pos_inds = _sample(positives, int(num * pos_fraction), generator).unique()
    num_expected_neg = num - pos_inds.numel()
    if neg_pos_ub >= 0:
        num_expected_neg = min(num_expected_neg, int(neg_pos_ub * max(1, pos_inds.numel())))
    negatives = (assign_result.gt_inds == 0).nonzero().view(-1)
    neg_inds = _sample(negatives, num_expected_neg, generator).unique()
    pos_gt_inds = assign_result.gt_inds[pos_inds] - 1
    pos_gt_boxes = gt_boxes[pos_gt_inds] if gt_boxes.numel() > 0 else gt_boxes.new_zeros((0, 4))
    return SamplingResult(
        priors=priors,
        assign_result=assign_result,
        pos_inds=pos_inds,
        neg_inds=neg_inds,
        pos_gt_inds=pos_gt_inds,
        pos_gt_boxes=pos_gt_boxes,
        pos_gt_labels=assign_result.labels[pos_inds],
        pos_is_gt=gt_flags[pos_inds],
    )
