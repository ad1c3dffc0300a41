"""The self-describing model contract: what every ONNX model must carry in `metadata_props`.

All values are strings (ONNX metadata is string->string); structured values are JSON.

| key           | required | example                                  |
|---------------|----------|------------------------------------------|
| task          | yes      | "classification", "segmentation" or "detection" |
| labels        | yes      | '["sky", "building", ...]' (index = class id) |
| input_size    | yes      | '[360, 480]'  (height, width fed to the model) |
| color_order   | yes      | "RGB" or "BGR"                           |
| mean          | yes      | '[0.485, 0.456, 0.406]'  (on 0..1 pixel scale) |
| std           | yes      | '[0.229, 0.224, 0.225]'                  |
| provenance    | yes      | '{"recipe": ..., "commit": ..., "dataset": ...}' |
| model_id      | no       | "lraspp_mbv3_camvid_kd_cb90" (default: file stem) |
| ignore_index  | no       | "11" (segmentation label id scored as void) |

Detection models (task "detection", docs/DETECTION.md) also carry, all required:

| key             | example | meaning                                                     |
|-----------------|---------|-------------------------------------------------------------|
| score_threshold | "0.3"   | keep candidates scoring at least this, in [0, 1]            |
| nms_iou         | "0.5"   | per-class NMS IoU, in (0, 1]                                |
| max_detections  | "100"   | at most this many detections per frame, integer >= 1        |
| box_format      | "xyxy"  | the only value: x1, y1, x2, y2 in model-input pixels        |

Any other keys (param counts, sparsity, metrics) are kept in `extra` untouched.
The graph takes one float32 NCHW input (batch dynamic or 1) and returns logits:
[N, C] for classification, [N, C, H, W] for segmentation, C == len(labels); a detection graph returns two
outputs, boxes [1, N, 4] and scores [1, N, C] (labels without a background entry).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

TASKS = ("classification", "segmentation", "detection")
COLOR_ORDERS = ("RGB", "BGR")
REQUIRED_KEYS = ("task", "labels", "input_size", "color_order", "mean", "std", "provenance")
DETECTION_KEYS = ("score_threshold", "nms_iou", "max_detections", "box_format")
BOX_FORMATS = ("xyxy",)


class ModelMetadataError(ValueError):
    """The model does not carry the metadata contract (names the offending key)."""


@dataclass(frozen=True)
class DetectionParams:
    """The detection keys of the contract, typed (docs/DETECTION.md)."""

    score_threshold: float
    nms_iou: float
    max_detections: int
    box_format: str = "xyxy"

    def __post_init__(self):
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ModelMetadataError(
                f"metadata key 'score_threshold' must be a number in [0, 1], got {self.score_threshold!r}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ModelMetadataError(f"metadata key 'nms_iou' must be a number in (0, 1], got {self.nms_iou!r}")
        if isinstance(self.max_detections, bool) or not isinstance(self.max_detections, int) \
                or self.max_detections < 1:
            raise ModelMetadataError(
                f"metadata key 'max_detections' must be an integer >= 1, got {self.max_detections!r}")
        if self.box_format not in BOX_FORMATS:
            raise ModelMetadataError(
                f"metadata key 'box_format' must be one of {BOX_FORMATS}, got {self.box_format!r}")

    @classmethod
    def from_props(cls, props: Mapping[str, str]) -> DetectionParams:
        missing = [k for k in DETECTION_KEYS if k not in props]
        if missing:
            raise ModelMetadataError(
                f"detection model metadata is missing required key(s) {missing}; a detection model must carry "
                f"{list(DETECTION_KEYS)} (docs/DETECTION.md)")
        return cls(
            score_threshold=_number(props, "score_threshold"),
            nms_iou=_number(props, "nms_iou"),
            max_detections=_integer(props, "max_detections"),
            box_format=str(props["box_format"]).strip(),
        )

    def to_props(self) -> dict[str, str]:
        return {
            "score_threshold": repr(float(self.score_threshold)),
            "nms_iou": repr(float(self.nms_iou)),
            "max_detections": str(int(self.max_detections)),
            "box_format": self.box_format,
        }


@dataclass(frozen=True)
class ModelMetadata:
    task: str
    labels: tuple[str, ...]
    input_size: tuple[int, int]  # (height, width)
    color_order: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    provenance: dict
    model_id: str
    ignore_index: int | None = None
    extra: dict = field(default_factory=dict)
    detection: DetectionParams | None = None  # set exactly when task == "detection"

    def __post_init__(self):
        if (self.task == "detection") != (self.detection is not None):
            raise ModelMetadataError(
                f"task {self.task!r} " + ("needs detection parameters (score_threshold, nms_iou, max_detections, "
                                          "box_format)" if self.task == "detection" else
                                          "takes no detection parameters"))

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @classmethod
    def from_props(cls, props: Mapping[str, str], default_model_id: str = "model") -> ModelMetadata:
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise ModelMetadataError(
                f"model metadata is missing required key(s) {missing}; "
                f"a robot_compress model must carry {list(REQUIRED_KEYS)} in its ONNX metadata_props"
            )
        task = props["task"]
        if task not in TASKS:
            raise ModelMetadataError(f"metadata key 'task' must be one of {TASKS}, got {task!r}")
        labels = _json(props, "labels")
        if not isinstance(labels, list) or not labels or not all(isinstance(s, str) for s in labels):
            raise ModelMetadataError("metadata key 'labels' must be a non-empty JSON list of strings")
        size = _json(props, "input_size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise ModelMetadataError(
                f"metadata key 'input_size' must be [height, width] of positive ints, got {size!r}"
            )
        order = props["color_order"]
        if order not in COLOR_ORDERS:
            raise ModelMetadataError(f"metadata key 'color_order' must be one of {COLOR_ORDERS}, got {order!r}")
        mean = _triple(props, "mean", positive=False)
        std = _triple(props, "std", positive=True)
        provenance = _json(props, "provenance")
        if not isinstance(provenance, dict):
            raise ModelMetadataError("metadata key 'provenance' must be a JSON object")
        ignore = props.get("ignore_index")
        try:
            ignore_index = int(ignore) if ignore not in (None, "") else None
        except ValueError:
            raise ModelMetadataError(f"metadata key 'ignore_index' must be an integer, got {ignore!r}") from None
        detection = DetectionParams.from_props(props) if task == "detection" else None
        if detection is not None:
            background = [s for s in labels if s.strip().lower() in ("__background__", "background")]
            if background:
                raise ModelMetadataError(
                    f"metadata key 'labels' of a detection model must not contain a background entry, got "
                    f"{background[0]!r} (index = class id, object classes only)")
        known = REQUIRED_KEYS + ("model_id", "ignore_index") + (DETECTION_KEYS if detection else ())
        extra = {k: v for k, v in props.items() if k not in known}
        return cls(
            task=task,
            labels=tuple(labels),
            input_size=(size[0], size[1]),
            color_order=order,
            mean=mean,
            std=std,
            provenance=provenance,
            model_id=props.get("model_id") or default_model_id,
            ignore_index=ignore_index,
            extra=extra,
            detection=detection,
        )

    def to_props(self) -> dict[str, str]:
        """Inverse of from_props: the string map to write into ONNX metadata_props."""
        props = dict(self.extra)
        props.update(
            task=self.task,
            labels=json.dumps(list(self.labels)),
            input_size=json.dumps(list(self.input_size)),
            color_order=self.color_order,
            mean=json.dumps(list(self.mean)),
            std=json.dumps(list(self.std)),
            provenance=json.dumps(self.provenance, sort_keys=True),
            model_id=self.model_id,
        )
        if self.ignore_index is not None:
            props["ignore_index"] = str(self.ignore_index)
        if self.detection is not None:
            props.update(self.detection.to_props())
        return props


def _json(props: Mapping[str, str], key: str):
    try:
        return json.loads(props[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelMetadataError(f"metadata key {key!r} is not valid JSON: {exc}") from None


def _number(props: Mapping[str, str], key: str) -> float:
    raw = props[key]
    try:
        val = float(raw)
    except (TypeError, ValueError):
        raise ModelMetadataError(f"metadata key {key!r} must be a number, got {raw!r}") from None
    if val != val or val in (float("inf"), float("-inf")):
        raise ModelMetadataError(f"metadata key {key!r} must be a finite number, got {raw!r}")
    return val


def _integer(props: Mapping[str, str], key: str) -> int:
    raw = props[key]
    try:
        return int(str(raw).strip())
    except (TypeError, ValueError):
        raise ModelMetadataError(f"metadata key {key!r} must be an integer, got {raw!r}") from None


def _triple(props: Mapping[str, str], key: str, positive: bool) -> tuple[float, float, float]:
    val = _json(props, key)
    ok = isinstance(val, list) and len(val) == 3 and all(isinstance(v, (int, float)) for v in val)
    if ok and positive:
        ok = all(v > 0 for v in val)
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise ModelMetadataError(f"metadata key {key!r} must be a JSON list of 3 {kind}, got {val!r}")
    return (float(val[0]), float(val[1]), float(val[2]))
