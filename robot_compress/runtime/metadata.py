"""The self-describing model contract: what every ONNX model must carry in `metadata_props`.

All values are strings (ONNX metadata is string->string); structured values are JSON.

| key           | required | example                                  |
|---------------|----------|------------------------------------------|
| task          | yes      | "classification" or "segmentation"       |
| labels        | yes      | '["sky", "building", ...]' (index = class id) |
| input_size    | yes      | '[360, 480]'  (height, width fed to the model) |
| color_order   | yes      | "RGB" or "BGR"                           |
| mean          | yes      | '[0.485, 0.456, 0.406]'  (on 0..1 pixel scale) |
| std           | yes      | '[0.229, 0.224, 0.225]'                  |
| provenance    | yes      | '{"recipe": ..., "commit": ..., "dataset": ...}' |
| model_id      | no       | "lraspp_mbv3_camvid_kd_cb90" (default: file stem) |
| ignore_index  | no       | "11" (segmentation label id scored as void) |

Any other keys (param counts, sparsity, metrics) are kept in `extra` untouched.
The graph takes one float32 NCHW input (batch dynamic or 1) and returns logits:
[N, C] for classification, [N, C, H, W] for segmentation, C == len(labels).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

TASKS = ("classification", "segmentation")
COLOR_ORDERS = ("RGB", "BGR")
REQUIRED_KEYS = ("task", "labels", "input_size", "color_order", "mean", "std", "provenance")


class ModelMetadataError(ValueError):
    """The model does not carry the metadata contract (names the offending key)."""


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
        extra = {k: v for k, v in props.items() if k not in REQUIRED_KEYS + ("model_id", "ignore_index")}
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
        return props


def _json(props: Mapping[str, str], key: str):
    try:
        return json.loads(props[key])
    except (TypeError, json.JSONDecodeError) as exc:
        raise ModelMetadataError(f"metadata key {key!r} is not valid JSON: {exc}") from None


def _triple(props: Mapping[str, str], key: str, positive: bool) -> tuple[float, float, float]:
    val = _json(props, key)
    ok = isinstance(val, list) and len(val) == 3 and all(isinstance(v, (int, float)) for v in val)
    if ok and positive:
        ok = all(v > 0 for v in val)
    if not ok:
        kind = "positive numbers" if positive else "numbers"
        raise ModelMetadataError(f"metadata key {key!r} must be a JSON list of 3 {kind}, got {val!r}")
    return (float(val[0]), float(val[1]), float(val[2]))
