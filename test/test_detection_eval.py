"""COCO-style AP from in-memory ground truth and predictions (runtime/detection_eval.py over pycocotools)."""
from __future__ import annotations

import math

import pytest

from robot_compress.runtime.detection import Detection
from robot_compress.runtime.detection_eval import DetectionScorer

R = 101  # COCO interpolates precision at 101 recall points 0.00, 0.01, ..., 1.00


def gt(box, label="person", **extra):
    return {"label": label, "box": list(box), **extra}


def det(box, score, class_id=0, label="person"):
    return Detection(label, class_id, score, tuple(box))


def test_perfect_predictions_score_one():
    s = DetectionScorer(["person", "bike"])
    s.add("a", [gt((10, 10, 50, 90)), gt((60, 20, 100, 60), "bike")],
          [det((10, 10, 50, 90), 0.9), det((60, 20, 100, 60), 0.8, 1, "bike")])
    s.add("b", [gt((0, 0, 30, 30))], [{"label": "person", "box": [0, 0, 30, 30], "score": 0.7}])
    m = s.compute()
    assert m["ap"] == pytest.approx(1.0) and m["ap50"] == pytest.approx(1.0) and m["ap75"] == pytest.approx(1.0)
    assert m["ap50_per_class"] == {"person": pytest.approx(1.0), "bike": pytest.approx(1.0)}
    assert (m["images"], m["ground_truth"], m["detections"]) == (2, 3, 3)
    assert m["ground_truth_per_class"] == {"person": 2, "bike": 1}


def test_a_box_at_iou_078_counts_at_six_of_ten_thresholds():
    # GT 100 x 100, prediction 100 x 78 inside it: IoU 0.78, a hit at 0.50..0.75 (6 thresholds), a miss above
    s = DetectionScorer(["person"])
    s.add(1, [gt((0, 0, 100, 100))], [det((0, 0, 100, 78), 0.9)])
    m = s.compute()
    assert m["ap50"] == pytest.approx(1.0) and m["ap75"] == pytest.approx(1.0)
    assert m["ap"] == pytest.approx(0.6)


@pytest.mark.parametrize("shifted_score, want", [
    # hit (0.9) ranked first: precision 1 up to recall 0.5, then nothing: 51 of 101 recall points at 1.0
    (0.8, 51 / R),
    # the miss ranked first: best precision at recall <= 0.5 is 1/2
    (0.95, 51 / R * 0.5),
])
def test_a_shifted_box_lowers_ap50_as_computed_by_hand(shifted_score, want):
    s = DetectionScorer(["person"])
    s.add("hit", [gt((0, 0, 40, 40))], [det((0, 0, 40, 40), 0.9)])
    s.add("miss", [gt((0, 0, 40, 40))], [det((20, 0, 60, 40), shifted_score)])  # IoU 800 / 2400 = 1/3 < 0.5
    m = s.compute()
    assert m["ap50"] == pytest.approx(want, abs=1e-9)
    assert m["ap50"] < 1.0


def test_empty_cases_give_zero_not_nan():
    none = DetectionScorer(["person"]).compute()
    assert none["ap"] == 0.0 and none["ap50"] == 0.0 and none["ground_truth"] == 0
    only_preds = DetectionScorer(["person"])
    only_preds.add(1, [], [det((0, 0, 5, 5), 0.9)])
    m = only_preds.compute()
    assert (m["ap"], m["ap50"], m["ground_truth"], m["detections"]) == (0.0, 0.0, 0, 1)
    only_gt = DetectionScorer(["person"])
    only_gt.add(1, [gt((0, 0, 5, 5))], [])
    m = only_gt.compute()
    assert m["ap"] == 0.0 and m["ap50"] == 0.0 and m["ground_truth"] == 1
    assert not any(math.isnan(v) for v in (m["ap"], m["ap50"], m["ap75"]))


def test_class_without_ground_truth_is_left_out_of_the_mean():
    s = DetectionScorer(["person", "bike"])
    s.add(1, [gt((0, 0, 10, 10))], [det((0, 0, 10, 10), 0.9), det((50, 50, 60, 60), 0.95, 1, "bike")])
    m = s.compute()
    assert m["ap50"] == pytest.approx(1.0)  # the bike false positive has no bike ground truth to lower
    assert m["ap50_per_class"]["bike"] == 0.0 and m["ground_truth_per_class"]["bike"] == 0


def test_ignored_ground_truth_neither_counts_nor_penalises():
    s = DetectionScorer(["person"])
    s.add(1, [gt((0, 0, 10, 10)), gt((50, 50, 70, 70), ignore=True)],
          [det((0, 0, 10, 10), 0.8), det((50, 50, 70, 70), 0.9)])
    m = s.compute()
    assert m["ap50"] == pytest.approx(1.0) and m["ground_truth"] == 1


def test_bad_inputs_are_named():
    s = DetectionScorer(["person"])
    with pytest.raises(ValueError, match="unknown label 'cat'"):
        s.add(1, [gt((0, 0, 1, 1), "cat")])
    with pytest.raises(ValueError, match="class_id 3"):
        s.add(1, [{"class_id": 3, "box": [0, 0, 1, 1]}])
    with pytest.raises(ValueError, match="x2 >= x1"):
        s.add(1, [], [det((5, 0, 1, 1), 0.5)])
    with pytest.raises(ValueError, match="score"):
        s.add(1, [], [{"label": "person", "box": [0, 0, 1, 1]}])
