"""One set of metrics for the torch model and for the exported ONNX model run through the runtime Engine.

Both paths feed the same numpy meters (robot_compress.runtime.metrics). The torch dataset's transform
(ToTensor/255, mean/std, model input size, no extra resize) is the Engine's preprocessing, so the two
agree to float rounding; segmentation is scored at model input resolution.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

PRIMARY = {"classification": "top1", "segmentation": "pixel_acc"}


class EvaluationError(ValueError):
    """The data does not fit the model (size, class count, empty set)."""


def _meter(info_task: str, num_classes: int, ignore_index):
    from robot_compress.runtime.metrics import ClassificationMeter, SegmentationMeter

    if info_task == "classification":
        return ClassificationMeter()
    return SegmentationMeter(num_classes, ignore_index)


def _summary(task: str, meter) -> dict:
    """Meter result as a plain JSON-able dict, with the paper's headline metric named in `primary`."""
    raw = meter.compute()
    out = dict(raw) if isinstance(raw, dict) else dict(vars(raw))
    clean = {}
    for key, val in out.items():
        if isinstance(val, np.ndarray):
            val = val.tolist()
        elif isinstance(val, (np.floating, np.integer)):
            val = val.item()
        if isinstance(val, list):
            val = [None if (isinstance(v, float) and np.isnan(v)) else v for v in val]
        clean[key] = val
    clean["primary"] = PRIMARY[task]
    return clean


def _check_nonempty(dataset, what: str):
    if len(dataset) == 0:
        raise EvaluationError(f"{what} dataset is empty: nothing to evaluate")


def evaluate_loader(model, loader, info, device, log: Callable[[str], None] | None = None,
                    reduce: bool = False) -> dict:
    """Metrics of `model` over `loader`; with `log`, progress lines when not on a terminal. `reduce`: the loader
    holds this rank's part of the split (torchrun); the meters are summed over all ranks before computing
    (detection: the ranks' predictions are gathered and the whole split scored)."""
    import torch

    from robot_compress.compress.progress import track

    if reduce:  # every rank scores rank 0's model (the one it saves), BatchNorm statistics included
        from robot_compress.compress.distributed import sync_buffers

        sync_buffers(model)
    if info.task == "detection":  # COCO AP through the runtime's postprocess (compress/detection/evaluate.py)
        from robot_compress.compress.detection.evaluate import evaluate_detector

        return evaluate_detector(model, loader, info, device, log=log, reduce=reduce)
    model.eval()
    meter = _meter(info.task, len(info.labels), info.ignore_index)
    with torch.no_grad():
        for images, targets in track(loader, "evaluate", log=log):
            logits = model(images.to(device))
            _check_logits(logits.shape, info, images.shape)
            if info.task == "classification":
                meter.update(logits.float().cpu().numpy(), targets.cpu().numpy())
            else:
                masks = logits.argmax(1).to(torch.uint8).cpu().numpy()
                meter.update(_at_label_size(masks, tuple(targets.shape[1:])), targets.cpu().numpy())
    if reduce:
        from robot_compress.compress.distributed import reduce_meter

        reduce_meter(meter)
    return _summary(info.task, meter)


def _at_label_size(masks: np.ndarray, label_hw) -> np.ndarray:
    """Class-id masks at model resolution -> the labels' resolution, resized as the robot's Engine does."""
    if masks.shape[1:] == tuple(label_hw):
        return masks
    from robot_compress.runtime.postprocess import resize_mask

    return np.stack([resize_mask(m, label_hw) for m in masks])


def _check_logits(shape, info, input_shape):
    c = len(info.labels)
    if shape[1] != c:
        raise EvaluationError(f"model outputs {shape[1]} classes but the dataset has {c} labels")
    if info.task == "segmentation" and tuple(shape[2:]) != tuple(input_shape[2:]):
        raise EvaluationError(
            f"segmentation output {tuple(shape[2:])} is not at input resolution {tuple(input_shape[2:])}"
        )


def evaluate_torch(model, dataset, info, batch_size: int = 64, device=None,
                   log: Callable[[str], None] | None = None) -> dict:
    from robot_compress.compress import distributed
    from robot_compress.compress.devices import make_loader, pick_device

    _check_nonempty(dataset, "evaluation")
    device = device or pick_device()
    model.to(device)
    return evaluate_loader(model, make_loader(dataset, batch_size, shuffle=False), info, device, log=log,
                           reduce=distributed.active())


def evaluate_onnx(path: str | Path, raw_dataset, threads: int = 1, at_frame_size: bool = False,
                  log: Callable[[str], None] | None = None) -> dict:
    """Score an ONNX model through the robot's own Engine, one RGB uint8 frame at a time.

    `raw_dataset` yields (HxWx3 uint8 RGB, target) — the dataset loaded with raw_uint8=True. By default frames
    must come at the model input size (another size is an error rather than a silent extra resize). With
    `at_frame_size` (segmentation) frames come at the camera's size and are scored exactly as the node
    publishes masks: `Engine.infer` resizes the frame in and the mask back to the frame's size. With `log`,
    progress lines when not on a terminal.
    """
    from robot_compress.compress.progress import track
    from robot_compress.runtime.engine import Engine

    _check_nonempty(raw_dataset, "evaluation")
    engine = Engine(path, threads=threads)
    meta = engine.meta
    meter = _meter(meta.task, meta.num_classes, meta.ignore_index)
    for i in track(range(len(raw_dataset)), f"evaluate {Path(path).name}", log=log, unit="frame"):
        rgb, target = raw_dataset[i]
        rgb = np.asarray(rgb)
        if at_frame_size and meta.task == "segmentation":
            mask = engine.infer(np.ascontiguousarray(rgb, dtype=np.uint8)).mask
            meter.update(mask[None], np.asarray(target)[None])
            continue
        if rgb.shape[:2] != tuple(meta.input_size):
            raise EvaluationError(
                f"frame {i} is {rgb.shape[1]}x{rgb.shape[0]} but {Path(path).name} expects "
                f"{meta.input_size[1]}x{meta.input_size[0]} (width x height): wrong input size"
            )
        logits = engine.logits(np.ascontiguousarray(rgb, dtype=np.uint8))
        target = np.asarray(target)
        if meta.task == "classification":
            meter.update(logits.copy(), target.reshape(1))
        else:
            meter.update(logits.argmax(1), target[None])
    return _summary(meta.task, meter)


RATE_KEYS = ("top1", "top5", "pixel_acc", "miou", "class_acc")


def agreement(torch_metrics: dict, onnx_metrics: dict) -> dict:
    """|torch - onnx| in percentage points for each rate metric (the meters return fractions)."""
    return {key: abs(float(torch_metrics[key]) - float(onnx_metrics[key])) * 100.0
            for key in RATE_KEYS if key in torch_metrics and key in onnx_metrics}


def engine_latency(path: str | Path, rgb: np.ndarray, runs: int = 50, warmup: int = 5, threads: int = 1,
                   full_frame: bool = False) -> dict:
    """Single-frame latency of the runtime Engine (preprocess + onnxruntime), in ms: p50 and p95 over `runs`;
    with `full_frame`, all of `Engine.infer` as the node calls it (also the argmax / top-k and the mask resized
    back to the frame's size).

    Measured on whatever machine runs it, under whatever load it has: a record, not a guarantee.
    """
    import time

    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    from robot_compress.runtime.engine import Engine

    engine = Engine(path, threads=threads)
    frame = np.ascontiguousarray(rgb, dtype=np.uint8)
    run = engine.infer if full_frame else engine.logits
    for _ in range(warmup):
        run(frame)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run(frame)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {f"latency_ms_p50_{threads}thread": round(float(np.percentile(times, 50)), 3),
            f"latency_ms_p95_{threads}thread": round(float(np.percentile(times, 95)), 3)}
