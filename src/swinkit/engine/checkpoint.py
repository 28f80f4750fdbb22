"""Training state on disk: everything an exactly resumed run needs, written atomically, read with
``weights_only=True`` (random-number states are stored as tensors and plain values, never pickled objects).

``RUN/checkpoints/last.pt`` is rewritten every ``checkpoint_every`` optimizer steps and at each epoch's end;
``RUN/checkpoints/best.safetensors`` holds the weights of the best validation epoch.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swinkit.checkpoint_io import load_torch, save_torch

LAST = "last.pt"
BEST = "best.safetensors"
FORMAT = 1


def checkpoint_dir(run: str | os.PathLike) -> Path:
    return Path(run) / "checkpoints"


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch global generator states, as tensors and plain values."""
    version, words, gauss = random.getstate()
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": {"version": version, "words": torch.tensor(words, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "bit_generator": numpy_state["bit_generator"],
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python["version"], tuple(python["words"].tolist()), python["gauss"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_training_state(run: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (model, optimizer, schedule, EMA, progress, history) with the RNG states."""
    path = checkpoint_dir(run) / LAST
    save_torch({"format": FORMAT, **state, "rng": rng_state()}, path)
    return path


def load_training_state(run: str | os.PathLike) -> dict[str, Any]:
    """The state saved by ``save_training_state`` (FileNotFoundError when the run has none)."""
    path = checkpoint_dir(run) / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume in {run}: {path} does not exist")
    state = load_torch(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a swinkit training checkpoint")
    return state


def finished_run(run: str | os.PathLike, epochs: int, iterations: int | None = None) -> dict[str, Any] | None:
    """The saved progress of ``run`` when it is complete: ``epochs`` trained (an iteration-based run:
    ``iterations`` optimizer steps), or stopped early, and its final ``metrics.json`` written; None when
    there is still something to do."""
    progress = load_training_state(run)["progress"]
    length_done = progress["global_step"] >= iterations if iterations else progress["epoch"] >= epochs
    done = progress["stopped_early"] or length_done
    return progress if done and (Path(run) / "metrics.json").is_file() else None
