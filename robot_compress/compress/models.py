"""Model registry: builders by name (no weights are ever downloaded), user models by import path,
and a checkpoint loader that says exactly why a file does not fit.

Every model's forward returns a plain logits tensor ([N, C] or [N, C, H, W]) so KD, export and
torch-pruning treat all of them alike (torchvision's segmentation models are unwrapped from their dict).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

TASKS = ("classification", "segmentation", "detection")


class UnknownModelError(ValueError):
    """No model of that name is registered."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], str]] = {}


def register_model(name: str, task: str):
    """Decorator: register `builder(num_classes, **cfg) -> nn.Module` under `name`."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")

    def wrap(builder):
        _REGISTRY[name] = (builder, task)
        return builder

    return wrap


def list_models() -> dict[str, str]:
    """{name: task} for every registered model."""
    return {name: task for name, (_, task) in sorted(_REGISTRY.items())}


def _lookup(name: str):
    if name not in _REGISTRY:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def model_task(name: str) -> str:
    return _lookup(name)[1]


def get_model(name: str, num_classes: int, **cfg) -> nn.Module:
    """Build a registered model with random weights (load weights with `load_checkpoint`)."""
    builder, _ = _lookup(name)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        return builder(num_classes, **cfg)
    except TypeError as exc:
        raise ValueError(f"bad options {sorted(cfg)} for model {name!r}: {exc}") from None


def load_user_model(spec: str, **kwargs) -> nn.Module:
    """Build a model from 'package.module:callable' (any callable returning an nn.Module)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"user model spec must look like 'package.module:Callable', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} for user model {spec!r}: {exc}") from None
    factory = module
    for part in attr.split("."):
        if not hasattr(factory, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r} (user model {spec!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise ValueError(f"user model {spec!r} is not callable")
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise ValueError(f"user model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


# ---------------------------------------------------------------- checkpoints

TRUST_FLAG = "--trust-checkpoint"


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint whose pickle needs more than weights (classes, functions): loading it could run code."""


def _checkpoint_safe_globals() -> list:
    """Besides tensors and containers, our checkpoints written before issue 13 hold numpy's RNG state (an
    ndarray): allow exactly the numpy pieces needed to rebuild a plain array, nothing that calls code."""
    import numpy as np

    reconstruct = np._core.multiarray._reconstruct if hasattr(np, "_core") else np.core.multiarray._reconstruct
    return [reconstruct, (reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray, np.dtype,
            type(np.dtype(np.uint32))]


def _unsafe_globals(message: str) -> list[str]:
    import re

    # "Unsupported global: GLOBAL x.y was not ..." or "unsupported GLOBAL posix.system whose module ... is blocked"
    return sorted(set(re.findall(r"GLOBAL ([\w.]+)", message)))


def torch_load(path, *, trust: bool = False):
    """`torch.load` of a local file with `weights_only=True` (tensors, containers, numbers, strings, numpy RNG
    arrays). A file that needs more is refused with UnsafeCheckpointError, never retried unsafely; only
    `trust=True` (the user's explicit --trust-checkpoint) unpickles it in full."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises pickle/zip/runtime errors for bad files
        message = str(exc)
        names = _unsafe_globals(message)
        if names and not trust:
            raise UnsafeCheckpointError(
                f"checkpoint {path} is not plain weights: its pickle calls {', '.join(names)}, and loading it "
                f"could run code, so it was not loaded; pass {TRUST_FLAG} only if you trust this file"
            ) from None
        first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is not a readable torch file: {first[:200]}") from None


def read_state_dict(path, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: raw state dict, {'state_dict': ...} or {'model': ...};
    'module.' prefixes (DataParallel) are stripped. Loaded safely (see `torch_load`)."""
    obj = torch_load(path, trust=trust)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (expected tensors, "
                              f"or a dict with 'state_dict' or 'model')")
    return {_strip_module(k): v for k, v in obj.items()}


def _strip_module(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module."):]
    return key


def _fold_pruning(state: dict, model_keys) -> dict:
    """A checkpoint saved mid-pruning has X_orig + X_mask; a plain model wants X = X_orig * X_mask."""
    out = dict(state)
    for key in list(state):
        if key.endswith("_orig"):
            base = key[: -len("_orig")]
            if base + "_mask" in state and base in model_keys and key not in model_keys:
                out[base] = state[key] * state[base + "_mask"]
                del out[key], out[base + "_mask"]
    return out


def load_checkpoint(model: nn.Module, path, strict: bool = True, trust: bool = False) -> nn.Module:
    """Load weights into `model` (in place, returned too); CheckpointError names the first misfits."""
    state = read_state_dict(path, trust=trust)
    expected = model.state_dict()
    state = _fold_pruning(state, expected)
    optional = ("num_batches_tracked",)  # absent from checkpoints of old torch versions
    missing = [k for k in expected if k not in state and not k.endswith(optional)]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]) + (" ..." if len(shapes) > 5 else ""))
    if strict and missing:
        problems.append(f"missing keys {missing[:5]}" + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    if strict and unexpected:
        problems.append(f"unexpected keys {unexpected[:5]}"
                        + (f" (+{len(unexpected) - 5} more)" if len(unexpected) > 5 else ""))
    if problems:
        raise CheckpointError(f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model


def init_from_checkpoint(model: nn.Module, path, prefix: str = "", trust: bool = False) -> int:
    """Copy the tensors of another model's checkpoint whose names start with `prefix` into the same-named
    tensors of `model` (e.g. a trained backbone into a new head); returns how many were copied. Every tensor
    under the prefix must exist in `model` with the same shape, and at least one must: a partial start that
    silently copied nothing would train from random weights while the recipe claims otherwise."""
    expected = model.state_dict()
    state = _fold_pruning(read_state_dict(path, trust=trust), expected)
    chosen = {k: v for k, v in state.items() if k.startswith(prefix)}
    if not chosen:
        raise CheckpointError(f"init_from {path}: no tensor name starts with {prefix!r}")
    absent = [k for k in chosen if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
              for k, v in chosen.items() if k in expected and v.shape != expected[k].shape]
    if absent or shapes:
        problems = ([f"not in {type(model).__name__}: {absent[:3]}" + (" ..." if len(absent) > 3 else "")]
                    if absent else []) + (["shape mismatch " + "; ".join(shapes[:3])] if shapes else [])
        raise CheckpointError(f"init_from {path} (prefix {prefix!r}) does not fit: " + "; ".join(problems))
    model.load_state_dict(chosen, strict=False)
    return len(chosen)


# ---------------------------------------------------------------- small models

@register_model("tiny_cnn", "classification")
def tiny_cnn(num_classes: int, width: int = 8) -> nn.Module:
    """A few-thousand-parameter CNN for tests: trains in seconds on synthetic data."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )


@register_model("tiny_segnet", "segmentation")
def tiny_segnet(num_classes: int, width: int = 8) -> nn.Module:
    """A per-pixel classifier with a small receptive field, any input size, logits at input resolution."""
    return nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, num_classes, 1),
    )


class LeNet5(nn.Module):
    """LeNet-5 for 32x32 RGB (the paper's classifier): conv5-pool-conv5-pool-fc120-fc84-fc."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


@register_model("lenet5", "classification")
def lenet5(num_classes: int) -> nn.Module:
    return LeNet5(num_classes)


# ---------------------------------------------------------------- CIFAR ResNets (6n+2, option A)
# Module names follow Idelbayev's pytorch_resnet_cifar10 so its state dicts load unchanged.

class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by 2 and zero-pad the new channels (parameter free)."""

    def __init__(self, planes: int):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(planes) if stride != 1 or in_planes != planes else nn.Sequential()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, n, 1)
        self.layer2 = self._make_layer(32, n, 2)
        self.layer3 = self._make_layer(64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # == avg_pool2d(out, 8) at 32x32
        return self.linear(out)


def _register_cifar_resnet(depth: int):
    @register_model(f"resnet{depth}", "classification")
    def build(num_classes: int) -> nn.Module:
        return CifarResNet(depth, num_classes)

    build.__name__ = f"resnet{depth}"
    return build


for _depth in (20, 32, 44, 56):
    _register_cifar_resnet(_depth)


# ---------------------------------------------------------------- torchvision classifiers

def _torchvision_resnet(arch: str, num_classes: int, small_input: bool) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if small_input:  # 32x32 inputs: keep resolution in the stem (3x3 stride 1, no max-pool)
        model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


@register_model("resnet18", "classification")
def resnet18(num_classes: int, small_input: bool = False) -> nn.Module:
    return _torchvision_resnet("resnet18", num_classes, small_input)


@register_model("resnet101", "classification")
def resnet101(num_classes: int, small_input: bool = False) -> nn.Module:
    return _torchvision_resnet("resnet101", num_classes, small_input)


# ---------------------------------------------------------------- torchvision segmentation

class SegmentationLogits(nn.Module):
    """Unwraps torchvision's {'out': logits} so forward returns the logits tensor itself.

    `logits_size` (height, width), set for export, makes the head's bilinear upsample end at that size instead
    of the input's: the robot then takes the argmax over fewer pixels and enlarges the class-id mask by nearest
    neighbour, which costs no accuracy at half the frame's size (docs/RESULTS.md, CamVid).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.logits_size: tuple[int, int] | None = None

    def forward(self, x):
        if self.logits_size is None:
            return self.model(x)["out"]
        from torch.nn import functional as F
        from torchvision.models.segmentation.lraspp import LRASPP

        features = self.model.backbone(x)
        # LR-ASPP's head reads the low and high features; DeepLabV3/FCN heads read 'out' (aux head unused)
        out = self.model.classifier(features if isinstance(self.model, LRASPP) else features["out"])
        return F.interpolate(out, size=self.logits_size, mode="bilinear", align_corners=False)


def _register_segmentation(name: str):
    @register_model(name, "segmentation")
    def build(num_classes: int) -> nn.Module:
        from torchvision.models import segmentation

        builder = getattr(segmentation, name)
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
        # torchvision's MobileNetV3 uses BN momentum 0.01 (long ImageNet schedules). Trained from scratch for a
        # few hundred steps its running statistics lag the weights and eval-mode accuracy collapses (CamVid:
        # train loss 0.5, val pixel accuracy 0.22); 0.1 is PyTorch's default and what the ResNet models use.
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        return SegmentationLogits(model)

    build.__name__ = name
    return build


for _name in ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_mobilenet_v3_large",
              "lraspp_mobilenet_v3_large"):
    _register_segmentation(_name)


def _register_detectors() -> None:
    """The detectors (compress/detection/models.py, task detection: SSDlite, RetinaNet, FCOS and a tiny one)."""
    from robot_compress.compress.detection.models import DETECTORS

    for _det_name, _det_builder in DETECTORS.items():
        register_model(_det_name, "detection")(_det_builder)


_register_detectors()
