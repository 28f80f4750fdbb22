"""SimMIM's random mask generator (microsoft/SimMIM ``data/data_simmim.py``, ``MaskGenerator``)."""

from __future__ import annotations

import math

import numpy as np
import torch


class MaskGenerator:
    """Random masks of ``mask_patch_size`` cells over the model's patch grid, as the official SimMIM.

    Each call masks ``ceil(cells * mask_ratio)`` cells of the (H/mask_patch, W/mask_patch) grid, chosen by a
    random permutation, and returns the (H/model_patch, W/model_patch) 0/1 mask (1 = masked patch).
    ``input_size`` is an int (square) or (height, width). ``rng`` (a numpy Generator, a torch Generator or a
    seed) makes the masks reproducible; a ``numpy.random.RandomState`` draws exactly the masks the official
    code draws from the global numpy state seeded alike.
    """

    def __init__(
        self,
        input_size: int | tuple[int, int] = 192,
        mask_patch_size: int = 32,
        model_patch_size: int = 4,
        mask_ratio: float = 0.6,
        rng: np.random.Generator | np.random.RandomState | torch.Generator | int | None = None,
    ) -> None:
        height, width = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if height % mask_patch_size or width % mask_patch_size:
            raise ValueError(
                f"input size {height}x{width} is not a multiple of the mask patch {mask_patch_size}"
            )
        if mask_patch_size % model_patch_size:
            raise ValueError(
                f"mask patch {mask_patch_size} is not a multiple of the model patch {model_patch_size}"
            )
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1], got {mask_ratio}")
        self.grid = (height // mask_patch_size, width // mask_patch_size)
        self.scale = mask_patch_size // model_patch_size
        self.token_count = self.grid[0] * self.grid[1]
        self.mask_count = int(math.ceil(self.token_count * mask_ratio))
        own = isinstance(rng, np.random.Generator | np.random.RandomState | torch.Generator)
        self.rng = rng if own else np.random.default_rng(rng)

    def mask_from_permutation(self, permutation: np.ndarray) -> np.ndarray:
        """The mask that masks the first ``mask_count`` cells of ``permutation`` (a permutation of the cells)."""
        mask = np.zeros(self.token_count, dtype=np.int64)
        mask[permutation[: self.mask_count]] = 1
        mask = mask.reshape(self.grid)  # (H/mask_patch, W/mask_patch)
        return mask.repeat(self.scale, axis=0).repeat(self.scale, axis=1)  # (H/model_patch, W/model_patch)

    def __call__(self) -> np.ndarray:
        if isinstance(self.rng, torch.Generator):
            permutation = torch.randperm(self.token_count, generator=self.rng).numpy()
        else:
            permutation = self.rng.permutation(self.token_count)
        return self.mask_from_permutation(permutation)
