"""Reading and writing the two instance formats (``swinkit.data.instances`` describes them): COCO ``.json``
and Azure ML ``.jsonl``, and converting one into the other (``swinkit convert-data``).

Converting COCO to Azure writes RLE masks as polygons (``ops.polygons``: outer outlines, holes filled), the
only form the Azure format has; polygons and boxes convert both ways without loss. Image paths are written
relative to the output's folder when the image is found, else as they were written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from swinkit.checkpoint_io import atomic_write_json, open_output
from swinkit.data.instances import (
    InstanceDataset,
    InstanceImage,
    _Checks,
    _image_problem,
    _size,
    check_object,
    decode_segmentation,
    load_instances,
    segmentation_area,
)
from swinkit.ops.polygons import mask_to_polygons

CONVERTED_POLYGON_POINTS = 1000  # an RLE mask written as Azure polygons keeps up to this many points per part


def _read_coco(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise ValueError(f"{path} is not a COCO instances file: it needs 'images' and 'categories' lists")
    return data


def crowd_flag(value: Any) -> bool:
    """``iscrowd``/``isCrowd`` as written: 0/1, a bool, or text ("0", "1", "true", "false"); absent is 0."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _label_map(
    categories: list[dict[str, Any]], labels: Sequence[str] | None
) -> tuple[tuple[str, ...], dict[int, int], tuple[int, ...]]:
    """(label names, COCO id -> label index, COCO id of each label): mmdet's sorted ``cat_ids`` and
    ``cat2label``, or, with a model's ``labels``, the file's categories matched to them by name."""
    ordered = sorted(categories, key=lambda c: c["id"])
    if labels is None:
        return (
            tuple(c["name"] for c in ordered),
            {c["id"]: i for i, c in enumerate(ordered)},
            (tuple(c["id"] for c in ordered)),
        )
    index = {name: i for i, name in enumerate(labels)}
    cat2label = {c["id"]: index[c["name"]] for c in ordered if c["name"] in index}
    by_name = {c["name"]: c["id"] for c in ordered}
    next_id = max(by_name.values(), default=0) + 1
    ids = []
    for name in labels:
        ids.append(by_name.get(name, next_id))
        next_id += name not in by_name
    return tuple(labels), cat2label, tuple(ids)


def _coco_object(
    ann: dict[str, Any], image: InstanceImage, cat2label: dict[int, int], names: dict[int, str]
) -> tuple[str | None, tuple | None]:
    """(problem, (box, label, iscrowd, area, segmentation)) of one COCO annotation."""
    category = ann.get("category_id")
    if category not in names:
        return f"its category_id {category!r} is not among the file's categories", None
    if category not in cat2label:
        return f"its label {names[category]!r} is not one of the model's labels", None
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox):
        return f"its bbox {bbox!r} is not [x, y, width, height]", None
    x, y, w, h = (float(v) for v in bbox)
    box = np.array([x, y, x + w, y + h])  # mmdet's parse_data_info: [x1, y1, x1 + w, y1 + h]
    segmentation = ann.get("segmentation") or None
    problem = check_object(box, segmentation, image.width, image.height)
    if problem is not None:
        return problem, None
    area = ann.get("area")
    if not isinstance(area, (int, float)):
        area = segmentation_area(segmentation, image.height, image.width) if segmentation else w * h
    return None, (box, cat2label[category], crowd_flag(ann.get("iscrowd")), float(area), segmentation)


def _with_objects(image: InstanceImage, objects: list[tuple]) -> InstanceImage:
    boxes = np.array([o[0] for o in objects], dtype=np.float64).reshape(-1, 4)
    return InstanceImage(
        image.image_id, image.file, image.base, image.width, image.height, boxes,
        np.array([o[1] for o in objects], dtype=np.int64), np.array([o[2] for o in objects], dtype=bool),
        np.array([o[3] for o in objects], dtype=np.float64), tuple(o[4] for o in objects), image.where,
    )  # fmt: skip


def _bare_image(image_id: int, file: Any, base: Path, width: Any, height: Any, where: str) -> InstanceImage:
    empty = np.zeros((0, 4))
    return InstanceImage(image_id, str(file), str(base), width, height, empty, np.zeros(0, dtype=np.int64),
                         np.zeros(0, dtype=bool), np.zeros(0), (), where)  # fmt: skip


def _image_checked(image: InstanceImage, checks: _Checks, check_files: bool) -> bool:
    """Whether the image's size is sane and (``check_files``) its file is there with that size."""
    if (
        not (isinstance(image.width, int) and isinstance(image.height, int))
        or min(image.width, image.height) < 1
    ):
        checks.problem(f"{image.where}: its width and height must be positive pixel counts")
        return False
    problem = _image_problem(image.path(), image.file, image.width, image.height) if check_files else None
    if problem is not None:
        checks.problem(f"{image.where}: {problem}")
    return problem is None


def load_coco(
    path: Path, labels: Sequence[str] | None, checks: _Checks, check_files: bool
) -> InstanceDataset:
    """The images of a COCO instances file, in its ``images`` order (see ``swinkit.data.instances``)."""
    data = _read_coco(path)
    names = {c["id"]: c["name"] for c in data["categories"]}
    label_names, cat2label, category_ids = _label_map(data["categories"], labels)
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in data.get("annotations") or []:
        by_image.setdefault(ann.get("image_id"), []).append(ann)
    images = []
    for info in data["images"]:
        where = f"{path} image id {info.get('id')}"
        image = _bare_image(info.get("id"), info.get("file_name"), path.parent, _size(info.get("width")),
                            _size(info.get("height")), where)  # fmt: skip
        anns = by_image.pop(info.get("id"), [])
        if not _image_checked(image, checks, check_files):  # its annotations go with it
            continue
        objects = []
        for ann in anns:
            if ann.get("ignore", False):  # mmdet leaves these out
                continue
            problem, item = _coco_object(ann, image, cat2label, names)
            if problem is not None:
                checks.problem(f"{path} annotation id {ann.get('id')} (image id {info.get('id')}): {problem}")
            else:
                objects.append(item)
        images.append(_with_objects(image, objects))
    for image_id, anns in by_image.items():
        checks.problem(
            f"{path} annotation id {anns[0].get('id')}: its image_id {image_id!r} is not in images"
        )
    return InstanceDataset(images, label_names, category_ids, str(path))


def _azure_lines(path: Path, checks: _Checks) -> list[tuple[int, int, dict[str, Any]]]:
    """(line number, record index, record) of each usable line."""
    records = []
    with open(path, encoding="utf-8-sig") as f:
        for number, line in enumerate((line for line in f), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                checks.problem(f"{path} line {number} is not JSON: {e}")
                continue
            if not isinstance(record, dict) or not isinstance(record.get("image_url"), str):
                checks.problem(f"{path} line {number}: expected an object with an 'image_url' string")
                continue
            records.append((number, len(records) + 1, record))
    return records


def _normalised_numbers(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and all(isinstance(v, (int, float)) for v in p) for p in value
    )


def _azure_object(obj: Any, image: InstanceImage, index: dict[str, int]) -> tuple[str | None, tuple | None]:
    """(problem, (box, label, iscrowd, area, segmentation)) of one Azure label object."""
    if not isinstance(obj, dict):
        return "it is not an object with label, topX, topY, bottomX, bottomY", None
    name = obj.get("label")
    if name not in index:
        return f"its label {name!r} is not one of the labels {list(index)}", None
    corners = [obj.get(k) for k in ("topX", "topY", "bottomX", "bottomY")]
    if not all(isinstance(v, (int, float)) for v in corners):
        return f"its box needs numbers topX, topY, bottomX, bottomY, got {corners}", None
    scale = np.array([image.width, image.height, image.width, image.height], dtype=np.float64)
    box = np.array(corners, dtype=np.float64) * scale
    polygon = obj.get("polygon")
    if polygon is not None and not _normalised_numbers(polygon):
        return "its polygon must be a list of [x1, y1, x2, y2, ...] lists of numbers", None
    segmentation = None
    if polygon is not None:
        segmentation = [(np.asarray(p, dtype=np.float64).reshape(-1, 2) * scale[:2]).reshape(-1).tolist()
                        for p in polygon]  # fmt: skip
    problem = check_object(box, segmentation, image.width, image.height)
    if problem is not None:
        return problem, None
    area = (
        segmentation_area(segmentation, image.height, image.width)
        if segmentation
        else (float((box[2] - box[0]) * (box[3] - box[1])))
    )
    return None, (box, index[name], crowd_flag(obj.get("isCrowd")), area, segmentation)


def _azure_image(number: int, image_id: int, record: dict[str, Any], path: Path) -> InstanceImage:
    details = record.get("image_details") if isinstance(record.get("image_details"), dict) else {}
    image = _bare_image(image_id, record["image_url"], path.parent, _size(details.get("width")),
                        _size(details.get("height")), f"{path} line {number}")  # fmt: skip
    if image.width is None or image.height is None:  # no image_details: the file's own size
        found = image.path()
        if found is not None:
            from PIL import Image

            with Image.open(found) as opened:
                width, height = opened.size
            image = _bare_image(image_id, image.file, path.parent, width, height, image.where)
    return image


def load_azure_jsonl(
    path: Path, labels: Sequence[str] | None, checks: _Checks, check_files: bool
) -> InstanceDataset:
    """The images of an Azure ML instance-segmentation (or object-detection) JSONL file, in line order."""
    records = _azure_lines(path, checks)
    if labels is None:
        found = {o.get("label") for _, _, r in records for o in r.get("label") or [] if isinstance(o, dict)}
        labels = sorted(name for name in found if isinstance(name, str))
    index = {name: i for i, name in enumerate(labels)}
    images = []
    for number, image_id, record in records:
        image = _azure_image(number, image_id, record, path)
        if not _image_checked(image, checks, check_files):
            continue
        objects = []
        for j, obj in enumerate(record.get("label") or []):
            problem, item = _azure_object(obj, image, index)
            if problem is not None:
                checks.problem(f"{path} line {number} object {j}: {problem}")
            else:
                objects.append(item)
        images.append(_with_objects(image, objects))
    return InstanceDataset(images, tuple(labels), tuple(range(1, len(labels) + 1)), str(path))


def _file_for(image: InstanceImage, folder: Path) -> str:
    """The image's path relative to ``folder`` when it is found, else as written."""
    found = image.path()
    return image.file if found is None else os.path.relpath(found, folder)


def to_coco_dict(dataset: InstanceDataset, folder: Path | None = None) -> dict[str, Any]:
    """The dataset as a COCO instances dict (``folder``: where file names are relative to; as written if
    None); box-only objects have no ``segmentation``."""
    images, annotations = [], []
    for image in dataset.images:
        file = image.file if folder is None else _file_for(image, folder)
        images.append({"id": image.image_id, "file_name": file, "width": image.width, "height": image.height})
        for box, label, crowd, area, segmentation in zip(
            image.boxes.tolist(), image.labels.tolist(), image.iscrowd.tolist(), image.areas.tolist(),
            image.segmentations, strict=True,
        ):  # fmt: skip
            x1, y1, x2, y2 = box
            ann = {"id": len(annotations) + 1, "image_id": image.image_id,
                   "category_id": dataset.category_ids[label], "bbox": [x1, y1, x2 - x1, y2 - y1],
                   "area": area, "iscrowd": int(crowd)}  # fmt: skip
            if segmentation is not None:
                ann["segmentation"] = segmentation
            annotations.append(ann)
    categories = [{"id": i, "name": n} for i, n in zip(dataset.category_ids, dataset.labels, strict=True)]
    return {"images": images, "annotations": annotations, "categories": categories}


def _azure_polygons(segmentation: Any, image: InstanceImage) -> list[list[float]]:
    """Normalised polygons of a stored segmentation (an RLE is outlined)."""
    if not isinstance(segmentation, list):
        mask = decode_segmentation(segmentation, image.height, image.width)
        segmentation = [
            p.reshape(-1).tolist() for p in mask_to_polygons(mask, max_points=CONVERTED_POLYGON_POINTS)
        ]
    scale = np.array([image.width, image.height], dtype=np.float64)
    return [
        (np.asarray(p, dtype=np.float64).reshape(-1, 2) / scale).reshape(-1).tolist() for p in segmentation
    ]


def to_azure_records(dataset: InstanceDataset, folder: Path | None = None) -> Iterator[dict[str, Any]]:
    """The dataset as Azure ML JSONL records, one per image."""
    for image in dataset.images:
        file = image.file if folder is None else _file_for(image, folder)
        scale = np.array([image.width, image.height, image.width, image.height], dtype=np.float64)
        objects = []
        for box, label, crowd, segmentation in zip(
            image.boxes, image.labels.tolist(), image.iscrowd.tolist(), image.segmentations, strict=True
        ):
            corners = dict(zip(("topX", "topY", "bottomX", "bottomY"), (box / scale).tolist(), strict=True))
            obj = {"label": dataset.labels[label], **corners, "isCrowd": int(crowd)}
            if segmentation is not None:
                obj["polygon"] = _azure_polygons(segmentation, image)
            objects.append(obj)
        details = {"format": Path(image.file).suffix.lstrip(".").lower(), "width": image.width,
                   "height": image.height}  # fmt: skip
        yield {"image_url": file, "image_details": details, "label": objects}


def convert_instances(
    source: str | os.PathLike, destination: str | os.PathLike, *, skip_invalid: bool = False,
    check_files: bool = True,
) -> InstanceDataset:  # fmt: skip
    """Write ``source`` (COCO ``.json`` or Azure ``.jsonl``) as ``destination`` (the format its suffix names)."""
    destination = Path(destination)
    suffix = destination.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise ValueError(f"{destination}: the output must be a COCO .json or an Azure ML .jsonl file")
    dataset = load_instances(source, skip_invalid=skip_invalid, check_files=check_files)
    folder = destination.parent.resolve()
    if suffix == ".json":
        atomic_write_json(destination, to_coco_dict(dataset, folder))
    else:
        with open_output(destination, "w", ".jsonl") as f:
            for record in to_azure_records(dataset, folder):
                f.write(json.dumps(record) + "\n")
    return dataset
