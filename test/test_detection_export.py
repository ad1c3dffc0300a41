"""Detection export: the ONNX graph (boxes + scores, docs/DETECTION.md) run through onnxruntime and the runtime's
own postprocess gives torchvision's eval-mode detections of the torch model; the metadata carries the contract."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("torchvision")

from robot_compress.compress.detection.data import load_detection_dataset  # noqa: E402
from robot_compress.compress.detection.export import export_detector  # noqa: E402
from robot_compress.compress.models import get_model  # noqa: E402

pytestmark = pytest.mark.toolkit


@pytest.mark.parametrize("family", ["ssd", "fcos"])
def test_onnx_plus_runtime_postprocess_matches_torchvisions_detections(tmp_path, family):
    from robot_compress.runtime.detection import postprocess
    from robot_compress.runtime.engine import Engine

    ds = load_detection_dataset("synthetic_det", None, input_size=(64, 64), n=4, num_classes=2)
    torch.manual_seed(3)
    threshold = 0.3 if family == "ssd" else 0.05  # random weights: softmax scores near 1/3; FCOS near 0.07 (prior 0.01)
    model = get_model("tiny_detector", 2, width=32, family=family, score_threshold=threshold, nms_iou=0.5,
                      max_detections=20, topk_candidates=100000)
    if family == "fcos":  # random FCOS distances are near 0: zero-area boxes, on which NMS implementations differ
        torch.nn.init.constant_(model.net.head.regression_head.bbox_reg.bias, 1.0)
    model.eval()
    res = export_detector(model, tmp_path / "det.onnx", ds.info, model_id="det")
    engine = Engine(res.path)
    meta = engine.meta
    assert meta.task == "detection" and meta.labels == ("class0", "class1") and meta.input_size == (64, 64)
    assert (meta.detection.score_threshold, meta.detection.nms_iou, meta.detection.max_detections) == (threshold, 0.5,
                                                                                                      20)
    assert meta.detection.box_format == "xyxy" and meta.mean == (0.5, 0.5, 0.5)
    compared = 0
    for i in range(len(ds)):
        x, _ = ds[i]
        ref = model.detect(x[None])[0]  # torchvision's own postprocess and NMS
        boxes, scores = engine.session.run(["boxes", "scores"], {"input": x[None].numpy()})
        assert boxes.shape[0] == 1 and boxes.shape[2] == 4 and scores.shape[2] == 2
        dets = postprocess(boxes, scores, meta, frame_hw=(64, 64))
        assert len(dets) == len(ref["scores"])
        # one-to-one: every torchvision detection has a runtime one of its class, score and box (random weights
        # make near-ties, so the order among equal scores may differ)
        left = list(dets)
        for box, score, label in zip(ref["boxes"].tolist(), ref["scores"].tolist(), ref["labels"].tolist(),
                                     strict=True):
            hit = next((d for d in left if d.class_id == label and abs(d.score - score) < 1e-5
                        and np.allclose(d.box, box, atol=1e-3)), None)
            assert hit is not None, (box, score, label)
            left.remove(hit)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        compared += len(dets)
    assert compared > 0  # the thresholds leave something to compare


def test_export_card_names_both_outputs_and_the_detection_keys(tmp_path):
    import json

    ds = load_detection_dataset("synthetic_det", None, input_size=(48, 64), n=2)
    res = export_detector(get_model("tiny_detector", 2), tmp_path / "m.onnx", ds.info)
    card = json.loads(res.card_json.read_text())
    assert card["output"]["names"] == ["boxes", "scores"] and card["task"] == "detection"
    assert card["detection"]["box_format"] == "xyxy"
    assert "`boxes`, `scores`" in res.card_md.read_text()
    assert res.max_abs_diff["boxes"] < 1e-2 and res.max_abs_diff["scores"] < 1e-4
