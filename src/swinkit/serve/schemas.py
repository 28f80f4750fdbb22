"""Request and response bodies of the scoring endpoint, in the Azure ML model-card schema.

Request: ``{"input_data": {"columns": ["image"], "index": [0, 1], "data": [["<base64>"], ["<base64>"]]}}``
(pandas "split" orientation; a row may also be the bare string, ``index`` is optional) or the flat
``{"input_data": ["<base64>", ...]}``. An image is base64 (plain or a ``data:`` URI) or an http(s) URL.
A body sent as ``image/jpeg`` (png, webp, bmp, ``application/octet-stream``) is instead one image, raw.

Response: a list in input order with one object per image, whose shape depends on the task:
classification ``{"probs", "labels"}``; object detection ``{"boxes": [{"box", "label", "score"}]}``;
instance segmentation the same with a ``polygon`` per box (coordinates are fractions of the image size);
semantic segmentation ``{"label_map": <base64 PNG of class indices>, "width", "height", "classes": [{"label",
"index", "fraction"}]}`` at the original image size.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from swinkit.serve.errors import ServeError

IMAGE_COLUMN = "image"


class ScoreInputData(BaseModel):
    """A pandas "split" frame with an ``image`` column."""

    columns: list[str] = Field(default_factory=lambda: [IMAGE_COLUMN], min_length=1)
    index: list[int | str] | None = None
    data: list[str | list[Any]] = Field(min_length=1, description="rows: the image, or one value per column")

    @model_validator(mode="after")
    def _consistent(self) -> ScoreInputData:
        if IMAGE_COLUMN not in self.columns:
            raise ValueError(f'columns must include "{IMAGE_COLUMN}", got {self.columns}')
        if self.index is not None and len(self.index) != len(self.data):
            raise ValueError(f"index has {len(self.index)} entries for {len(self.data)} rows of data")
        return self


class ScoreRequest(BaseModel):
    """The body of ``POST /score``."""

    model_config = ConfigDict(
        json_schema_extra={"example": {"input_data": {"columns": ["image"], "data": [["iVBORw0KGgo..."]]}}}
    )

    input_data: ScoreInputData = Field(
        description='a pandas "split" frame with an "image" column, or simply a list of images'
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_form(cls, value: Any) -> Any:
        """``{"input_data": [...]}`` means one image per entry."""
        if isinstance(value, dict) and isinstance(value.get("input_data"), list):
            return {**value, "input_data": {"columns": [IMAGE_COLUMN], "data": value["input_data"]}}
        return value

    def images(self) -> list[str]:
        """The image of each row, in order; raises ServeError (422) naming a row of the wrong width."""
        frame = self.input_data
        column = frame.columns.index(IMAGE_COLUMN)
        out: list[str] = []
        for i, row in enumerate(frame.data):
            width = 1 if isinstance(row, str) else len(row)
            if width != len(frame.columns):
                raise ServeError(
                    422,
                    "invalid_schema",
                    f"row {i} has {width} values for {len(frame.columns)} columns",
                    index=i,
                )
            image = row if isinstance(row, str) else row[column]
            if not isinstance(image, str):
                raise ServeError(422, "invalid_schema", f"row {i}: the image must be a string", index=i)
            out.append(image)
        return out


class ClassificationResult(BaseModel):
    """Image classification: one probability per label, in label order."""

    probs: list[float]
    labels: list[str]


class BoundingBox(BaseModel):
    """A box as fractions of the image width (X) and height (Y), from the top-left corner."""

    topX: float = Field(ge=0, le=1)
    topY: float = Field(ge=0, le=1)
    bottomX: float = Field(ge=0, le=1)
    bottomY: float = Field(ge=0, le=1)


class DetectedObject(BaseModel):
    """One detected object."""

    box: BoundingBox
    label: str
    score: float = Field(ge=0, le=1)


class DetectionResult(BaseModel):
    """Object detection: every object found in one image."""

    boxes: list[DetectedObject]


class SegmentedObject(DetectedObject):
    """One detected object with its outline: each polygon is ``[x1, y1, x2, y2, ...]`` in image fractions."""

    polygon: list[list[float]] = Field(
        description="the outer outline of each part of the object's mask (holes are filled); "
        "empty when the mask is too small to outline"
    )


class SegmentationResult(BaseModel):
    """Instance segmentation: every object found in one image, with outlines."""

    boxes: list[SegmentedObject]


class SegmentationClass(BaseModel):
    """One class present in a semantic segmentation."""

    label: str = Field(description="the class name")
    index: int = Field(ge=0, description="the class index, the value its pixels have in label_map")
    fraction: float = Field(gt=0, le=1, description="share of the image's pixels labelled with this class")


class SemanticSegmentationResult(BaseModel):
    """Semantic segmentation: the class of every pixel, at the original image size."""

    model_config = ConfigDict(
        json_schema_extra={
            "example": {
                "label_map": "iVBORw0KGgoAAAANSUhEUgAA...",
                "width": 683,
                "height": 512,
                "classes": [
                    {"label": "wall", "index": 0, "fraction": 0.62},
                    {"label": "floor", "index": 3, "fraction": 0.38},
                ],
            }
        }
    )

    label_map: str = Field(
        description="base64 PNG of width x height pixels, each the index of its class (8-bit greyscale, "
        "16-bit for models with more than 256 classes)"
    )
    width: int = Field(ge=1, description="image width in pixels (the label map's)")
    height: int = Field(ge=1, description="image height in pixels (the label map's)")
    classes: list[SegmentationClass] = Field(
        description="the classes present, by decreasing share of the pixels (the fractions sum to 1)"
    )


ScoreResult = ClassificationResult | DetectionResult | SegmentationResult | SemanticSegmentationResult


class ErrorDetail(BaseModel):
    message: str
    index: int | None = Field(None, description="position of the offending image in data, or null")
    code: str


class ErrorResponse(BaseModel):
    """The body of every 4xx/5xx answer."""

    error: ErrorDetail


class InfoResponse(BaseModel):
    """What ``GET /info`` tells about the served model."""

    model: str
    task: str = Field(description="the Azure ML task name, e.g. image-classification")
    swinkit_task: str | None = Field(
        None, description="the swinkit task serving the model, e.g. classification"
    )
    labels: list[str]
    problem_type: str | None = None
    preprocessing: dict[str, Any] | None = None
    score_threshold: float | None = Field(None, description="detection: the lowest object score answered")
    max_detections: int | None = Field(None, description="detection: objects answered per image at most")
    inference: dict[str, Any] | None = Field(
        None, description="semantic segmentation: mode (whole or slide), sliding-window crop and stride, tta"
    )
    runtime: str | None = Field(
        None, description="the backend running the network: torch, openvino, onnxruntime"
    )
    precision: str | None = Field(None, description="its inference precision: fp32, bf16 or int8")
    torch_prepack: bool | None = Field(
        None, description="whether the torch path runs oneDNN-prepacked linear layers (--torch-prepack)"
    )
    max_batch_size: int
    inference_workers: int = Field(1, description="batches the model runs at once")
    max_images_per_request: int
    allow_urls: bool
