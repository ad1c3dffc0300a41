"""Tiny self-describing ONNX models built with the `onnx` package (no torch): for tests, benchmarks
and the demo fallback when no trained model is present. Weights are deterministic per seed.

classification: GlobalAveragePool -> Flatten -> Gemm(3 -> C)
segmentation:   Conv1x1(3 -> C) -> logits at input resolution (a per-pixel colour classifier)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_compress.dataset_constants import CAMVID_LABELS, CIFAR10_LABELS


def make_model(
    path,
    task: str = "segmentation",
    labels=None,
    input_size=(64, 64),
    color_order: str = "RGB",
    mean=(0.5, 0.5, 0.5),
    std=(0.25, 0.25, 0.25),
    seed: int = 0,
    model_id: str | None = None,
    metadata: dict | None = None,
    drop_keys=(),
) -> Path:
    """Write a tiny ONNX model with the robot_compress metadata contract; returns its path.

    `metadata` overrides/extends the props; `drop_keys` removes keys (to build contract violations).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    labels = list(labels or (CAMVID_LABELS if task == "segmentation" else CIFAR10_LABELS))
    c = len(labels)
    h, w = input_size
    rng = np.random.default_rng(seed)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, h, w])
    if task == "classification":
        weight = rng.normal(0, 1, (c, 3)).astype(np.float32)
        bias = rng.normal(0, 0.1, (c,)).astype(np.float32)
        nodes = [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "W", "B"], ["logits"], transB=1),
        ]
        inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c])
    elif task == "segmentation":
        weight = rng.normal(0, 1, (c, 3, 1, 1)).astype(np.float32)
        bias = rng.normal(0, 0.1, (c,)).astype(np.float32)
        nodes = [helper.make_node("Conv", ["input", "W", "B"], ["logits"], kernel_shape=[1, 1])]
        inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")]
        y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", c, h, w])
    else:
        raise ValueError(f"unknown task {task!r}")
    graph = helper.make_graph(nodes, f"tiny_{task}", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="robot_compress")
    model.ir_version = 8
    props = {
        "task": task,
        "labels": json.dumps(labels),
        "input_size": json.dumps([h, w]),
        "color_order": color_order,
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "provenance": json.dumps({"source": "robot_compress.tools.synthetic_models", "seed": seed,
                                  "note": "random weights, for tests and demos only"}),
        "model_id": model_id or f"tiny_{task}_s{seed}",
    }
    props.update(metadata or {})
    for key in drop_keys:
        props.pop(key, None)
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
