"""INT8 static quantization of ONNX models (onnxruntime.quantization, QDQ)."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from robot_compress.compress.models import get_model  # noqa: E402
from robot_compress.compress.quantize import (  # noqa: E402
    calibration_arrays,
    calibration_indices,
    first_and_last_compute_nodes,
    quantize_onnx,
)
from robot_compress.runtime.metadata import ModelMetadata  # noqa: E402
from robot_compress.tools.synthetic_models import make_model  # noqa: E402


def _run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _tiny_cnn_onnx(path):
    torch.manual_seed(0)
    model = get_model("tiny_cnn", 4, width=8).eval()
    torch.onnx.export(model, torch.randn(1, 3, 16, 16), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {"task": "classification", "labels": json.dumps(["a", "b", "c", "d"]),
                                        "input_size": "[16, 16]", "color_order": "RGB", "mean": "[0.5, 0.5, 0.5]",
                                        "std": "[0.25, 0.25, 0.25]", "provenance": "{}", "model_id": "tiny"})
    onnx.save(proto, str(path))
    return path


def test_quantized_torch_model_loads_keeps_metadata_and_stays_close(tmp_path):
    fp32 = _tiny_cnn_onnx(tmp_path / "fp32.onnx")
    rng = np.random.default_rng(0)
    calib = [rng.normal(0, 1, (4, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    out = quantize_onnx(fp32, tmp_path / "int8.onnx", calib)
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMetadata.from_props(props)
    assert meta.task == "classification" and meta.model_id == "tiny_int8"
    q = json.loads(props["quantization"])
    assert q["format"] == "QDQ" and q["calibration_items"] == 16 and q["per_channel"] is True
    assert q["preprocessed"] is True
    x = rng.normal(0, 1, (8, 3, 16, 16)).astype(np.float32)
    ref, got = _run(fp32, x), _run(out, x)
    assert got.shape == ref.shape
    scale = np.abs(ref).max()
    assert np.abs(got - ref).max() < 0.1 * scale
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.75


def test_quantize_synthetic_segmentation_model(tmp_path):
    fp32 = make_model(tmp_path / "seg.onnx", task="segmentation", input_size=(8, 8))
    calib = [np.random.default_rng(1).normal(0, 1, (3, 8, 8)).astype(np.float32)]  # CHW is accepted too
    out = quantize_onnx(fp32, tmp_path / "seg8.onnx", calib, per_channel=False)
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 8, 8)).astype(np.float32)
    assert _run(out, x).shape == (1, 11, 8, 8)
    assert ModelMetadata.from_props({p.key: p.value for p in onnx.load(str(out)).metadata_props}).task == \
        "segmentation"


def test_empty_or_malformed_calibration_is_an_error(tmp_path):
    fp32 = make_model(tmp_path / "m.onnx", task="classification", input_size=(8, 8))
    with pytest.raises(ValueError, match="calibration data is empty"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [])
    with pytest.raises(ValueError, match="NCHW"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [np.zeros((8, 8), np.float32)])
    with pytest.raises(ValueError, match="expects"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [np.zeros((1, 3, 9, 9), np.float32)])
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(FileNotFoundError):
        quantize_onnx(tmp_path / "none.onnx", tmp_path / "q.onnx", [np.zeros((1, 3, 8, 8), np.float32)])


def _weight_is_quantized(proto, node) -> bool:
    """In QDQ format a quantized conv/linear reads its weight through a DequantizeLinear node."""
    producers = {out: n for n in proto.graph.node for out in n.output}
    weight = producers.get(node.input[1])
    return weight is not None and weight.op_type == "DequantizeLinear"


@pytest.mark.parametrize("float_first_last", [True, False])
def test_first_and_last_layer_stay_float_unless_asked(tmp_path, float_first_last):
    fp32 = _tiny_cnn_onnx(tmp_path / "fp32.onnx")
    calib = [np.random.default_rng(0).normal(0, 1, (4, 3, 16, 16)).astype(np.float32)]
    out = quantize_onnx(fp32, tmp_path / "int8.onnx", calib, float_first_last=float_first_last)
    proto = onnx.load(str(out))
    compute = [n for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(compute) >= 3
    quantized = [_weight_is_quantized(proto, n) for n in compute]
    if float_first_last:
        assert quantized[0] is False and quantized[-1] is False and all(quantized[1:-1])
    else:
        assert all(quantized)
    recorded = json.loads({p.key: p.value for p in proto.metadata_props}["quantization"])["float_nodes"]
    assert recorded == (first_and_last_compute_nodes(onnx.load(str(fp32))) if float_first_last else [])


def test_calibration_indices_spread_over_a_class_sorted_set():
    labels = np.repeat(np.arange(10), 1000)  # stored class by class, as image folders are
    picks = calibration_indices(len(labels), 128, seed=0)
    assert len(set(picks)) == 128 and picks == sorted(picks) and max(picks) < len(labels)
    assert len(set(labels[picks])) == 10  # the first 128 items would all be class 0
    assert picks == calibration_indices(len(labels), 128, seed=0)
    assert picks != calibration_indices(len(labels), 128, seed=1)
    assert calibration_indices(5, 128) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="empty"):
        calibration_indices(0, 8)
    items = [(np.full((3, 4, 4), k, np.float64), k % 10) for k in range(200)]
    arrays = calibration_arrays(items, 16, seed=0)
    assert [a.shape for a in arrays] == [(1, 3, 4, 4)] * 16 and all(a.dtype == np.float32 for a in arrays)
    assert [int(a[0, 0, 0, 0]) for a in arrays] == calibration_indices(200, 16, seed=0)
