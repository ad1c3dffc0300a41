"""Unstructured magnitude/random pruning exactly as the paper defines it, over conv and linear weights.

- random:        x % of all prunable weights, chosen uniformly at random (seeded)
- class-uniform: the lowest-|w| x % in EACH layer
- class-blind:   the lowest-|w| x % over ALL layers together (one global threshold)

Criteria are small callables behind one interface (Torch-Pruning style): given the current effective
weights and masks of every prunable layer and a target fraction, they return the new masks.
Masks are installed with `torch.nn.utils.prune` (weight = weight_orig * weight_mask, re-applied on
every forward), so pruned weights stay zero while fine-tuning; `make_permanent` bakes them in.

`amount` is always the CUMULATIVE fraction of pruned weights (per layer for class-uniform, overall
otherwise). Re-pruning a pruned model keeps every existing zero and prunes more until the new
fraction is reached; an amount below the current fraction changes nothing (masks never un-prune).
Counts are exact: round(amount * n) weights, ties broken by position.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.utils import prune

PRUNABLE_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) for every conv and linear layer with a weight, in module order."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, PRUNABLE_TYPES) and getattr(m, "weight", None) is not None]


def current_mask(module: nn.Module) -> torch.Tensor:
    mask = getattr(module, "weight_mask", None)
    if mask is not None:
        return mask.detach().clone()
    return torch.ones_like(module.weight, dtype=torch.float32)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the layer computes with (weight_orig * mask while pruning is attached)."""
    orig = getattr(module, "weight_orig", None)
    if orig is not None:
        return (orig * module.weight_mask).detach()
    return module.weight.detach()


def _check_amount(amount) -> float:
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 <= amount < 1.0:
        raise ValueError(f"pruning amount must be in [0, 1) (a fraction of weights), got {amount!r}")
    return float(amount)


class Criterion:
    """new_masks = criterion(weights, masks, amount); weights/masks are per-layer tensors."""

    name = "criterion"

    def __call__(self, weights: list[torch.Tensor], masks: list[torch.Tensor], amount: float) -> list[torch.Tensor]:
        raise NotImplementedError


def _lowest_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k lowest scores (stable: ties go to the earlier position)."""
    chosen = torch.zeros(scores.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.sort(scores.reshape(-1), stable=True).indices
        chosen[order[:k]] = True
    return chosen.reshape(scores.shape)


def _magnitude_scores(weight, mask):
    # Already-pruned weights score -1 so they are always among the pruned ones (masks only grow).
    return torch.where(mask == 0, torch.full_like(weight, -1.0), weight.abs().float())


class ClassUniformCriterion(Criterion):
    """Lowest-|w| x % within each layer."""

    name = "class-uniform"

    def __call__(self, weights, masks, amount):
        out = []
        for w, m in zip(weights, masks, strict=True):
            k = max(round(amount * w.numel()), int((m == 0).sum()))
            out.append((~_lowest_k(_magnitude_scores(w, m), k)).float())
        return out


class ClassBlindCriterion(Criterion):
    """Lowest-|w| x % over all layers: one global magnitude threshold."""

    name = "class-blind"

    def __call__(self, weights, masks, amount):
        scores = torch.cat([_magnitude_scores(w, m).reshape(-1) for w, m in zip(weights, masks, strict=True)])
        already = int(sum(int((m == 0).sum()) for m in masks))
        keep = ~_lowest_k(scores, max(round(amount * scores.numel()), already))
        return _split(keep.float(), weights)


class RandomCriterion(Criterion):
    """x % of all prunable weights uniformly at random, reproducible by seed."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def __call__(self, weights, masks, amount):
        gen = torch.Generator().manual_seed(self.seed)
        flat_mask = torch.cat([m.reshape(-1) for m in masks])
        scores = torch.rand(flat_mask.numel(), generator=gen)
        scores[flat_mask == 0] = -1.0
        already = int((flat_mask == 0).sum())
        keep = ~_lowest_k(scores, max(round(amount * scores.numel()), already))
        return _split(keep.float(), weights)


def _split(flat: torch.Tensor, like: list[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for w in like:
        out.append(flat[start:start + w.numel()].reshape(w.shape))
        start += w.numel()
    return out


CRITERIA = {"random": RandomCriterion, "class-uniform": ClassUniformCriterion, "class-blind": ClassBlindCriterion}


def get_criterion(name: str, seed: int = 0) -> Criterion:
    if name not in CRITERIA:
        raise ValueError(f"unknown pruning criterion {name!r}; choose one of {sorted(CRITERIA)}")
    return RandomCriterion(seed) if name == "random" else CRITERIA[name]()


def _install_mask(module: nn.Module, mask: torch.Tensor) -> None:
    if prune.is_pruned(module) and hasattr(module, "weight_mask"):
        # Update in place: weight_orig stays the same Parameter, so optimizers built earlier keep working.
        with torch.no_grad():
            module.weight_mask.copy_(mask)
        module.weight = module.weight_orig * module.weight_mask
    else:
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))


def prune_model(model: nn.Module, criterion="class-blind", amount: float = 0.5, seed: int = 0) -> dict:
    """Prune conv+linear weights to the cumulative fraction `amount`; returns a summary with
    per-layer counts. `criterion` is a name from CRITERIA or a Criterion instance."""
    amount = _check_amount(amount)
    crit = get_criterion(criterion, seed) if isinstance(criterion, str) else criterion
    layers = prunable_modules(model)
    if not layers:
        raise ValueError("model has no conv or linear layers to prune")
    weights = [effective_weight(m).cpu() for _, m in layers]
    masks = [current_mask(m).cpu() for _, m in layers]
    new_masks = crit(weights, masks, amount)
    per_layer = []
    for (name, module), mask in zip(layers, new_masks, strict=True):
        _install_mask(module, mask)
        pruned = int((mask == 0).sum())
        per_layer.append({"layer": name, "total": mask.numel(), "pruned": pruned, "fraction": pruned / mask.numel()})
    total = sum(r["total"] for r in per_layer)
    pruned = sum(r["pruned"] for r in per_layer)
    return {"criterion": getattr(crit, "name", type(crit).__name__), "amount": amount, "total": total,
            "pruned": pruned, "fraction": pruned / total, "per_layer": per_layer}


def iterative_schedule(final_amount: float, steps: int) -> list[float]:
    """Cumulative amounts for iterative pruning, cubic as in Zhu & Gupta (2017): fast early, gentle
    late; strictly increasing for final > 0 and ending exactly at final_amount."""
    final_amount = _check_amount(final_amount)
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    amounts = [final_amount * (1.0 - (1.0 - i / steps) ** 3) for i in range(1, steps + 1)]
    amounts[-1] = final_amount
    return amounts


def is_pruned(model: nn.Module) -> bool:
    return prune.is_pruned(model)


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove the pruning re-parametrization everywhere; the zeros stay in plain `weight` tensors."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model
