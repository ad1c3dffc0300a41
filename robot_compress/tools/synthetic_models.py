"""Tiny self-describing ONNX models built with the `onnx` package (no torch): for tests, benchmarks
and the demo fallback when no trained model is present. Weights are deterministic per seed.

classification: GlobalAveragePool -> Flatten -> Gemm(3 -> C)
segmentation:   Conv1x1(3 -> C) -> logits at input resolution (a per-pixel colour classifier)
detection:      a fixed grid of cell-sized candidate boxes; each cell's score for class c is
                sigmoid(k * (mean colour feature c over the cell - t_c)) through Conv1x1 -> AveragePool ->
                Sigmoid, so a painted cell is detected and a dark or noisy frame gives nothing (not random:
                see DETECTION_FEATURES)
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from robot_compress.dataset_constants import CAMVID_LABELS, CIFAR10_LABELS

# The synthetic detector's classes, in order: (name, RGB weights of the colour feature on the 0..1 pixel scale,
# threshold t). A cell scores sigmoid(DETECTION_GAIN * (feature averaged over the cell - t)) for each class:
# "bright" fires on cells whose mean brightness is above 0.75 (white), "red"/"green"/"blue" on cells where that
# channel exceeds the mean of the other two by more than 0.5 (pure red, ...). Any label names may be given; class
# c uses feature c. Uniform noise (mean 0.5, no dominant channel) scores ~5e-5 for every class.
DETECTION_FEATURES = (
    ("bright", (1 / 3, 1 / 3, 1 / 3), 0.75),
    ("red", (1.0, -0.5, -0.5), 0.5),
    ("green", (-0.5, 1.0, -0.5), 0.5),
    ("blue", (-0.5, -0.5, 1.0), 0.5),
)
DETECTION_GAIN = 40.0
DETECTION_PARAMS = {"score_threshold": "0.5", "nms_iou": "0.5", "max_detections": "100", "box_format": "xyxy"}


def detection_grid(input_size=(64, 64), cell: int = 16) -> np.ndarray:
    """The synthetic detector's candidate boxes [N, 4] (xyxy, model-input pixels), row-major over the cells."""
    h, w = input_size
    gy, gx = np.mgrid[0:h // cell, 0:w // cell]
    x1, y1 = (gx * cell).ravel(), (gy * cell).ravel()
    return np.stack([x1, y1, x1 + cell, y1 + cell], axis=1).astype(np.float32)


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
    cell: int = 16,
    dynamic_boxes: bool = False,
) -> Path:
    """Write a tiny ONNX model with the robot_compress metadata contract; returns its path.

    `metadata` overrides/extends the props; `drop_keys` removes keys (to build contract violations).
    Detection: `cell` is the grid's cell size in model-input pixels (input_size must be a multiple of it);
    `dynamic_boxes` keeps only the cells scoring at least 0.01 for some class inside the graph (Compress), so
    N depends on the frame, as in a graph that ends in NMS (the Engine then runs without bound outputs).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    default_labels = {"segmentation": CAMVID_LABELS, "detection": [f[0] for f in DETECTION_FEATURES[:2]]}
    labels = list(labels or default_labels.get(task, CIFAR10_LABELS))
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
    elif task == "detection":
        x, nodes, inits, y = _detection_graph(c, (h, w), mean, std, cell, dynamic_boxes)
    else:
        raise ValueError(f"unknown task {task!r}")
    outputs = y if isinstance(y, list) else [y]
    graph = helper.make_graph(nodes, f"tiny_{task}", [x], outputs, inits)
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
    if task == "detection":
        props.update(DETECTION_PARAMS)
        props["provenance"] = json.dumps({"source": "robot_compress.tools.synthetic_models", "seed": seed,
                                          "note": "fixed colour-cell detector, for tests and demos only"})
    props.update(metadata or {})
    for key in drop_keys:
        props.pop(key, None)
    onnx.helper.set_model_props(model, props)
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _detection_graph(c: int, input_hw, mean, std, cell: int, dynamic_boxes: bool):
    """Conv1x1 (colour features, normalisation undone and gain/threshold folded in) -> AveragePool(cell) ->
    Sigmoid -> scores [1, N, C]; boxes [1, N, 4] a constant grid."""
    from onnx import TensorProto, helper, numpy_helper

    h, w = input_hw
    if not 1 <= c <= len(DETECTION_FEATURES):
        raise ValueError(f"the synthetic detector has 1..{len(DETECTION_FEATURES)} classes, got {c}")
    if h % cell or w % cell:
        raise ValueError(f"input_size {input_hw} must be a multiple of cell {cell}")
    n = (h // cell) * (w // cell)
    # feature on the 0..1 pixel scale p = x * std + mean (x the normalised input): sum a_i p_i
    a = np.array([f[1] for f in DETECTION_FEATURES[:c]], np.float64)          # [C, 3]
    t = np.array([f[2] for f in DETECTION_FEATURES[:c]], np.float64)          # [C]
    weight = (DETECTION_GAIN * a * np.asarray(std, np.float64)[None, :]).reshape(c, 3, 1, 1).astype(np.float32)
    bias = (DETECTION_GAIN * (a @ np.asarray(mean, np.float64) - t)).astype(np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, h, w])
    nodes = [
        helper.make_node("Conv", ["input", "W", "B"], ["feat"], kernel_shape=[1, 1]),
        helper.make_node("AveragePool", ["feat"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Sigmoid", ["pooled"], ["prob"]),
        helper.make_node("Reshape", ["prob", "cn_shape"], ["prob_cn"]),
        helper.make_node("Transpose", ["prob_cn"], ["all_scores"], perm=[0, 2, 1]),
    ]
    if dynamic_boxes:  # data-dependent N: keep the cells where some class scores at least 0.01
        nodes += [
            helper.make_node("ReduceMax", ["all_scores"], ["best"], axes=[0, 2], keepdims=0),
            helper.make_node("Greater", ["best", "min_score"], ["keep"]),
            helper.make_node("Compress", ["all_scores", "keep"], ["scores"], axis=1),
            helper.make_node("Compress", ["grid", "keep"], ["boxes"], axis=1),
        ]
    else:
        nodes += [helper.make_node("Identity", ["all_scores"], ["scores"]),
                  helper.make_node("Identity", ["grid"], ["boxes"])]
    inits = [
        numpy_helper.from_array(weight, "W"),
        numpy_helper.from_array(bias, "B"),
        numpy_helper.from_array(np.array([1, c, n], np.int64), "cn_shape"),
        numpy_helper.from_array(detection_grid(input_hw, cell)[None], "grid"),
        numpy_helper.from_array(np.array(0.01, np.float32), "min_score"),
    ]
    dim = "num_boxes" if dynamic_boxes else n
    outputs = [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, dim, 4]),
               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, dim, c])]
    return x, nodes, inits, outputs
