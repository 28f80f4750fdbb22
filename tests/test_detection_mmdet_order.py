"""mmdet 3.3's test-time order in ``StandardRoIHead.predict`` with a mask head, pinned on the micro model.

``StandardRoIHead.predict`` calls ``predict_bbox(rescale=False)`` when ``with_mask``; ``predict_mask`` builds the
mask RoIs from those input-pixel boxes, and ``FCNMaskHead._predict_by_feat_single(rescale=True)`` divides them
in place by ``scale_factor`` (``bboxes /= scale_factor``) before pasting at ``ori_shape``.
"""

import torch
from test_detection_model import _micro

from swinkit.models.detection.structures import ImageMeta


def test_mask_rois_are_input_pixel_boxes_and_outputs_are_divided_by_the_scale_factor(monkeypatch):
    model = _micro()
    meta = ImageMeta((40, 50), (96, 120), (120 / 50, 96 / 40))
    pixels = torch.randn(1, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    seen = []
    original = model.roi_head.mask_logits
    monkeypatch.setattr(
        model.roi_head, "mask_logits", lambda f, d: seen.append(d[0].boxes.clone()) or original(f, d)
    )
    with torch.no_grad():
        (det,) = model(pixels, [meta]).detections
        features = model.extract_features(pixels)
        proposals = model.rpn_head.predict(features, [meta])
        (unscaled,) = model.roi_head.predict_boxes(features, proposals, [meta], rescale=False)
    assert len(det) > 0
    torch.testing.assert_close(seen[0], unscaled.boxes, rtol=0, atol=0)  # mask RoIs: boxes in input pixels
    scale = torch.tensor([120 / 50, 96 / 40, 120 / 50, 96 / 40])
    torch.testing.assert_close(
        det.boxes, unscaled.boxes / scale, rtol=0, atol=0
    )  # fcn_mask_head: bboxes /= sf
    assert bool((seen[0][:, 2] > 50).any())  # the RoIs really are beyond the 50-pixel-wide original image
