"""Structured channel pruning with torch-pruning's dependency graph: removes whole channels (and
every coupled slice of the following layers, BN, residual partners) so the result is a physically
smaller dense model — the only kind of pruning that makes a CPU faster.

The model's output layer(s) are never pruned: every conv/linear whose output channel count equals
the model's class count is ignored automatically (the classifier of a classification net, the final
classifier convs of segmentation heads such as LR-ASPP's low/high classifiers), so the class count
and output shape stay the same.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from robot_compress.compress.pruning import is_pruned

IMPORTANCES = ("magnitude", "l1", "bn_scale", "random")


def _importance(name: str):
    import torch_pruning as tp

    if name == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    if name == "l1":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if name == "bn_scale":
        return tp.importance.BNScaleImportance()
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown structured-pruning importance {name!r}; choose one of {IMPORTANCES}")


def output_layers(model: nn.Module, num_outputs: int) -> list[nn.Module]:
    """Conv/linear layers whose output width equals the class count (kept whole)."""
    out = []
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and m.out_channels == num_outputs:
            out.append(m)
        elif isinstance(m, nn.Linear) and m.out_features == num_outputs:
            out.append(m)
    return out


def residual_stream_layers(model: nn.Module) -> list[nn.Module]:
    """Layers writing the residual stream of option-A CIFAR ResNets: their channels meet a zero-padding
    shortcut (F.pad over channels) that the dependency graph cannot follow, so only the inner channels
    of each block (conv1 -> bn1 -> conv2's input) are pruned there."""
    from robot_compress.compress.models import BasicBlock, CifarResNet

    layers = []
    for m in model.modules():
        if isinstance(m, CifarResNet):
            layers.append(m.conv1)
        elif isinstance(m, BasicBlock):
            layers.append(m.conv2)
    return layers


def structured_prune(model: nn.Module, example_input: torch.Tensor, ratio: float, ignored_layers=None,
                     importance: str = "magnitude", round_to: int | None = None) -> dict:
    """Remove `ratio` of the channels of every prunable layer group (in place).

    Returns {macs_before, macs_after, params_before, params_after}. Unstructured masks must be made
    permanent (or never applied) first: torch-pruning rewrites plain weight tensors.
    """
    import torch_pruning as tp

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"structured pruning ratio must be in [0, 1), got {ratio!r}")
    if is_pruned(model):
        raise ValueError("model carries unstructured pruning masks; call pruning.make_permanent(model) first")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example_input)
        if not isinstance(out, torch.Tensor) or out.dim() < 2:
            raise ValueError("structured pruning needs a model whose forward returns a logits tensor [N, C, ...]")
        num_outputs = int(out.shape[1])
        out_shape = tuple(out.shape)
        ignored = list(ignored_layers or []) + output_layers(model, num_outputs) + residual_stream_layers(model)
        macs_before, params_before = tp.utils.count_ops_and_params(model, example_input)
        if ratio > 0:
            pruner = tp.pruner.BasePruner(model, example_input, importance=_importance(importance),
                                          pruning_ratio=float(ratio), ignored_layers=ignored, round_to=round_to)
            try:
                pruner.step()
            except Exception as exc:  # noqa: BLE001 - the graph may hold ops torch-pruning cannot follow
                raise RuntimeError(f"torch-pruning failed on {type(model).__name__} ({exc}); the model may be "
                                   f"partly pruned now: reload it, and pass the offending layers as "
                                   f"ignored_layers") from exc
        macs_after, params_after = tp.utils.count_ops_and_params(model, example_input)
        with torch.no_grad():
            new_shape = tuple(model(example_input).shape)
        if new_shape != out_shape:  # pragma: no cover - a torch-pruning bug, not a user error
            raise RuntimeError(f"structured pruning changed the output shape {out_shape} -> {new_shape}")
    finally:
        model.train(was_training)
    return {"macs_before": int(macs_before), "macs_after": int(macs_after),
            "params_before": int(params_before), "params_after": int(params_after)}
