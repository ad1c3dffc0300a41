"""COCO-style AP / AP50 of a detector, in the torch model and through the robot's runtime Engine, scored alike.

Both paths keep candidates with the runtime's own postprocess (`runtime/detection.py`: score threshold,
per-class NMS, top max_detections) and score them in the frame's own pixels against the frame's ground truth
with `runtime/detection_eval.DetectionScorer` (pycocotools COCOeval), so torch and ONNX metrics differ only by
float rounding. The thresholds are the model's (the ones its ONNX metadata carries): the metrics describe what
the robot publishes.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PRIMARY = "ap50"
RATE_KEYS = ("ap", "ap50", "ap75")


def ground_truth(target: dict) -> list[dict]:
    """A target's frame-pixel ground truth in DetectionScorer's form (crowd/difficult boxes as iscrowd)."""
    boxes = np.asarray(target["frame_boxes"], np.float32).reshape(-1, 4)
    labels = np.asarray(target["frame_labels"]).reshape(-1)
    crowd = np.asarray(target["crowd"]).reshape(-1)
    return [{"class_id": int(c), "box": b.tolist(), "iscrowd": bool(k)}
            for b, c, k in zip(boxes, labels, crowd, strict=True)]


def detection_params(model):
    from robot_compress.runtime.metadata import DetectionParams

    inner = getattr(model, "module", model)  # DDP
    return DetectionParams(float(inner.score_threshold), float(inner.nms_iou), int(inner.max_detections))


def summary(metrics: dict) -> dict:
    out = {k: v for k, v in metrics.items()}
    out["primary"] = PRIMARY
    return out


def evaluate_detector(model, loader, info, device, log: Callable[[str], None] | None = None,
                      reduce: bool = False) -> dict:
    """AP metrics of a `Detector` over a loader of (images, Targets) at the model's input size. `reduce`: the
    loader holds this rank's part of the split (torchrun); AP is no sum of per-rank parts, so every rank's
    per-image predictions and ground truth are gathered and the whole split is scored, alike on every rank."""
    from robot_compress.runtime.detection_eval import DetectionScorer

    params = detection_params(model)
    records = _predict(model, loader, info, device, params, log)
    if reduce:
        records = _gathered_in_split_order(records)
    scorer = DetectionScorer(info.labels, max_detections=params.max_detections)
    for _, _, image_id, truth, dets in records:
        scorer.add(image_id, truth, dets)
    return summary(scorer.compute())


def _predict(model, loader, info, device, params, log) -> list[tuple]:
    """(batch, position, image_id, ground truth, detections) per image, boxes in the frame's own pixels."""
    import torch

    from robot_compress.compress.progress import track
    from robot_compress.runtime.detection import scale_boxes, select

    model.eval()
    h, w = info.input_size
    records = []
    with torch.no_grad():
        for step, (images, targets) in enumerate(track(loader, "evaluate", log=log)):
            boxes, scores = model(images.to(device))
            for j, (b, s, t) in enumerate(zip(boxes.float().cpu().numpy(), scores.float().cpu().numpy(), targets,
                                              strict=True)):
                kb, ks, kc = select(b, s, params)
                kb = scale_boxes(kb, (h, w), t["frame_size"])
                dets = [{"class_id": int(c), "score": float(v), "box": bb.tolist()}
                        for bb, v, c in zip(kb, ks, kc, strict=True)]
                records.append((step, j, t["image_id"], ground_truth(t), dets))
    return records


def _gathered_in_split_order(records: list[tuple]) -> list[tuple]:
    """Every rank's records, in the one-process loader's order: each rank holds a contiguous part of every
    batch, in rank order, so (batch, rank, position) is the image's place in the split. The scorer then sees
    the images as one process would (COCOeval breaks score ties by that order)."""
    from robot_compress.compress import distributed

    per_rank = distributed.gather_objects(records)
    place = {id(rec): (rec[0], r, rec[1]) for r, recs in enumerate(per_rank) for rec in recs}
    return sorted((rec for recs in per_rank for rec in recs), key=lambda rec: place[id(rec)])


def evaluate_detector_onnx(path: str | Path, raw_dataset, threads: int = 1,
                           log: Callable[[str], None] | None = None) -> dict:
    """AP metrics of an exported detector through `runtime.Engine.infer`, one frame at its own size at a time
    (the Engine resizes it in and scales the boxes back to the frame)."""
    from robot_compress.compress.progress import track
    from robot_compress.runtime.detection_eval import DetectionScorer
    from robot_compress.runtime.engine import Engine

    engine = Engine(path, threads=threads)
    scorer = DetectionScorer(engine.meta.labels, max_detections=engine.meta.detection.max_detections)
    for i in track(range(len(raw_dataset)), f"evaluate {Path(path).name}", log=log, unit="frame"):
        rgb, target = raw_dataset[i]
        result = engine.infer(np.ascontiguousarray(rgb, dtype=np.uint8))
        scorer.add(target["image_id"], ground_truth(target), result.detections)
    return summary(scorer.compute())


def agreement(torch_metrics: dict, onnx_metrics: dict) -> dict:
    """|torch - onnx| in percentage points for AP, AP50, AP75."""
    return {k: abs(float(torch_metrics[k]) - float(onnx_metrics[k])) * 100.0 for k in RATE_KEYS
            if k in torch_metrics and k in onnx_metrics}
