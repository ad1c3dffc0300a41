"""Structured (channel) pruning of a detector with torch-pruning: the backbone's and the head towers' inner
channels; the prediction convs (class logits, box regression, centre-ness) stay whole, so the anchors, the class
count and the ONNX contract do not change."""
from __future__ import annotations

import torch
from torch import nn


def prediction_layers(model) -> list[nn.Module]:
    """The convs that emit the head's outputs: SSDlite's last conv of each level's classification/regression
    branch, RetinaNet/FCOS's cls_logits / bbox_reg / bbox_ctrness."""
    head = model.net.head
    out = []
    for branch in (getattr(head, "classification_head", None), getattr(head, "regression_head", None)):
        if branch is None:
            continue
        if hasattr(branch, "module_list"):  # SSD(lite): one Sequential per level, prediction conv last
            for seq in branch.module_list:
                convs = [m for m in seq.modules() if isinstance(m, nn.Conv2d)]
                out.append(convs[-1])
        for name in ("cls_logits", "bbox_reg", "bbox_ctrness"):
            if hasattr(branch, name):
                out.append(getattr(branch, name))
    return out


def structured_prune_detector(model, example_input: torch.Tensor, ratio: float, ignored_layers=None,
                              round_to: int | None = None) -> dict:
    import torch_pruning as tp

    from robot_compress.compress.pruning import is_pruned
    from robot_compress.compress.structured import named_layers

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"structured pruning ratio must be in [0, 1), got {ratio!r}")
    if is_pruned(model):
        raise ValueError("model carries unstructured pruning masks; call pruning.make_permanent(model) first")
    model.eval()
    model._anchor_cache.clear()
    ignored = named_layers(model, ignored_layers) + prediction_layers(model)

    def forward(m, x):
        return m(x)

    def outputs(out):
        return list(out)

    with torch.no_grad():
        before = [t.shape for t in model(example_input)]
    macs_before, params_before = tp.utils.count_ops_and_params(model, example_input)
    if ratio > 0:
        pruner = tp.pruner.BasePruner(model, example_input, importance=tp.importance.GroupMagnitudeImportance(p=2),
                                      pruning_ratio=float(ratio), ignored_layers=ignored, round_to=round_to,
                                      forward_fn=forward, output_transform=outputs)
        try:
            pruner.step()
        except Exception as exc:  # noqa: BLE001 - the graph may hold ops torch-pruning cannot follow
            raise RuntimeError(f"torch-pruning failed on the detector ({exc}); reload it and pass the offending "
                               "layers as ignored_layers") from exc
    model._anchor_cache.clear()
    macs_after, params_after = tp.utils.count_ops_and_params(model, example_input)
    with torch.no_grad():
        after = [t.shape for t in model(example_input)]
    if after != before:  # pragma: no cover - a torch-pruning bug, not a user error
        raise RuntimeError(f"structured pruning changed the detector's outputs {before} -> {after}")
    return {"macs_before": int(macs_before), "macs_after": int(macs_after), "params_before": int(params_before),
            "params_after": int(params_after)}
