"""The semantic segmentation task: registry, export, the mmseg recipe's schedule, CLI training and resume."""

import json

import pytest
import torch
import transformers

from swinkit.data.segmentation import SegmentationProcessor
from swinkit.inference import task_of_source
from swinkit.models.segmentation import create_upernet
from swinkit.tasks import get_task
from swinkit.tasks.semantic_segmentation import SemanticSegmentationTask, export_upernet


def test_task_registered_and_checks_presets():
    task = get_task("semantic_segmentation")
    assert task is SemanticSegmentationTask
    assert task.matches({"architectures": ["UperNetForSemanticSegmentation"]})
    assert not task.matches({"architectures": ["SwinForImageClassification"]})
    task.check_preset("upernet_swin_micro")
    with pytest.raises(ValueError, match="did you mean upernet_swin_micro"):
        task.check_preset("upernet_swin_mirco")


def test_export_loads_in_transformers_and_is_recognised(tmp_path):
    model = create_upernet("upernet_swin_micro", num_classes=3, labels=("bg", "disc", "square")).eval()
    processor = SegmentationProcessor(scale=(128, 64))
    export_upernet(model, tmp_path, processor)
    reference = transformers.UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    pixels = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model(pixels).logits, reference(pixel_values=pixels).logits
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    assert reference.config.id2label == {0: "bg", 1: "disc", 2: "square"}
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert SegmentationProcessor.from_preprocessor_config(saved) == processor
    transformers.AutoImageProcessor.from_pretrained(tmp_path)
    assert task_of_source(tmp_path) is SemanticSegmentationTask
