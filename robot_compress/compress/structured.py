"""Structured channel pruning with torch-pruning's dependency graph: removes whole channels (and
every coupled slice of the following layers, BN, residual partners) so the result is a physically
smaller dense model — the only kind of pruning that makes a CPU faster.

The model's output layer(s) are never pruned: the conv/linear layers whose outputs reach the model's
output without passing through another conv/linear (found by walking the autograd graph back from the
output: the classifier of a classification net, DeepLabV3's last classifier conv, LR-ASPP's low and high
classifiers) are kept whole, so the class count and output shape stay the same. Other layers are pruned
whatever their width, even when it happens to equal the class count.
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


_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def head_layers(model: nn.Module, example_input: torch.Tensor) -> list[nn.Module]:
    """The conv/linear layers that produce the model's output: walking back from the output through the
    autograd graph, the first conv/linear met on every path (elementwise ops, resizes and additions in
    between are followed, another layer's output is not passed)."""
    produced: dict = {}

    def remember(module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.grad_fn is not None:
            produced[output.grad_fn] = module

    hooks = [m.register_forward_hook(remember) for m in model.modules() if isinstance(m, _LAYER_TYPES)]
    try:
        with torch.enable_grad():
            out = model(example_input.detach().clone().requires_grad_(True))
    finally:
        for hook in hooks:
            hook.remove()
    heads, seen, todo = [], set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            if produced[node] not in heads:
                heads.append(produced[node])
            continue
        todo.extend(next_node for next_node, _ in node.next_functions)
    return heads


def named_layers(model: nn.Module, entries) -> list[nn.Module]:
    """Modules from `entries`: modules as they are, names or fnmatch patterns looked up in the model (a name
    that matches nothing is an error, not a silently unprotected layer)."""
    import fnmatch

    named = dict(model.named_modules())
    out: list[nn.Module] = []
    for entry in entries or []:
        if isinstance(entry, nn.Module):
            out.append(entry)
            continue
        matches = [m for name, m in named.items() if name and fnmatch.fnmatchcase(name, str(entry))]
        if not matches:
            raise ValueError(f"ignored layer {entry!r} matches no module of {type(model).__name__}")
        out += matches
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
        out_shape = tuple(out.shape)
        ignored = (named_layers(model, ignored_layers) + head_layers(model, example_input)
                   + residual_stream_layers(model))
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
