"""``OPENVINO_FLOAT_PATTERNS``: the layers NNCF leaves in float, matched as NNCF matches them (``re.match`` on
the node names of its graph, ``nncf.scopes.get_matched_ignored_scope_info``) on every graph swinkit exports
(classification Swin v1 and v2, the UPerNet and the Mask R-CNN dense graph): the window attention's two
batched products of every block and the RPN head, never the projections or the MLPs."""

from __future__ import annotations

import pytest
from instance_scenes import FAST

import swinkit
from swinkit.inference import load_predictor
from swinkit.presets import Preprocessing
from swinkit.runtime.export import export_onnx
from swinkit.runtime.exporter import graph_of
from swinkit.runtime.quantize import OPENVINO_FLOAT_PATTERNS

pytest.importorskip("openvino")
nncf = pytest.importorskip("nncf")


def _classifier(folder, name):
    model = swinkit.create_model(name, image_size=32, labels=["a", "b"], drop_path_rate=0.0)
    preprocessing = Preprocessing(image_size=(32, 32), crop_pct=None)
    return swinkit.save_pretrained(model, folder, preprocessing=preprocessing)


def _upernet(folder):
    from swinkit.checkpoint_io import atomic_write_json
    from swinkit.models.segmentation import create_upernet
    from swinkit.models.segmentation.checkpoints import save_hf

    save_hf(create_upernet("upernet_swin_micro", labels=["sky", "road"]).eval(), folder)
    atomic_write_json(folder / "preprocessor_config.json", {"mmseg_test_scale": [64, 64]})
    return folder


def _detector(folder):
    from swinkit.models.detection.checkpoints import save_pretrained
    from swinkit.models.detection.mask_rcnn import create_mask_rcnn

    return save_pretrained(create_mask_rcnn("mask_rcnn_swin_micro", labels=("a", "b"), **FAST).eval(), folder)


MICRO_DEPTHS = (2, 2, 2, 2)  # the micro presets' blocks per stage
MODELS = {  # task -> (saved model folder maker, node-name prefix of the Swin blocks)
    "swin_v1": (lambda folder: _classifier(folder, "swin_micro"), "/model/"),
    "swin_v2": (lambda folder: _classifier(folder, "swinv2_micro"), "/model/"),  # cosine attention, CPB MLP
    "upernet": (_upernet, "/backbone/"),
    "mask_rcnn": (_detector, "/backbone/"),
}


def _matched(tmp_path, task):
    """(NNCF's graph of the exported fp32 graph, the node names each of the patterns selects)."""
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.scopes import get_matched_ignored_scope_info

    from swinkit.runtime.openvino_core import openvino_core

    spec = graph_of(load_predictor(MODELS[task][0](tmp_path / "model")))
    onnx = export_onnx(
        spec.module, tmp_path / "model.onnx", spec.example, output_names=spec.output_names,
        dynamic_hw=spec.dynamic_hw,
    )  # fmt: skip
    graph = GraphConverter.create_nncf_graph(openvino_core().read_model(str(onnx)))
    selected = []
    for pattern in OPENVINO_FLOAT_PATTERNS:
        _, matches = get_matched_ignored_scope_info(nncf.IgnoredScope(patterns=[pattern]), [graph])
        selected.append(matches["patterns"])
    return graph, selected


@pytest.mark.parametrize(
    "task",
    ["swin_v1", "swin_v2", *(pytest.param(t, marks=pytest.mark.slow) for t in ("upernet", "mask_rcnn"))],
)
def test_the_float_patterns_select_each_blocks_attention_products_and_the_rpn_head_only(tmp_path, task):
    graph, (attention, rpn) = _matched(tmp_path, task)
    prefix = MODELS[task][1]
    blocks = [
        f"{prefix}layers.{i}/blocks.{j}/attn" for i, depth in enumerate(MICRO_DEPTHS) for j in range(depth)
    ]
    expected = {f"{block}/{product}" for block in blocks for product in ("MatMul", "MatMul_1")}
    assert {graph.get_node_by_name(name).node_type for name in attention} == {"MatMul"}
    assert attention == expected  # q @ k^T and attn @ v of every block, nothing else
    matmuls = [n for n in graph.get_all_nodes() if n.node_type == "MatMul" and n.node_name.startswith(prefix)]
    # every other MatMul of the blocks (qkv, proj, MLP fc) reads its weights; v2's CPB MLP reads a table of
    # constants through ops NNCF does not fold, and it stays quantizable like the other linear layers
    products = {n.node_name for n in matmuls if not _has_weight(n) and "/cpb_mlp/" not in n.node_name}
    assert attention == products
    if task == "mask_rcnn":
        assert rpn and all(name.startswith("/rpn_head/") for name in rpn)
        assert "/rpn_head/rpn_cls/Conv/WithoutBiases" in rpn
    else:
        assert rpn == set()


def _has_weight(node) -> bool:
    """Whether an NNCF OpenVINO node reads a constant (a layer's weights)."""
    return bool(getattr(node.layer_attributes, "constant_attributes", None))
