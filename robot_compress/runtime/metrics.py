"""Accuracy metrics in plain numpy (no torch): the offline toolkit and the robot-side scoring tools
compute them identically.

Segmentation follows the paper: global pixel accuracy = correctly labelled pixels / scored pixels
(trace / sum of the confusion matrix); IoU per class = TP / (TP + FP + FN), NaN for a class absent
from both prediction and ground truth; mIoU = mean over the non-NaN classes. Pixels whose target is
`ignore_index` (void) are not scored at all. Class-average accuracy = mean over classes of TP / target pixels
(SegNet's "class avg.").
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """cm[t, p] = number of pixels/items with target t predicted as p (int64, num_classes x num_classes)."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in size: {pred.size} vs {target.size}")
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    pred, target = pred[keep], target[keep]
    bad = (target < 0) | (target >= num_classes)
    if bad.any():
        raise ValueError(f"target holds class id {int(target[bad][0])} outside 0..{num_classes - 1} "
                         f"(and it is not ignore_index={ignore_index})")
    if ((pred < 0) | (pred >= num_classes)).any():
        raise ValueError(f"prediction holds a class id outside 0..{num_classes - 1}")
    return np.bincount(target * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes).astype(np.int64)


def pixel_accuracy(cm: np.ndarray) -> float:
    """Global accuracy: trace / total (NaN when nothing was scored)."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """TP / (TP + FP + FN) per class; NaN where the class is absent from both target and prediction."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def accuracy_per_class(cm: np.ndarray) -> np.ndarray:
    """Recall per class, TP / target pixels; NaN for a class absent from the targets."""
    rows = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.maximum(rows, 1), np.nan)


def mean_iou(cm: np.ndarray) -> float:
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def topk_correct(logits, targets, k: int) -> int:
    """How many rows have their target among the k largest logits (k is capped at the class count)."""
    logits = np.asarray(logits)
    targets = np.asarray(targets).reshape(-1)
    if logits.ndim != 2 or logits.shape[0] != targets.size:
        raise ValueError(f"logits must be [N, C] with N = len(targets), got {logits.shape} and {targets.size}")
    k = min(k, logits.shape[1])
    top = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    return int((top == targets[:, None]).any(axis=1).sum())


class ClassificationMeter:
    """Accumulates top-1 / top-5 accuracy over batches of logits."""

    def __init__(self):
        self.n = self.top1 = self.top5 = 0

    def update(self, logits, targets) -> None:
        logits = np.asarray(logits)
        self.n += int(np.asarray(targets).size)
        self.top1 += topk_correct(logits, targets, 1)
        self.top5 += topk_correct(logits, targets, 5)

    def compute(self) -> dict:
        if not self.n:
            return {"top1": float("nan"), "top5": float("nan"), "n": 0}
        return {"top1": self.top1 / self.n, "top5": self.top5 / self.n, "n": self.n}


class SegmentationMeter:
    """Accumulates a confusion matrix over batches of predicted label maps."""

    def __init__(self, num_classes: int, ignore_index: int | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def compute(self) -> dict:
        acc = accuracy_per_class(self.cm)
        return {
            "pixel_acc": pixel_accuracy(self.cm),
            "miou": mean_iou(self.cm),
            "class_acc": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "iou_per_class": [float(v) for v in iou_per_class(self.cm)],
            "acc_per_class": [float(v) for v in acc],
            "n_pixels": int(self.cm.sum()),
        }
