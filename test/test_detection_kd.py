"""Detector distillation after Chen et al. 2017: teacher predictions matched to the student's anchors, soft
classification targets, the teacher-bounded regression loss, and the plain loss as its alpha = nu = 0 case."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from robot_compress.compress.detection.data import Targets  # noqa: E402
from robot_compress.compress.detection.kd import (  # noqa: E402
    bounded_regression,
    detection_kd_loss,
    match_teacher,
    soft_loss_softmax,
)
from robot_compress.compress.detection.train import detection_loss  # noqa: E402
from robot_compress.compress.models import get_model  # noqa: E402

pytestmark = pytest.mark.toolkit


def test_student_anchors_take_the_best_overlapping_teacher_prediction():
    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    t_boxes = torch.tensor([[21.0, 21, 30, 30], [0, 0, 9, 10], [0, 0, 100, 100]])
    t_scores = torch.tensor([[0.9, 0.1], [0.2, 0.7], [0.01, 0.01]])
    soft, box, matched = match_teacher(anchors, t_boxes, t_scores, match_iou=0.5)
    assert matched.tolist() == [True, True, False]
    assert torch.allclose(soft[0], t_scores[1]) and torch.allclose(soft[1], t_scores[0])
    assert soft[2].abs().sum() == 0  # unmatched: "no object", as the teacher says there
    assert torch.equal(box[1], t_boxes[0])
    # top_k keeps the teacher's best candidates only: the 0.7 box goes when k = 1
    soft1, _, matched1 = match_teacher(anchors, t_boxes, t_scores, top_k=1)
    assert matched1.tolist() == [False, True, False]


def test_bounded_regression_only_pushes_where_the_student_is_worse():
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    gt = torch.tensor([[0.0, 0, 10, 10]])
    student = torch.tensor([[0.0, 0, 12, 10], [0, 0, 10.5, 10]])
    teacher = torch.tensor([[0.0, 0, 10.5, 10], [0, 0, 12, 10]])
    positive = torch.tensor([0, 0])
    matched = torch.tensor([True, True])
    loss = bounded_regression(student, teacher, anchors, gt, matched, positive)
    # anchor 0: student error (0.2)^2 > teacher (0.05)^2 -> counted; anchor 1: student better -> 0
    assert torch.isclose(loss, torch.tensor(0.04 / 2))
    assert bounded_regression(student, teacher, anchors, gt, matched, torch.tensor([-1, -1])) == 0


def test_soft_loss_is_lowest_when_the_student_agrees_with_the_teacher():
    soft = torch.tensor([[0.9], [0.0], [0.0], [0.0]])
    matched = torch.tensor([True, False, False, False])
    agree = torch.tensor([[-3.0, 3.0], [3.0, -3.0], [3.0, -3.0], [3.0, -3.0]])
    disagree = agree.flip(1)
    assert soft_loss_softmax(agree, soft, matched, 1.0) < soft_loss_softmax(disagree, soft, matched, 1.0)


def _batch():
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    targets = Targets([{"boxes": torch.tensor([[8.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([0])},
                       {"boxes": torch.tensor([[20.0, 4.0, 60.0, 30.0]]), "labels": torch.tensor([1])}])
    return images, targets


@pytest.mark.parametrize("student_family", ["ssd", "fcos"])
def test_kd_loss_trains_and_reduces_to_the_plain_loss(student_family):
    images, targets = _batch()
    torch.manual_seed(1)
    teacher = get_model("tiny_detector", 2, width=32, family="fcos").eval()
    student = get_model("tiny_detector", 2, width=32, family=student_family).train()
    with torch.no_grad():
        t_out = teacher(images)
    parts = {}
    kd = detection_kd_loss(temperature=2.0, alpha=0.5, parts_out=parts)(student(images), targets, t_out)
    assert torch.isfinite(kd) and {"soft", "bounded", "classification"} <= set(parts)
    kd.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in student.parameters())
    dense = student(images)
    plain = detection_loss()(dense, targets)
    ablation = detection_kd_loss(alpha=0.0, nu=0.0)(dense, targets, t_out)
    assert torch.isclose(plain, ablation)
    assert not torch.isclose(plain, detection_kd_loss(alpha=0.5)(dense, targets, t_out))
