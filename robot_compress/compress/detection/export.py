"""ONNX export of a `Detector` with the detection contract (docs/DETECTION.md).

Graph: input `input` float32 [1, 3, h, w] (normalised as the metadata's mean/std say), outputs `boxes`
[1, N, 4] (decoded x1 y1 x2 y2 in model-input pixels, clipped to the input) and `scores` [1, N, C] (per class,
no background). torchvision's GeneralizedRCNNTransform is not in the graph (the runtime resizes and normalises),
nor is NMS (the runtime's per-class NMS with the metadata's `score_threshold`, `nms_iou`, `max_detections`).
Anchors are constants of the fixed input size. Verified against the torch model on random inputs; a model card
(`<id>.md` + `.json`) lies beside it, as for the other tasks.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


class DetectionExportError(RuntimeError):
    """Export failed or the ONNX graph does not reproduce the torch outputs."""


@dataclass
class DetectionExportResult:
    path: Path
    max_abs_diff: dict
    metadata: dict
    card_md: Path
    card_json: Path
    params: dict = field(default_factory=dict)


def detection_metadata(model, info, *, model_id: str, recipe: str, extra: dict | None = None):
    from robot_compress.compress.runinfo import git_commit, utc_now
    from robot_compress.runtime.metadata import DetectionParams, ModelMetadata

    provenance = {"recipe": recipe, "commit": git_commit(), "dataset": str(getattr(info, "source", "")),
                  "dataset_fingerprint": info.fingerprint, "created": utc_now()}
    return ModelMetadata(
        task="detection", labels=tuple(info.labels), input_size=(int(info.input_size[0]), int(info.input_size[1])),
        color_order="RGB", mean=tuple(float(v) for v in info.mean), std=tuple(float(v) for v in info.std),
        provenance=provenance, model_id=model_id,
        extra={k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()},
        detection=DetectionParams(float(model.score_threshold), float(model.nms_iou), int(model.max_detections)),
    )


class _Graph(nn.Module):
    """The exported function: the detector's eval-mode dense outputs at its own input size."""

    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return self.detector(x)


def export_detector(model, path: str | Path, info, *, model_id: str | None = None, recipe: str = "manual",
                    opset: int = 17, atol: float = 1e-3, seed: int = 0) -> DetectionExportResult:
    import onnx

    from robot_compress.compress.export import _param_summary, _plain_copy, write_model_card

    if opset < 17:
        raise DetectionExportError(f"opset must be >= 17, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_id = model_id or path.stem
    plain = _plain_copy(model)
    plain.native_size = None  # the graph runs at the metadata's input size
    h, w = int(info.input_size[0]), int(info.input_size[1])
    counts, rows = _param_summary(plain, (h, w))
    dummy = torch.zeros(1, 3, h, w)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(_Graph(plain).eval(), (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=["input"], output_names=["boxes", "scores"])
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise DetectionExportError(f"torch.onnx.export failed for {model_id}: {exc}") from None
    extra = {"params_total": counts["total"], "params_nonzero": counts["nonzero"],
             "params_effective": counts["effective"], "params_effective_exact": counts.get("effective_exact", False),
             "sparsity": round(counts["weight_sparsity"], 6), "sparsity_per_layer": rows,
             "detector": getattr(plain, "family", type(plain).__name__)}
    meta = detection_metadata(plain, info, model_id=model_id, recipe=recipe, extra=extra)
    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    onnx.save(proto, str(tmp))
    tmp.replace(path)
    diff = verify_detector_onnx(plain, path, (h, w), seed=seed)
    # Boxes are pixels (up to the input's side): compared relative to it; scores are probabilities.
    if not (diff["scores"] <= atol and diff["boxes"] <= atol * max(h, w)):
        raise DetectionExportError(f"{path}: ONNX differs from torch by {diff} (tolerance scores {atol}, boxes "
                                   f"{atol * max(h, w):.3g} px)")
    card_md, card_json = write_model_card(path, meta, counts, rows, max(diff["scores"], diff["boxes"]))
    card = json.loads(card_json.read_text(encoding="utf-8"))
    card["output"] = {"names": ["boxes", "scores"], "boxes": [1, "N", 4], "scores": [1, "N", len(info.labels)],
                      "box_format": "xyxy (model-input pixels)"}
    card["input"]["shape"] = [1, 3, h, w]
    card["detection"] = meta.detection.to_props()
    card["export_check"] = {"max_abs_diff_vs_torch": max(diff["scores"], diff["boxes"]),
                            "max_abs_diff_boxes_px": diff["boxes"], "max_abs_diff_scores": diff["scores"]}
    from robot_compress.compress.runinfo import write_json_atomic

    write_json_atomic(card_json, card)
    from robot_compress.compress.export import update_card_metrics

    update_card_metrics(path, {})  # re-renders the markdown from the JSON
    return DetectionExportResult(path, diff, meta.to_props(), card_md, card_json, counts)


def verify_detector_onnx(model, path: Path, input_hw, batches: int = 2, seed: int = 0) -> dict:
    """Max |torch - onnxruntime| of boxes (px) and scores over random inputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = {"boxes": 0.0, "scores": 0.0}
    model = model.cpu().eval()
    for _ in range(batches):
        x = torch.randn(1, 3, *input_hw, generator=gen)
        with torch.no_grad():
            ref = [t.numpy() for t in model(x)]
        got = sess.run(["boxes", "scores"], {"input": x.numpy()})
        for key, r, g in zip(("boxes", "scores"), ref, got, strict=True):
            if r.shape != g.shape:
                raise DetectionExportError(f"{path}: ONNX {key} shape {g.shape} != torch {r.shape}")
            worst[key] = max(worst[key], float(np.max(np.abs(r - g))) if r.size else 0.0)
    return worst
