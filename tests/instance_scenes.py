"""Generated instance scenes for the detector's training tests: coloured rectangles with polygon masks, as COCO."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("red_box", "green_box")
# the detector's test-time settings that keep a micro Mask R-CNN cheap on a CPU (create_mask_rcnn overrides)
FAST = {"test_scale": (96, 64), "rpn_nms_pre": 200, "rpn_max_per_img": 100, "max_per_img": 20}
COLOURS = ((220, 40, 40), (40, 200, 60))


def write_scenes(folder: Path, count: int, size: int = 64, seed: int = 0, masks: bool = True) -> Path:
    """``count`` images of 1-2 rectangles (class by colour) on grey noise and their COCO ``instances.json``
    (objects with polygon masks, or boxes only)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        pixels = rng.integers(90, 140, (size, size, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 3))):
            label = int(rng.integers(0, len(CLASSES)))
            w, h = rng.integers(size // 4, size // 2, 2)
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            pixels[y : y + h, x : x + w] = COLOURS[label]
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            annotations.append({
                "id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1, "iscrowd": 0,
                "bbox": [x, y, int(w), int(h)], "area": int(w * h), "segmentation": [[float(v) for v in polygon]],
            })  # fmt: skip
            if not masks:
                del annotations[-1]["segmentation"]
        Image.fromarray(pixels).save(folder / f"scene{i}.png")
        images.append({"id": i + 1, "file_name": f"scene{i}.png", "width": size, "height": size})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(CLASSES)]
    path = folder / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path
