"""Training loops shaped like torchvision's reference recipes: `train_one_epoch`, `evaluate`, `fit`.

`fit` writes a checkpoint to the output dir after every epoch (model, optimizer, epoch, history, the RNG and
loader-shuffle state, and the config and stage fingerprint that made it) and resumes from it when called again
with the same inputs: rerunning with more epochs continues where the last run stopped instead of starting over,
and an interrupted run resumed from its last epoch ends bit-exactly where an uninterrupted one would. Pruning
masks (torch.nn.utils.prune `weight_orig`/`weight_mask`) travel inside the checkpoints, so fine-tuning keeps them.
Checkpoints are read with `weights_only=True` (see models.torch_load): nothing in them can run code.
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

# Set-up shared with evaluation (devices.py, so evaluate.py needs nothing from here: no import cycle).
from robot_compress.compress.devices import device_label, make_loader, pick_device, seed_everything  # noqa: F401

CHECKPOINT_FORMAT = "robot_compress/checkpoint/1"


class ResumeError(RuntimeError):
    """The output dir holds a checkpoint made by a different configuration."""


RESTART_HINT = "pass --restart to discard it, or choose another --out"


# ---------------------------------------------------------------------------------------------- set-up


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
    if info.task == "detection":  # the detector's own losses (compress/detection/train.py)
        from robot_compress.compress.detection.train import detection_loss

        return detection_loss()
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

    if info.task == "detection":  # Chen et al. 2017 (compress/detection/kd.py)
        from robot_compress.compress.detection.kd import detection_kd_loss

        return detection_kd_loss(temperature, alpha)
    weight = _weight_tensor(class_weights)

    def loss(student_logits, targets, teacher_logits):
        if info.task == "segmentation":
            w = None if weight is None else weight.to(student_logits.device)
            return pixel_kd_loss(student_logits, teacher_logits, targets, temperature, alpha, info.ignore_index,
                                 class_weights=w)
        return kd_loss(student_logits, teacher_logits, targets, temperature, alpha)

    return loss


# ---------------------------------------------------------------------------------------------- loops


def autocast(device, precision: str = "fp32"):
    """bf16 autocast for `precision: bf16` (tensor cores on a GPU); a no-op context for fp32."""
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    if precision != "bf16":
        raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def train_one_epoch(model: nn.Module, loader, optimizer, loss_fn, device, teacher: nn.Module | None = None,
                    desc: str = "train", precision: str = "fp32", log: Callable[[str], None] | None = None) -> dict:
    """One pass over `loader`; with `log`, progress lines (rate, eta, running loss) when not on a terminal."""
    from robot_compress.compress.progress import track

    model.train()
    if teacher is not None:
        teacher.eval()
    total = torch.zeros((), device=device)
    count = 0

    def running_loss() -> str:  # read only when a line is printed: a per-step .item() would stall a GPU
        return f"loss {float(total) / max(count, 1):.4f}"

    from robot_compress.compress import distributed

    batches = track(loader, desc, total=len(loader), log=log, note=running_loss)
    with distributed.uneven_batches(model):
        for step, (images, targets) in enumerate(batches):
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
            # Under torchrun: this rank's share of the global batch, so DDP's average is the global-batch mean.
            (loss * getattr(loader, "weight", 1.0)).backward()
            optimizer.step()
            # Summed on the device: a per-step .item() would stall a GPU on every batch.
            total += loss.detach().float() * images.shape[0]
            count += images.shape[0]
    if distributed.active():  # the logged loss covers every rank's items
        total, count = distributed.sum_tensor(total), int(distributed.sum_numbers(count)[0])
    mean = float(total) / max(count, 1)
    if not math.isfinite(mean):
        raise FloatingPointError(f"training loss became {mean} (lower the learning rate)")
    return {"loss": mean, "items": count}


def evaluate(model: nn.Module, loader, info, device, log: Callable[[str], None] | None = None) -> dict:
    """Metrics over the loader; under torchrun each rank scores its part and the meters are all-reduced."""
    from robot_compress.compress import distributed
    from robot_compress.compress.evaluate import evaluate_loader

    return evaluate_loader(model, loader, info, device, log=log, reduce=distributed.active())


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


def rng_state() -> dict:
    """The global RNG states as tensors, lists and numbers: loadable with weights_only=True (no numpy arrays)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`, or the numpy-array form of checkpoints written before issue 13."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def loader_state(loader) -> dict | None:
    """The shuffle generator's state of a DataLoader or TensorBatches (None for loaders without one)."""
    gen = getattr(loader, "generator", None)
    return {"generator": gen.get_state()} if isinstance(gen, torch.Generator) else None


def set_loader_state(loader, state: dict | None) -> bool:
    """Continue the loader's shuffle sequence where a checkpoint left it (instead of reseeding it)."""
    gen = getattr(loader, "generator", None)
    if not state or not isinstance(gen, torch.Generator):
        return False
    gen.set_state(state["generator"])
    return True


def save_checkpoint(path: str | Path, model: nn.Module, *, config: dict, model_name: str, model_cfg: dict,
                    info, epoch: int = 0, history: list | None = None, optimizer=None, role: str = "student",
                    extra: dict | None = None, fingerprint: str | None = None,
                    loader: dict | None = None) -> Path:
    """Atomic save (temp file + rename) of everything needed to rebuild, resume or export the model."""
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
        "rng": rng_state(),
        "fingerprint": fingerprint,
        "loader": loader,
    }
    if extra:
        state.update(extra)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:  # interrupted mid-write: the previous checkpoint stays whole, the partial temp file goes
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | Path, trust: bool = False) -> dict:
    """Load a checkpoint file as a dict, safely (weights_only; `trust` = the user's --trust-checkpoint);
    a missing, unreadable or unsafe file raises CheckpointError."""
    from robot_compress.compress.models import CheckpointError, torch_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    state = torch_load(path, trust=trust)
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    return state


def is_own_checkpoint(state: dict) -> bool:
    return state.get("format") == CHECKPOINT_FORMAT


def load_weights(model: nn.Module, path: str | Path, trust: bool = False) -> dict:
    """Load our checkpoint (with masks) or any plain/`module.`-prefixed state dict into `model`.

    Returns the checkpoint dict (empty metadata for foreign files). Mismatches raise CheckpointError.
    """
    from robot_compress.compress.models import CheckpointError, load_checkpoint

    state = read_checkpoint(path, trust=trust)
    if not is_own_checkpoint(state):
        load_checkpoint(model, path, trust=trust)
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


def _epoch_pace(items: int, epoch_seconds: list[float], epochs_left: int) -> str:
    """'33.1 s, 14.2 items/s, stage eta 20m41s' from this process's epochs (resumed ones are not timed here)."""
    from robot_compress.compress.progress import format_duration

    last = epoch_seconds[-1]
    text = f"{last:.1f} s, {items / last:.1f} items/s" if last > 0 else f"{last:.1f} s"
    if epochs_left > 0:
        text += f", stage eta {format_duration(sum(epoch_seconds) / len(epoch_seconds) * epochs_left)}"
    return text


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


def check_resumable(path: Path, state: dict, config: dict, fingerprint: str | None = None,
                    warn: Callable[[str], None] | None = None) -> None:
    """Raise ResumeError unless the checkpoint at `path` was made by these inputs: its stage fingerprint
    matches, or (a checkpoint written before fingerprints existed) its stored stage settings do. The latter
    is accepted with a warning: the teacher, starting weights and earlier stages cannot be checked then."""
    if not is_own_checkpoint(state):
        raise ResumeError(f"{path} is not a checkpoint of this toolkit; {RESTART_HINT}")
    stored = state.get("fingerprint")
    if stored is not None and fingerprint is not None:
        if stored != fingerprint:
            raise ResumeError(f"{path} was made by a different configuration (stage fingerprint {stored[:12]}, "
                              f"now {fingerprint[:12]}); {RESTART_HINT}")
        return
    if _resume_key(state.get("config") or {}) != _resume_key(config):
        raise ResumeError(f"{path} was made by a different configuration; {RESTART_HINT}")
    if stored is None and warn is not None:
        warn(f"warning: {path} predates stage fingerprints; reused because its stage settings match (its teacher, "
             "starting weights and earlier stages cannot be checked)")


def fit(model: nn.Module, train_ds, val_ds, info, *, out_dir: str | Path, epochs: int, config: dict,
        model_name: str, model_cfg: dict | None = None, loss_fn: Callable | None = None,
        optimizer: str = "sgd", lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
        batch_size: int = 32, scheduler: str = "cosine", seed: int = 0, device=None,
        teacher: nn.Module | None = None, checkpoint_name: str = "checkpoint.pt", role: str = "student",
        log: Callable[[str], None] = print, loaders: Callable | None = None, precision: str = "fp32",
        val_every: int = 1, fingerprint: str | None = None) -> FitResult:
    """Train `model` for `epochs` (total, including epochs already in a resumable checkpoint).

    `loaders(batch_size, seed) -> (train, val)` replaces the default DataLoaders (e.g. TensorBatches of a
    preloaded split); `precision="bf16"` trains under bf16 autocast; `val_every=n` scores the validation
    split every n epochs and after the last (epochs in between record `val: null`). `fingerprint` identifies
    everything that determines this training (see pipeline.stage_fingerprints); a checkpoint made under
    another one is never resumed.
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
    from robot_compress.compress import distributed

    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    opt = make_optimizer(model, optimizer, lr, momentum, weight_decay)
    writes = distributed.is_main()  # under torchrun only rank 0 writes checkpoints
    history: list = []
    start_epoch = 0
    saved_loader = None

    if ckpt_path.is_file():
        state = read_checkpoint(ckpt_path)
        check_resumable(ckpt_path, state, config, fingerprint, warn=log)
        restore_masks(model, state["model"])
        model.load_state_dict(state["model"])
        if state.get("optimizer"):
            opt.load_state_dict(state["optimizer"])
        history = list(state.get("history") or [])
        start_epoch = int(state["epoch"])
        if "torch" in (state.get("rng") or {}):
            set_rng_state(state["rng"])
        saved_loader = state.get("loader")
        log(f"resumed from {ckpt_path} at epoch {start_epoch}/{epochs}")

    # The shuffle generator continues from the checkpoint; only checkpoints that predate its state (no "loader")
    # fall back to reseeding with seed + epoch, as they were written.
    loader_seed = seed if saved_loader else seed + start_epoch
    if loaders is not None:
        train_loader, val_loader = loaders(batch_size, loader_seed)
    else:
        train_loader = make_loader(train_ds, batch_size, shuffle=True, seed=loader_seed)
        val_loader = make_loader(val_ds, batch_size, shuffle=False)
    set_loader_state(train_loader, saved_loader)
    distributed.decorrelate_rng(seed, start_epoch)
    train_model = distributed.wrap(model, device)
    epoch_seconds: list[float] = []
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(scheduler, lr, epoch, epochs)
        stats = train_one_epoch(train_model, train_loader, opt, loss_fn, device, teacher=teacher,
                                desc=f"{role} epoch {epoch + 1}/{epochs}", precision=precision, log=log)
        scored = (epoch + 1) % max(val_every, 1) == 0 or epoch + 1 == epochs
        val = evaluate(model, val_loader, info, device, log=log) if scored else None
        record = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": round(stats["loss"], 6),
                  "val": val, "seconds": round(time.perf_counter() - t0, 3),  # survives resumes in the checkpoint
                  "device": device_label(device)}
        history.append(record)
        if writes:
            save_checkpoint(ckpt_path, model, config=config, model_name=model_name, model_cfg=model_cfg or {},
                            info=info, epoch=epoch + 1, history=history, optimizer=opt, role=role,
                            fingerprint=fingerprint, loader=loader_state(train_loader))
        epoch_seconds.append(record["seconds"])
        log(f"{role} epoch {epoch + 1}/{epochs} train_loss={stats['loss']:.4f} {_val_text(val)} "
            f"({_epoch_pace(stats['items'], epoch_seconds, epochs - epoch - 1)})")

    if start_epoch >= epochs and history:
        log(f"{ckpt_path} already holds {start_epoch} epoch(s) >= {epochs}; nothing to train")
    last = history[-1]["val"] if history else None
    metrics = last if last is not None else evaluate(model, val_loader, info, device, log=log)
    return FitResult(history=history, metrics=metrics, resumed_from_epoch=start_epoch, checkpoint=ckpt_path)
