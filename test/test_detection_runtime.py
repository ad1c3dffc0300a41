"""Detection on the robot (docs/DETECTION.md): metadata keys, postprocess (threshold, per-class NMS, top-k,
scaling, clipping), the Engine on the synthetic colour-cell detector, the result JSON and the overlay."""
from __future__ import annotations

import json

import numpy as np
import pytest

from robot_compress.runtime import detection
from robot_compress.runtime.detection import Detection, draw_detections, postprocess
from robot_compress.runtime.engine import Engine, ModelLoadError
from robot_compress.runtime.metadata import DetectionParams, ModelMetadata, ModelMetadataError
from robot_compress.runtime.results import InferenceResult
from robot_compress.tools.synthetic_models import detection_grid, make_model

BACKENDS = ("cv2", "numpy")


def det_props(**over):
    props = {"task": "detection", "labels": '["person", "bike"]', "input_size": "[100, 200]",
             "color_order": "RGB", "mean": "[0.5, 0.5, 0.5]", "std": "[0.25, 0.25, 0.25]", "provenance": "{}",
             "score_threshold": "0.3", "nms_iou": "0.5", "max_detections": "100", "box_format": "xyxy"}
    props.update(over)
    return {k: v for k, v in props.items() if v is not None}


def meta(score_threshold=0.3, nms_iou=0.5, max_detections=100, labels=("person", "bike"), input_size=(100, 200)):
    return ModelMetadata.from_props(det_props(
        labels=json.dumps(list(labels)), input_size=json.dumps(list(input_size)),
        score_threshold=str(score_threshold), nms_iou=str(nms_iou), max_detections=str(max_detections)))


# ---- metadata ----------------------------------------------------------------------------------------------
def test_detection_metadata_is_typed_and_round_trips():
    m = ModelMetadata.from_props(det_props(), default_model_id="det")
    assert m.task == "detection" and m.labels == ("person", "bike")
    assert m.detection == DetectionParams(0.3, 0.5, 100, "xyxy")
    assert isinstance(m.detection.max_detections, int) and isinstance(m.detection.score_threshold, float)
    assert "score_threshold" not in m.extra
    again = ModelMetadata.from_props(m.to_props())
    assert again == m


@pytest.mark.parametrize("key", ["score_threshold", "nms_iou", "max_detections", "box_format"])
def test_missing_detection_key_is_named(key):
    with pytest.raises(ModelMetadataError, match=key):
        ModelMetadata.from_props(det_props(**{key: None}))


@pytest.mark.parametrize("key,value", [
    ("score_threshold", "high"), ("score_threshold", "1.5"), ("score_threshold", "-0.1"), ("score_threshold", "nan"),
    ("nms_iou", "0"), ("nms_iou", "1.2"), ("nms_iou", "[0.5]"),
    ("max_detections", "0"), ("max_detections", "2.5"), ("max_detections", "many"),
    ("box_format", "cxcywh"), ("box_format", "xywh"),
])
def test_bad_detection_value_is_named(key, value):
    with pytest.raises(ModelMetadataError, match=key):
        ModelMetadata.from_props(det_props(**{key: value}))


def test_background_label_is_rejected_for_detection():
    with pytest.raises(ModelMetadataError, match="background"):
        ModelMetadata.from_props(det_props(labels='["__background__", "person"]'))


def test_other_tasks_keep_detection_like_keys_as_extra_and_cannot_take_params():
    m = ModelMetadata.from_props(det_props(task="segmentation"))
    assert m.detection is None and m.extra["nms_iou"] == "0.5"
    with pytest.raises(ModelMetadataError, match="detection parameters"):
        ModelMetadata("detection", ("a",), (8, 8), "RGB", (0.5,) * 3, (0.25,) * 3, {}, "m")
    with pytest.raises(ModelMetadataError, match="no detection parameters"):
        ModelMetadata("segmentation", ("a",), (8, 8), "RGB", (0.5,) * 3, (0.25,) * 3, {}, "m",
                      detection=DetectionParams(0.3, 0.5, 10))


# ---- postprocess -------------------------------------------------------------------------------------------
def boxes_scores(rows):
    """rows of (x1, y1, x2, y2, score_class0, score_class1)"""
    arr = np.asarray(rows, np.float32)
    return arr[:, :4], arr[:, 4:]


@pytest.mark.parametrize("backend", BACKENDS)
def test_threshold_keeps_scores_at_least_the_threshold(backend):
    b, s = boxes_scores([(0, 0, 10, 10, 0.29, 0), (20, 0, 30, 10, 0.3, 0), (40, 0, 50, 10, 0.31, 0)])
    got = postprocess(b, s, meta(score_threshold=0.3), frame_hw=(100, 200), backend=backend)
    assert [d.box for d in got] == [(40, 0, 50, 10), (20, 0, 30, 10)]
    assert [round(d.score, 4) for d in got] == [0.31, 0.3]


@pytest.mark.parametrize("backend", BACKENDS)
def test_nms_suppresses_only_iou_above_threshold_within_a_class(backend):
    # A = [0,0,10,10] (area 100). B = [0,0,10,6]: IoU 60/100 = 0.6 > 0.5, suppressed.
    # C = [0,0,10,5]: IoU 50/100 = 0.5, not greater: kept. D = B's box in class 1: another class, kept.
    b, s = boxes_scores([(0, 0, 10, 10, 0.9, 0), (0, 0, 10, 6, 0.8, 0), (0, 0, 10, 5, 0.7, 0),
                         (0, 0, 10, 6, 0, 0.6)])
    got = postprocess(b, s, meta(nms_iou=0.5), frame_hw=(100, 200), backend=backend)
    assert [(d.box, d.class_id) for d in got] == [((0, 0, 10, 10), 0), ((0, 0, 10, 5), 0), ((0, 0, 10, 6), 1)]
    assert [d.label for d in got] == ["person", "person", "bike"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_box_can_be_a_candidate_for_several_classes(backend):
    b, s = boxes_scores([(5, 5, 15, 15, 0.8, 0.9)])
    got = postprocess(b, s, meta(), frame_hw=(100, 200), backend=backend)
    assert [(d.class_id, round(d.score, 2)) for d in got] == [(1, 0.9), (0, 0.8)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_top_max_detections_by_score_and_ties_keep_the_earlier_box(backend):
    scores = [0.5, 0.9, 0.7, 0.9, 0.6]
    b, s = boxes_scores([(20 * i, 0, 20 * i + 10, 10, sc, 0) for i, sc in enumerate(scores)])
    got = postprocess(b, s, meta(max_detections=3), frame_hw=(100, 200), backend=backend)
    assert [d.box[0] for d in got] == [20, 60, 40]  # 0.9 (box 1), 0.9 (box 3), 0.7 (box 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_boxes_scale_to_the_frame_and_clip(backend):
    # model input 100 x 200 (h, w) -> frame 200 x 100: x * 0.5, y * 2
    b, s = boxes_scores([(20, 10, 60, 50, 0.9, 0), (-5, -5, 210, 105, 0.8, 0), (150, 0, 250, 40, 0.7, 0)])
    got = postprocess(b, s, meta(input_size=(100, 200)), frame_hw=(200, 100), backend=backend)
    assert [d.box for d in got] == [(10, 20, 30, 100), (0, 0, 100, 200), (75, 0, 100, 80)]


def test_batch_dim_nan_boxes_and_bad_shapes():
    b, s = boxes_scores([(0, 0, 10, 10, 0.9, 0), (np.nan, 0, 10, 10, 0.95, 0)])
    got = postprocess(b[None], s[None], meta(), frame_hw=(100, 200))
    assert [d.box for d in got] == [(0, 0, 10, 10)]  # the NaN box never becomes a detection
    with pytest.raises(ValueError, match="scores"):
        postprocess(b, s[:1], meta(), frame_hw=(100, 200))
    with pytest.raises(ValueError, match="boxes"):
        postprocess(b[:, :3], s, meta(), frame_hw=(100, 200))
    assert postprocess(np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32), meta(), frame_hw=(5, 5)) == []


@pytest.mark.parametrize("seed", range(5))
def test_cv2_and_numpy_nms_keep_the_same_boxes(seed):
    rng = np.random.default_rng(seed)
    n, c = 600, 3
    centres = rng.uniform(20, 300, (8, 2))[rng.integers(0, 8, n)] + rng.normal(0, 5, (n, 2))
    wh = rng.uniform(10, 80, (n, 2))
    b = np.concatenate([centres - wh / 2, centres + wh / 2], axis=1).astype(np.float32)
    s = rng.uniform(0, 1, (n, c)).astype(np.float32)
    s[rng.integers(0, n, 50), 0] = 0.75  # exact ties
    cb, cs, cc = detection.candidates(b, s, 0.4)
    for keep_at_most in (None, 20):
        a = detection.nms(cb, cs, cc, 0.45, keep_at_most, backend="cv2")
        z = detection.nms(cb, cs, cc, 0.45, keep_at_most, backend="numpy")
        assert len(a) > 10 and np.array_equal(a, z)
    kept = detection.nms(cb, cs, cc, 0.45, backend="numpy")
    assert np.all(np.diff(cs[kept]) <= 0)  # highest score first


# ---- the Engine on the synthetic detector ------------------------------------------------------------------
@pytest.fixture(params=[False, True], ids=["bound", "dynamic_n"])
def det_model(tmp_path, request):
    return make_model(tmp_path / "det.onnx", task="detection", input_size=(64, 64), dynamic_boxes=request.param)


def test_engine_finds_painted_cells_in_frame_pixels(det_model):
    eng = Engine(det_model)
    assert eng.task == "detection" and eng.meta.detection.max_detections == 100
    frame = np.zeros((120, 160, 3), np.uint8)  # 4 x 4 cells of 30 x 40 frame pixels
    assert eng.infer(frame).detections == []
    frame[30:60, 80:120] = 255          # cell (row 1, col 2): bright
    frame[90:120, 0:40] = (255, 0, 0)   # cell (row 3, col 0): red
    res = eng.infer(frame)
    assert res.task == "detection" and res.image_size == (120, 160)
    got = {(d.label, d.class_id): d for d in res.detections}
    assert set(got) == {("bright", 0), ("red", 1)}
    np.testing.assert_allclose(got["bright", 0].box, (80, 30, 120, 60), atol=1e-3)
    np.testing.assert_allclose(got["red", 1].box, (0, 90, 40, 120), atol=1e-3)
    assert all(0.99 < d.score <= 1.0 for d in res.detections)
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    assert eng.infer(noise).detections == []


def test_bound_and_dynamic_outputs_give_identical_detections(tmp_path):
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[0:24, 0:24] = 255
    frame[48:72, 24:48] = (0, 0, 255)
    bound = Engine(make_model(tmp_path / "a.onnx", task="detection", labels=["b", "r", "g", "bl"]))
    dyn = Engine(make_model(tmp_path / "b.onnx", task="detection", labels=["b", "r", "g", "bl"],
                            dynamic_boxes=True))
    a, b = bound.infer(frame).detections, dyn.infer(frame).detections
    assert a == b
    assert sorted((d.label, d.box) for d in a) == [("b", (0, 0, 24, 24)), ("bl", (24, 48, 48, 72))]
    # the bound engine reuses its output buffers frame after frame; the dynamic one cannot
    assert bound.logits(frame)[1] is bound.logits(frame)[1]
    assert dyn.logits(frame)[1] is not dyn.logits(frame)[1]


def test_engine_rejects_detection_models_that_do_not_fit(tmp_path):
    bad_classes = make_model(tmp_path / "c3.onnx", task="detection", metadata={"labels": '["a", "b", "c"]'})
    with pytest.raises(ModelLoadError, match="scores"):
        Engine(bad_classes)
    one_output = make_model(tmp_path / "seg.onnx", task="segmentation", labels=["a"],
                            metadata={"task": "detection", **{k: "0.5" for k in ("score_threshold", "nms_iou")},
                                      "max_detections": "10", "box_format": "xyxy"})
    with pytest.raises(ModelLoadError, match="two outputs"):
        Engine(one_output)
    missing = make_model(tmp_path / "nokey.onnx", task="detection", drop_keys=("nms_iou",))
    with pytest.raises(ModelLoadError, match="nms_iou"):
        Engine(missing)


def test_synthetic_grid_and_metadata():
    grid = detection_grid((32, 64), cell=16)
    assert grid.shape == (8, 4) and grid[5].tolist() == [16, 16, 32, 32]


# ---- result JSON and overlay -------------------------------------------------------------------------------
def test_result_json_carries_rounded_detections_and_image_size():
    dets = [Detection("person", 0, 0.912345, (10.04, 20.06, 30.55, 40.0)), Detection("bike", 1, 0.5, (0, 0, 1, 1))]
    res = InferenceResult("detection", "det", "edge", 3.0, detections=dets, image_size=(480, 640),
                          edge_replica="http://e:1")
    out = json.loads(json.dumps(res.to_dict(1, 2, "camera")))
    assert out["task"] == "detection" and out["image_size"] == [480, 640]
    assert out["detections"][0] == {"label": "person", "class_id": 0, "score": 0.9123, "box": [10.0, 20.1, 30.6, 40.0]}
    assert out["detections"][1]["label"] == "bike" and out["edge_replica"] == "http://e:1"
    for key in ("class_fractions", "mask_size", "top_k"):
        assert key not in out
    empty = InferenceResult("detection", "det", "local", detections=[], image_size=(4, 4)).to_dict()
    assert empty["detections"] == [] and empty["image_size"] == [4, 4]


def test_draw_detections_draws_boxes_on_a_copy():
    frame = np.full((120, 160, 3), 128, np.uint8)
    out = draw_detections(frame, [Detection("person", 0, 0.9, (40, 50, 100, 110))])
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert (frame == 128).all()  # the input frame is left alone
    assert (out[80, 40] != 128).any() and (out[110, 70] != 128).any()  # left and bottom edges drawn
    assert (out[80, 70] == 128).all()  # the inside is not filled
    assert np.array_equal(draw_detections(frame, []), frame)
