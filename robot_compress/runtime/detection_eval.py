"""COCO-style detection metrics from in-memory ground truth and predictions (docs/DETECTION.md), through
pycocotools' `COCOeval` (bbox): AP over IoU 0.50:0.95, AP50, AP75 and AP50 / AP per class.

Used by the toolkit's evaluate stage and by `robot-compress score`. No I/O; nothing is printed.

    scorer = DetectionScorer(["person"])
    scorer.add("frame_0001", ground_truth=[{"label": "person", "box": [x1, y1, x2, y2]}],
               detections=result.detections)            # Detection objects or dicts
    metrics = scorer.compute()   # {"ap": 0.61, "ap50": 0.93, "ap75": 0.70, "ap50_per_class": {...}, ...}

Inputs, per image (any hashable id, added once or several times):
- ground truth: dicts with "box" [x1, y1, x2, y2] in frame pixels and "class_id" or "label"; optional
  "iscrowd" or "ignore" (true: a region whose detections count neither as hits nor as false positives; both go
  to COCO's iscrowd, since COCOeval itself overwrites "ignore" with "iscrowd").
- detections: `runtime.detection.Detection` objects, or dicts with "box", "score" and "class_id" or "label".

Conventions (COCO's where it has one):
- AP is the mean over classes that have ground truth; a class without any is left out of the mean (COCOeval
  marks it -1). Per-class values of such a class are 0.0, and `ground_truth_per_class` says it had none.
- No ground truth at all: every AP is 0.0 (undefined in COCO; never NaN), with "ground_truth": 0 in the result
  so a caller can tell "nothing to find" from "found nothing". No predictions against some ground truth: 0.0.
- At most `max_detections` (default 100, COCO's) highest-scoring detections per image count, all box areas.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Hashable, Iterable, Sequence

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's 0.50:0.05:0.95


class DetectionScorer:
    """Collects ground truth and predictions image by image; `compute()` returns the COCO metrics."""

    def __init__(self, labels: Sequence[str], max_detections: int = 100):
        if not labels:
            raise ValueError("labels must not be empty")
        self.labels = tuple(labels)
        self.max_detections = int(max_detections)
        self._label_id = {name: i for i, name in enumerate(self.labels)}
        self._image_ids: dict[Hashable, int] = {}
        self._gt: list[dict] = []
        self._dt: list[dict] = []

    @property
    def num_images(self) -> int:
        return len(self._image_ids)

    def add(self, image_id: Hashable, ground_truth: Iterable = (), detections: Iterable = ()) -> None:
        """One image's ground truth and predictions (boxes xyxy in the same pixel frame)."""
        img = self._image_ids.setdefault(image_id, len(self._image_ids) + 1)
        for g in ground_truth:
            box = _xywh(_get(g, "box"), "ground truth")
            crowd = int(bool(_get(g, "iscrowd", False) or _get(g, "ignore", False)))
            self._gt.append({"id": len(self._gt) + 1, "image_id": img, "category_id": self._class_of(g) + 1,
                             "bbox": box, "area": box[2] * box[3], "iscrowd": crowd})
        for d in detections:
            box = _xywh(_get(d, "box"), "detection")
            score = float(_get(d, "score"))
            if not np.isfinite(score):
                raise ValueError(f"detection score must be finite, got {score!r}")
            self._dt.append({"id": len(self._dt) + 1, "image_id": img, "category_id": self._class_of(d) + 1,
                             "bbox": box, "area": box[2] * box[3], "score": score, "iscrowd": 0})

    def _class_of(self, item) -> int:
        cid = _get(item, "class_id", None)
        if cid is None:
            label = _get(item, "label", None)
            if label not in self._label_id:
                raise ValueError(f"unknown label {label!r}; labels are {list(self.labels)}")
            return self._label_id[label]
        cid = int(cid)
        if not 0 <= cid < len(self.labels):
            raise ValueError(f"class_id {cid} outside 0..{len(self.labels) - 1}")
        return cid

    def compute(self) -> dict:
        """{"ap", "ap50", "ap75", "ap_per_class", "ap50_per_class", "ground_truth_per_class", "images",
        "ground_truth", "detections"}; APs in [0, 1]."""
        n_cls = len(self.labels)
        gt_per_class = np.bincount([g["category_id"] - 1 for g in self._gt if not g["iscrowd"]],
                                   minlength=n_cls)[:n_cls]
        out = {"images": self.num_images, "ground_truth": int(gt_per_class.sum()), "detections": len(self._dt),
               "ground_truth_per_class": dict(zip(self.labels, gt_per_class.tolist(), strict=True))}
        precision = self._coco_precision() if out["ground_truth"] else None
        out["ap"] = _mean_ap(precision)
        out["ap50"] = _mean_ap(precision, iou=0)
        out["ap75"] = _mean_ap(precision, iou=5)
        out["ap_per_class"] = {lbl: _mean_ap(precision, cls=k) for k, lbl in enumerate(self.labels)}
        out["ap50_per_class"] = {lbl: _mean_ap(precision, iou=0, cls=k) for k, lbl in enumerate(self.labels)}
        return out

    def _coco_precision(self) -> np.ndarray:
        """COCOeval's precision array [T iou, R recall, K class, A area, M maxdets] (-1 where no ground truth)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        images = [{"id": i} for i in self._image_ids.values()]
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.labels)]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt = COCO()
            gt.dataset = {"images": images, "categories": categories, "annotations": [dict(a) for a in self._gt]}
            gt.createIndex()
            dt = COCO()  # built like COCO.loadRes, which cannot take an empty list
            dt.dataset = {"images": images, "categories": categories, "annotations": [dict(a) for a in self._dt]}
            dt.createIndex()
            ev = COCOeval(gt, dt, iouType="bbox")
            ev.params.catIds = [c["id"] for c in categories]
            ev.params.iouThrs = IOU_THRESHOLDS.copy()
            ev.params.maxDets = [self.max_detections]
            ev.params.areaRng, ev.params.areaRngLbl = [[0.0, 1e10]], ["all"]
            ev.evaluate()
            ev.accumulate()
        return ev.eval["precision"][:, :, :, 0, 0]


def _mean_ap(precision, iou: int | None = None, cls: int | None = None) -> float:
    """Mean of COCOeval's interpolated precision over recall (and the selected IoUs/classes), ignoring -1."""
    if precision is None:
        return 0.0
    p = precision if iou is None else precision[iou:iou + 1]
    p = p if cls is None else p[:, :, cls:cls + 1]
    valid = p[p > -1]
    return float(valid.mean()) if valid.size else 0.0


def _get(item, key, default=...):
    if isinstance(item, dict):
        if default is ... and key not in item:
            raise ValueError(f"missing {key!r} in {item!r}")
        return item.get(key, default)
    if default is ... and not hasattr(item, key):
        raise ValueError(f"missing {key!r} in {item!r}")
    return getattr(item, key, default)


def _xywh(box, what: str) -> list[float]:
    vals = [float(v) for v in box]
    if len(vals) != 4 or not all(np.isfinite(vals)):
        raise ValueError(f"{what} box must be 4 finite numbers [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = vals
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{what} box must have x2 >= x1 and y2 >= y1, got {box!r}")
    return [x1, y1, x2 - x1, y2 - y1]
