"""One result per frame, whichever model produced it, and its JSON form (the node's result topic).

JSON schema "robot_compress/result/1" (std_msgs/String on the result topic):
{
  "schema": "robot_compress/result/1",
  "stamp": {"sec": int, "nanosec": int},     # copied from the input image header
  "frame_id": str,                          # copied from the input image header
  "task": "classification" | "segmentation",
  "source": "local" | "edge",
  "model_id": str,
  "latency_ms": float,                      # frame receipt -> result ready, on this node
  "top_k": [{"label": str, "score": float}, ...],   # classification only
  "class_fractions": {label: float, ...},           # segmentation only (mask is on the mask topic)
  "mask_size": [height, width],                     # segmentation only
  "edge_replica": str                               # an edge answer: the replica's base URL
}
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
        else:
            out["class_fractions"] = {k: round(v, 6) for k, v in (self.class_fractions or {}).items()}
            if self.mask is not None:
                out["mask_size"] = [int(self.mask.shape[0]), int(self.mask.shape[1])]
        if self.edge_replica:
            out["edge_replica"] = self.edge_replica
        return out
