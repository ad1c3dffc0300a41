"""Accuracy metrics on hand-made cases (numpy only: the robot-side scorer uses the same code)."""
import math

import numpy as np
import pytest

from robot_compress.runtime.metrics import (
    ClassificationMeter,
    SegmentationMeter,
    confusion_matrix,
    iou_per_class,
    mean_iou,
    pixel_accuracy,
    topk_correct,
)


def test_confusion_matrix_counts_target_rows_pred_columns():
    target = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 1, 1, 1, 2, 0])
    cm = confusion_matrix(pred, target, 3)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_pixel_accuracy_and_iou_hand_computed():
    cm = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert pixel_accuracy(cm) == pytest.approx(4 / 6)
    # class 0: tp 1, fp 1 (col) , fn 1 (row) -> 1/3; class 1: tp 2, fp 1, fn 0 -> 2/3; class 2: 1/(1+0+1) = 1/2
    assert iou_per_class(cm) == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)


def test_absent_class_is_nan_and_left_out_of_miou():
    target = np.array([[0, 0], [1, 1]])
    pred = np.array([[0, 1], [1, 1]])
    cm = confusion_matrix(pred, target, 4)
    iou = iou_per_class(cm)
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(2 / 3)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_class_predicted_but_absent_in_target_has_zero_iou():
    cm = confusion_matrix(np.array([2, 1]), np.array([1, 1]), 3)
    assert iou_per_class(cm)[2] == 0.0


def test_ignore_index_pixels_are_not_scored():
    target = np.array([[0, 11], [1, 11]])
    pred = np.array([[0, 5], [0, 1]])  # predictions at void pixels are anything
    cm = confusion_matrix(pred, target, 11, ignore_index=11)
    assert cm.sum() == 2
    assert pixel_accuracy(cm) == pytest.approx(0.5)


def test_out_of_range_target_without_ignore_is_an_error():
    with pytest.raises(ValueError, match="class id 11"):
        confusion_matrix(np.array([0]), np.array([11]), 11)


def test_topk():
    logits = np.array([[0.1, 0.5, 0.4], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
    targets = np.array([2, 0, 0])
    assert topk_correct(logits, targets, 1) == 1
    assert topk_correct(logits, targets, 2) == 2
    assert topk_correct(logits, targets, 5) == 3  # k capped at the class count


def test_meters_accumulate_over_batches():
    meter = ClassificationMeter()
    meter.update(np.eye(6)[:3], np.array([0, 1, 0]))
    meter.update(np.eye(6)[3:], np.array([3, 4, 5]))
    out = meter.compute()
    assert out["n"] == 6 and out["top1"] == pytest.approx(5 / 6) and out["top5"] == 1.0
    seg = SegmentationMeter(3, ignore_index=255)
    seg.update(np.array([[0, 1]]), np.array([[0, 1]]))
    seg.update(np.array([[2, 2]]), np.array([[1, 255]]))
    res = seg.compute()
    assert res["n_pixels"] == 3
    assert res["pixel_acc"] == pytest.approx(2 / 3)
    assert res["iou_per_class"][1] == pytest.approx(1 / 2)
    assert res["miou"] == pytest.approx((1 + 0.5 + 0) / 3)
