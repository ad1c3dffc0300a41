"""INT8 post-training static quantization of an exported ONNX model with onnxruntime.quantization:
optional `quant_pre_process` (shape inference + graph optimization), then `quantize_static` in QDQ
format (activations QUInt8, weights QInt8, per-channel by default), calibrated on real inputs.

The runtime metadata contract (ONNX metadata_props) of the fp32 model is copied to the INT8 model and
a `quantization` entry (JSON) records how it was made. INT8 is not automatically faster on every CPU:
measure it like any other model.
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


def quantize_onnx(fp32_path, out_path, calibration: Iterable[np.ndarray], per_channel: bool = True,
                  preprocess: bool = True) -> Path:
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
        quantize_static(str(model_in), str(out_path), _ArrayReader(input_name, batches),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=per_channel,
                        calibrate_method=CalibrationMethod.MinMax)
    quantized = onnx.load(str(out_path))
    props = {p.key: p.value for p in source.metadata_props}
    props["quantization"] = json.dumps({
        "method": "onnxruntime.quantize_static", "format": "QDQ", "activations": "QUInt8", "weights": "QInt8",
        "per_channel": per_channel, "preprocessed": preprocessed, "calibration": "MinMax",
        "calibration_items": int(sum(b.shape[0] for b in batches)), "source_model": fp32_path.name,
    }, sort_keys=True)
    del quantized.metadata_props[:]
    onnx.helper.set_model_props(quantized, props)
    onnx.save(quantized, str(out_path))
    return out_path
