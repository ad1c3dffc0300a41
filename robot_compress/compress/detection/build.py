"""Building a recipe's detector: registry model, weights from a checkpoint, or a backbone started from another
model's MobileNetV3 (`init_from` + `init_prefix`, mapped by `Detector.backbone_map`)."""
from __future__ import annotations

from pathlib import Path

import torch


class DetectionBuildError(ValueError):
    """A detector cannot be built as the recipe asks (the message says why)."""


def init_backbone(model, path, prefix: str, trust: bool = False) -> dict:
    """Copy a MobileNetV3's `features` tensors (the keys under `prefix` are `<i>.<rest>`, i indexing
    `mobilenet_v3_large().features`; the CamVid LR-ASPP/DeepLabV3 checkpoints: prefix `model.backbone.`) into the
    detector's backbone through its `backbone_map`. As `models.init_from_checkpoint`, every tensor must fit: a
    shape mismatch (another width or tail) is an error naming the first ones, and so is copying nothing.
    Tensors under the prefix with no place in the backbone (a segmentation head) are counted as `unmapped`.
    Returns {"copied", "skipped_shape" (0), "unmapped", "backbone", "source", "prefix"}."""
    from robot_compress.compress.models import CheckpointError, _fold_pruning, read_state_dict

    mapping = getattr(model, "backbone_map", None)
    if not mapping:
        raise DetectionBuildError(f"init_from {path}: model {type(model).__name__} has no MobileNetV3 backbone map "
                                  "(only the MobileNetV3 detectors start from another model's backbone)")
    expected = model.state_dict()
    state = _fold_pruning(read_state_dict(path, trust=trust), expected)
    chosen = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if not chosen:
        raise CheckpointError(f"init_from {path}: no tensor name starts with {prefix!r}")
    copy, skipped, unmapped = {}, [], []
    for key, value in chosen.items():
        target = mapping.get(key)
        if target is None:
            unmapped.append(key)
        elif tuple(expected[target].shape) != tuple(value.shape):
            skipped.append(key)
        else:
            copy[target] = value
    if skipped:
        shown = "; ".join(f"{k}: checkpoint {tuple(chosen[k].shape)} vs model {tuple(expected[mapping[k]].shape)}"
                          for k in skipped[:3])
        raise CheckpointError(f"init_from {path} (prefix {prefix!r}): {len(skipped)} backbone tensors differ in "
                              f"shape (another width or tail?): {shown}")
    if not copy:
        raise CheckpointError(f"init_from {path} (prefix {prefix!r}): none of its {len(chosen)} tensors fits the "
                              f"detector's backbone ({len(skipped)} differ in shape, {len(unmapped)} have no place)")
    model.load_state_dict(copy, strict=False)
    return {"copied": len(copy), "skipped_shape": len(skipped), "unmapped": len(unmapped), "backbone": len(mapping),
            "source": str(path), "prefix": prefix}


def build_detector(spec, info, role: str, trust: bool = False):
    """(model, checkpoint dict, init report or None) for a recipe's ModelSpec on a detection dataset.

    A teacher checkpoint trained at another input size keeps it: the detector then resizes what it is given to
    its own size and answers in the caller's pixels (`Detector.native_size`), so a large teacher can distil into
    a student at a smaller input."""
    from robot_compress.compress.detection.models import Detector
    from robot_compress.compress.models import get_model, load_user_model, model_task
    from robot_compress.compress.train import load_weights, read_checkpoint

    num_classes = len(info.labels)
    native = None
    if spec.checkpoint:
        state = read_checkpoint(spec.checkpoint, trust=trust)
        if state.get("num_classes") not in (None, num_classes):
            raise DetectionBuildError(f"{role} checkpoint {spec.checkpoint} has {state['num_classes']} classes but "
                                      f"the dataset has {num_classes}: class-count mismatch")
        made = (state.get("dataset_info") or {}).get("input_size")
        if made and tuple(made) != tuple(info.input_size):
            if role != "teacher":
                raise DetectionBuildError(f"{role} checkpoint {spec.checkpoint} was trained at input size "
                                          f"{made[0]}x{made[1]} but the dataset gives "
                                          f"{info.input_size[0]}x{info.input_size[1]}: wrong input size")
            native = (int(made[0]), int(made[1]))
    if ":" in spec.model:
        model = load_user_model(spec.model, num_classes=num_classes, **spec.cfg)
    else:
        if model_task(spec.model) != "detection":
            raise DetectionBuildError(f"{role} model {spec.model!r} is a {model_task(spec.model)} model but the "
                                      "dataset is detection")
        model = get_model(spec.model, num_classes, **spec.cfg)
    if not isinstance(model, Detector):
        raise DetectionBuildError(f"{role} model {spec.model!r} is no robot_compress Detector; detection recipes "
                                  "need one of the registered detectors")
    ckpt = load_weights(model, spec.checkpoint, trust=trust) if spec.checkpoint else {}
    report = init_backbone(model, spec.init_from, spec.init_prefix, trust=trust) if spec.init_from else None
    model.native_size = native
    check_detector_fits(model, info, role, spec.model)
    return model, ckpt, report


def check_detector_fits(model, info, role: str, name: str) -> None:
    h, w = info.input_size
    model.eval()
    try:
        with torch.no_grad():
            boxes, scores = model(torch.zeros(1, 3, h, w))
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[0]
        raise DetectionBuildError(f"{role} model {name!r} does not accept input size {h}x{w} ({msg})") from None
    if scores.shape[-1] != len(info.labels) or boxes.shape[-1] != 4:
        raise DetectionBuildError(f"{role} model {name!r} scores {scores.shape[-1]} classes but the dataset has "
                                  f"{len(info.labels)}: class-count mismatch")


def describe_init(role: str, report: dict) -> str:
    return (f"{role}: backbone from {Path(report['source']).name} ({report['prefix']}*): copied "
            f"{report['copied']} of the backbone's {report['backbone']} tensors ({report['skipped_shape']} skipped: "
            f"other shape, {report['unmapped']} without a place)")
