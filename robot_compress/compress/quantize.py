"""INT8 post-training static quantization of an exported ONNX model with onnxruntime.quantization:
optional `quant_pre_process` (shape inference + graph optimization), then `quantize_static` in QDQ
format (activations QUInt8, weights QInt8, per-channel by default), calibrated on real inputs.

The first and the last conv/linear layer stay float by default: the raw input and the logits are where
8-bit rounding costs the most accuracy (measured on the shipped CIFAR-10 ResNet-20: 0.72 pt top-1 lost with
every layer quantized, 0.14 pt with these two kept float) for little time (few channels / one small GEMM).
Calibration items should be drawn across the whole training set (`calibration_indices`): training sets are
often stored class by class, and the first N items would calibrate on one class.

The runtime metadata contract (ONNX metadata_props) of the fp32 model is copied to the INT8 model and
a `quantization` entry (JSON) records how it was made. When the fp32 model has a model card, the INT8 model
gets its own (`<name>_int8.json` + `.md`, `write_quantized_card`): the fp32 card's data and parameters, the
quantization settings, and how far its logits are from the float model's on the calibration inputs. INT8 is
not automatically faster on every CPU: measure it like any other model.
"""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


class _ArrayReader:
    """onnxruntime CalibrationDataReader over NCHW float32 arrays, fed one item at a time (works for
    models exported with a fixed batch of 1 as well as a dynamic batch)."""

    def __init__(self, input_name: str, arrays: list[np.ndarray]):
        self.input_name = input_name
        self._items = iter([a[i:i + 1] for a in arrays for i in range(a.shape[0])])

    def get_next(self):
        item = next(self._items, None)
        return None if item is None else {self.input_name: item}

    def rewind(self):  # pragma: no cover - not used by MinMax calibration
        raise NotImplementedError


def _as_batches(calibration: Iterable[np.ndarray]) -> list[np.ndarray]:
    out = []
    for k, arr in enumerate(calibration):
        arr = np.asarray(arr, dtype=np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise ValueError(f"calibration item {k} must be a CHW or NCHW float32 array, got shape {arr.shape}")
        out.append(arr)
    if not out:
        raise ValueError("calibration data is empty: give at least one NCHW float32 batch from the training data")
    return out


COMPUTE_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")


def calibration_indices(n_items: int, n: int, seed: int = 0) -> list[int]:
    """n distinct item indices spread at random over the whole set (sorted), reproducible from seed."""
    if n_items <= 0:
        raise ValueError("calibration data is empty: the training split has no items")
    picks = np.random.default_rng([seed, n]).choice(n_items, size=min(n, n_items), replace=False)
    return sorted(int(i) for i in picks)


def calibration_arrays(dataset, n: int, seed: int = 0) -> list[np.ndarray]:
    """NCHW float32 inputs of n (input, target) items of `dataset`, drawn by `calibration_indices`."""
    return [np.asarray(dataset[i][0], dtype=np.float32)[None] for i in calibration_indices(len(dataset), n, seed)]


def first_and_last_compute_nodes(model) -> list[str]:
    """Names of the first and the last conv/linear node in graph order (one name for a one-layer model)."""
    names = [n.name for n in model.graph.node if n.op_type in COMPUTE_OPS]
    return list(dict.fromkeys(names[:1] + names[-1:]))


def _name_unnamed_nodes(model) -> bool:
    """Give every unnamed node a unique name (nodes_to_exclude matches by name); True if any changed."""
    taken = {n.name for n in model.graph.node}
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, changed = name, True
            taken.add(name)
    return changed


def quantize_onnx(fp32_path, out_path, calibration: Iterable[np.ndarray], per_channel: bool = True,
                  preprocess: bool = True, float_first_last: bool = True) -> Path:
    """Write a QDQ INT8 copy of `fp32_path` to `out_path`; returns out_path."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"ONNX model {fp32_path} does not exist")
    batches = _as_batches(calibration)
    source = onnx.load(str(fp32_path))
    input_name = source.graph.input[0].name
    expected = [d.dim_value for d in source.graph.input[0].type.tensor_type.shape.dim][1:]
    if all(expected) and list(batches[0].shape[1:]) != expected:
        raise ValueError(f"calibration items have shape {list(batches[0].shape[1:])}, model input expects "
                         f"{expected}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_in = fp32_path
        preprocessed = False
        if preprocess:
            try:
                from onnxruntime.quantization.shape_inference import quant_pre_process

                pre = Path(tmp) / "pre.onnx"
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
                model_in, preprocessed = pre, True
            except Exception as exc:  # noqa: BLE001 - pre-processing is an optimization, not required
                log.warning("quant_pre_process failed (%s); quantizing the model as exported", exc)
        keep_float = []
        if float_first_last:
            graph = onnx.load(str(model_in))
            if _name_unnamed_nodes(graph):
                model_in = Path(tmp) / "named.onnx"
                onnx.save(graph, str(model_in))
            keep_float = first_and_last_compute_nodes(graph)
        quantize_static(str(model_in), str(out_path), _ArrayReader(input_name, batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)
    quantized = onnx.load(str(out_path))
    props = {p.key: p.value for p in source.metadata_props}
    if props.get("model_id"):  # another model: results and diagnostics must tell it from the FP32 one
        props["model_id"] += "_int8"
    props["quantization"] = json.dumps({
        "method": "onnxruntime.quantize_static", "format": "QDQ", "activations": "QUInt8", "weights": "QInt8",
        "per_channel": per_channel, "preprocessed": preprocessed, "calibration": "MinMax",
        "calibration_items": int(sum(b.shape[0] for b in batches)), "source_model": fp32_path.name,
        "float_nodes": keep_float,
    }, sort_keys=True)
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, props)
    onnx.save(quantized, str(out_path))
    return out_path


def _onnx_logits(path: Path, batches: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return [sess.run(None, {name: b[i:i + 1]})[0] for b in batches for i in range(b.shape[0])]


def max_abs_diff(int8_path, batches: list[np.ndarray], reference=None, fp32_path=None) -> float:
    """max |INT8 logits - reference logits| over the calibration items; `reference` is the torch model, else
    the fp32 ONNX model at `fp32_path`."""
    got = _onnx_logits(Path(int8_path), batches)
    if reference is not None:
        import torch

        reference = reference.cpu().eval()
        with torch.no_grad():
            want = [reference(torch.from_numpy(b[i:i + 1])).numpy() for b in batches for i in range(b.shape[0])]
    else:
        want = _onnx_logits(Path(fp32_path), batches)
    return float(max(np.max(np.abs(g - w)) for g, w in zip(got, want, strict=True)))


def write_quantized_card(int8_path, fp32_path, max_diff: float, reference: str) -> Path | None:
    """The INT8 model's card beside it, derived from the fp32 model's card (None when that has none): same
    data, parameters and provenance, the INT8 model_id and file, the `quantization` entry of its metadata, and
    `export_check` = `max_diff` against `reference` (the evaluate stage adds the metrics later)."""
    import onnx

    from robot_compress.compress.export import update_card_metrics
    from robot_compress.compress.runinfo import write_json_atomic

    int8_path, fp32_path = Path(int8_path), Path(fp32_path)
    source = fp32_path.with_suffix(".json")
    if not source.is_file():
        return None
    card = json.loads(source.read_text(encoding="utf-8"))
    props = {p.key: p.value for p in onnx.load(str(int8_path), load_external_data=False).metadata_props}
    card.update(model_id=props.get("model_id") or int8_path.stem, file=int8_path.name,
                quantization=json.loads(props.get("quantization", "{}")), metrics={},
                export_check={"max_abs_diff_vs_torch": max_diff, "reference": reference,
                              "inputs": "the calibration items"})
    write_json_atomic(int8_path.with_suffix(".json"), card)
    update_card_metrics(int8_path, {})  # renders the markdown card from the JSON
    return int8_path.with_suffix(".json")
