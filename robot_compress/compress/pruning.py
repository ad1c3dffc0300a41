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

Options: `ignored_layers` (module names or fnmatch patterns) keeps layers whole and out of the count;
`max_layer_sparsity` caps the pruned fraction of every layer (a global criterion then takes the rest from
the other layers). A layer left with no weight at all is reported (`emptied_layers`) and warned about: at
high amounts class-blind empties small layers with small weights, and nothing flows through them any more.
"""
from __future__ import annotations

import fnmatch
import math
import warnings
from collections.abc import Callable

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
    """new_masks = criterion(weights, masks, amount[, max_layer_sparsity]); weights/masks are per-layer tensors.

    Subclasses give `scores` (lowest pruned first; already-pruned weights must score lowest) and say whether
    the amount applies per layer or over all layers together; a criterion may also override `__call__`."""

    name = "criterion"
    per_layer = False

    def scores(self, weights: list[torch.Tensor], masks: list[torch.Tensor]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __call__(self, weights: list[torch.Tensor], masks: list[torch.Tensor], amount: float,
                 max_layer_sparsity: float | None = None) -> list[torch.Tensor]:
        scores = self.scores(weights, masks)
        already = [int((m == 0).sum()) for m in masks]
        sizes = [w.numel() for w in weights]
        caps = [max(_cap_count(max_layer_sparsity, n), a) for n, a in zip(sizes, already, strict=True)]
        if self.per_layer:
            counts = [min(max(round(amount * n), a), c) for n, a, c in zip(sizes, already, caps, strict=True)]
            return [(~_lowest_k(s, k)).float() for s, k in zip(scores, counts, strict=True)]
        k = max(round(amount * sum(sizes)), sum(already))
        return [(~chosen).float() for chosen in _capped_lowest_k(scores, k, caps)]


def _cap_count(max_layer_sparsity: float | None, n: int) -> int:
    return n if max_layer_sparsity is None else math.floor(max_layer_sparsity * n)


def _capped_lowest_k(scores: list[torch.Tensor], k: int, caps: list[int]) -> list[torch.Tensor]:
    """The k lowest scores over all layers with at most caps[i] taken from layer i (fewer than k when the caps
    allow fewer). A layer over its cap in the uncapped choice is also at its cap in the capped one, so: fix
    such layers at their cap, choose the rest among the others, repeat (at most one round per layer)."""
    chosen: dict[int, torch.Tensor] = {}
    free = list(range(len(scores)))
    k = min(k, sum(caps))
    while free:
        flat = torch.cat([scores[i].reshape(-1) for i in free])
        picked = _split(_lowest_k(flat, k), [scores[i] for i in free])
        over = [i for i, p in zip(free, picked, strict=True) if int(p.sum()) > caps[i]]
        if not over:
            chosen.update(zip(free, picked, strict=True))
            break
        for i in over:
            chosen[i] = _lowest_k(scores[i], caps[i])
            k -= caps[i]
        free = [i for i in free if i not in over]
    return [chosen[i] for i in range(len(scores))]


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
    per_layer = True

    def scores(self, weights, masks):
        return [_magnitude_scores(w, m) for w, m in zip(weights, masks, strict=True)]


class ClassBlindCriterion(Criterion):
    """Lowest-|w| x % over all layers: one global magnitude threshold."""

    name = "class-blind"

    def scores(self, weights, masks):
        return [_magnitude_scores(w, m) for w, m in zip(weights, masks, strict=True)]


class RandomCriterion(Criterion):
    """x % of all prunable weights uniformly at random, reproducible by seed."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def scores(self, weights, masks):
        gen = torch.Generator().manual_seed(self.seed)
        flat_mask = torch.cat([m.reshape(-1) for m in masks])
        scores = torch.rand(flat_mask.numel(), generator=gen)
        scores[flat_mask == 0] = -1.0
        return _split(scores, weights)


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


def _select_layers(model: nn.Module, ignored_layers) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """(prunable layers not ignored, ignored layer names); a pattern that matches no layer is an error."""
    layers = prunable_modules(model)
    patterns = list(ignored_layers or [])
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name, _ in layers)]
    if unmatched:
        raise ValueError(f"ignored_layers {unmatched} match no conv/linear layer; layers: "
                         f"{', '.join(name for name, _ in layers[:12])}{' ...' if len(layers) > 12 else ''}")
    ignored = [name for name, _ in layers if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    return [(name, m) for name, m in layers if name not in ignored], ignored


def _check_cap(max_layer_sparsity) -> float | None:
    if max_layer_sparsity is None:
        return None
    if isinstance(max_layer_sparsity, bool) or not 0.0 < float(max_layer_sparsity) <= 1.0:
        raise ValueError(f"max_layer_sparsity must be in (0, 1], got {max_layer_sparsity!r}")
    return float(max_layer_sparsity)


def prune_model(model: nn.Module, criterion="class-blind", amount: float = 0.5, seed: int = 0,
                ignored_layers=None, max_layer_sparsity: float | None = None,
                warn: Callable[[str], None] | None = None) -> dict:
    """Prune conv+linear weights to the cumulative fraction `amount`; returns a summary with
    per-layer counts. `criterion` is a name from CRITERIA or a Criterion instance.

    `ignored_layers`: module names or fnmatch patterns left whole (and outside `amount`'s count);
    `max_layer_sparsity`: no layer loses more than this fraction (the summary's `fraction` says what was
    reached). A layer the criterion empties is listed in `emptied_layers` and reported through `warn`
    (default: warnings.warn)."""
    amount = _check_amount(amount)
    cap = _check_cap(max_layer_sparsity)
    crit = get_criterion(criterion, seed) if isinstance(criterion, str) else criterion
    layers, ignored = _select_layers(model, ignored_layers)
    if not layers:
        raise ValueError("model has no conv or linear layers to prune")
    weights = [effective_weight(m).cpu() for _, m in layers]
    masks = [current_mask(m).cpu() for _, m in layers]
    new_masks = crit(weights, masks, amount) if cap is None else crit(weights, masks, amount, max_layer_sparsity=cap)
    per_layer, emptied = [], []
    for (name, module), mask, old in zip(layers, new_masks, masks, strict=True):
        _install_mask(module, mask)
        pruned = int((mask == 0).sum())
        per_layer.append({"layer": name, "total": mask.numel(), "pruned": pruned, "fraction": pruned / mask.numel()})
        if pruned == mask.numel() and int((old == 0).sum()) < old.numel():
            emptied.append(name)
    total = sum(r["total"] for r in per_layer)
    pruned = sum(r["pruned"] for r in per_layer)
    name = getattr(crit, "name", type(crit).__name__)
    if emptied:
        (warn or _warn)(f"{name} pruning to {100 * amount:g} % removed every weight of layer(s) "
                        f"{', '.join(emptied)}: nothing flows through them now; set max_layer_sparsity or "
                        "ignored_layers to keep them alive")
    return {"criterion": name, "amount": amount, "total": total, "pruned": pruned, "fraction": pruned / total,
            "per_layer": per_layer, "ignored_layers": ignored, "max_layer_sparsity": cap, "emptied_layers": emptied}


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


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
