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
    else:
        assert len(result.top_k) >= 1 and result.top_k[0][0] in engine.meta.labels
    params, metrics = card["params"], card["metrics"]
    assert 0 < params["nonzero"] <= params["total"]
    primary = metrics["primary"]
    assert 0.0 < metrics[primary] <= 1.0 and metrics.get("n", 1) > 0
    # Provenance points at a recipe that exists in this checkout (the numbers are reproducible by it).
    assert (MODELS.parent / card["recipe"]["file"]).is_file(), card["recipe"]
