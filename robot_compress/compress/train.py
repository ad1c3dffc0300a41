"""Training loops shaped like torchvision's reference recipes: `train_one_epoch`, `evaluate`, `fit`.

`fit` writes a checkpoint to the output dir after every epoch (model, optimizer, epoch, history and the
config that made it) and resumes from it when called again with the same config: rerunning with more
epochs continues where the last run stopped instead of starting over. Pruning masks
(torch.nn.utils.prune `weight_orig`/`weight_mask`) travel inside the checkpoints, so fine-tuning keeps them.
"""
from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

CHECKPOINT_FORMAT = "robot_compress/checkpoint/1"


class ResumeError(RuntimeError):
    """The output dir holds a checkpoint made by a different configuration."""


# ---------------------------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        return torch.device("cuda")
    return torch.device("cpu")


def device_label(device) -> str:
    """'cpu', or 'cuda:<GPU name>': recorded per epoch, so a run trained partly on a lent GPU says so."""
    device = torch.device(device)
    return f"cuda:{torch.cuda.get_device_name(device)}" if device.type == "cuda" else device.type


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
    # num_workers=0: deterministic, and the workstation's cores are better spent in the model.
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=0,
                      drop_last=False)


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float = 0.05, momentum: float = 0.9,
                   weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose sgd, adam or adamw")


def cosine_lr(base_lr: float, epoch: int, epochs: int) -> float:
    """Learning rate for a 0-based epoch: a pure function of (epoch, epochs), so resuming needs no state."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))


def poly_lr(base_lr: float, epoch: int, epochs: int, power: float = 0.9) -> float:
    """DeepLab's poly schedule, base_lr * (1 - epoch/epochs)^0.9, per 0-based epoch (pure, like cosine_lr)."""
    return base_lr * (1.0 - epoch / max(epochs, 1)) ** power


def scheduled_lr(scheduler: str, base_lr: float, epoch: int, epochs: int) -> float:
    if scheduler == "cosine":
        return cosine_lr(base_lr, epoch, epochs)
    if scheduler == "poly":
        return poly_lr(base_lr, epoch, epochs)
    if scheduler == "none":
        return base_lr
    raise ValueError(f"unknown scheduler {scheduler!r}; choose cosine, poly or none")


# ---------------------------------------------------------------------------------------------- losses


def _weight_tensor(class_weights) -> torch.Tensor | None:
    return None if class_weights is None else torch.as_tensor(np.asarray(class_weights), dtype=torch.float32)


def task_loss(info, class_weights=None) -> Callable:
    """Cross-entropy for the dataset's task (void pixels ignored for segmentation), optionally class-weighted."""
    weight = _weight_tensor(class_weights)
    if info.task == "segmentation" and info.ignore_index is not None:
        ce = nn.CrossEntropyLoss(weight=weight, ignore_index=int(info.ignore_index))
    else:
        ce = nn.CrossEntropyLoss(weight=weight)

    def loss(student_logits, targets, teacher_logits=None):
        ce.to(student_logits.device)  # the weight tensor follows the model's device
        return ce(student_logits, targets)

    return loss


def distill_loss(info, temperature: float, alpha: float, class_weights=None) -> Callable:
    """Hinton KD for classification, pixel-wise KD (void ignored, optionally class-weighted) for segmentation."""
    from robot_compress.compress.kd import kd_loss, pixel_kd_loss

    weight = _weight_tensor(class_weights)

    def loss(student_logits, targets, teacher_logits):
        if info.task == "segmentation":
            w = None if weight is None else weight.to(student_logits.device)
            return pixel_kd_loss(student_logits, teacher_logits, targets, temperature, alpha, info.ignore_index,
                                 class_weights=w)
        return kd_loss(student_logits, teacher_logits, targets, temperature, alpha)

    return loss


# ---------------------------------------------------------------------------------------------- loops


def _progress(iterable, desc: str, total: int | None = None):
    from tqdm import tqdm

    # disable=None: bars on a terminal, silent in logs and tests.
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=None, dynamic_ncols=True)


def autocast(device, precision: str = "fp32"):
    """bf16 autocast for `precision: bf16` (tensor cores on a GPU); a no-op context for fp32."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def train_one_epoch(model: nn.Module, loader, optimizer, loss_fn, device, teacher: nn.Module | None = None,
                    desc: str = "train", precision: str = "fp32") -> dict:
    model.train()
    if teacher is not None:
        teacher.eval()
    total = torch.zeros((), device=device)
    count = 0
    for step, (images, targets) in enumerate(_progress(loader, desc, total=len(loader))):
        images, targets = images.to(device), targets.to(device)
        teacher_logits = None
        with autocast(device, precision):
            if teacher is not None:
                with torch.no_grad():
                    teacher_logits = teacher(images)
            logits = model(images)
            loss = loss_fn(logits, targets, teacher_logits)
        if step == 0 and not torch.isfinite(loss):  # fail fast, before a bad step touches the weights
            raise FloatingPointError(f"training loss became {loss.item()} (lower the learning rate)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        # Summed on the device: a per-step .item() would stall a GPU on every batch.
        total += loss.detach().float() * images.shape[0]
        count += images.shape[0]
    mean = float(total) / max(count, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"training loss became {mean} (lower the learning rate)")
    return {"loss": mean}


def evaluate(model: nn.Module, loader, info, device) -> dict:
    from robot_compress.compress.evaluate import evaluate_loader

    return evaluate_loader(model, loader, info, device)


# ---------------------------------------------------------------------------------------------- checkpoints


def restore_masks(model: nn.Module, state_dict: dict) -> None:
    """Re-create the pruning parametrisation a state dict was saved with, so it loads with its masks."""
    from torch.nn.utils import prune

    modules = dict(model.named_modules())
    for key in state_dict:
        if not key.endswith("_mask"):
            continue
        mod_name, _, param = key[: -len("_mask")].rpartition(".")
        module = modules.get(mod_name)
        if module is not None and not hasattr(module, param + "_mask") and hasattr(module, param):
            prune.identity(module, param)


def save_checkpoint(path: str | Path, model: nn.Module, *, config: dict, model_name: str, model_cfg: dict,
                    info, epoch: int = 0, history: list | None = None, optimizer=None, role: str = "student",
                    extra: dict | None = None) -> Path:
    """Atomic save of everything needed to rebuild, resume or export the model."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "format": CHECKPOINT_FORMAT,
        "model": model.state_dict(),
        "model_name": model_name,
        "model_cfg": dict(model_cfg or {}),
        "num_classes": len(info.labels),
        "dataset_info": info_to_dict(info),
        "config": config,
        "role": role,
        "epoch": int(epoch),
        "history": list(history or []),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    if extra:
        state.update(extra)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file as a dict; a missing or unreadable file raises CheckpointError."""
    from robot_compress.compress.models import CheckpointError

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises pickle/zip/runtime errors for damaged files
        raise CheckpointError(f"checkpoint {path} is corrupt or not a torch checkpoint: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def is_own_checkpoint(state: dict) -> bool:
    return state.get("format") == CHECKPOINT_FORMAT


def load_weights(model: nn.Module, path: str | Path) -> dict:
    """Load our checkpoint (with masks) or any plain/`module.`-prefixed state dict into `model`.

    Returns the checkpoint dict (empty metadata for foreign files). Mismatches raise CheckpointError.
    """
    from robot_compress.compress.models import CheckpointError, load_checkpoint

    state = read_checkpoint(path)
    if not is_own_checkpoint(state):
        load_checkpoint(model, path)
        return {}
    restore_masks(model, state["model"])
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not fit model {state.get('model_name')!r}: {' '.join(first[:3])}"
        ) from None
    return state


def info_to_dict(info) -> dict:
    return {
        "task": info.task,
        "labels": list(info.labels),
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "ignore_index": info.ignore_index,
        "fingerprint": info.fingerprint,
        "source": str(getattr(info, "source", "")),
    }


# ---------------------------------------------------------------------------------------------- fit


def _val_text(val: dict | None) -> str:
    if val is None:
        return "(not validated this epoch)"
    primary = val.get("primary", "")
    text = f"val_{primary}={val.get(primary)}"
    return text + (f" val_miou={val['miou']:.4f}" if "miou" in val else "")


@dataclass
class FitResult:
    history: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    resumed_from_epoch: int = 0
    checkpoint: Path | None = None


def _resume_key(config: dict) -> dict:
    key = copy.deepcopy(config)
    key.pop("epochs", None)  # more epochs = the same run, continued
    return key


def fit(model: nn.Module, train_ds, val_ds, info, *, out_dir: str | Path, epochs: int, config: dict,
        model_name: str, model_cfg: dict | None = None, loss_fn: Callable | None = None,
        optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        batch_size: int = 32, scheduler: str = "cosine", seed: int = 0, device=None,
        teacher: nn.Module | None = None, checkpoint_name: str = "checkpoint.pt", role: str = "student",
        log: Callable[[str], None] = print, loaders: Callable | None = None, precision: str = "fp32",
        val_every: int = 1) -> FitResult:
    """Train `model` for `epochs` (total, including epochs already in a resumable checkpoint).

    `loaders(batch_size, seed) -> (train, val)` replaces the default DataLoaders (e.g. TensorBatches of a
    preloaded split); `precision="bf16"` trains under bf16 autocast; `val_every=n` scores the validation
    split every n epochs and after the last (epochs in between record `val: null`).
    """
    device = device or pick_device()
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
    elif precision != "fp32":
        # CPUs without bf16 units emulate it: 27x slower per ResNet-20 step on this AVX2 machine.
        log(f"precision {precision} applies on CUDA only; training in fp32 on {torch.device(device).type}")
        precision = "fp32"
    out_dir = Path(out_dir)
    ckpt_path = out_dir / checkpoint_name
    loss_fn = loss_fn or task_loss(info)
    seed_everything(seed)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    history: list = []
    start_epoch = 0

    if ckpt_path.is_file():
        state = read_checkpoint(ckpt_path)
        if not is_own_checkpoint(state) or _resume_key(state.get("config") or {}) != _resume_key(config):
            raise ResumeError(
                f"{ckpt_path} was made by a different configuration; use a fresh output dir "
                "(or delete the checkpoint) to start over"
            )
        restore_masks(model, state["model"])
        model.load_state_dict(state["model"])
        if state.get("optimizer"):
            opt.load_state_dict(state["optimizer"])
        history = list(state.get("history") or [])
        start_epoch = int(state["epoch"])
        rng = state.get("rng") or {}
        if "torch" in rng:
            torch.set_rng_state(rng["torch"])
            np.random.set_state(rng["numpy"])
            random.setstate(rng["python"])
        log(f"resumed from {ckpt_path} at epoch {start_epoch}/{epochs}")

    if loaders is not None:
        train_loader, val_loader = loaders(batch_size, seed + start_epoch)
    else:
        train_loader = make_loader(train_ds, batch_size, shuffle=True, seed=seed + start_epoch)
        val_loader = make_loader(val_ds, batch_size, shuffle=False)
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(scheduler, lr, epoch, epochs)
        stats = train_one_epoch(model, train_loader, opt, loss_fn, device, teacher=teacher,
                                desc=f"{role} epoch {epoch + 1}/{epochs}", precision=precision)
        scored = (epoch + 1) % max(val_every, 1) == 0 or epoch + 1 == epochs
        val = evaluate(model, val_loader, info, device) if scored else None
        record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": round(stats["loss"], 6),
                  "val": val, "seconds": round(time.perf_counter() - t0, 3),  # survives resumes in the checkpoint
                  "device": device_label(device)}
        history.append(record)
        save_checkpoint(ckpt_path, model, config=config, model_name=model_name, model_cfg=model_cfg or {},
                        info=info, epoch=epoch + 1, history=history, optimizer=opt, role=role)
        log(f"{role} epoch {epoch + 1}/{epochs} train_loss={stats['loss']:.4f} {_val_text(val)} "
            f"({record['seconds']:.1f} s)")

    if start_epoch >= epochs and history:
        log(f"{ckpt_path} already holds {start_epoch} epoch(s) >= {epochs}; nothing to train")
    last = history[-1]["val"] if history else None
    metrics = last if last is not None else evaluate(model, val_loader, info, device)
    return FitResult(history=history, metrics=metrics, resumed_from_epoch=start_epoch, checkpoint=ckpt_path)
