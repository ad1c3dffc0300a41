"""ONNX export round trip: torch == ONNX within tolerance, the runtime metadata contract, the model card."""
from __future__ import annotations

import json
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from robot_compress.compress.export import ExportError, export_onnx  # noqa: E402
from robot_compress.compress.models import get_model  # noqa: E402
from robot_compress.compress.pruning import is_pruned, prune_model  # noqa: E402
from robot_compress.runtime.engine import Engine, read_metadata  # noqa: E402
from robot_compress.runtime.metadata import REQUIRED_KEYS  # noqa: E402

pytestmark = pytest.mark.toolkit


def _info(task, labels, size, ignore_index=None):
    return types.SimpleNamespace(task=task, labels=labels, input_size=size, mean=(0.4, 0.5, 0.6),
                                 std=(0.2, 0.25, 0.3), ignore_index=ignore_index, fingerprint="fp-test-123",
                                 source="synthetic")


def _onnx_weight_sparsity(path) -> float:
    """Zero fraction over the weight initializers of Conv/Gemm nodes in the exported graph."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[1]] for n in model.graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in inits]
    total = sum(w.size for w in weights)
    return sum(int((w == 0).sum()) for w in weights) / total


def _torch_on_engine_input(model, engine, rgb):
    x = torch.from_numpy(engine.preprocess(rgb).copy())
    with torch.no_grad():
        return model(x).numpy()


@pytest.mark.parametrize("task,name,size", [("classification", "tiny_cnn", (32, 32)),
                                            ("segmentation", "tiny_segnet", (24, 40))])
def test_round_trip_metadata_and_card(tmp_path, task, name, size):
    torch.manual_seed(0)
    labels = ["a", "b", "c", "d"]
    info = _info(task, labels, size, ignore_index=4 if task == "segmentation" else None)
    model = get_model(name, len(labels)).eval()
    prune_model(model, "class-blind", 0.5, seed=0)
    path = tmp_path / f"{name}.onnx"

    res = export_onnx(model, path, info, model_id=f"{name}_cb50", recipe="unit-test")

    # The caller's model keeps its masks; the exported graph has them baked in.
    assert is_pruned(model)
    assert res.max_abs_diff < 1e-4
    assert _onnx_weight_sparsity(path) >= 0.5 - 1e-3
    # Dynamic batch and equality on a fresh random batch.
    import onnxruntime as ort

    x = torch.randn(4, 3, *size)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x.numpy()})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=1e-4)

    proto = onnx.load(str(path))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    props = {p.key: p.value for p in proto.metadata_props}
    assert set(REQUIRED_KEYS) <= set(props)
    meta = read_metadata(path)
    assert meta.task == task and list(meta.labels) == labels and meta.input_size == size
    assert meta.mean == (0.4, 0.5, 0.6) and meta.std == (0.2, 0.25, 0.3) and meta.color_order == "RGB"
    assert meta.model_id == f"{name}_cb50"
    assert meta.ignore_index == (4 if task == "segmentation" else None)
    assert {"recipe", "commit", "dataset_fingerprint", "created"} <= set(meta.provenance)
    assert meta.provenance["recipe"] == "unit-test" and meta.provenance["dataset_fingerprint"] == "fp-test-123"
    assert int(meta.extra["params_total"]) >= int(meta.extra["params_nonzero"]) >= int(meta.extra["params_effective"])
    assert abs(float(meta.extra["sparsity"]) - 0.5) < 0.01
    assert len(json.loads(meta.extra["sparsity_per_layer"])) >= 3

    # The runtime Engine runs it and agrees with torch on the same preprocessed frame.
    engine = Engine(path)
    rgb = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    np.testing.assert_allclose(engine.logits(rgb), _torch_on_engine_input(model, engine, rgb), atol=1e-4)

    card = json.loads(path.with_suffix(".json").read_text())
    assert card["model_id"] == f"{name}_cb50" and card["labels"] == labels
    assert card["params"]["total"] == int(meta.extra["params_total"])
    md = path.with_suffix(".md").read_text()
    assert f"# Model card: {name}_cb50" in md and "Per-layer sparsity" in md


def test_unpruned_export_has_zero_sparsity(tmp_path):
    model = get_model("tiny_cnn", 3)
    res = export_onnx(model, tmp_path / "plain.onnx", _info("classification", ["x", "y", "z"], (16, 16)))
    assert float(res.metadata["sparsity"]) == 0.0
    assert res.params["weight_sparsity"] == 0.0 and res.params["nonzero"] <= res.params["total"]


def test_old_opset_is_refused(tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export_onnx(get_model("tiny_cnn", 2), tmp_path / "m.onnx", _info("classification", ["a", "b"], (16, 16)),
                    opset=13)
    assert not (tmp_path / "m.onnx").exists()


def test_segmentation_export_at_another_input_size_with_smaller_logits(tmp_path):
    """input_size/logits_size: the graph takes the new input size and ends at the smaller logits; the Engine
    still returns a mask at the frame's size, equal to the torch logits' argmax enlarged by nearest neighbour."""
    torch.manual_seed(0)
    labels = ["a", "b", "c"]
    model = get_model("lraspp_mobilenet_v3_large", len(labels)).eval()
    path = tmp_path / "seg.onnx"
    res = export_onnx(model, path, _info("segmentation", labels, (96, 128)), input_size=(64, 96),
                      logits_size=(32, 48))

    assert res.max_abs_diff < 1e-3
    assert model.logits_size is None  # the caller's model keeps its full-size output
    engine = Engine(path)
    assert engine.meta.input_size == (64, 96)
    rgb = np.random.default_rng(0).integers(0, 256, (64, 96, 3), np.uint8)
    model.logits_size = (32, 48)
    logits = _torch_on_engine_input(model, engine, rgb)
    assert logits.shape == (1, 3, 32, 48)
    result = engine.infer(rgb)
    assert result.mask.shape == (64, 96)
    expected = np.repeat(np.repeat(logits[0].argmax(0), 2, axis=0), 2, axis=1)
    assert (result.mask == expected).mean() > 0.99  # float ties between torch and onnxruntime may flip a pixel


def test_logits_size_is_refused_for_models_without_a_torchvision_head(tmp_path):
    with pytest.raises(ExportError, match="logits_size"):
        export_onnx(get_model("tiny_segnet", 2), tmp_path / "m.onnx", _info("segmentation", ["a", "b"], (16, 16)),
                    logits_size=(8, 8))
    with pytest.raises(ExportError, match="segmentation"):
        export_onnx(get_model("tiny_cnn", 2), tmp_path / "m.onnx", _info("classification", ["a", "b"], (16, 16)),
                    input_size=(8, 8))


def test_flip_averaged_model_predicts_the_mean_of_the_frame_and_its_mirror(tmp_path):
    """tta.FlipAveraged: same argmax and same softmax as averaging the two passes' log-probabilities, and the
    ONNX export reproduces it."""
    from torch.nn import functional as F

    from robot_compress.compress.tta import FlipAveraged

    torch.manual_seed(0)
    inner = get_model("tiny_segnet", 3).eval()
    model = FlipAveraged(inner).eval()
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        out = model(x)
        logprobs = (F.log_softmax(inner(x), 1) + F.log_softmax(inner(x.flip(-1)), 1).flip(-1)) / 2
    assert torch.allclose(F.softmax(out, 1), F.softmax(logprobs, 1), atol=1e-6)
    assert torch.equal(out.argmax(1), logprobs.argmax(1))
    assert not torch.allclose(out, inner(x).detach())  # the mirror pass does change the answer
    res = export_onnx(model, tmp_path / "flip.onnx", _info("segmentation", ["a", "b", "c"], (16, 24)))
    assert res.max_abs_diff < 1e-4
