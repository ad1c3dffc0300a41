"""Parameter accounting: total, nonzero and *effective* parameters, and a per-layer sparsity table.

Effective parameters (the paper's observation that the count falls non-linearly because pruning kills
whole neurons): a channel (conv output channel, linear unit) is LIVE when it is reachable from the
input through nonzero weights AND reaches the output through nonzero weights. A weight entry
W[o, i, ...] is effective when it is nonzero and both its output channel o and its input channel i
are live; biases and normalization parameters count for live channels only. A channel fed by no live
input is a constant (bias/BN shift only); its contribution could be folded into the next layer's bias,
so it counts as dead.

Liveness is propagated over the torch.fx graph (conv, linear, BN, activations, pooling, residual
adds, channel concat/pad, flatten). Models fx cannot trace, or that use an op whose channel mapping
is unknown, fall back to effective = nonzero and report `effective_exact: False`.
"""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from robot_compress.compress.pruning import PRUNABLE_TYPES, effective_weight, prunable_modules


def _effective_tensors(model: nn.Module):
    """(module_name, module, param_name, tensor) with pruning masks applied."""
    for mname, module in model.named_modules():
        for pname, param in module.named_parameters(recurse=False):
            if pname.endswith("_orig") and hasattr(module, pname[:-5] + "_mask"):
                base = pname[:-5]
                yield mname, module, base, (param * getattr(module, base + "_mask")).detach()
            else:
                yield mname, module, pname, param.detach()


def sparsity_table(model: nn.Module) -> list[dict]:
    """One row per conv/linear layer: total weights, nonzero weights, sparsity (fraction zero)."""
    rows = []
    for name, module in prunable_modules(model):
        w = effective_weight(module)
        nonzero = int(torch.count_nonzero(w))
        rows.append({"layer": name, "total": w.numel(), "nonzero": nonzero, "sparsity": 1.0 - nonzero / w.numel()})
    return rows


def count_params(model: nn.Module, example_input: torch.Tensor | None = None) -> dict:
    """{'total', 'nonzero', 'effective', 'effective_exact'}. `example_input` (one small batch) lets
    shapes be traced; by default a 1x3x32x32 (or 1xF for a linear-first model) zero tensor is used."""
    tensors = list(_effective_tensors(model))
    total = sum(t.numel() for *_, t in tensors)
    nonzero = sum(int(torch.count_nonzero(t)) for *_, t in tensors)
    live = _live_channels(model, example_input)
    if live is None:
        return {"total": total, "nonzero": nonzero, "effective": nonzero, "effective_exact": False}
    effective = 0
    for mname, module, pname, t in tensors:
        effective += _count_effective(mname, module, pname, t, live)
    return {"total": total, "nonzero": nonzero, "effective": effective, "effective_exact": True}


def _count_effective(mname, module, pname, t, live) -> int:
    nz = t != 0
    if isinstance(module, PRUNABLE_TYPES) and mname in live:
        live_in, live_out = live[mname]
        if pname == "weight":
            conn = _expand_in(live_in, module)  # [out, in_per_group] live inputs per output
            keep = conn & live_out[:, None]
            return int((nz.reshape(nz.shape[0], nz.shape[1], -1) & keep[:, :, None]).sum())
        if pname == "bias":
            return int((nz & live_out).sum())
    if mname in live and t.dim() == 1 and t.numel() == live[mname][1].numel():
        return int((nz & live[mname][1]).sum())  # norm layers: per-channel params
    return int(nz.sum())


def _expand_in(live_in: torch.Tensor, module) -> torch.Tensor:
    """For each output channel, which of its (grouped) input channels are live: [out, in_per_group]."""
    w = module.weight if not hasattr(module, "weight_orig") else module.weight_orig
    out_c, in_pg = w.shape[0], w.shape[1]
    if isinstance(module, nn.Linear):
        return live_in[None, :].expand(out_c, in_pg)
    groups = module.groups
    out_pg = out_c // groups
    return torch.stack([live_in[(o // out_pg) * in_pg:(o // out_pg + 1) * in_pg] for o in range(out_c)])


def _connectivity(module) -> torch.Tensor:
    """conn[o, i] over the full input channel range: a nonzero weight links input i to output o."""
    w = effective_weight(module)
    nz = (w != 0).reshape(w.shape[0], w.shape[1], -1).any(-1)
    if isinstance(module, nn.Linear) or getattr(module, "groups", 1) == 1:
        return nz
    groups, out_c, in_pg = module.groups, w.shape[0], w.shape[1]
    out_pg = out_c // groups
    conn = torch.zeros(out_c, in_pg * groups, dtype=torch.bool)
    for o in range(out_c):
        g = o // out_pg
        conn[o, g * in_pg:(g + 1) * in_pg] = nz[o]
    return conn


class _Unknown(Exception):
    """An op whose channel mapping we do not model: fall back to nonzero counting."""


_PASSTHROUGH_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU,
                        nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout,
                        nn.Dropout2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                        nn.Upsample, nn.GroupNorm, nn.InstanceNorm2d)
_PASSTHROUGH_FUNCS = {F.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.hardsigmoid, torch.relu,
                      torch.sigmoid, torch.tanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
                      F.adaptive_max_pool2d, F.interpolate, F.dropout, F.batch_norm, operator.getitem}
_PASSTHROUGH_METHODS = {"relu", "sigmoid", "contiguous", "clone", "float", "relu_", "detach"}
_COMBINE = {operator.add, operator.iadd, torch.add, operator.mul, operator.imul, torch.mul, operator.sub}


def _live_channels(model: nn.Module, example_input) -> dict | None:
    """{module_name: (live_in, live_out)} for every traced conv/linear, or None (fallback)."""
    try:
        from torch.fx import symbolic_trace
        from torch.fx.passes.shape_prop import ShapeProp

        gm = symbolic_trace(model)
        if example_input is None:
            example_input = _default_input(model)
        was_training = model.training
        gm.eval()
        try:
            with torch.no_grad():
                ShapeProp(gm).propagate(example_input)
        finally:
            gm.train(was_training)
        return _propagate(gm)
    except Exception:  # noqa: BLE001 - untraceable graph or unmodelled op: documented fallback
        return None


def _default_input(model):
    first = prunable_modules(model)[0][1]
    if isinstance(first, nn.Linear):
        return torch.zeros(1, first.in_features)
    return torch.zeros(1, first.in_channels, 32, 32)


def _is_tensor(node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


def _channels(node) -> int:
    meta = node.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape") or len(meta.shape) < 2:
        raise _Unknown(node)
    return int(meta.shape[1])


def _propagate(gm) -> dict:
    modules = dict(gm.named_modules())
    nodes = list(gm.graph.nodes)
    fwd: dict = {}
    for node in nodes:
        fwd[node] = _forward_rule(node, modules, fwd)
    need: dict = {n: None for n in nodes}
    for node in reversed(nodes):
        if node.op == "output":
            for arg in node.all_input_nodes:
                _or_into(need, arg, torch.ones(_channels(arg), dtype=torch.bool))
            continue
        out_need = need[node]
        if out_need is None or fwd[node] is None or node.op in ("placeholder", "get_attr"):
            continue
        _backward_rule(node, modules, out_need, need, fwd)
    live = {}
    for node in nodes:
        if node.op == "call_module" and isinstance(modules[node.target], PRUNABLE_TYPES + _PASSTHROUGH_MODULES):
            src = node.all_input_nodes[0]
            n_out = _channels(node)
            out_live = fwd[node] & (need[node] if need[node] is not None else torch.zeros(n_out, dtype=torch.bool))
            in_live = fwd[src] & (need[src] if need[src] is not None else torch.zeros(_channels(src), dtype=torch.bool))
            if isinstance(modules[node.target], PRUNABLE_TYPES):
                live[node.target] = (in_live, out_live)
            elif node.target not in live:
                live[node.target] = (out_live, out_live)
    return live


def _or_into(need, node, vec):
    if not isinstance(node, torch.fx.Node):
        return
    need[node] = vec.clone() if need[node] is None else need[node] | vec


def _tensor_args(node):
    return [a for a in node.args if isinstance(a, torch.fx.Node) and _is_tensor(a)]


def _kind(node, modules):
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, nn.modules.conv._ConvTransposeNd):
            return "unknown"  # weight layout [in, out/groups]: not modelled
        if isinstance(m, PRUNABLE_TYPES):
            return "linear"
        if isinstance(m, nn.Flatten):
            return "flatten"
        if isinstance(m, _PASSTHROUGH_MODULES) or (isinstance(m, nn.Sequential) and len(m) == 0):
            return "pass"
    elif node.op == "call_function":
        if node.target in _PASSTHROUGH_FUNCS:
            return "pass"
        if node.target in _COMBINE:
            return "combine"
        if node.target is torch.flatten:
            return "flatten"
        if node.target is torch.cat:
            return "cat"
        if node.target is F.pad:
            return "pad"
    elif node.op == "call_method":
        if node.target in _PASSTHROUGH_METHODS:
            return "pass"
        if node.target in ("view", "reshape", "flatten"):
            return "flatten"
        if node.target in ("add", "add_", "mul", "mul_"):
            return "combine"
    return node.op if node.op in ("placeholder", "get_attr", "output") else "unknown"


def _forward_rule(node, modules, fwd):
    kind = _kind(node, modules)
    if kind == "output" or not _is_tensor(node):
        return None  # shapes, sizes and other plain values carry no channels
    if kind in ("placeholder", "get_attr"):
        meta = node.meta.get("tensor_meta")
        n = int(meta.shape[1]) if meta is not None and hasattr(meta, "shape") and len(meta.shape) >= 2 else 0
        return torch.ones(n, dtype=torch.bool)
    if kind == "unknown":
        raise _Unknown(node)
    src = _tensor_args(node)
    if kind == "linear":
        conn = _connectivity(modules[node.target])
        return (conn & fwd[node.all_input_nodes[0]][None, :]).any(1)
    if kind == "pass":
        if node.target is operator.getitem and not _is_spatial_slice(node):
            raise _Unknown(node)
        return fwd[src[0]].clone()
    if kind == "combine":
        n = _channels(node)
        vecs = [fwd[a] for a in src if _channels(a) == n]
        if len(vecs) != len(src):
            raise _Unknown(node)
        out = vecs[0].clone()
        for v in vecs[1:]:
            out |= v
        return out
    if kind == "flatten":
        return fwd[src[0]].repeat_interleave(_group_size(node, src[0]))
    if kind == "cat":
        if _cat_dim(node) != 1:
            raise _Unknown(node)
        return torch.cat([fwd[a] for a in node.args[0]])
    if kind == "pad":
        before, after = _channel_pad(node)
        return torch.cat([torch.zeros(before, dtype=torch.bool), fwd[src[0]], torch.zeros(after, dtype=torch.bool)])
    raise _Unknown(node)


def _backward_rule(node, modules, out_need, need, fwd):
    kind = _kind(node, modules)
    src = _tensor_args(node)
    if kind == "linear":
        conn = _connectivity(modules[node.target])
        _or_into(need, node.all_input_nodes[0], (conn & out_need[:, None]).any(0))
    elif kind == "pass":
        _or_into(need, src[0], out_need)
    elif kind == "combine":
        for a in src:
            _or_into(need, a, out_need)
    elif kind == "flatten":
        group = _group_size(node, src[0])
        _or_into(need, src[0], out_need.reshape(-1, group).any(1))
    elif kind == "cat":
        start = 0
        for a in node.args[0]:
            n = _channels(a)
            _or_into(need, a, out_need[start:start + n])
            start += n
    elif kind == "pad":
        before, after = _channel_pad(node)
        _or_into(need, src[0], out_need[before:out_need.numel() - after])


def _group_size(node, src) -> int:
    """Flatten of [N, C, *spatial] into [N, C * prod(spatial)]: features per channel."""
    in_shape, out_shape = src.meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
    if len(out_shape) != 2 or len(in_shape) < 2:
        if tuple(in_shape[:2]) == tuple(out_shape[:2]):
            return 1  # a reshape that keeps the channel dim
        raise _Unknown(node)
    c = int(in_shape[1])
    if int(out_shape[1]) % c:
        raise _Unknown(node)
    return int(out_shape[1]) // c


def _cat_dim(node) -> int:
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    return dim


def _channel_pad(node):
    pad = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
    pad = list(pad) + [0] * (6 - len(pad))
    n_dims = len(node.meta["tensor_meta"].shape)
    if n_dims != 4:
        raise _Unknown(node)
    return int(pad[4]), int(pad[5])


def _is_spatial_slice(node) -> bool:
    """x[:, :, ::2, ::2] style indexing that keeps the batch and channel dims whole."""
    idx = node.args[1]
    if not isinstance(idx, tuple):
        return False
    head = idx[:2]
    return all(isinstance(s, slice) and s == slice(None) for s in head) and len(idx) >= 2
