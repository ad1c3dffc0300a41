"""ONNX export carrying the runtime's metadata contract (robot_compress.runtime.metadata), verified
against torch on random inputs, with a model card (`<name>.md` + `<name>.json`) beside the file.

Graph: one float32 input "input" [batch, 3, H, W] (batch dynamic), one output "logits".
Pruning masks are made permanent on a copy first, so the ONNX holds plain (zero-filled) weights and the
caller's model keeps its masks.
"""
from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from robot_compress.compress.runinfo import git_commit, utc_now, write_json_atomic
from robot_compress.runtime.metadata import ModelMetadata


class ExportError(RuntimeError):
    """Export failed or the ONNX graph does not reproduce the torch outputs."""


@dataclass
class ExportResult:
    path: Path
    max_abs_diff: float
    metadata: dict
    card_md: Path
    card_json: Path
    params: dict = field(default_factory=dict)


def _plain_copy(model: nn.Module) -> nn.Module:
    from robot_compress.compress.pruning import is_pruned, make_permanent

    # A pruned module's `weight` is orig * mask, a non-leaf tensor deepcopy refuses; its forward pre-hook
    # recomputes it on every call, so a detached value is equivalent.
    for module in model.modules():
        if hasattr(module, "weight_mask") and hasattr(module, "weight_orig"):
            module.weight = module.weight.detach()
    plain = copy.deepcopy(model).cpu().eval()
    if is_pruned(plain):
        make_permanent(plain)
    return plain


def _param_summary(model: nn.Module, input_hw=(32, 32)) -> tuple[dict, list]:
    """Parameter counts (total, nonzero, effective) plus the conv/linear weight sparsity and per-layer table."""
    from robot_compress.compress.params import count_params, sparsity_table

    counts = dict(count_params(model, torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]))))
    rows = [dict(r) for r in sparsity_table(model)]
    weights = sum(r["total"] for r in rows)
    counts["weight_sparsity"] = 1.0 - sum(r["nonzero"] for r in rows) / weights if weights else 0.0
    return counts, rows


def build_metadata(info, *, model_id: str, recipe: str, extra: dict | None = None,
                   color_order: str = "RGB", input_size=None) -> ModelMetadata:
    """The runtime contract for a model trained on `info` (robot_compress.compress.data.DatasetInfo), fed frames
    at `input_size` (default: the dataset's)."""
    provenance = {
        "recipe": recipe,
        "commit": git_commit(),
        "dataset": str(getattr(info, "source", "")),
        "dataset_fingerprint": info.fingerprint,
        "created": utc_now(),
    }
    return ModelMetadata(
        task=info.task,
        labels=tuple(info.labels),
        input_size=tuple(int(v) for v in (input_size or info.input_size)),
        color_order=color_order,
        mean=tuple(float(v) for v in info.mean),
        std=tuple(float(v) for v in info.std),
        provenance=provenance,
        model_id=model_id,
        ignore_index=None if info.ignore_index is None else int(info.ignore_index),
        extra={k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()},
    )


def export_onnx(model: nn.Module, path: str | Path, info, *, model_id: str | None = None,
                recipe: str = "manual", opset: int = 17, atol: float = 1e-3, verify_batches: int = 2,
                extra_metadata: dict | None = None, seed: int = 0, input_size=None,
                logits_size=None) -> ExportResult:
    """Export `model` for `info`'s task; `input_size` exports at another (height, width) than the dataset's,
    `logits_size` (torchvision segmentation models) ends the graph at logits of that size."""
    import onnx

    if opset < 17:
        raise ExportError(f"opset must be >= 17, got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model_id = model_id or path.stem
    plain = _plain_copy(model)
    if (input_size is not None or logits_size is not None) and info.task != "segmentation":
        raise ExportError(f"input_size/logits_size apply to segmentation models, not {info.task}")
    if logits_size is not None:
        from robot_compress.compress.models import SegmentationLogits

        if not isinstance(plain, SegmentationLogits):
            raise ExportError(f"logits_size needs a torchvision segmentation model, not {type(plain).__name__}")
        plain.logits_size = (int(logits_size[0]), int(logits_size[1]))
    h, w = (int(v) for v in (input_size or info.input_size))
    counts, rows = _param_summary(plain, (h, w))
    dummy = torch.zeros(1, 3, h, w)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                plain, (dummy,), str(tmp), dynamo=False, opset_version=opset, input_names=["input"],
                output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            )
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"torch.onnx.export failed for {model_id}: {exc}") from None

    extra = {
        "params_total": counts["total"],
        "params_nonzero": counts["nonzero"],
        "params_effective": counts["effective"],
        "params_effective_exact": counts.get("effective_exact", False),
        "sparsity": round(counts["weight_sparsity"], 6),  # zero fraction of conv/linear weights
        "sparsity_per_layer": rows,
    }
    if logits_size is not None:
        extra["logits_size"] = [int(logits_size[0]), int(logits_size[1])]
    extra.update(extra_metadata or {})
    meta = build_metadata(info, model_id=model_id, recipe=recipe, extra=extra, input_size=(h, w))
    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta.to_props())
    onnx.save(proto, str(tmp))
    tmp.replace(path)

    diff = verify_onnx(plain, path, (h, w), batches=verify_batches, seed=seed)
    if not diff <= atol:
        raise ExportError(f"{path}: ONNX output differs from torch by {diff:.3g} (> tolerance {atol})")
    card_md, card_json = write_model_card(path, meta, counts, rows, diff)
    return ExportResult(path, diff, meta.to_props(), card_md, card_json, counts)


def verify_onnx(model: nn.Module, path: Path, input_hw, batches: int = 2, seed: int = 0) -> float:
    """Max |torch - onnxruntime| over random inputs, batch sizes 1 and 3 (checks the dynamic batch)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.cpu().eval()
    for i in range(batches):
        x = torch.randn(1 if i % 2 == 0 else 3, 3, *input_hw, generator=gen)
        with torch.no_grad():
            ref = model(x).numpy()
        got = sess.run(["logits"], {"input": x.numpy()})[0]
        if got.shape != ref.shape:
            raise ExportError(f"{path}: ONNX output shape {got.shape} != torch {ref.shape}")
        worst = max(worst, float(np.max(np.abs(got - ref))))
    return worst


def write_model_card(onnx_path: Path, meta: ModelMetadata, counts: dict, rows: list, max_abs_diff: float,
                     metrics: dict | None = None) -> tuple[Path, Path]:
    card = {
        "model_id": meta.model_id,
        "file": onnx_path.name,
        "task": meta.task,
        "labels": list(meta.labels),
        "input": {"name": "input", "shape": ["batch", 3, *meta.input_size], "color_order": meta.color_order,
                  "mean": list(meta.mean), "std": list(meta.std), "scale": "pixel/255"},
        "output": {"name": "logits", **({"size": json.loads(meta.extra["logits_size"])}
                                         if "logits_size" in meta.extra else {})},
        "ignore_index": meta.ignore_index,
        "provenance": meta.provenance,
        "params": counts,
        "sparsity_per_layer": rows,
        "export_check": {"max_abs_diff_vs_torch": max_abs_diff},
        "metrics": metrics or {},
    }
    json_path = write_json_atomic(onnx_path.with_suffix(".json"), card)
    md_path = onnx_path.with_suffix(".md")
    md_path.write_text(_card_markdown(card), encoding="utf-8")
    return md_path, json_path


def update_card_metrics(onnx_path: str | Path, metrics: dict) -> None:
    """Add evaluation results to an existing model card (JSON and markdown)."""
    onnx_path = Path(onnx_path)
    json_path = onnx_path.with_suffix(".json")
    card = json.loads(json_path.read_text(encoding="utf-8"))
    card["metrics"].update(metrics)
    write_json_atomic(json_path, card)
    onnx_path.with_suffix(".md").write_text(_card_markdown(card), encoding="utf-8")


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _card_markdown(card: dict) -> str:
    p, prov = card["params"], card["provenance"]
    lines = [
        f"# Model card: {card['model_id']}",
        "",
        f"- file: `{card['file']}` (ONNX, input `input` {card['input']['shape']}, output "
        f"{', '.join(f'`{n}`' for n in card['output'].get('names', ['logits']))})",
        f"- task: {card['task']}, {len(card['labels'])} classes: {', '.join(card['labels'])}",
        f"- preprocessing: {card['input']['color_order']}, pixel/255, mean {card['input']['mean']}, "
        f"std {card['input']['std']}, no resize beyond the input size",
        f"- ignore_index: {card['ignore_index']}",
        f"- provenance: recipe `{prov.get('recipe')}`, commit `{prov.get('commit')}`, "
        f"dataset fingerprint `{prov.get('dataset_fingerprint')}`, created {prov.get('created')}",
        f"- export check: max |ONNX - torch| = {card['export_check']['max_abs_diff_vs_torch']:.3g}",
        "",
        "## Parameters",
        "",
        "| total | nonzero | effective |",
        "|---:|---:|---:|",
        f"| {p.get('total')} | {p.get('nonzero')} | {p.get('effective')} |",
        "",
    ]
    if card["metrics"]:
        lines += ["## Metrics", "", "| metric | value |", "|---|---:|"]
        for key, val in card["metrics"].items():
            if isinstance(val, (int, float, str)):
                lines.append(f"| {key} | {_fmt(val)} |")
        lines.append("")
    if card["sparsity_per_layer"]:
        keys = list(card["sparsity_per_layer"][0].keys())
        lines += ["## Per-layer sparsity", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in card["sparsity_per_layer"]:
            lines.append("| " + " | ".join(_fmt(row.get(k)) for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)
