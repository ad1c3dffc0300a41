"""One result per frame, whichever model produced it, and its JSON form (the node's result topic).

JSON schema "robot_compress/result/1" (std_msgs/String on the result topic):
{
  "schema": "robot_compress/result/1",
  "stamp": {"sec": int, "nanosec": int},     # copied from the input image header
  "frame_id": str,                          # copied from the input image header
  "task": "classification" | "segmentation" | "detection",
  "source": "local" | "edge",
  "model_id": str,
  "latency_ms": float,                      # frame receipt -> result ready, on this node
  "top_k": [{"label": str, "score": float}, ...],   # classification only
  "class_fractions": {label: float, ...},           # segmentation only (mask is on the mask topic)
  "mask_size": [height, width],                     # segmentation only
  "detections": [{"label": str, "class_id": int, "score": float, "box": [x1, y1, x2, y2]}, ...],
                                                    # detection only: highest score first, box in the input
                                                    # frame's pixels (0.1 px), score rounded to 1e-4
  "image_size": [height, width],                    # detection only: the input frame the boxes refer to
  "edge_replica": str                               # an edge answer: the replica's base URL
}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from robot_compress.runtime.detection import Detection

SCHEMA = "robot_compress/result/1"


@dataclass
class InferenceResult:
    task: str
    model_id: str
    source: str
    latency_ms: float = 0.0
    top_k: list[tuple[str, float]] | None = None
    mask: np.ndarray | None = None  # uint8 class ids at the input image's resolution
    class_fractions: dict[str, float] | None = None
    edge_replica: str | None = None  # base URL of the edge replica that answered; None for a local result
    detections: list[Detection] | None = None  # detection: highest score first, boxes in frame pixels
    image_size: tuple[int, int] | None = None  # detection: (height, width) of the frame the boxes refer to

    def to_dict(self, stamp_sec: int = 0, stamp_nanosec: int = 0, frame_id: str = "") -> dict:
        out = {
            "schema": SCHEMA,
            "stamp": {"sec": int(stamp_sec), "nanosec": int(stamp_nanosec)},
            "frame_id": frame_id,
            "task": self.task,
            "source": self.source,
            "model_id": self.model_id,
            "latency_ms": round(float(self.latency_ms), 3),
        }
        if self.task == "classification":
            out["top_k"] = [{"label": lbl, "score": round(s, 6)} for lbl, s in (self.top_k or [])]
        elif self.task == "detection":
            out["detections"] = [d.to_dict() for d in (self.detections or [])]
            if self.image_size is not None:
                out["image_size"] = [int(self.image_size[0]), int(self.image_size[1])]
        else:
            out["class_fractions"] = {k: round(v, 6) for k, v in (self.class_fractions or {}).items()}
            if self.mask is not None:
                out["mask_size"] = [int(self.mask.shape[0]), int(self.mask.shape[1])]
        if self.edge_replica:
            out["edge_replica"] = self.edge_replica
        return out
