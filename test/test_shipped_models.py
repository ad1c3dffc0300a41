"""Every model shipped in models/ loads in the robot runtime and matches its model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_compress.runtime.engine import Engine

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = sorted(MODELS.glob("*.onnx"))


def test_the_node_default_model_is_shipped():
    from robot_compress.ros.perception_node import PARAMETERS

    default = next(p.default for p in PARAMETERS if p.name == "model_path")
    assert (MODELS / default).is_file(), f"perception_node's default model {default} is not in models/"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_model_runs_and_matches_its_card(path):
    card = json.loads(path.with_suffix(".json").read_text())
    assert path.with_suffix(".md").is_file()
    engine = Engine(path, threads=1)
    assert card["file"] == path.name and card["model_id"] == engine.model_id
    assert card["task"] == engine.meta.task and card["labels"] == list(engine.meta.labels)
    h, w = engine.meta.input_size
    frame = np.random.default_rng(0).integers(0, 256, (2 * h, 2 * w, 3), dtype=np.uint8)
    result = engine.infer(frame)
    if engine.meta.task == "segmentation":
        assert result.mask.shape == (2 * h, 2 * w) and result.mask.max() < engine.meta.num_classes
    elif engine.meta.task == "detection":
        _check_detections(engine, frame, result)
    else:
        assert len(result.top_k) >= 1 and result.top_k[0][0] in engine.meta.labels
    params, metrics = card["params"], card["metrics"]
    assert 0 < params["nonzero"] <= params["total"]
    primary = metrics["primary"]
    assert 0.0 < metrics[primary] <= 1.0 and metrics.get("n", 1) > 0
    # Provenance points at a recipe that exists in this checkout (the numbers are reproducible by it).
    assert (MODELS.parent / card["recipe"]["file"]).is_file(), card["recipe"]


def _check_boxes(boxes: np.ndarray, h: int, w: int) -> None:
    """xyxy boxes inside an h x w image (float rounding aside), x2 >= x1 and y2 >= y1."""
    eps = 1e-3
    assert np.isfinite(boxes).all()
    x1, y1, x2, y2 = boxes.T
    assert (x1 >= -eps).all() and (y1 >= -eps).all() and (x2 <= w + eps).all() and (y2 <= h + eps).all()
    assert (x2 >= x1 - eps).all() and (y2 >= y1 - eps).all()


def _check_detections(engine: Engine, frame: np.ndarray, result) -> None:
    """docs/DETECTION.md's contract on one frame: the detections, and the graph's raw candidates under them."""
    fh, fw = frame.shape[:2]
    params, labels = engine.meta.detection, list(engine.meta.labels)
    dets = result.detections
    assert tuple(result.image_size) == (fh, fw) and len(dets) <= params.max_detections
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for d in dets:
        assert d.label == labels[d.class_id] and params.score_threshold <= d.score <= 1.0
    _check_boxes(np.array([d.box for d in dets], np.float64).reshape(-1, 4), fh, fw)
    # A noise frame may hold no object above the threshold: the decoded candidates must keep the contract too.
    boxes, scores = (np.asarray(a)[0] for a in engine.logits(frame))
    h, w = engine.meta.input_size
    assert scores.shape == (boxes.shape[0], len(labels)) and boxes.shape[0] > 0
    assert ((scores >= 0.0) & (scores <= 1.0)).all()
    _check_boxes(boxes, h, w)
