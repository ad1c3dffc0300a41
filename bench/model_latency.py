"""Model latency side by side: teacher vs student vs unstructured-pruned vs structured-pruned vs INT8 vs
structured + INT8, batch 1, onnxruntime CPU through the runtime Engine, 1 and 2 intra-op threads. Not a test.

    .venv/bin/python bench/model_latency.py [--quick] [--out build/bench/model_latency.json]

Weights: the trained models in models/ (their cards give accuracy) and the trained checkpoints in runs/
when present; otherwise the same architectures with random weights (the table says so and gives no
accuracy). Variants made here (pruned, INT8) are scored on the recipe's validation split through the
Engine when the weights are trained and ../shared holds the data; nothing is scored otherwise.

Timing: all variants of one group are loaded at once and timed in interleaved blocks, so machine-load
drifts hit them alike; warm-up runs are excluded. `session` = onnxruntime on the bound input only;
`frame` = Engine.infer on a frame at the robot's resolution (resize, normalise, run, argmax/top-k,
mask back to frame size; for detection: score threshold, per-class NMS, boxes back to frame pixels).
Peak RSS: VmHWM of a fresh process that loads the model and runs it.

Detection (Penn-Fudan, issue 14): the teacher runs at its own input size (`Group.teacher_input_size`), the
students at theirs; all take the same 640x480 camera frame through the Engine, and are scored as COCO AP50 on
the validation images at their own size (`compress/detection/evaluate.py`).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robot_compress.dataset_constants import (  # noqa: E402  (after the sys.path insert above)
    CAMVID_LABELS,
    CIFAR10_LABELS,
    IMAGENET_MEAN,
    IMAGENET_STD,
)
from robot_compress.pennfudan import LABELS as PENNFUDAN_LABELS  # noqa: E402
from robot_compress.pennfudan import VAL_EVERY as PENNFUDAN_VAL_EVERY  # noqa: E402


@dataclass
class DataRef:
    kind: str
    root: str  # relative to the repository root
    input_size: tuple[int, int]
    val_fraction: float | None = None  # carve validation from train (CIFAR-10: it has no other split here)
    seed: int = 0
    val_split: str | None = None  # or the dataset's own split (CamVid: val), scored at the frames' native size
    options: dict = field(default_factory=dict)  # loader options (synthetic data: n, num_classes, frame_size)

    @property
    def detection(self) -> bool:
        from robot_compress.compress.detection.data import DETECTION_KINDS

        return self.kind in DETECTION_KINDS

    @property
    def available(self) -> bool:
        """Synthetic data is made on the fly; the rest must be in ../shared."""
        return self.kind.startswith("synthetic") or (REPO / self.root).is_file()

    def train_and_val(self, raw_uint8: bool = False):
        """(train, val) exactly as the recipes split them; a native-size val split yields camera frames."""
        from robot_compress.compress.data import load_dataset, split_train_val

        if self.detection:
            return self._detection_train_and_val(raw_uint8)
        root = str(REPO / self.root)
        ds, _ = load_dataset(self.kind, root, input_size=self.input_size, train=True, raw_uint8=raw_uint8)
        if self.val_split is None:
            return split_train_val(ds, self.val_fraction, self.seed)
        val, _ = load_dataset(self.kind, root, input_size=self.input_size, train=False, split=self.val_split,
                              raw_uint8=raw_uint8, native=True)
        return ds, val

    def _detection_train_and_val(self, raw_uint8: bool):
        """As the detection recipes: every k-th image by sorted name validates (Penn-Fudan: pennfudan.py's val);
        raw_uint8 gives the validation frames at their own size (training items stay model inputs, for
        calibration)."""
        from torch.utils.data import Subset

        from robot_compress.compress.detection.data import carve_every, load_detection_dataset

        root = None if self.kind.startswith("synthetic") else str(REPO / self.root)
        ds = load_detection_dataset(self.kind, root, input_size=self.input_size, **self.options)
        train_idx, val_idx = carve_every(len(ds), self.val_fraction)
        return Subset(ds, train_idx), Subset(ds.variant(raw_uint8=raw_uint8), val_idx)

    def describe(self) -> str:
        if self.detection:
            from robot_compress.compress.detection.data import val_every

            return f"every {val_every(self.val_fraction)}th image by name, scored at frame size"
        if self.val_split is None:
            return f"val split {self.val_fraction:.0%} of train, seed {self.seed}"
        return f"{self.kind}'s own {self.val_split} split, scored at frame size"


@dataclass
class Group:
    """One teacher/student pair at one model input size."""
    name: str
    task: str
    labels: list[str]
    input_size: tuple[int, int]  # model input (h, w)
    frame_hw: tuple[int, int]  # the robot's camera frame
    teacher_arch: str
    student_arch: str
    teacher_onnx: list[str] = field(default_factory=list)  # globs under the repo; used if the input size fits
    teacher_ckpt: list[str] = field(default_factory=list)
    teacher_passes: int = 1  # forward passes of teacher_arch per frame in the shipped teacher (test-time flip: 2)
    teacher_input_size: tuple[int, int] | None = None  # the teacher's own input (h, w) when not input_size
    student_ckpt: list[str] = field(default_factory=list)
    deployed_onnx: list[str] = field(default_factory=list)  # shipped students, shown as extra rows
    finetuned_onnx: list[str] = field(default_factory=list)  # outputs of the structured + KD recipes, if run
    data: DataRef | None = None
    ignore_index: int | None = None
    structured_ratio: float = 0.5
    structured_round_to: int | None = None  # channel multiple kept by structured pruning (as the recipe's)
    unstructured_amount: float = 0.9
    arch_cfg: dict = field(default_factory=dict)
    note: str = ""  # shown under the group's table

    def input_for(self, role: str) -> tuple[int, int]:
        return tuple(self.teacher_input_size or self.input_size) if role == "teacher" else tuple(self.input_size)


def default_groups() -> list[Group]:
    cifar = DataRef("cifar10", "../shared/data/cifar10-jpeg-train.zip", (32, 32), 0.1)
    cls = Group("cifar10 32x32", "classification", CIFAR10_LABELS, (32, 32), (32, 32), "resnet56", "resnet20",
                teacher_onnx=["models/cifar10_resnet56_teacher.onnx"],
                teacher_ckpt=["runs/cifar10_resnet56_teacher_jpeg/student.pt"],
                student_ckpt=["runs/cifar10_resnet20_kd_full_int8/student.pt",  # the most accurate dense KD student
                              "runs/cifar10_resnet20_sweep/base-kd/student.pt",
                              "runs/cifar10_resnet20_sweep/base-kd/checkpoints/*distill_student.pt"],
                deployed_onnx=["models/cifar10_resnet20*.onnx", "models/cifar10_resnet32*.onnx"],
                finetuned_onnx=["runs/cifar10_resnet20_structured50_kd_int8/*.onnx"], data=cifar)
    # CamVid: the edge teacher and the robot's student, both at the camera's 360x480, scored on CamVid's own val
    # split at frame size (config/recipes/camvid_*.yaml).
    seg = Group("camvid 360x480", task="segmentation", labels=CAMVID_LABELS, input_size=(360, 480),
                frame_hw=(360, 480), teacher_arch="lraspp_mobilenet_v3_large",
                student_arch="lraspp_mobilenet_v3_large", teacher_passes=2,  # the edge teacher averages flips
                teacher_onnx=["models/camvid_teacher_fp16.onnx", "runs/camvid_teacher/camvid_teacher.onnx"],
                teacher_ckpt=["runs/camvid_student_labels/student.pt"],
                student_ckpt=["runs/camvid_student_labels/student.pt"],
                deployed_onnx=["models/camvid_lraspp_student.onnx",
                               "runs/camvid_lraspp_student/camvid_lraspp_student.onnx"],
                finetuned_onnx=["runs/camvid_lraspp_student_nokd/*.onnx"],
                data=DataRef("camvid", "../shared/data/camvid-trainval.zip", (360, 480), val_split="val"),
                ignore_index=11)
    return [cls, seg, pennfudan_group()]


def pennfudan_group() -> Group:
    """Penn-Fudan pedestrians (issue 14, config/recipes/pennfudan_*.yaml): the FCOS edge teacher at the camera's
    480x640 and the robot's SSDlite at 320x320, both answering 640x480 frames through the Engine (NMS included)."""
    cfg = {"score_threshold": 0.3, "nms_iou": 0.5, "max_detections": 100}  # as the recipes: the ONNX metadata
    return Group(
        "pennfudan 480x640", task="detection", labels=PENNFUDAN_LABELS, input_size=(320, 320), frame_hw=(480, 640),
        teacher_arch="fcos_mobilenet_v3_large_fpn", student_arch="ssdlite_mobilenet_v3_large",
        teacher_input_size=(480, 640),
        teacher_onnx=["models/pennfudan_teacher_fp16.onnx", "runs/pennfudan_teacher_edge/pennfudan_teacher_fp16.onnx",
                     "runs/pennfudan_teacher/pennfudan_teacher.onnx"],
        teacher_ckpt=["runs/pennfudan_teacher/student.pt"],
        student_ckpt=["runs/pennfudan_student_labels/student.pt"],  # the dense labels-trained SSDlite
        deployed_onnx=["models/pennfudan_student.onnx", "runs/pennfudan_student/pennfudan_student.onnx"],
        finetuned_onnx=["runs/pennfudan_student_nokd/*.onnx"],  # the no-KD ablation of the deployed student
        data=DataRef("pennfudan", "../shared/data/pennfudan-trainval.zip", (320, 320), 1 / PENNFUDAN_VAL_EVERY),
        structured_round_to=8, arch_cfg={"teacher": cfg, "student": cfg},
        note="Detection: the teacher runs at its own 480x640 input, the students at 320x320; every row answers "
             "the same 640x480 camera frame, so *frame p50* (Engine.infer: resize, normalise, run, score "
             "threshold, per-class NMS, boxes back to frame pixels) is the number the issue-14 goals use. "
             "Accuracy: COCO AP50 (and AP, IoU 0.50:0.95) on the 24 Penn-Fudan validation images at their own "
             "size (robot_compress/pennfudan.py's split).")


def tiny_groups() -> list[Group]:
    """Seconds-fast stand-ins (tests, --tiny): the same variants on few-thousand-parameter models."""
    return [
        Group("tiny cls 32x32", "classification", CIFAR10_LABELS, (32, 32), (32, 32), "tiny_cnn", "tiny_cnn",
              arch_cfg={"teacher": {"width": 16}, "student": {"width": 8}}),
        Group("tiny seg 36x48", "segmentation", CAMVID_LABELS, (36, 48), (72, 96), "tiny_segnet", "tiny_segnet",
              arch_cfg={"teacher": {"width": 16}, "student": {"width": 8}}),
        # as Penn-Fudan: an FCOS teacher at a larger input than the SSD student, frames of a third size; synthetic
        # boxes stand in for ../shared (frame and calibration through the detection data path)
        Group("tiny det 120x160", "detection", ["class0"], (64, 64), (120, 160), "tiny_detector", "tiny_detector",
              teacher_input_size=(96, 128),
              data=DataRef("synthetic_det", "", (64, 64), 1 / PENNFUDAN_VAL_EVERY,
                           options={"n": 20, "num_classes": 1, "frame_size": (120, 160)}),
              arch_cfg={"teacher": {"width": 32, "family": "fcos"}, "student": {"width": 8}}),
    ]


@dataclass
class Variant:
    group: str
    name: str
    path: str
    weights: str  # "trained (<source>)" or "random"
    accuracy: dict = field(default_factory=dict)  # {"metric": ..., "value": ..., "n": ..., "source": ...}
    accuracy_note: str = ""
    params: int | None = None
    macs: int | None = None
    size_mb: float = 0.0
    timing: dict = field(default_factory=dict)  # threads -> {session_p50, session_p95, frame_p50, frame_p95, runs}
    peak_rss_mb: float | None = None


# ------------------------------------------------------------------------------------------ building

def _first(patterns) -> Path | None:
    for pattern in patterns:
        hits = sorted(glob.glob(str(REPO / pattern)))
        if hits:
            return Path(hits[0])
    return None


def _onnx_input_hw(path) -> tuple[int, int] | None:
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    h, w = dims[2].dim_value, dims[3].dim_value
    return (h, w) if h and w else None


def _card_accuracy(onnx_path: Path) -> dict:
    """Accuracy from the model card beside the file, else from the run's metrics.json (INT8 files have no card)."""
    card = onnx_path.with_suffix(".json")
    if card.is_file():
        found = _accuracy(json.loads(card.read_text(encoding="utf-8")).get("metrics", {}), f"card {card.name}")
        if found:
            return found
    run_metrics = onnx_path.parent / "metrics.json"
    if run_metrics.is_file():
        for entry in json.loads(run_metrics.read_text(encoding="utf-8")).get("onnx") or []:
            if entry.get("path") == onnx_path.name and entry.get("metrics"):
                return _accuracy(entry["metrics"], f"{run_metrics.relative_to(REPO)}")
    return {}


def _card_params(onnx_path: Path) -> int | None:
    """Nonzero parameter count from the model card (an INT8 file shares its FP32 source's card)."""
    for card in (onnx_path.with_suffix(".json"), onnx_path.with_name(onnx_path.stem.removesuffix("_int8") + ".json")):
        if card.is_file():
            nonzero = json.loads(card.read_text(encoding="utf-8")).get("params", {}).get("nonzero")
            if nonzero is not None:
                return int(nonzero)
    return None


def _run_macs(onnx_path: Path) -> int | None:
    """MACs after structured pruning, from the run's metrics.json (None when the run did not record it)."""
    run_metrics = onnx_path.parent / "metrics.json"
    if not run_metrics.is_file():
        return None
    report = (json.loads(run_metrics.read_text(encoding="utf-8")).get("structured") or {}).get("report") or {}
    return report.get("macs_after")


def _finished_checkpoint(patterns) -> Path | None:
    """The first checkpoint whose run finished (its run dir has metrics.json, written only at the end):
    a checkpoint of a run still training is a moving target, not a result."""
    for pattern in patterns:
        for hit in sorted(glob.glob(str(REPO / pattern))):
            path = Path(hit)
            run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
            if (run_dir / "metrics.json").is_file():
                return path
    return None


def _accuracy(metrics: dict, source: str) -> dict:
    """The primary metric (top-1; global pixel accuracy, the paper's; detection: COCO AP50, the recipes'
    primary) plus mIoU / AP (IoU 0.50:0.95) where there is one."""
    for key, second in (("top1", None), ("pixel_acc", "miou"), ("ap50", "ap")):
        if key in metrics:
            n = metrics.get("n", metrics.get("images"))  # detection metrics count images
            out = {"metric": key, "value": float(metrics[key]), "n": n, "source": source}
            if second in metrics:
                out[second] = float(metrics[second])
            return out
    return {}


def _info(group: Group, role: str = "student"):
    from robot_compress.compress.data import DatasetInfo

    return DatasetInfo(task=group.task, labels=list(group.labels), input_size=group.input_for(role),
                       mean=IMAGENET_MEAN, std=IMAGENET_STD, ignore_index=group.ignore_index,
                       fingerprint="bench", source="bench/model_latency.py")


def _example(group: Group, role: str = "student"):
    import torch

    return torch.zeros(1, 3, *group.input_for(role))


def _torch_model(group: Group, role: str):
    """(model, weights description) from the first trained checkpoint found, else random weights."""
    from robot_compress.compress.models import get_model
    from robot_compress.compress.pruning import is_pruned, make_permanent
    from robot_compress.compress.train import load_weights

    arch = group.teacher_arch if role == "teacher" else group.student_arch
    patterns = group.teacher_ckpt if role == "teacher" else group.student_ckpt
    model = get_model(arch, len(group.labels), **group.arch_cfg.get(role, {}))
    ckpt = _finished_checkpoint(patterns)
    weights = "random"
    if ckpt is not None:
        load_weights(model, ckpt)
        weights = f"trained ({ckpt.relative_to(REPO)})"
        if is_pruned(model):
            make_permanent(model)
    elif patterns:  # say why (the log names the checkpoints): a run still training has not finished yet
        weights = "random (no finished run yet)"
    if role == "teacher" and group.teacher_passes == 2:
        from robot_compress.compress.tta import FlipAveraged

        model = FlipAveraged(model)
    return model.eval(), weights


def _export(model, group: Group, path: Path, model_id: str, role: str = "student") -> Path:
    if group.task == "detection":  # the detection contract: decoded boxes + scores, NMS in the runtime
        from robot_compress.compress.detection.export import export_detector

        export_detector(model, path, _info(group, role), model_id=model_id, recipe="bench/model_latency.py",
                        atol=1e-2)
        return path
    from robot_compress.compress.export import export_onnx

    export_onnx(model, path, _info(group, role), model_id=model_id, recipe="bench/model_latency.py",
                verify_batches=1, atol=1e-2)
    return path


def _calibration(group: Group, shared_ok: bool, n: int) -> tuple[list[np.ndarray], str]:
    """Normalised NCHW float32 calibration inputs: real training frames when ../shared has them."""
    if shared_ok and group.data is not None:
        from robot_compress.compress.quantize import calibration_arrays

        train, _ = group.data.train_and_val()
        arrays = calibration_arrays(train, n, seed=0)
        kind = "synthetic" if group.data.kind.startswith("synthetic") else "real"
        return arrays, f"{len(arrays)} {kind} training frames"
    rng = np.random.default_rng(0)
    h, w = group.input_size
    mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    arrays = [((rng.integers(0, 256, (1, 3, h, w)) / 255.0 - mean) / std).astype(np.float32) for _ in range(n)]
    return arrays, f"{n} synthetic frames"


def _shared_ok(group: Group) -> bool:
    return group.data is not None and group.data.available


def build_variants(group: Group, work: Path, calib_n: int = 64, log=print) -> list[Variant]:
    """Export every variant of a group into `work`; returns them (not yet timed)."""
    work.mkdir(parents=True, exist_ok=True)
    slug = group.name.replace(" ", "_")
    out = [_teacher_variant(group, work, slug)]
    log(f"  {group.name}: teacher ready ({_weights_note(out[0].weights, group.teacher_ckpt)})")

    student, weights = _torch_model(group, "student")
    dense, sparse, slim = _student_variants(group, student, weights, work, slug)
    out += [dense, sparse, slim]
    log(f"  {group.name}: student, unstructured, structured ready ({_weights_note(weights, group.student_ckpt)})")

    arrays, calib_note = _calibration(group, _shared_ok(group), calib_n)
    for src, name in ((dense, "student INT8"), (slim, f"{slim.name.removesuffix(' (no fine-tune)')} + INT8")):
        q = _int8_variant(group, src, name, arrays, log)
        if q is not None:
            q.accuracy_note = f"calibrated on {calib_note}"
            out.append(q)
    log(f"  {group.name}: INT8 done ({calib_note})")

    out += _found_variants(group, out, log)
    for v in out:
        v.size_mb = Path(v.path).stat().st_size / 1e6
    return out


def _weights_note(weights: str, patterns) -> str:
    """The weights, and for random ones the checkpoints that were looked for."""
    return weights if weights.startswith("trained") or not patterns else f"{weights}: {', '.join(patterns)}"


def _teacher_variant(group: Group, work: Path, slug: str) -> Variant:
    """The shipped teacher ONNX when it is there at the teacher's input size, else exported from its
    checkpoint (random weights when its run has not finished)."""
    example = _example(group, "teacher")
    shipped = _first(group.teacher_onnx)
    if shipped is not None and _onnx_input_hw(shipped) == group.input_for("teacher"):
        from robot_compress.compress.models import get_model

        arch_macs = _count(get_model(group.teacher_arch, len(group.labels), **group.arch_cfg.get("teacher", {})),
                           example)[0] * group.teacher_passes  # MACs follow from the architecture
        return Variant(group.name, "teacher", str(shipped), f"trained ({shipped.relative_to(REPO)})",
                       _card_accuracy(shipped), params=_card_params(shipped), macs=arch_macs)
    teacher, weights = _torch_model(group, "teacher")
    path = _export(teacher, group, work / f"{slug}_teacher.onnx", f"{slug}_teacher", role="teacher")
    macs, params = _count(teacher, example)
    return Variant(group.name, "teacher", str(path), weights, params=params, macs=macs)


def _structured(group: Group, model, example) -> dict:
    """Channel pruning in place; detectors keep their prediction convs (anchors and contract unchanged)."""
    if group.task == "detection":
        from robot_compress.compress.detection.structured import structured_prune_detector

        return structured_prune_detector(model, example, group.structured_ratio, round_to=group.structured_round_to)
    from robot_compress.compress.structured import structured_prune

    return structured_prune(model, example, group.structured_ratio, round_to=group.structured_round_to)


def _student_variants(group: Group, student, weights: str, work: Path, slug: str) -> tuple[Variant, ...]:
    """(dense, unstructured-pruned, structured-pruned) students, exported."""
    import copy

    from robot_compress.compress.pruning import make_permanent, prune_model

    example = _example(group)
    macs, params = _count(student, example)
    dense = _export(student, group, work / f"{slug}_student.onnx", f"{slug}_student")

    sparse_model = copy.deepcopy(student)
    prune_model(sparse_model, "class-blind", group.unstructured_amount)
    make_permanent(sparse_model)
    sparse = _export(sparse_model, group, work / f"{slug}_student_unstructured.onnx", f"{slug}_student_unstr")
    nonzero = int(sum(int((p != 0).sum()) for p in sparse_model.parameters()))

    slim_model = copy.deepcopy(student)
    report = _structured(group, slim_model, example)
    slim = _export(slim_model, group, work / f"{slug}_student_structured.onnx", f"{slug}_student_struct")
    return (Variant(group.name, "student", str(dense), weights, params=params, macs=macs),
            Variant(group.name, f"student unstructured {group.unstructured_amount:.0%} (class-blind)", str(sparse),
                    weights, params=nonzero, macs=macs),
            Variant(group.name, f"student structured {group.structured_ratio:.0%} (no fine-tune)", str(slim),
                    weights, params=report["params_after"], macs=report["macs_after"]))


def _int8_variant(group: Group, src: Variant, name: str, arrays, log) -> Variant | None:
    """onnxruntime static INT8 of `src`; None (with the reason logged) where quantization fails on the graph."""
    from robot_compress.compress.quantize import quantize_onnx

    path = Path(src.path)
    try:
        q = quantize_onnx(path, path.with_name(path.stem + "_int8.onnx"), arrays, per_channel=True, preprocess=True)
    except Exception as exc:  # noqa: BLE001 - onnxruntime's quantizer raises many types; the row is optional
        log(f"  {group.name}: {name} skipped: onnxruntime static quantization failed ({exc})")
        return None
    return Variant(group.name, name, str(q), src.weights, params=src.params, macs=src.macs)


def _found_variants(group: Group, built: list[Variant], log) -> list[Variant]:
    """The shipped students (deployed) and the recipes' outputs (fine-tuned) found on disk; a missing one is
    logged, not an error (its run may still be training)."""
    out = []
    seen = set()  # a shipped model is also its recipe's output in runs/: time it once, as "deployed"
    for label, patterns in (("deployed", group.deployed_onnx), ("fine-tuned", group.finetuned_onnx)):
        hits = [Path(h) for pattern in patterns for h in sorted(glob.glob(str(REPO / pattern)))]
        if patterns and not hits:
            log(f"  {group.name}: no {label} model yet ({', '.join(patterns)}): its row is skipped")
        for path in hits:
            name = f"{label} {path.stem}"
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            # Segmentation and detection models take the camera frame at any input size (Engine resizes it in and
            # the mask / boxes back, scored at frame size); a classifier's frames come at its input size.
            other_size = group.task == "classification" and _onnx_input_hw(path) != tuple(group.input_size)
            if other_size or any(v.name == name for v in built + out) or digest in seen:
                continue  # another size, or the same model already found under models/
            seen.add(digest)
            out.append(Variant(group.name, name, str(path), f"trained ({path.relative_to(REPO)})",
                               _card_accuracy(path), params=_card_params(path), macs=_run_macs(path)))
    return out


def _count(model, example) -> tuple[int, int]:
    import torch_pruning as tp

    macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


# ------------------------------------------------------------------------------------------ measuring

def frame_for(group: Group, seed: int = 0) -> np.ndarray:
    """A camera frame at the robot's resolution: a real validation frame when ../shared has one."""
    if _shared_ok(group) and group.data.detection:
        from robot_compress.compress.detection.stages import latency_frame

        # as the recipes' evaluate stage quotes latency: a validation frame resized to the camera's size
        _, val = group.data.train_and_val(raw_uint8=True)
        return np.ascontiguousarray(latency_frame([val[seed]], group.frame_hw), dtype=np.uint8)
    if _shared_ok(group):
        from robot_compress.compress.data import load_dataset

        ds, _ = load_dataset(group.data.kind, str(REPO / group.data.root), input_size=group.frame_hw,
                             train=group.data.val_split is None, raw_uint8=True,
                             **({"split": group.data.val_split} if group.data.val_split else {}))
        return np.ascontiguousarray(np.asarray(ds[seed][0]), dtype=np.uint8)
    h, w = group.frame_hw
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), ((xx + yy) % 256)], axis=-1)
    return rgb.astype(np.uint8)


def _pct(values) -> tuple[float, float]:
    arr = np.asarray(values, np.float64)
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 95))


def time_group(variants: list[Variant], frame: np.ndarray, threads: int, runs: int, warmup: int = 10,
               block: int = 10, max_seconds: float | None = None) -> None:
    """Interleaved blocks of `block` runs per variant until each has `runs` session and frame timings.

    `max_seconds` bounds a very slow group: runs stop early (at least 30 each) and the count is recorded.
    """
    from robot_compress.runtime.engine import Engine

    engines = [Engine(v.path, threads=threads) for v in variants]
    for eng in engines:
        for _ in range(warmup):
            eng.infer(frame)
    session = defaultdict(list)
    full = defaultdict(list)
    t_start = time.monotonic()
    done = 0
    while done < runs:
        for k, eng in enumerate(engines):
            eng.preprocess(frame)
            for _ in range(block):
                t0 = time.perf_counter()
                eng.run_preprocessed()
                session[k].append((time.perf_counter() - t0) * 1000.0)
            for _ in range(max(1, block // 2)):
                t0 = time.perf_counter()
                eng.infer(frame)
                full[k].append((time.perf_counter() - t0) * 1000.0)
        done += block
        if max_seconds and done >= 30 and time.monotonic() - t_start > max_seconds:
            break
    for k, v in enumerate(variants):
        s50, s95 = _pct(session[k])
        f50, f95 = _pct(full[k])
        v.timing[str(threads)] = {"session_p50": s50, "session_p95": s95, "frame_p50": f50, "frame_p95": f95,
                                  "runs": len(session[k]), "frame_runs": len(full[k])}


_RSS_CHILD = """
import json, resource, sys
import numpy as np
from robot_compress.runtime.engine import Engine
path, h, w = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if path != "-":
    eng = Engine(path, threads=1)
    frame = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(10):
        eng.infer(frame)
else:
    import onnxruntime  # noqa: F401 - the floor: interpreter + runtime imports, no model
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
print(json.dumps({"vmhwm_kb": int(hwm[0].split()[1]) if hwm else None,
                  "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def peak_rss_mb(path: str | None, frame_hw) -> float:
    """Peak RSS (MB) of a fresh interpreter that loads `path` in an Engine and runs 10 frames ("-": none).

    The child's VmHWM, not its ru_maxrss: Linux carries the forking parent's high-water mark across exec into
    ru_maxrss, so a child of this (torch-loaded) process would report the parent's size. Where /proc is
    missing, ru_maxrss is the fallback."""
    out = subprocess.run([sys.executable, "-c", _RSS_CHILD, path or "-", str(frame_hw[0]), str(frame_hw[1])],
                         capture_output=True, text=True, timeout=300, cwd=str(REPO), check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return (got["vmhwm_kb"] or got["ru_maxrss_kb"]) / 1024.0


def hot_ops(path: str, frame: np.ndarray, runs: int = 20, top: int = 6) -> list[dict]:
    """onnxruntime's profiler (SessionOptions.enable_profiling), 1 thread: share of node time per op type."""
    import onnxruntime as ort

    from robot_compress.runtime.engine import Engine

    x = Engine(path, threads=1).preprocess(frame).copy()
    with tempfile.TemporaryDirectory(prefix="ort_prof_") as tmp:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "prof")
        opts.log_severity_level = 3
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        for _ in range(runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op = defaultdict(float)
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            per_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)
    total = sum(per_op.values()) or 1.0
    ranked = sorted(per_op.items(), key=lambda kv: -kv[1])[:top]
    return [{"op": op, "share": dur / total, "ms_per_run": dur / 1000.0 / runs} for op, dur in ranked]


def evaluate_variant(v: Variant, group: Group, limit: int | None = None) -> None:
    """Score a trained-weights variant on the recipe's validation split through the Engine (at the frames'
    native size where the recipes score there; detection always: COCO AP50 in the frames' own pixels)."""
    from robot_compress.compress.evaluate import evaluate_onnx

    _, val = group.data.train_and_val(raw_uint8=True)
    if limit is not None and limit < len(val):
        from torch.utils.data import Subset

        val = Subset(val, list(range(limit)))
    if group.task == "detection":
        from robot_compress.compress.detection.evaluate import evaluate_detector_onnx

        m = evaluate_detector_onnx(v.path, val, threads=1)
    else:
        m = evaluate_onnx(v.path, val, threads=1, at_frame_size=group.data.val_split is not None)
    m["n"] = len(val)
    v.accuracy = _accuracy(m, f"measured here, {group.data.describe()}")


# ------------------------------------------------------------------------------------------ driver

def run(groups: list[Group], work: Path, runs: int, threads=(1, 2), evaluate: bool = True, rss: bool = True,
        profile: bool = True, eval_limit: int | None = None, max_seconds: float | None = None, log=print) -> dict:
    variants: list[Variant] = []
    frames = {}
    for group in groups:
        log(f"building {group.name} ...")
        built = build_variants(group, work)
        frames[group.name] = frame_for(group)
        if evaluate and _shared_ok(group):
            for v in built:
                if not v.accuracy and v.weights.startswith("trained"):
                    log(f"  scoring {v.name} ...")
                    evaluate_variant(v, group, eval_limit)
        for v in built:
            if not v.accuracy and not v.weights.startswith("trained"):
                v.accuracy_note = ("n/a (random weights)" + (f"; {v.accuracy_note}" if v.accuracy_note else ""))
        for t in threads:
            log(f"timing {group.name}, {t} thread(s) ...")
            time_group(built, frames[group.name], t, runs, max_seconds=max_seconds)
        if rss:
            for v in built:
                v.peak_rss_mb = peak_rss_mb(v.path, group.frame_hw)
        variants += built
    result = {"variants": [asdict(v) for v in variants], "groups": [asdict(g) for g in groups],
              "rss_floor_mb": peak_rss_mb(None, (1, 1)) if rss else None, "ratios": ratios(variants, groups),
              "profile": {}, "profile_deployed": {}}
    if profile:
        for group in groups:
            best = fastest_student(variants, group.name)
            if best is not None:
                result["profile"][group.name] = {"variant": best.name, "ops": hot_ops(best.path, frames[group.name])}
            # the shipped students too: where a speed goal misses, the one within the accuracy budget is the
            # model whose hot spot explains it
            result["profile_deployed"][group.name] = [
                {"variant": v.name, "ops": hot_ops(v.path, frames[group.name])} for v in variants
                if v.group == group.name and v.name.startswith("deployed") and v is not best]
    return result


def fastest_student(variants: list[Variant], group_name: str, threads: str = "1") -> Variant | None:
    students = [v for v in variants if v.group == group_name and v.name != "teacher"]
    return min(students, key=lambda v: v.timing[threads]["frame_p50"], default=None)


def ratios(variants: list[Variant], groups: list[Group]) -> list[dict]:
    """Speedup of every student variant over its teacher at session p50 and at frame p50 (Engine.infer, pre- and
    post-processing included: what detection's goals count), 1 thread; fps for frames; nonzero parameters as
    a share of the teacher's (None where either count is unknown)."""
    rows = []
    for group in groups:
        mine = [v for v in variants if v.group == group.name]
        teacher = next((v for v in mine if v.name == "teacher"), None)
        if teacher is None or "1" not in teacher.timing:
            continue
        t1 = teacher.timing["1"]
        for v in mine:
            if v is teacher:
                continue
            v1 = v.timing["1"]
            share = v.params / teacher.params if v.params and teacher.params else None
            rows.append({"group": group.name, "variant": v.name, "speedup_p50_1thread": t1["session_p50"] /
                         v1["session_p50"], "frame_speedup_p50_1thread": t1["frame_p50"] / v1["frame_p50"],
                         "frame_fps_1thread": 1000.0 / v1["frame_p50"], "param_share": share,
                         "frame_hw": list(group.frame_hw)})
    return rows


def select_groups(groups: list[Group], only: str | None) -> list[Group]:
    return [g for g in groups if only is None or only in g.name]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="30 runs per variant, no scoring, no RSS/profile")
    ap.add_argument("--tiny", action="store_true", help="tiny stand-in models (seconds; for tests)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--work", type=Path, default=REPO / "build" / "bench" / "models")
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "model_latency.json")
    ap.add_argument("--eval-limit", type=int, default=None, help="score at most this many validation items")
    ap.add_argument("--only", default=None, metavar="TEXT",
                    help="only the groups whose name contains TEXT (e.g. pennfudan), for a quick look at one")
    args = ap.parse_args(argv)
    groups = select_groups(tiny_groups() if args.tiny else default_groups(), args.only)
    if not groups:
        ap.error(f"no group name contains {args.only!r}")
    runs = 30 if args.quick else args.runs
    if runs < 10:
        ap.error(f"--runs must be >= 10, got {runs}")
    result = run(groups, args.work, runs, evaluate=not args.quick, rss=not args.quick, profile=not args.quick,
                 eval_limit=args.eval_limit, log=lambda s: print(s, file=sys.stderr, flush=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    for v in result["variants"]:
        t1 = v["timing"]["1"]
        print(f"{v['group']:16} {v['name']:45} {t1['session_p50']:8.2f} ms  {t1['frame_p50']:8.2f} ms frame  "
              f"{v['size_mb']:7.2f} MB  {v['accuracy'].get('value', v['accuracy_note'])}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
