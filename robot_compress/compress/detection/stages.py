"""Recipe stages for task detection: which of the pipeline's stages apply as they are, which are replaced here,
and which are refused with a message naming what is unsupported.

- train, distill, finetune, prune: the pipeline's own (the loss, loader and metrics hooks make them detection
  stages: `train.task_loss` / `distill_loss`, `devices.make_loader`'s collate, `evaluate.evaluate_loader`).
- structured, export, evaluate: replaced (dense tuple outputs, AP metrics, the detection ONNX contract).
- quantize, cache_teacher, class_weights, dataset.preload: refused.

Under torchrun the training stages are data-parallel as for the other tasks (DDP over the detector, whose
train-mode `Dense` output DDP passes through untouched; each rank's part of each global batch; validation AP
over the ranks' gathered predictions); export and evaluate run on rank 0 alone after training (pipeline).

The functions take the pipeline's `State` (duck-typed: nothing here imports the pipeline at module level; the
export stage borrows its float16-copy writer and the evaluate stage its body, each with detection's own scoring).
"""
from __future__ import annotations

import torch


class DetectionStageError(ValueError):
    """A recipe asks for something detection does not support (the message names it)."""


def check_stage(stage) -> None:
    if getattr(stage, "cache_teacher", False):
        raise DetectionStageError(f"stage {stage.stage}: cache_teacher is not supported for detection (the teacher's "
                                  "dense outputs are recomputed per augmented batch)")
    if getattr(stage, "class_weights", "none") != "none":
        raise DetectionStageError(f"stage {stage.stage}: class_weights {stage.class_weights!r} applies to "
                                  "segmentation, not detection")


def detection_stage(stage):
    """The replacement for a stage on a detection recipe, or None when the pipeline's own applies."""
    check_stage(stage)
    if stage.stage == "quantize":
        raise DetectionStageError("the quantize stage (INT8) is not supported for detection yet; drop it")
    return {"structured": stage_structured, "export": stage_export, "evaluate": stage_evaluate}.get(stage.stage)


def check_data(spec) -> None:
    if spec.preload:
        raise DetectionStageError("dataset.preload is not supported for detection datasets; drop it")


def stage_structured(state, stage, index: int) -> dict:
    from robot_compress.compress.detection.structured import structured_prune_detector
    from robot_compress.compress.distributed import check_same_on_all_ranks
    from robot_compress.compress.evaluate import evaluate_torch
    from robot_compress.compress.pruning import is_pruned, make_permanent

    if "student_before_pruning" not in state.results:
        state.results["student_before_pruning"] = evaluate_torch(state.student.model, state.data.val,
                                                                 state.data.info, device=state.device, log=state.log)
    model = state.student.model.cpu().eval()
    if is_pruned(model):
        make_permanent(model)
    h, w = state.data.info.input_size
    report = structured_prune_detector(model, torch.zeros(1, 3, h, w), stage.ratio,
                                       ignored_layers=stage.ignored_layers or None, round_to=stage.round_to)
    check_same_on_all_ranks(model, f"structured pruning (ratio {stage.ratio:g})")  # each rank prunes its own copy
    model.to(state.device)
    state.results["structured"] = {"ratio": stage.ratio, "round_to": stage.round_to, "report": report}
    state.log(f"structured {stage.ratio:g}: params {report['params_before']:,} -> {report['params_after']:,}, "
              f"MACs {report['macs_before']:,} -> {report['macs_after']:,}")
    return {"ratio": stage.ratio}


def stage_export(state, stage, index: int) -> dict:
    from robot_compress.compress.detection.export import export_detector

    model_id = stage.model_id or state.recipe.name
    res = export_detector(state.student.model, state.out / f"{model_id}.onnx", state.data.info, model_id=model_id,
                          recipe=state.recipe.name, opset=stage.opset, atol=stage.atol, seed=state.recipe.seed)
    state.student.model.to(state.device)
    diff = max(res.max_abs_diff.values())
    state.exported.append({"kind": "fp32", "path": res.path.name, "max_abs_diff": diff,
                           "max_abs_diff_detail": res.max_abs_diff, "params": res.params,
                           "sparsity": float(res.metadata["sparsity"])})
    if stage.fp16_weights:  # the edge teacher's file within the repository's budget, as for CamVid
        from robot_compress.compress.pipeline import _export_fp16_weights

        _export_fp16_weights(state, res, stage, verify=_verify_fp16)
    return {"path": res.path.name, "max_abs_diff": diff}


def _verify_fp16(state, stage, dst) -> tuple[float, dict]:
    """Boxes (px) and scores of the float16-weight file against the torch model."""
    from robot_compress.compress.detection.export import verify_detector_onnx

    detail = verify_detector_onnx(state.student.model, dst, state.data.info.input_size, seed=state.recipe.seed)
    return max(detail.values()), detail


def latency_frame(raw_val, hw=(480, 640)):
    """The first validation frame resized to a 640x480 camera frame: latency is quoted at the camera's size."""
    import cv2

    rgb = raw_val[0][0]
    return cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)


def _score_onnx(state, path, stage) -> dict:
    """AP through the Engine on the val frames at their own size, and latency on a 640x480 camera frame."""
    from robot_compress.compress.detection.evaluate import evaluate_detector_onnx
    from robot_compress.compress.evaluate import engine_latency

    raw = state.data.raw_val()
    m = evaluate_detector_onnx(path, raw, log=state.log)
    if stage.latency_runs:
        lat = engine_latency(path, latency_frame(raw), stage.latency_runs, full_frame=True)
        m.update({f"{k}_640x480": v for k, v in lat.items()})
    return m


def stage_evaluate(state, stage, index: int) -> dict:
    """The pipeline's evaluate stage with detection's ONNX scoring and AP agreement; the stage record keeps
    the scalar metrics (the per-class dicts stay in metrics.json's student/onnx entries)."""
    from robot_compress.compress.detection.evaluate import agreement
    from robot_compress.compress.pipeline import stage_evaluate as evaluate_stage

    out = evaluate_stage(state, stage, index, score_onnx=_score_onnx, agreement=agreement)
    return {"metrics": {k: v for k, v in out["metrics"].items() if isinstance(v, (int, float, str))}}
